// Upgrader: the generation's side of `serve --handoff`.
//
// Channels (all SOCK_SEQPACKET socketpairs made by serve, so every message is one record and
// descriptors ride with their own record):
//   KTRICKS_HANDOFF_FD          to serve: we send "hello" (we can hand over); serve sends
//                               "upgrade" + the successor's socket when the successor is ready.
//   KTRICKS_HANDOFF_INHERIT_FD  from our predecessor: one record per connection, 'C' + state, with
//                               the connection's descriptor; end of stream when it is done.
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <array>
#include <charconv>
#include <cstring>
#include <span>

#include "handoff/protocol.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/scm_rights.hpp"
#include "ktricks/core/service.hpp"

namespace ktricks::handoff {
namespace {

constexpr std::size_t max_state = 64 * 1024;

// An inherited descriptor number from the environment; -1 if unset or not an open descriptor.
int fd_from_environment(const char* key) {
    const char* text = ::getenv(key);
    int fd = -1;
    if (!text) return -1;
    auto [end, error] = std::from_chars(text, text + std::strlen(text), fd);
    if (error != std::errc() || *end || fd < 3) fd = -1;
    ::unsetenv(key);
    if (fd >= 0) set_cloexec(fd);  // ours, not our children's
    return fd;
}

bool would_block(const std::system_error& error) {
    return error.code().value() == EAGAIN || error.code().value() == EWOULDBLOCK;
}

}  // namespace

struct Upgrader::State {
    std::vector<Listener> listeners;
    std::string notify_socket;
    Fd channel, inherit, successor;
    bool ready_sent = false;
};

Upgrader::Upgrader(std::unique_ptr<State> state) : state_(std::move(state)) {}
Upgrader::Upgrader(Upgrader&&) noexcept = default;
Upgrader& Upgrader::operator=(Upgrader&&) noexcept = default;
Upgrader::~Upgrader() = default;

Upgrader Upgrader::from_environment() {
    auto state = std::make_unique<State>();
    auto names = detail::parse_listen_environment(::getenv("LISTEN_FDS"), ::getenv("LISTEN_PID"),
                                                  ::getenv("LISTEN_FDNAMES"), ::getpid());
    for (const char* key : {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"}) ::unsetenv(key);
    if (names)
        for (std::size_t i = 0; i < names->size(); ++i) {
            int fd = 3 + static_cast<int>(i);
            set_cloexec(fd);
            state->listeners.push_back({(*names)[i], Fd(fd)});
        }
    if (const char* notify = ::getenv("NOTIFY_SOCKET")) state->notify_socket = notify;
    ::unsetenv("NOTIFY_SOCKET");
    state->channel = Fd(fd_from_environment("KTRICKS_HANDOFF_FD"));
    state->inherit = Fd(fd_from_environment("KTRICKS_HANDOFF_INHERIT_FD"));
    if (state->channel) {
        set_nonblocking(state->channel.get());
        if (::send(state->channel.get(), detail::hello_message.data(), detail::hello_message.size(),
                   MSG_NOSIGNAL) < 0)
            state->channel.reset();  // serve is gone: nothing will ask us to hand over
    }
    if (state->inherit) set_nonblocking(state->inherit.get());
    return Upgrader(std::move(state));
}

Fd Upgrader::listener(const SocketAddress& address) {
    for (auto& inherited : state_->listeners) {
        if (!inherited.fd) continue;
        try {
            if (SocketAddress::of_socket(inherited.fd.get()) == address) return std::move(inherited.fd);
        } catch (const std::exception&) {}
    }
    return bind_socket(address);
}

int Upgrader::inherit_fd() const noexcept { return state_->inherit.get(); }
int Upgrader::upgrade_fd() const noexcept { return state_->channel.get(); }

std::optional<Connection> Upgrader::receive_connection() {
    if (!state_->inherit) return std::nullopt;
    std::vector<std::byte> buffer(max_state + 1);
    ReceivedMessage message;
    try {
        message = recv_fds(state_->inherit.get(), buffer, 1);
    } catch (const std::system_error& error) {
        if (would_block(error)) return std::nullopt;
        throw;
    }
    if (message.size == 0 && message.fds.empty()) {  // the predecessor finished (or died)
        state_->inherit.reset();
        return std::nullopt;
    }
    if (message.fds.size() != 1 || message.size < 1 || static_cast<char>(buffer[0]) != detail::connection_tag)
        throw InputError(fmt::format("handoff: malformed connection record ({} bytes, {} fds)", message.size,
                                     message.fds.size()));
    Connection connection;
    connection.fd = std::move(message.fds[0]);
    connection.state.assign(reinterpret_cast<const char*>(buffer.data()) + 1, message.size - 1);
    return connection;
}

void Upgrader::ready() {
    if (state_->ready_sent || state_->notify_socket.empty()) return;
    notify_socket_send(state_->notify_socket, "READY=1");
    state_->ready_sent = true;
}

bool Upgrader::upgrade_requested() {
    if (!state_->channel) return false;
    std::array<std::byte, 64> buffer;
    ReceivedMessage message;
    try {
        message = recv_fds(state_->channel.get(), buffer, 1);
    } catch (const std::system_error& error) {
        if (would_block(error)) return false;
        throw;
    }
    if (message.size == 0 && message.fds.empty()) {  // serve is gone
        state_->channel.reset();
        return false;
    }
    std::string_view text(reinterpret_cast<const char*>(buffer.data()), message.size);
    if (text != detail::upgrade_message || message.fds.size() != 1) return false;
    state_->successor = std::move(message.fds[0]);
    set_nonblocking(state_->successor.get(), false);  // the successor reads as fast as it can; wait for it
    return true;
}

void Upgrader::hand_over(Fd connection, std::string_view state) {
    if (!state_->successor)
        throw std::logic_error("Upgrader::hand_over before upgrade_requested() returned true");
    if (state.size() > max_state)
        throw InputError(
            fmt::format("Upgrader::hand_over: state of {} bytes; at most {}", state.size(), max_state));
    std::string record(1, detail::connection_tag);
    record.append(state);
    std::array<int, 1> fds{connection.get()};
    send_fds(state_->successor.get(), std::as_bytes(std::span(record)), fds);
}

void Upgrader::finish() { state_->successor.reset(); }

}  // namespace ktricks::handoff
