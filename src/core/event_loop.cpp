#include "ktricks/core/event_loop.hpp"

#include <signal.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <array>
#include <string>
#include <vector>

#include "ktricks/core/error.hpp"

namespace ktricks {

struct EventLoop::Source {
    enum class Kind { fd, signal, timer, child } kind;
    int fd = -1;
    Fd owned;  // signalfd / timerfd
    FdCallback on_fd;
    SignalCallback on_signal;
    TimerCallback on_timer;
    ChildCallback on_child;
    sigset_t unblock_on_remove;  // the signals that were not blocked before we blocked them
    bool repeating = false;
};

EventLoop::EventLoop() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
    if (!epoll_) throw_errno("epoll_create1");
}

EventLoop::~EventLoop() {
    std::vector<SourceId> ids;
    for (auto& [id, source] : sources_) ids.push_back(id);
    for (auto id : ids) remove(id);
}

EventLoop::SourceId EventLoop::add_source(std::unique_ptr<Source> source, int fd, std::uint32_t events) {
    SourceId id = next_id_++;
    epoll_event event{};
    event.events = events;
    event.data.u64 = id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) < 0)
        throw_errno("epoll_ctl(ADD)", fmt::format("fd {}", fd));
    source->fd = fd;
    sources_.emplace(id, std::move(source));
    return id;
}

EventLoop::SourceId EventLoop::add_fd(int fd, std::uint32_t events, FdCallback callback) {
    auto source = std::make_unique<Source>();
    source->kind = Source::Kind::fd;
    source->on_fd = std::move(callback);
    return add_source(std::move(source), fd, events);
}

void EventLoop::modify_fd(SourceId id, std::uint32_t events) {
    auto it = sources_.find(id);
    if (it == sources_.end()) return;
    epoll_event event{};
    event.events = events;
    event.data.u64 = id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, it->second->fd, &event) < 0)
        throw_errno("epoll_ctl(MOD)", fmt::format("fd {}", it->second->fd));
}

EventLoop::SourceId EventLoop::add_signal(int signal_number, SignalCallback callback) {
    return add_signals({signal_number}, std::move(callback));
}

EventLoop::SourceId EventLoop::add_signals(std::initializer_list<int> signal_numbers,
                                           SignalCallback callback) {
    sigset_t mask, previous;
    sigemptyset(&mask);
    for (int signal_number : signal_numbers) sigaddset(&mask, signal_number);
    std::string names;
    for (int signal_number : signal_numbers)
        names += (names.empty() ? "" : ",") + std::string(strsignal(signal_number));
    if (int error = ::pthread_sigmask(SIG_BLOCK, &mask, &previous))
        throw_error(error, "pthread_sigmask", names);
    auto source = std::make_unique<Source>();
    source->kind = Source::Kind::signal;
    sigemptyset(&source->unblock_on_remove);
    for (int signal_number : signal_numbers)
        if (!sigismember(&previous, signal_number)) sigaddset(&source->unblock_on_remove, signal_number);
    source->on_signal = std::move(callback);
    source->owned = Fd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!source->owned) {
        ::pthread_sigmask(SIG_UNBLOCK, &source->unblock_on_remove, nullptr);
        throw_errno("signalfd", names);
    }
    int fd = source->owned.get();
    return add_source(std::move(source), fd, EPOLLIN);
}

EventLoop::SourceId EventLoop::add_timer(std::chrono::nanoseconds delay, TimerCallback callback,
                                         std::optional<std::chrono::nanoseconds> interval) {
    auto source = std::make_unique<Source>();
    source->kind = Source::Kind::timer;
    source->on_timer = std::move(callback);
    source->repeating = interval.has_value();
    source->owned = Fd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!source->owned) throw_errno("timerfd_create");
    auto to_timespec = [](std::chrono::nanoseconds ns) {
        return timespec{static_cast<time_t>(ns.count() / 1'000'000'000),
                        static_cast<long>(ns.count() % 1'000'000'000)};
    };
    itimerspec spec{};
    // A zero it_value disarms a timerfd, so "now" is one nanosecond.
    spec.it_value = to_timespec(delay.count() > 0 ? delay : std::chrono::nanoseconds(1));
    if (interval) spec.it_interval = to_timespec(*interval);
    if (::timerfd_settime(source->owned.get(), 0, &spec, nullptr) < 0) throw_errno("timerfd_settime");
    int fd = source->owned.get();
    return add_source(std::move(source), fd, EPOLLIN);
}

EventLoop::SourceId EventLoop::add_child(int pidfd, ChildCallback callback) {
    auto source = std::make_unique<Source>();
    source->kind = Source::Kind::child;
    source->on_child = std::move(callback);
    return add_source(std::move(source), pidfd, EPOLLIN);
}

void EventLoop::remove(SourceId id) noexcept {
    auto it = sources_.find(id);
    if (it == sources_.end()) return;
    Source& source = *it->second;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, source.fd, nullptr);
    if (source.kind == Source::Kind::signal)
        ::pthread_sigmask(SIG_UNBLOCK, &source.unblock_on_remove, nullptr);
    sources_.erase(it);
}

void EventLoop::dispatch(SourceId id, Source& source, std::uint32_t events) {
    switch (source.kind) {
        case Source::Kind::fd: {
            auto callback = source.on_fd;  // the callback may remove (and so destroy) its own source
            callback(events);
            break;
        }
        case Source::Kind::signal: {
            auto callback = source.on_signal;
            int fd = source.owned.get();
            std::vector<signalfd_siginfo> pending;
            signalfd_siginfo info;
            while (::read(fd, &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info)))
                pending.push_back(info);
            for (const auto& one : pending) callback(one);
            break;
        }
        case Source::Kind::timer: {
            std::uint64_t expirations = 0;
            if (::read(source.owned.get(), &expirations, sizeof(expirations)) != sizeof(expirations)) break;
            auto callback = source.on_timer;
            // A one-shot timer is gone before its callback runs, so the callback may arm a new one.
            if (!source.repeating) remove(id);
            callback();
            break;
        }
        case Source::Kind::child: {
            auto callback = source.on_child;
            remove(id);  // a pidfd stays readable after exit: fire once
            callback();
            break;
        }
    }
}

int EventLoop::run_once(std::optional<std::chrono::milliseconds> timeout) {
    std::array<epoll_event, 32> events;
    int ready = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()),
                             timeout ? static_cast<int>(timeout->count()) : -1);
    if (ready < 0) {
        if (errno == EINTR) return 0;
        throw_errno("epoll_wait");
    }
    int ran = 0;
    for (int i = 0; i < ready; ++i) {
        // Look the id up again for every event: an earlier callback may have removed this source.
        auto it = sources_.find(events[i].data.u64);
        if (it == sources_.end()) continue;
        dispatch(it->first, *it->second, events[i].events);
        ++ran;
    }
    return ran;
}

void EventLoop::run() {
    stopped_ = false;
    while (!stopped_) run_once(std::nullopt);
}

}  // namespace ktricks
