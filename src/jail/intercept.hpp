// --intercept-bind: bind() inside the jail answered from outside with a host listener.
//
// The jail's seccomp filter sends every bind() to a user-notification listener (the fd the child
// passes back at setup). For an inet address that matches a --listen address, the supervisor
// installs its own host-bound socket over the server's socket (SECCOMP_IOCTL_NOTIF_ADDFD with
// SECCOMP_ADDFD_FLAG_SETFD: the kernel replaces the fd number, as dup2 would, and the server's
// own socket is closed) and makes the bind() return 0. The server then calls listen() on what is
// already a listening host socket, which the kernel allows (it only updates the backlog), and
// accepts host clients with their real addresses. Any other inet bind() is offered to the broker's
// allow-list (Grants: bound here, with the server's own IPV6_V6ONLY, and installed the same way),
// and fails with EACCES if it is not allowed. Other
// families (unix, netlink) continue to the kernel: whatever they bind lives in the jail's own
// empty network namespace or in its filesystem view.
//
// Nothing the server controls is trusted: the address is read from its memory once and only
// selects which of our own sockets to install; the notification id is checked again after the
// read, so a server that died or was replaced in between gets nothing.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/core/socket_address.hpp"

namespace ktricks::jail {

// An inet address as a bind() call passes it (bytes from the jailed process): nullopt for
// families that are not intercepted; throws InputError for an inet address of the wrong length.
std::optional<SocketAddress> parse_bind_address(const void* bytes, std::size_t length, int socket_type);

// Which of `listeners` (bound addresses, with the port asked for on the command line, 0 = any)
// answers a bind() to `wanted`: same transport and family, same host, and the same port unless
// either side says 0. Returns the index, or nullopt.
struct InterceptListener {
    SocketAddress bound;
    std::uint16_t asked_port;
};
std::optional<std::size_t> match_bind(const std::vector<InterceptListener>& listeners,
                                      const SocketAddress& wanted);

class Grants;

class BindInterceptor {
public:
    // `listeners`: the host sockets (not owned; they must outlive us), with their --listen port.
    // `grants` (may be null): the allow-list for binds that match no listener.
    BindInterceptor(Fd notify, std::vector<int> sockets, std::vector<InterceptListener> listeners,
                    bool verbose, std::shared_ptr<Grants> grants = nullptr);
    BindInterceptor(const BindInterceptor&) = delete;
    BindInterceptor& operator=(const BindInterceptor&) = delete;
    ~BindInterceptor();  // leaves the loop: the caller's loop outlives it
    // Answers notifications on `loop` until the notify fd hangs up (every jailed process is gone)
    // or stop(). `loop` must outlive the watching.
    void serve(EventLoop& loop);
    void stop() noexcept;

private:
    void answer_one();
    Fd notify_;
    std::vector<int> sockets_;
    std::vector<InterceptListener> listeners_;
    bool verbose_;
    std::shared_ptr<Grants> grants_;
    EventLoop* loop_ = nullptr;
    EventLoop::SourceId source_{};
};

}  // namespace ktricks::jail
