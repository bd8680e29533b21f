// --intercept-bind: see intercept.hpp.
#include "intercept.hpp"

#include <fcntl.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstring>
#include <utility>

#include "jail/grants.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/service.hpp"

namespace ktricks::jail {

std::optional<SocketAddress> parse_bind_address(const void* bytes, std::size_t length, int socket_type) {
    sa_family_t family = 0;
    if (length < sizeof(family))
        throw InputError(fmt::format("bind address of {} bytes has no family", length));
    std::memcpy(&family, bytes, sizeof(family));
    if (family != AF_INET && family != AF_INET6) return std::nullopt;
    // The kernel's own minimums: a shorter address fails bind() with EINVAL, so must ours.
    std::size_t needed = family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    if (length < needed)
        throw InputError(
            fmt::format("bind address of family {} is {} bytes, needs {}", family, length, needed));
    sockaddr_storage storage{};
    std::memcpy(&storage, bytes, needed);
    return SocketAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&storage),
                                        static_cast<socklen_t>(needed), socket_type);
}

namespace {

bool same_host(const SocketAddress& a, const SocketAddress& b) {
    if (a.family() != b.family()) return false;
    if (a.family() == AF_INET)
        return reinterpret_cast<const sockaddr_in*>(a.sockaddr_ptr())->sin_addr.s_addr ==
               reinterpret_cast<const sockaddr_in*>(b.sockaddr_ptr())->sin_addr.s_addr;
    return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(a.sockaddr_ptr())->sin6_addr,
                       &reinterpret_cast<const sockaddr_in6*>(b.sockaddr_ptr())->sin6_addr,
                       sizeof(in6_addr)) == 0;
}

}  // namespace

std::optional<std::size_t> match_bind(const std::vector<InterceptListener>& listeners,
                                      const SocketAddress& wanted) {
    for (std::size_t i = 0; i < listeners.size(); ++i) {
        const auto& candidate = listeners[i];
        if (candidate.bound.transport() != wanted.transport() || !same_host(candidate.bound, wanted))
            continue;
        if (wanted.port() == 0 || candidate.asked_port == 0 || candidate.bound.port() == wanted.port())
            return i;
    }
    return std::nullopt;
}

BindInterceptor::BindInterceptor(Fd notify, std::vector<int> sockets,
                                 std::vector<InterceptListener> listeners, bool verbose,
                                 std::shared_ptr<Grants> grants)
    : notify_(std::move(notify)),
      sockets_(std::move(sockets)),
      listeners_(std::move(listeners)),
      verbose_(verbose),
      grants_(std::move(grants)) {}

void BindInterceptor::stop() noexcept {
    if (loop_) loop_->remove(std::exchange(source_, 0));
    loop_ = nullptr;
}

BindInterceptor::~BindInterceptor() {
    if (loop_) loop_->remove(source_);
}

void BindInterceptor::serve(EventLoop& loop) {
    loop_ = &loop;
    source_ = loop.add_fd(notify_.get(), EPOLLIN, [this](std::uint32_t events) {
        if (events & EPOLLIN) answer_one();
        // Every process under the filter has exited: nothing will ever come again.
        if ((events & EPOLLHUP) && !(events & EPOLLIN)) stop();
    });
}

void BindInterceptor::answer_one() {
    seccomp_notif request{};
    if (::ioctl(notify_.get(), SECCOMP_IOCTL_NOTIF_RECV, &request) < 0)
        return;  // ENOENT: the caller went away
    seccomp_notif_resp response{};
    response.id = request.id;
    auto respond = [&](int error, bool continue_to_kernel = false) {
        response.error = error ? -error : 0;
        response.val = 0;
        response.flags = continue_to_kernel ? SECCOMP_USER_NOTIF_FLAG_CONTINUE : 0;
        ::ioctl(notify_.get(), SECCOMP_IOCTL_NOTIF_SEND, &response);  // ENOENT: it died meanwhile
    };
    auto still_valid = [&] { return ::ioctl(notify_.get(), SECCOMP_IOCTL_NOTIF_ID_VALID, &request.id) == 0; };
    pid_t pid = static_cast<pid_t>(request.pid);
    int target_fd = static_cast<int>(request.data.args[0]);
    std::uint64_t address_pointer = request.data.args[1];
    std::size_t length = std::min<std::uint64_t>(request.data.args[2], sizeof(sockaddr_storage));

    // The address, from the caller's memory. /proc/PID/mem checks ptrace access, which we (its
    // parent's supervisor, root or its own uid) have.
    char bytes[sizeof(sockaddr_storage)] = {};
    Fd memory(::open(fmt::format("/proc/{}/mem", pid).c_str(), O_RDONLY | O_CLOEXEC));
    if (!memory || ::pread(memory.get(), bytes, length, static_cast<off_t>(address_pointer)) !=
                       static_cast<ssize_t>(length))
        return respond(EFAULT);
    if (!still_valid()) return;

    // The socket's type decides tcp or udp; our own copy of it also carries its status flags.
    Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    Fd socket(pidfd ? static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), target_fd, 0)) : -1);
    if (!socket) return respond(EBADF);
    int type = 0;
    socklen_t type_length = sizeof(type);
    if (::getsockopt(socket.get(), SOL_SOCKET, SO_TYPE, &type, &type_length) < 0) return respond(ENOTSOCK);

    std::optional<SocketAddress> wanted;
    try {
        wanted = parse_bind_address(bytes, length, type);
    } catch (const InputError&) {
        return respond(EINVAL);
    }
    if (!wanted) return respond(0, true);  // unix, netlink ...: the jail's own business
    auto match = match_bind(listeners_, *wanted);
    int listener = match ? sockets_[*match] : -1;
    std::string granted_by;
    if (!match) {
        std::string refusal = "not a --listen address";
        if (grants_ && !grants_->empty()) {
            // The server's own choice for [::]: both families unless it asked for IPv6 only.
            int v6_only = 0;
            socklen_t v6_length = sizeof(v6_only);
            if (wanted->family() == AF_INET6 &&
                ::getsockopt(socket.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6_only, &v6_length) < 0)
                v6_only = 0;
            listener = grants_->grant(*wanted, v6_only != 0, refusal);
            granted_by = " (allow-list)";
        }
        if (listener < 0) {
            if (verbose_) log_info("refused bind {} (pid {}): {}", wanted->to_string(), pid, refusal);
            return respond(EACCES);
        }
    }
    // Blocking or not is a property of the open file: give ours the server's, as it asked for.
    int server_flags = ::fcntl(socket.get(), F_GETFL);
    int our_flags = ::fcntl(listener, F_GETFL);
    if (server_flags >= 0 && our_flags >= 0)
        ::fcntl(listener, F_SETFL, (our_flags & ~O_NONBLOCK) | (server_flags & O_NONBLOCK));
    // close-on-exec is a property of the descriptor: fdinfo "flags:" carries it (O_CLOEXEC).
    unsigned newfd_flags = 0;
    {
        char info[256] = {};
        Fd file(::open(fmt::format("/proc/{}/fdinfo/{}", pid, target_fd).c_str(), O_RDONLY | O_CLOEXEC));
        if (file && ::read(file.get(), info, sizeof(info) - 1) > 0)
            if (const char* flags = std::strstr(info, "flags:");
                flags && (std::strtoul(flags + 6, nullptr, 8) & O_CLOEXEC))
                newfd_flags = O_CLOEXEC;
    }
    seccomp_notif_addfd add{};
    add.id = request.id;
    add.flags = SECCOMP_ADDFD_FLAG_SETFD;
    add.srcfd = static_cast<__u32>(listener);
    add.newfd = static_cast<__u32>(target_fd);
    add.newfd_flags = newfd_flags;
    if (::ioctl(notify_.get(), SECCOMP_IOCTL_NOTIF_ADDFD, &add) < 0)
        return respond(errno == ENOENT ? 0 : errno);
    if (verbose_)
        log_info("bind {} (pid {}, fd {}) = {}{}", wanted->to_string(), pid, target_fd,
                 SocketAddress::of_socket(listener).to_string(), granted_by);
    respond(0);
}

}  // namespace ktricks::jail
