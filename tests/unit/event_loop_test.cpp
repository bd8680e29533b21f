// EventLoop: fd, timer, signal and child sources on a real epoll instance.
#include "ktricks/core/event_loop.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <iterator>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "ktricks/core/child.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "test_support.hpp"

namespace ktricks {
namespace {

using namespace std::chrono_literals;
using namespace test_support;
using Clock = std::chrono::steady_clock;

// A pipe with both ends non-blocking.
struct NonblockingPipe : Pipe {
    NonblockingPipe() : Pipe(O_CLOEXEC | O_NONBLOCK) {}
};

// The descriptor numbers open in this process right now.
std::set<int> open_fds() {
    auto fds = fds_listed_in("/proc/self/fd");
    // The iterator's own directory handle was open while listing; it is closed now.
    std::erase_if(fds, [](int fd) { return ::fcntl(fd, F_GETFD) < 0; });
    return fds;
}

bool signal_blocked(int signal_number) {
    sigset_t current;
    pthread_sigmask(SIG_SETMASK, nullptr, &current);
    return sigismember(&current, signal_number);
}

// A watchdog: if stop() did not work, run() ends by this exception (after 5 s) instead of hanging.
void add_watchdog(EventLoop& loop) {
    loop.add_timer(5s, [] { throw std::runtime_error("watchdog: run() did not stop"); });
}

// Runs the loop until `done` holds or `limit` passes; returns whether `done` held.
bool run_until(EventLoop& loop, const std::function<bool()>& done, std::chrono::milliseconds limit = 5000ms) {
    auto deadline = Clock::now() + limit;
    while (!done()) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left <= 0ms) return false;
        loop.run_once(left);
    }
    return true;
}

// ---- file descriptors ----

TEST(EventLoop, RunOnceWithNothingReadyTimesOutAndReturnsZero) {
    EventLoop loop;
    auto start = Clock::now();
    EXPECT_EQ(loop.run_once(20ms), 0);
    EXPECT_GE(Clock::now() - start, 15ms);
}

TEST(EventLoop, ReadableFdRunsItsCallbackWithTheEvents) {
    EventLoop loop;
    NonblockingPipe pipe;
    int calls = 0;
    std::uint32_t seen = 0;
    loop.add_fd(pipe.read_end.get(), EPOLLIN, [&](std::uint32_t events) {
        ++calls;
        seen = events;
        char c;
        EXPECT_EQ(::read(pipe.read_end.get(), &c, 1), 1);
    });
    EXPECT_EQ(loop.run_once(0ms), 0);
    pipe.write_byte();
    EXPECT_EQ(loop.run_once(1000ms), 1);
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(seen & EPOLLIN);
    EXPECT_EQ(loop.run_once(0ms), 0);  // drained: level-triggered readiness is gone
}

TEST(EventLoop, ModifyFdChangesTheEventsWatched) {
    EventLoop loop;
    NonblockingPipe pipe;
    int calls = 0;
    std::uint32_t seen = 0;
    auto id = loop.add_fd(pipe.write_end.get(), 0, [&](std::uint32_t events) {
        ++calls;
        seen = events;
    });
    EXPECT_EQ(loop.run_once(0ms), 0);
    loop.modify_fd(id, EPOLLOUT);
    EXPECT_EQ(loop.run_once(1000ms), 1);
    EXPECT_TRUE(seen & EPOLLOUT);
    loop.modify_fd(12345, EPOLLIN);  // unknown id: ignored
}

TEST(EventLoop, HangupIsReported) {
    EventLoop loop;
    NonblockingPipe pipe;
    std::uint32_t seen = 0;
    loop.add_fd(pipe.read_end.get(), EPOLLIN, [&](std::uint32_t events) { seen = events; });
    pipe.write_end.reset();
    EXPECT_EQ(loop.run_once(1000ms), 1);
    EXPECT_TRUE(seen & EPOLLHUP);
}

TEST(EventLoop, SecondSourceForTheSameFdIsRefusedNamingIt) {
    EventLoop loop;
    NonblockingPipe pipe;
    loop.add_fd(pipe.read_end.get(), EPOLLIN, [](std::uint32_t) {});
    try {
        loop.add_fd(pipe.read_end.get(), EPOLLIN, [](std::uint32_t) {});
        FAIL() << "second source for one fd accepted";
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), EEXIST);
        EXPECT_EQ(
            std::string(error.what()).rfind("epoll_ctl(ADD) fd " + std::to_string(pipe.read_end.get()), 0),
            0u)
            << error.what();
    }
}

TEST(EventLoop, RemovedFdSourceNoLongerFires) {
    EventLoop loop;
    NonblockingPipe pipe;
    int calls = 0;
    auto id = loop.add_fd(pipe.read_end.get(), EPOLLIN, [&](std::uint32_t) { ++calls; });
    loop.remove(id);
    loop.remove(id);      // removing twice is a no-op
    loop.remove(999999);  // so is an unknown id
    pipe.write_byte();
    EXPECT_EQ(loop.run_once(20ms), 0);
    EXPECT_EQ(calls, 0);
    // The fd can be watched again once removed.
    loop.add_fd(pipe.read_end.get(), EPOLLIN, [&](std::uint32_t) { ++calls; });
    EXPECT_EQ(loop.run_once(1000ms), 1);
    EXPECT_EQ(calls, 1);
}

TEST(EventLoop, SourceRemovedByAnEarlierCallbackInTheSameBatchDoesNotRun) {
    EventLoop loop;
    NonblockingPipe first, second;
    EventLoop::SourceId first_id = 0, second_id = 0;
    int calls = 0;
    // Whichever epoll reports first removes the other, which is ready in the same epoll_wait batch.
    first_id = loop.add_fd(first.read_end.get(), EPOLLIN, [&](std::uint32_t) {
        ++calls;
        loop.remove(second_id);
        loop.remove(first_id);
    });
    second_id = loop.add_fd(second.read_end.get(), EPOLLIN, [&](std::uint32_t) {
        ++calls;
        loop.remove(first_id);
        loop.remove(second_id);
    });
    first.write_byte();
    second.write_byte();
    EXPECT_EQ(loop.run_once(1000ms), 1);
    EXPECT_EQ(calls, 1);
}

TEST(EventLoop, FdCallbackMayRemoveItsOwnSource) {
    EventLoop loop;
    NonblockingPipe pipe;
    int calls = 0;
    EventLoop::SourceId id = 0;
    // The lambda's captures live in the source being destroyed: the loop must not run it from there.
    id = loop.add_fd(pipe.read_end.get(), EPOLLIN,
                     [&calls, &loop, &id, marker = std::string(100, 'm')](std::uint32_t) {
                         loop.remove(id);
                         ++calls;
                         EXPECT_EQ(marker.size(), 100u);
                     });
    pipe.write_byte();
    EXPECT_EQ(loop.run_once(1000ms), 1);
    EXPECT_EQ(loop.run_once(20ms), 0);
    EXPECT_EQ(calls, 1);
}

// ---- timers ----

TEST(EventLoopTimer, OneShotFiresOnceAfterItsDelay) {
    EventLoop loop;
    int calls = 0;
    auto start = Clock::now();
    loop.add_timer(20ms, [&] { ++calls; });
    ASSERT_TRUE(run_until(loop, [&] { return calls > 0; }));
    EXPECT_GE(Clock::now() - start, 20ms);
    EXPECT_EQ(loop.run_once(60ms), 0);
    EXPECT_EQ(calls, 1);
}

TEST(EventLoopTimer, ZeroDelayFiresAtOnce) {
    EventLoop loop;
    int calls = 0;
    loop.add_timer(0ns, [&] { ++calls; });
    ASSERT_TRUE(run_until(
        loop, [&] { return calls > 0; }, 1000ms));
    EXPECT_EQ(calls, 1);
}

TEST(EventLoopTimer, IntervalRepeatsUntilRemoved) {
    EventLoop loop;
    int calls = 0;
    auto id = loop.add_timer(
        1ms, [&] { ++calls; }, 5ms);
    ASSERT_TRUE(run_until(loop, [&] { return calls >= 3; }));
    loop.remove(id);
    int at_removal = calls;
    EXPECT_EQ(loop.run_once(30ms), 0);
    EXPECT_EQ(calls, at_removal);
}

TEST(EventLoopTimer, IntervalCallbackMayRemoveItsOwnSource) {
    EventLoop loop;
    int calls = 0;
    EventLoop::SourceId id = 0;
    id = loop.add_timer(
        1ms,
        [&] {
            if (++calls == 2) loop.remove(id);
        },
        2ms);
    ASSERT_TRUE(run_until(loop, [&] { return calls == 2; }));
    EXPECT_EQ(loop.run_once(30ms), 0);
    EXPECT_EQ(calls, 2);
}

TEST(EventLoopTimer, OneShotCallbackMayRemoveItsAlreadyRemovedSource) {
    EventLoop loop;
    int calls = 0;
    EventLoop::SourceId id = 0;
    id = loop.add_timer(1ms, [&] {
        ++calls;
        loop.remove(id);
    });
    ASSERT_TRUE(run_until(loop, [&] { return calls == 1; }));
    EXPECT_EQ(loop.run_once(20ms), 0);
}

TEST(EventLoopTimer, CallbackMayAddANewTimer) {
    EventLoop loop;
    std::vector<int> fired;
    loop.add_timer(1ms, [&] {
        fired.push_back(1);
        loop.add_timer(1ms, [&] { fired.push_back(2); });
    });
    ASSERT_TRUE(run_until(loop, [&] { return fired.size() == 2; }));
    EXPECT_EQ(fired, (std::vector<int>{1, 2}));
    EXPECT_EQ(loop.run_once(20ms), 0);
}

TEST(EventLoopTimer, TimersFireInDeadlineOrder) {
    EventLoop loop;
    std::vector<int> fired;
    loop.add_timer(40ms, [&] { fired.push_back(40); });
    loop.add_timer(5ms, [&] { fired.push_back(5); });
    loop.add_timer(20ms, [&] { fired.push_back(20); });
    ASSERT_TRUE(run_until(loop, [&] { return fired.size() == 3; }));
    EXPECT_EQ(fired, (std::vector<int>{5, 20, 40}));
}

TEST(EventLoopTimer, RemovedTimerNeverFires) {
    EventLoop loop;
    int calls = 0;
    auto id = loop.add_timer(5ms, [&] { ++calls; });
    loop.remove(id);
    EXPECT_EQ(loop.run_once(30ms), 0);
    EXPECT_EQ(calls, 0);
}

// ---- run() and stop() ----

TEST(EventLoopRun, StopFromACallbackEndsRun) {
    EventLoop loop;
    int ticks = 0;
    loop.add_timer(
        1ms,
        [&] {
            if (++ticks == 3) loop.stop();
        },
        1ms);
    add_watchdog(loop);
    EXPECT_NO_THROW(loop.run());
    EXPECT_TRUE(loop.stopped());
    EXPECT_EQ(ticks, 3);
}

TEST(EventLoopRun, RunCanBeStartedAgainAfterStop) {
    EventLoop loop;
    int rounds = 0;
    loop.add_timer(
        1ms,
        [&] {
            ++rounds;
            loop.stop();
        },
        1ms);
    add_watchdog(loop);
    loop.run();
    loop.run();
    EXPECT_EQ(rounds, 2);
}

TEST(EventLoopRun, ExceptionFromACallbackPropagatesOutOfRun) {
    EventLoop loop;
    loop.add_timer(1ms, [] { throw std::runtime_error("from callback"); });
    try {
        loop.run();
        FAIL() << "run() returned";
    } catch (const std::runtime_error& error) {
        EXPECT_STREQ(error.what(), "from callback");
    }
}

// ---- signals ----

TEST(EventLoopSignal, RaisedSignalIsDeliveredAsACallback) {
    SignalMaskGuard mask;
    EventLoop loop;
    int calls = 0;
    signalfd_siginfo seen{};
    loop.add_signal(SIGUSR1, [&](const signalfd_siginfo& info) {
        ++calls;
        seen = info;
    });
    EXPECT_TRUE(signal_blocked(SIGUSR1));
    ASSERT_EQ(::raise(SIGUSR1), 0);
    ASSERT_TRUE(run_until(
        loop, [&] { return calls > 0; }, 1000ms));
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(seen.ssi_signo, static_cast<std::uint32_t>(SIGUSR1));
    EXPECT_EQ(seen.ssi_pid, static_cast<std::uint32_t>(::getpid()));
}

TEST(EventLoopSignal, TwoSignalsReachTheirOwnCallbacks) {
    SignalMaskGuard mask;
    EventLoop loop;
    int usr1 = 0, usr2 = 0;
    loop.add_signal(SIGUSR1, [&](const signalfd_siginfo&) { ++usr1; });
    loop.add_signal(SIGUSR2, [&](const signalfd_siginfo&) { ++usr2; });
    ::raise(SIGUSR2);
    ::raise(SIGUSR1);
    ASSERT_TRUE(run_until(
        loop, [&] { return usr1 && usr2; }, 1000ms));
    EXPECT_EQ(usr1, 1);
    EXPECT_EQ(usr2, 1);
}

TEST(EventLoopSignal, OneSourceForSeveralSignalsDeliversEachAndRestoresOnlyWhatItBlocked) {
    SignalMaskGuard mask;
    block_signal(SIGUSR2);
    EventLoop loop;
    std::vector<std::uint32_t> seen;
    auto id = loop.add_signals({SIGUSR1, SIGUSR2},
                               [&](const signalfd_siginfo& info) { seen.push_back(info.ssi_signo); });
    EXPECT_TRUE(signal_blocked(SIGUSR1));
    ::raise(SIGUSR1);
    ::raise(SIGUSR2);
    ASSERT_TRUE(run_until(
        loop, [&] { return seen.size() == 2; }, 1000ms));
    EXPECT_NE(std::find(seen.begin(), seen.end(), static_cast<std::uint32_t>(SIGUSR1)), seen.end());
    EXPECT_NE(std::find(seen.begin(), seen.end(), static_cast<std::uint32_t>(SIGUSR2)), seen.end());
    loop.remove(id);
    EXPECT_FALSE(signal_blocked(SIGUSR1));
    EXPECT_TRUE(signal_blocked(SIGUSR2));  // it was blocked before the loop blocked it
}

TEST(EventLoopSignal, MaskIsRestoredWhenTheSourceIsRemoved) {
    SignalMaskGuard mask;
    ASSERT_FALSE(signal_blocked(SIGUSR1));
    EventLoop loop;
    auto id = loop.add_signal(SIGUSR1, [](const signalfd_siginfo&) {});
    EXPECT_TRUE(signal_blocked(SIGUSR1));
    loop.remove(id);
    EXPECT_FALSE(signal_blocked(SIGUSR1));
}

TEST(EventLoopSignal, SignalBlockedBeforehandStaysBlockedAfterRemove) {
    SignalMaskGuard mask;
    block_signal(SIGUSR2);
    EventLoop loop;
    auto id = loop.add_signal(SIGUSR2, [](const signalfd_siginfo&) {});
    loop.remove(id);
    EXPECT_TRUE(signal_blocked(SIGUSR2));
}

TEST(EventLoopSignal, DestroyingTheLoopRestoresTheMask) {
    SignalMaskGuard mask;
    {
        EventLoop loop;
        loop.add_signal(SIGUSR1, [](const signalfd_siginfo&) {});
        ASSERT_TRUE(signal_blocked(SIGUSR1));
    }
    EXPECT_FALSE(signal_blocked(SIGUSR1));
}

// ---- children ----

TEST(EventLoopChild, ChildExitRunsTheCallbackOnce) {
    EventLoop loop;
    auto child = Child::spawn(command({"true"}));
    int calls = 0;
    std::optional<ExitStatus> status;
    loop.add_child(child.pidfd(), [&] {
        ++calls;
        status = child.wait();
    });
    ASSERT_TRUE(run_until(loop, [&] { return calls > 0; }));
    ASSERT_TRUE(status);
    EXPECT_FALSE(status->signaled);
    EXPECT_EQ(status->code, 0);
    // The pidfd stays readable after exit; the source is gone so it does not fire again.
    EXPECT_EQ(loop.run_once(20ms), 0);
    EXPECT_EQ(calls, 1);
}

TEST(EventLoopChild, KilledChildIsReportedToo) {
    EventLoop loop;
    auto child = Child::spawn(command({"sleep", "30"}));
    std::optional<ExitStatus> status;
    loop.add_child(child.pidfd(), [&] { status = child.wait(); });
    EXPECT_EQ(loop.run_once(20ms), 0);
    ASSERT_TRUE(child.signal(SIGTERM));
    ASSERT_TRUE(run_until(loop, [&] { return status.has_value(); }));
    EXPECT_TRUE(status->signaled);
    EXPECT_EQ(status->code, SIGTERM);
}

// ---- resources ----

TEST(EventLoop, DestroyedLoopLeaksNoDescriptors) {
    SignalMaskGuard mask;
    int before = count_open_fds();
    {
        NonblockingPipe pipe;
        EventLoop loop;
        loop.add_fd(pipe.read_end.get(), EPOLLIN, [](std::uint32_t) {});
        loop.add_timer(1h, [] {});
        loop.add_timer(
            1ms, [] {}, 1h);
        loop.add_signal(SIGUSR1, [](const signalfd_siginfo&) {});
        auto child = Child::spawn(command({"true"}));
        loop.add_child(child.pidfd(), [&] { child.wait(); });
        loop.run_once(10ms);
        child.wait();
    }
    EXPECT_EQ(count_open_fds(), before);
}

TEST(EventLoop, RemovingSourcesClosesTheirDescriptors) {
    SignalMaskGuard mask;
    EventLoop loop;
    int before = count_open_fds();
    auto timer = loop.add_timer(1h, [] {});
    auto signal = loop.add_signal(SIGUSR2, [](const signalfd_siginfo&) {});
    EXPECT_EQ(count_open_fds(), before + 2);
    loop.remove(timer);
    loop.remove(signal);
    EXPECT_EQ(count_open_fds(), before);
}

TEST(EventLoop, ItsOwnDescriptorsAreCloexec) {
    SignalMaskGuard mask;
    auto before = open_fds();
    EventLoop loop;
    loop.add_timer(1h, [] {});
    loop.add_signal(SIGUSR1, [](const signalfd_siginfo&) {});
    auto after = open_fds();
    std::vector<int> added;
    std::set_difference(after.begin(), after.end(), before.begin(), before.end(), std::back_inserter(added));
    ASSERT_EQ(added.size(), 3u);  // epoll, timerfd, signalfd
    for (int fd : added) EXPECT_TRUE(is_cloexec(fd)) << "fd " << fd;
}

}  // namespace
}  // namespace ktricks
