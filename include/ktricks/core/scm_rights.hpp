// Passing file descriptors over unix sockets (SCM_RIGHTS).
//
// The kernel attaches passed descriptors to data bytes, so every message carries at least one byte.
// A receiver whose control buffer is too small for what was sent gets MSG_CTRUNC, and the kernel
// closes the descriptors that did not fit; recv_fds sizes its buffer for `max_fds`, reports
// truncation as an error, and never leaves a received descriptor unowned. Received descriptors are
// close-on-exec (MSG_CMSG_CLOEXEC), so they cannot leak into a child between recvmsg and fcntl.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "ktricks/core/fd.hpp"

namespace ktricks {

// The kernel's limit on descriptors in one SCM_RIGHTS message (SCM_MAX_FD in include/net/scm.h).
inline constexpr std::size_t max_fds_per_message = 253;

// Sends `data` (must not be empty) with `fds` attached in one sendmsg. Throws InputError for empty
// data or more than max_fds_per_message fds, std::system_error for the send itself (EAGAIN on a
// non-blocking socket is an error too: a partial fd-carrying message is never left half sent).
void send_fds(int socket, std::span<const std::byte> data, std::span<const int> fds);

struct ReceivedMessage {
    std::size_t size = 0;         // bytes stored in the buffer; 0 with no fds means end of stream
    bool data_truncated = false;  // MSG_TRUNC: a datagram/seqpacket record was larger than the buffer
    std::vector<Fd> fds;          // in the order they were sent
};

// Receives one message into `buffer` and up to `max_fds` descriptors. If the sender attached more
// (MSG_CTRUNC), the descriptors that did arrive are closed and std::system_error(EMSGSIZE) is thrown.
// Throws std::system_error for recvmsg failures, including EAGAIN on a non-blocking socket.
ReceivedMessage recv_fds(int socket, std::span<std::byte> buffer, std::size_t max_fds);

}  // namespace ktricks
