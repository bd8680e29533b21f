// The broker, outside the jail: binds what the allow-list permits, in our network namespace, and
// passes it in. A bad request, a refused one or a peer that vanishes costs that peer its answer
// and nothing else. The policy (allow-list, kept sockets) is a Grants object that siblings (one
// broker socket per jail of `serve --jail`) and the bind interceptor share.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <map>
#include <span>

#include "jail/grants.hpp"
#include "jail/protocol.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/scm_rights.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/jail.hpp"

namespace ktricks::jail {

int Grants::grant(const SocketAddress& address, bool v6_only, std::string& refusal) {
    bool allowed = false;
    for (const auto& rule : allow_) allowed = allowed || rule.allows(address);
    if (!allowed) {
        refusal = fmt::format("{} is not in the allow-list", address.to_string());
        return -1;
    }
    std::string key = fmt::format("{}{}", address.to_string(),
                                  address.family() == AF_INET6 && !v6_only ? " dual-stack" : "");
    if (address.port() != 0)
        if (auto kept = granted_.find(key); kept != granted_.end()) return kept->second.get();
    Fd socket;
    try {
        socket = bind_socket(address, BindOptions{.v6_only = v6_only});
    } catch (const std::exception& error) {
        refusal = error.what();
        return -1;
    }
    if (address.port() == 0) key = fmt::format("{} (port 0 #{})", key, granted_.size());
    return (granted_[key] = std::move(socket)).get();
}

struct Broker::State {
    std::shared_ptr<Grants> grants;
    Fd socket;
    struct Peer {
        Fd fd;
        EventLoop::SourceId source = 0;
    };
    std::map<int, Peer> peers;
    EventLoop* loop = nullptr;  // set by serve(), cleared by stop()
    EventLoop::SourceId source = 0;
    // The caller's loop outlives the broker: its sources go with it.
    ~State() {
        if (!loop) return;
        loop->remove(source);
        for (auto& [fd, peer] : peers) loop->remove(peer.source);
    }
};

namespace {

Fd broker_socket() {
    Fd socket(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!socket) throw_errno("socket", "(broker)");
    return socket;
}

}  // namespace

Broker::Broker(std::vector<AllowRule> allow, bool verbose) : state_(std::make_unique<State>()) {
    state_->grants = std::make_shared<Grants>(std::move(allow), verbose);
    state_->socket = broker_socket();
}
Broker::Broker(std::unique_ptr<State> state) : state_(std::move(state)) {}
Broker::Broker(Broker&&) noexcept = default;
Broker& Broker::operator=(Broker&&) noexcept = default;
Broker::~Broker() = default;
int Broker::socket_fd() const noexcept { return state_->socket.get(); }
std::shared_ptr<Grants> Broker::grants() const { return state_->grants; }

Broker Broker::sibling() const {
    auto state = std::make_unique<State>();
    state->grants = state_->grants;
    state->socket = broker_socket();
    return Broker(std::move(state));
}

void Broker::stop() noexcept {
    if (!state_ || !state_->loop) return;
    for (auto& [fd, peer] : state_->peers) state_->loop->remove(peer.source);
    state_->peers.clear();
    state_->loop->remove(std::exchange(state_->source, 0));
    state_->loop = nullptr;
}

Broker::Answer Broker::answer(std::string_view request) const {
    using protocol::Verb;
    Answer answer;
    try {
        auto message = protocol::parse(request);
        if (message.verb != Verb::listen)
            throw InputError(fmt::format("the broker only answers \"listen ADDRESS\""));
        SocketAddress address = protocol::parse_address(message);
        std::string refusal;
        int granted = state_->grants->grant(address, true, refusal);
        if (granted < 0) {
            answer.reply = protocol::format(Verb::refused, refusal);
            return answer;
        }
        answer.socket = Fd(::fcntl(granted, F_DUPFD_CLOEXEC, 0));
        if (!answer.socket) throw_errno("fcntl(F_DUPFD_CLOEXEC)", address.to_string());
        answer.reply = protocol::format(Verb::ok, SocketAddress::of_socket(answer.socket.get()).to_string());
    } catch (const std::exception& error) {
        answer.socket.reset();
        answer.reply = protocol::format(Verb::refused, error.what());
    }
    return answer;
}

void Broker::serve(EventLoop& loop) {
    State* state = state_.get();
    state->loop = &loop;
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
        if (state->grants->verbose())
            log_info("broker: \"{}\" -> {}", request.substr(0, 128),
                     reply.reply);  // log_line escapes control bytes
        try {
            auto bytes = std::as_bytes(std::span(reply.reply.data(), reply.reply.size()));
            int socket = reply.socket.get();
            send_fds(fd, bytes, reply.socket ? std::span<const int>(&socket, 1) : std::span<const int>());
        } catch (const std::exception& error) {
            if (state->grants->verbose()) log_warning("broker: reply lost: {}", error.what());
            drop(fd);
        }
    };
    state->source = loop.add_fd(state->socket.get(), EPOLLIN, [state, &loop, on_request](std::uint32_t) {
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
