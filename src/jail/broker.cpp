// The broker, outside the jail: binds what the allow-list permits, in our network namespace, and
// passes it in. A bad request, a refused one or a peer that vanishes costs that peer its answer
// and nothing else.
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <map>
#include <span>

#include "jail/protocol.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/scm_rights.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/jail.hpp"

namespace ktricks::jail {

struct Broker::State {
    std::vector<AllowRule> allow;
    bool verbose = true;
    Fd socket;
    struct Peer {
        Fd fd;
        EventLoop::SourceId source = 0;
    };
    std::map<int, Peer> peers;
    EventLoop* loop = nullptr;  // set by serve()
    EventLoop::SourceId listener_source = 0;
    // The caller's loop outlives the broker: its sources go with it.
    ~State() {
        if (!loop) return;
        loop->remove(listener_source);
        for (auto& [fd, peer] : peers) loop->remove(peer.source);
    }
};

Broker::Broker(std::vector<AllowRule> allow, bool verbose) : state_(std::make_unique<State>()) {
    state_->allow = std::move(allow);
    state_->verbose = verbose;
    state_->socket = Fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!state_->socket) throw_errno("socket", "(broker)");
}
Broker::Broker(Broker&&) noexcept = default;
Broker& Broker::operator=(Broker&&) noexcept = default;
Broker::~Broker() = default;
int Broker::socket_fd() const noexcept { return state_->socket.get(); }

Broker::Answer Broker::answer(std::string_view request) const {
    using protocol::Verb;
    Answer answer;
    try {
        auto message = protocol::parse(request);
        if (message.verb != Verb::listen)
            throw InputError(fmt::format("the broker only answers \"listen ADDRESS\""));
        SocketAddress address = protocol::parse_address(message);
        bool allowed = false;
        for (const auto& rule : state_->allow) allowed = allowed || rule.allows(address);
        if (!allowed) {
            answer.reply = protocol::format(Verb::refused,
                                            fmt::format("{} is not in the allow-list", address.to_string()));
            return answer;
        }
        answer.socket = bind_socket(address);
        answer.reply = protocol::format(Verb::ok, SocketAddress::of_socket(answer.socket.get()).to_string());
    } catch (const std::exception& error) {
        answer.socket.reset();
        answer.reply = protocol::format(Verb::refused, error.what());
    }
    return answer;
}

void Broker::serve(EventLoop& loop) {
    State* state = state_.get();
    auto drop = [state, &loop](int fd) {
        auto found = state->peers.find(fd);
        if (found == state->peers.end()) return;
        loop.remove(found->second.source);
        state->peers.erase(found);
    };
    auto on_request = [this, state, drop](int fd) {
        char buffer[protocol::max_message + 1];
        ssize_t got = ::recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (got <= 0) return drop(fd);
        std::string_view request(buffer, static_cast<std::size_t>(got));
        Answer reply = answer(request);
        if (state->verbose)
            log_info("broker: \"{}\" -> {}", request.substr(0, 128),
                     reply.reply);  // log_line escapes control bytes
        try {
            auto bytes = std::as_bytes(std::span(reply.reply.data(), reply.reply.size()));
            int socket = reply.socket.get();
            send_fds(fd, bytes, reply.socket ? std::span<const int>(&socket, 1) : std::span<const int>());
        } catch (const std::exception& error) {
            if (state->verbose) log_warning("broker: reply lost: {}", error.what());
            drop(fd);
        }
    };
    state->loop = &loop;
    state->listener_source =
        loop.add_fd(state->socket.get(), EPOLLIN, [state, &loop, on_request](std::uint32_t) {
            while (true) {
                int fd = ::accept4(state->socket.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0) return;  // EAGAIN, or a connection that died before we took it
                auto& peer = state->peers[fd];
                peer.fd = Fd(fd);
                peer.source = loop.add_fd(fd, EPOLLIN, [fd, on_request](std::uint32_t) { on_request(fd); });
            }
        });
}

}  // namespace ktricks::jail
