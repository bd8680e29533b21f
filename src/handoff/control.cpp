// The client side of serve's control socket (`ktricks reload`).
#include <poll.h>
#include <sys/socket.h>

#include <fmt/format.h>

#include "handoff/protocol.hpp"
#include "ktricks/core/error.hpp"

namespace ktricks::handoff {
namespace {

// Sends one request line and reads the one-line answer; the whole exchange is bounded by `timeout`.
std::string exchange(const std::string& control_path, std::string_view request, milliseconds timeout) {
    SocketAddress address = control_path.starts_with("@")
                                ? SocketAddress::unix_abstract(control_path.substr(1))
                                : SocketAddress::unix_path(control_path);
    Fd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!socket) throw_errno("socket", control_path);
    if (::connect(socket.get(), address.sockaddr_ptr(), address.length()) < 0) {
        if (errno == ENOENT || errno == ECONNREFUSED)
            throw_errno("connect", fmt::format("{} (is `ktricks serve --control {}` running?)",
                                               printable(control_path), printable(control_path)));
        throw_errno("connect", printable(control_path));
    }
    std::string line = std::string(request) + "\n";
    if (::send(socket.get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size()))
        throw_errno("send", printable(control_path));
    std::string answer;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (answer.find('\n') == std::string::npos) {
        auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd readable{socket.get(), POLLIN, 0};
        int ready = left.count() > 0 ? ::poll(&readable, 1, static_cast<int>(left.count())) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0)
            throw_error(ETIMEDOUT, "reload",
                        fmt::format("{}: no answer within {} ms", printable(control_path), timeout.count()));
        char buffer[4096];
        ssize_t got = ::recv(socket.get(), buffer, sizeof(buffer), 0);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) throw_errno("recv", printable(control_path));
        if (got == 0) {
            if (answer.empty())
                throw_error(ECONNRESET, "recv",
                            fmt::format("{}: serve closed the connection without an answer",
                                        printable(control_path)));
            break;
        }
        answer.append(buffer, static_cast<std::size_t>(got));
        if (answer.size() > 65536)
            throw InputError(fmt::format("{}: answer too long", printable(control_path)));
    }
    return answer.substr(0, answer.find('\n'));
}

}  // namespace

ReloadResult request_reload(const std::string& control_path, milliseconds timeout) {
    return detail::parse_reload_answer(exchange(control_path, "reload", timeout));
}

std::string request_status(const std::string& control_path, milliseconds timeout) {
    return exchange(control_path, "status", timeout);
}

}  // namespace ktricks::handoff
