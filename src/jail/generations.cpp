// `serve --jail`: the jail side of a supervisor that starts generation after generation.
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cstddef>
#include <optional>
#include <utility>

#include "jail/grants.hpp"
#include "jail/intercept.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/scm_rights.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/jail.hpp"

namespace ktricks::jail {
namespace {

// What one generation needs from spawn to exit.
struct Pending {
    std::optional<Broker> broker;
    Fd notify_ours, notify_theirs;
    std::vector<int> sockets;
    std::vector<InterceptListener> listeners;
};

// One generation's watchers on the supervisor's loop; destroyed when the generation is gone.
struct Watch {
    std::unique_ptr<Pending> pending;
    std::shared_ptr<Grants> grants;
    bool verbose = true;
    EventLoop* loop = nullptr;
    EventLoop::SourceId receive_source = 0;
    std::unique_ptr<BindInterceptor> interceptor;

    // The child sends its seccomp listener once its filter is loaded, before CMD runs; until we
    // answer, a bind() inside simply waits. A child that failed before that hangs up instead.
    void receive() {
        loop->remove(std::exchange(receive_source, 0));
        std::byte byte[1];
        try {
            auto received = recv_fds(pending->notify_ours.get(), byte, 1);
            if (received.fds.size() == 1) {
                interceptor = std::make_unique<BindInterceptor>(std::move(received.fds[0]), pending->sockets,
                                                                pending->listeners, verbose, grants);
                interceptor->serve(*loop);
            }
        } catch (const std::exception& error) {
            if (verbose) log_warning("no seccomp listener from the jail: {}", error.what());
        }
        pending->notify_ours.reset();
    }
    ~Watch() {
        if (receive_source) loop->remove(receive_source);
        if (interceptor) interceptor->stop();
        if (pending && pending->broker) pending->broker->stop();
    }
};

}  // namespace

struct GenerationJails::State {
    Options options;
    Sandbox sandbox;
    std::optional<Broker> broker;  // the first; every generation gets a sibling sharing its grants
    std::shared_ptr<Grants> grants;
    std::unique_ptr<Pending> pending;
};

GenerationJails::GenerationJails(const Options& options)
    : state_(std::make_unique<State>(State{options, Sandbox::prepare(options.sandbox), {}, {}, {}})) {
    if (options.sandbox.broker_path) {
        state_->broker.emplace(options.allow, options.verbose);
        state_->grants = state_->broker->grants();
    } else if (!options.allow.empty()) {
        if (!options.intercept_bind) throw InputError("--allow needs --broker PATH or --intercept-bind");
        state_->grants = std::make_shared<Grants>(options.allow, options.verbose);
    }
}
GenerationJails::~GenerationJails() = default;

void GenerationJails::prepare(SpawnOptions& spawn, const std::vector<Listener>& listeners,
                              int notify_relay_fd) {
    auto pending = std::make_unique<Pending>();
    if (state_->broker) pending->broker.emplace(state_->broker->sibling());
    if (state_->options.intercept_bind) {
        int pair[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
            throw_errno("socketpair", "(seccomp listener)");
        pending->notify_ours = Fd(pair[0]);
        pending->notify_theirs = Fd(pair[1]);
        for (const auto& listener : listeners) {
            if (listener.asked.family() != AF_INET && listener.asked.family() != AF_INET6) continue;
            pending->sockets.push_back(listener.fd);
            pending->listeners.push_back({SocketAddress::of_socket(listener.fd), listener.asked.port()});
        }
    }
    state_->sandbox.apply(spawn, pending->broker ? pending->broker->socket_fd() : -1,
                          pending->notify_theirs ? pending->notify_theirs.get() : -1, notify_relay_fd);
    state_->pending = std::move(pending);
}

std::shared_ptr<void> GenerationJails::watch(EventLoop& loop) {
    auto watch = std::make_shared<Watch>();
    watch->pending = std::move(state_->pending);
    if (!watch->pending) return nullptr;
    watch->grants = state_->grants;
    watch->verbose = state_->options.verbose;
    watch->loop = &loop;
    // The child has its copy (or is gone): ours would keep the pair from hanging up.
    watch->pending->notify_theirs.reset();
    if (watch->pending->broker) watch->pending->broker->serve(loop);
    if (watch->pending->notify_ours) {
        Watch* raw = watch.get();
        watch->receive_source =
            loop.add_fd(watch->pending->notify_ours.get(), EPOLLIN, [raw](std::uint32_t) { raw->receive(); });
    }
    return watch;
}

}  // namespace ktricks::jail
