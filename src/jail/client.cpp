// The sides of the protocol that run in the jail (request_listener, Inbox) and next to it (hand_into).
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <span>

#include "jail/protocol.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/scm_rights.hpp"
#include "ktricks/jail.hpp"

namespace ktricks::jail {
namespace {

Fd connect_seqpacket(const std::string& path) {
    SocketAddress address = SocketAddress::unix_path(path);
    Fd socket(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (!socket) throw_errno("socket", address.to_string());
    if (::connect(socket.get(), address.sockaddr_ptr(), address.length()) < 0)
        throw_errno("connect", address.to_string());
    return socket;
}

void wait_readable(int fd, std::chrono::milliseconds timeout, const std::string& peer) {
    pollfd readable{fd, POLLIN, 0};
    int ready;
    do {
        ready = ::poll(&readable, 1, static_cast<int>(timeout.count()));
    } while (ready < 0 && errno == EINTR);
    if (ready < 0) throw_errno("poll", peer);
    if (ready == 0) throw_error(ETIMEDOUT, "waiting for an answer from", peer);
}

void send_text(int fd, const std::string& text, std::span<const int> fds = {}) {
    send_fds(fd, std::as_bytes(std::span(text.data(), text.size())), fds);
}

// One reply record (and the descriptors that came with it).
std::pair<protocol::Message, std::vector<Fd>> receive_reply(int fd, std::size_t max_fds,
                                                            std::chrono::milliseconds timeout,
                                                            const std::string& peer) {
    wait_readable(fd, timeout, peer);
    std::byte buffer[protocol::max_message + 1];
    ReceivedMessage received = recv_fds(fd, buffer, max_fds);
    if (received.size == 0 && received.fds.empty()) throw_error(ECONNRESET, "read answer from", peer);
    auto message = protocol::parse(std::string_view(reinterpret_cast<const char*>(buffer), received.size));
    return {std::move(message), std::move(received.fds)};
}

}  // namespace

Fd request_listener(const SocketAddress& address, std::string_view broker_path,
                    std::chrono::milliseconds timeout) {
    std::string path(broker_path);
    if (path.empty()) {
        const char* from_environment = ::getenv("KTRICKS_BROKER");
        if (!from_environment || !*from_environment)
            throw InputError("no broker: KTRICKS_BROKER is not set (start the jail with --broker PATH)");
        path = from_environment;
    }
    Fd socket = connect_seqpacket(path);
    send_text(socket.get(), protocol::format(protocol::Verb::listen, address.to_string()));
    auto [reply, fds] = receive_reply(socket.get(), 1, timeout, "broker " + path);
    if (reply.verb == protocol::Verb::refused)
        throw RefusedError(fmt::format("broker refused {}: {}", address.to_string(), reply.argument));
    if (reply.verb != protocol::Verb::ok || fds.size() != 1)
        throw std::runtime_error(
            fmt::format("broker {}: unexpected answer to listen {}", path, address.to_string()));
    return std::move(fds[0]);
}

Inbox Inbox::bind(const std::string& path) {
    SocketAddress address = SocketAddress::unix_path(path);
    // A socket file outlives its socket; a previous owner's must not block a restart.
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
    BindOptions options;
    options.socket_type = SOCK_SEQPACKET;
    return Inbox(bind_socket(address, options));
}

Inbox::Handed Inbox::receive() {
    while (true) {
        int fd = ::accept4(socket_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            throw_errno("accept", "(jail inbox)");
        }
        Fd peer(fd);
        try {
            std::byte buffer[protocol::max_message + 1];
            ReceivedMessage received = recv_fds(fd, buffer, 1);
            auto message =
                protocol::parse(std::string_view(reinterpret_cast<const char*>(buffer), received.size));
            if (message.verb != protocol::Verb::offer || received.fds.size() != 1)
                throw InputError("expected \"offer ADDRESS\" with one descriptor");
            SocketAddress address = protocol::parse_address(message);
            send_text(fd, protocol::format(protocol::Verb::ok));
            return Handed{std::move(received.fds[0]), address};
        } catch (const std::exception& error) {
            // One confused sender must not stop the inbox.
            try {
                send_text(fd, protocol::format(protocol::Verb::refused, error.what()));
            } catch (...) {}
        }
    }
}

SocketAddress hand_into(pid_t pid, const SocketAddress& address, const std::string& path,
                        std::chrono::milliseconds timeout) {
    if (path.empty() || path[0] != '/')
        throw InputError(fmt::format("--socket {}: must be an absolute path", path));
    // The target's root, as the kernel resolves it: its mount namespace and chroot, whatever ours is.
    std::string through_proc = fmt::format("/proc/{}/root{}", pid, path);
    Fd listener = bind_socket(address);
    SocketAddress bound = SocketAddress::of_socket(listener.get());
    Fd socket = connect_seqpacket(through_proc);
    int fd = listener.get();
    send_text(socket.get(), protocol::format(protocol::Verb::offer, bound.to_string()),
              std::span<const int>(&fd, 1));
    auto [reply, fds] = receive_reply(socket.get(), 0, timeout, through_proc);
    if (reply.verb == protocol::Verb::refused)
        throw RefusedError(fmt::format("pid {} refused {}: {}", pid, bound.to_string(), reply.argument));
    if (reply.verb != protocol::Verb::ok)
        throw std::runtime_error(fmt::format("{}: unexpected answer", through_proc));
    return bound;
}

}  // namespace ktricks::jail
