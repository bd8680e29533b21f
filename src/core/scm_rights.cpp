#include "ktricks/core/scm_rights.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <fmt/format.h>

#include <cstring>
#include <vector>

#include "ktricks/core/error.hpp"

namespace ktricks {

static_assert(max_fds_per_message == 253, "SCM_MAX_FD in the kernel is 253");

void send_fds(int socket, std::span<const std::byte> data, std::span<const int> fds) {
    // Ancillary data rides on data bytes; with none, a stream receiver would never see the fds.
    if (data.empty()) throw InputError("send_fds: at least one data byte must accompany the descriptors");
    if (fds.size() > max_fds_per_message)
        throw InputError(fmt::format("send_fds: {} descriptors in one message; the kernel allows at most {}",
                                     fds.size(), max_fds_per_message));
    iovec iov{const_cast<std::byte*>(data.data()), data.size()};
    msghdr message{};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    std::vector<char> control;
    if (!fds.empty()) {
        control.resize(CMSG_SPACE(fds.size() * sizeof(int)));
        message.msg_control = control.data();
        message.msg_controllen = control.size();
        cmsghdr* header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
        std::memcpy(CMSG_DATA(header), fds.data(), fds.size() * sizeof(int));
    }
    ssize_t sent;
    do {
        sent = ::sendmsg(socket, &message, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) throw_errno("sendmsg", fmt::format("fd {} ({} fds)", socket, fds.size()));
    // A stream socket may take fewer bytes; the fds went with the first byte, the rest is plain data.
    // From here on the message must be finished even on a non-blocking socket: the peer already
    // holds the descriptors, and giving up on EAGAIN would leave it a message that never completes
    // and a stream whose next message starts mid-payload. So wait for room instead.
    std::size_t done = static_cast<std::size_t>(sent);
    while (done < data.size()) {
        ssize_t more = ::send(socket, data.data() + done, data.size() - done, MSG_NOSIGNAL);
        if (more < 0 && errno == EINTR) continue;
        if (more < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            pollfd writable{socket, POLLOUT, 0};
            if (::poll(&writable, 1, -1) < 0 && errno != EINTR)
                throw_errno("poll", fmt::format("fd {}", socket));
            continue;
        }
        if (more < 0) throw_errno("send", fmt::format("fd {}", socket));
        done += static_cast<std::size_t>(more);
    }
}

ReceivedMessage recv_fds(int socket, std::span<std::byte> buffer, std::size_t max_fds) {
    if (max_fds > max_fds_per_message) max_fds = max_fds_per_message;
    iovec iov{buffer.data(), buffer.size()};
    msghdr message{};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    // CMSG_SPACE rounds up to 8 bytes, so a buffer "for one fd" really holds two: size it exactly
    // and count what arrived, rather than trusting the rounding.
    std::vector<char> control(max_fds ? CMSG_SPACE(max_fds * sizeof(int)) : 0);
    message.msg_control = control.empty() ? nullptr : control.data();
    message.msg_controllen = control.size();

    ssize_t received;
    do {
        received = ::recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    } while (received < 0 && errno == EINTR);
    if (received < 0) throw_errno("recvmsg", fmt::format("fd {}", socket));

    ReceivedMessage result;
    result.size = static_cast<std::size_t>(received);
    result.data_truncated = message.msg_flags & MSG_TRUNC;
    for (cmsghdr* header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        std::size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char* data = CMSG_DATA(header);
        for (std::size_t i = 0; i < count; ++i) {
            int fd;
            std::memcpy(&fd, data + i * sizeof(int), sizeof(int));
            result.fds.emplace_back(fd);
        }
    }
    bool too_many = result.fds.size() > max_fds;
    if ((message.msg_flags & MSG_CTRUNC) || too_many) {
        std::size_t arrived = result.fds.size();
        result.fds.clear();  // closes them: a partial set of fds is worse than none
        throw_error(EMSGSIZE, "recvmsg",
                    fmt::format("fd {}: peer sent more descriptors than the {} expected (MSG_CTRUNC; {} "
                                "arrived and were closed, the kernel closed the rest)",
                                socket, max_fds, arrived));
    }
    return result;
}

}  // namespace ktricks
