// EventLoop: one epoll instance with four kinds of source, all delivered as callbacks on the thread
// that calls run():
//   - a file descriptor becoming readable/writable (add_fd)
//   - a signal (add_signal): the signal is blocked for the process and read from a signalfd, so it
//     arrives as an ordinary event instead of interrupting arbitrary code
//   - a timer (add_timer): a timerfd on CLOCK_MONOTONIC
//   - a child process exiting (add_child): its pidfd becomes readable when it exits
// Callbacks may add and remove sources, including their own, while the loop runs.
#pragma once

#include <sys/epoll.h>
#include <sys/signalfd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "ktricks/core/fd.hpp"

namespace ktricks {

// Seconds (from a flag or a config file) to the nearest millisecond, for timers and timeouts.
// std::chrono::round rather than std::llround: llround would be the front door's only libm symbol,
// and not linking libm saves mapping a shared object at every start (docs/architecture.md).
inline std::chrono::milliseconds round_to_ms(double seconds) {
    return std::chrono::round<std::chrono::milliseconds>(std::chrono::duration<double>(seconds));
}

class EventLoop {
public:
    using SourceId = std::uint64_t;
    using FdCallback = std::function<void(std::uint32_t epoll_events)>;
    using SignalCallback = std::function<void(const signalfd_siginfo&)>;
    using TimerCallback = std::function<void()>;
    using ChildCallback = std::function<void()>;

    EventLoop();
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // Watches `fd` (not owned) for `events` (EPOLLIN, EPOLLOUT, ...). One source per fd.
    SourceId add_fd(int fd, std::uint32_t events, FdCallback callback);
    void modify_fd(SourceId id, std::uint32_t events);

    // Blocks `signal_number` in the calling thread and delivers it here. The mask is restored when
    // the source is removed. Blocked signals are inherited by children: Child resets the mask.
    SourceId add_signal(int signal_number, SignalCallback callback);
    // The same for several signals on one signalfd.
    SourceId add_signals(std::initializer_list<int> signal_numbers, SignalCallback callback);

    // Fires once after `delay`, or every `interval` if one is given.
    SourceId add_timer(std::chrono::nanoseconds delay, TimerCallback callback,
                       std::optional<std::chrono::nanoseconds> interval = std::nullopt);

    // Fires once when the process behind `pidfd` (not owned) exits. The callback reaps it.
    SourceId add_child(int pidfd, ChildCallback callback);

    // Removing an unknown or already removed id is a no-op.
    void remove(SourceId id) noexcept;

    // Dispatches events until stop() is called. Exceptions from callbacks propagate out of run().
    void run();
    // Waits at most `timeout` (forever if nullopt) and dispatches what is ready; returns the number
    // of callbacks run.
    int run_once(std::optional<std::chrono::milliseconds> timeout);
    void stop() noexcept { stopped_ = true; }
    bool stopped() const noexcept { return stopped_; }

private:
    struct Source;
    SourceId add_source(std::unique_ptr<Source> source, int fd, std::uint32_t events);
    void dispatch(SourceId id, Source& source, std::uint32_t events);

    Fd epoll_;
    SourceId next_id_ = 1;
    std::map<SourceId, std::unique_ptr<Source>> sources_;
    bool stopped_ = false;
};

}  // namespace ktricks
