// Tour stop "once": a real holder process, a second instance, a message, twenty racing starters,
// and the takeover after SIGKILL, timed.
#include <signal.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <barrier>
#include <fstream>
#include <thread>

#include "ktricks/core/child.hpp"
#include "ktricks/core/proc.hpp"
#include "ktricks/once.hpp"
#include "tour/support.hpp"

namespace ktricks::tour {
namespace {

// The listening socket's line in /proc/net/unix (flags 00010000 = __SO_ACCEPTCON); accepted
// connections carry the name too, so match the listener only.
std::optional<std::string> proc_net_unix_line(const once::LockName& name) {
    for (const auto& entry : read_proc_net_unix())
        if (entry.path == name.socket_name() && entry.flags == 0x10000)
            return fmt::format("flags {:08x} type {} state {:02x} inode {} {}", entry.flags, entry.type,
                               entry.state, entry.inode, entry.path);
    return std::nullopt;
}

// A holder as users start it: `ktricks once NAME --inbox -- sleep 60`, in its own process group so
// the whole job can be killed at once.
Child start_holder(const once::LockName& name) {
    SpawnOptions spawn;
    spawn.argv = {ktricks_program(), "once", "--inbox", name.name(), "--", "sleep", "60"};
    spawn.new_process_group = true;
    Child holder = Child::spawn(spawn);
    auto holds = [&] {
        auto found = once::find_holder(name);
        return found && found->pid == holder.pid();
    };
    if (!wait_for(holds, std::chrono::seconds(5)))
        throw std::runtime_error("the holder process did not take the lock within 5 s");
    return holder;
}

void kill_job(Child& holder) {
    ::kill(-holder.pid(), SIGKILL);  // the once process and its command together
    holder.wait();
}

void run_stop(TourLog& log) {
    auto name = once::LockName::make(fmt::format("tour-{}", ::getpid()));
    log.say(fmt::format("Lock \"{}\" is the abstract unix socket {}: no file, anywhere.", name.name(),
                        name.socket_name()));

    constexpr int rounds = 2000;
    std::vector<double> acquire_ms;
    for (int i = 0; i < rounds; ++i) {
        auto start = Clock::now();
        auto lock = once::Lock::try_acquire(name);
        lock.reset();
        acquire_ms.push_back(ms_since(start));
    }
    log.measured(fmt::format("acquire + release, median of {}", rounds),
                 format_ms(percentile(acquire_ms, 0.5)));

    Child holder = start_holder(name);
    auto found = once::find_holder(name);
    log.say(fmt::format("Started `{}`.", shell_join(found->command)));
    log.say(
        fmt::format("The kernel names the holder (SO_PEERCRED): pid {}, uid {}.", found->pid, found->uid));
    if (auto line = proc_net_unix_line(name)) log.say(fmt::format("/proc/net/unix: {}", *line));
    if (once::Lock::try_acquire(name)) log.failed("a second instance got the lock while it was held");
    else
        log.say(
            fmt::format("A second instance is refused: {} is held by {}.", name.name(), found->describe()));

    std::vector<double> send_ms;
    for (int i = 0; i < 20; ++i) {
        auto start = Clock::now();
        auto delivery =
            once::send(name, {"open", fmt::format("file-{}.txt", i)}, false, std::chrono::seconds(5));
        send_ms.push_back(ms_since(start));
        if (delivery != once::Delivery::delivered)
            log.failed(fmt::format("message {} was {}", i, once::to_string(delivery)));
    }
    log.measured("message to the running instance's inbox, round trip (median of 20)",
                 format_ms(percentile(send_ms, 0.5)));
    kill_job(holder);

    constexpr int starters = 20;
    std::atomic<int> winners = 0;
    std::barrier start_line(starters);
    std::vector<std::optional<once::Lock>> held(starters);
    {
        std::vector<std::jthread> threads;
        for (int i = 0; i < starters; ++i)
            threads.emplace_back([&, i] {
                start_line.arrive_and_wait();
                held[i] = once::Lock::try_acquire(name);
                if (held[i]) ++winners;
            });
    }
    held.clear();
    log.measured(fmt::format("{} starters racing for the lock, winners", starters),
                 fmt::format("{}", winners.load()));
    if (winners != 1) log.failed("exactly one starter must win");

    constexpr int takeovers = 10;
    std::vector<double> takeover_ms;
    for (int i = 0; i < takeovers; ++i) {
        Child victim = start_holder(name);
        Clock::time_point acquired{};
        std::jthread waiter([&] {
            if (once::Lock::acquire(name, std::chrono::seconds(5))) acquired = Clock::now();
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(30));  // let the waiter connect and sleep
        auto killed = Clock::now();
        kill_job(victim);
        waiter.join();
        if (acquired == Clock::time_point{}) {
            log.failed("the waiter did not get the lock within 5 s of the holder's death");
            return;
        }
        takeover_ms.push_back(to_ms(acquired - killed));
    }
    log.measured(
        fmt::format("holder killed with SIGKILL -> waiter holds the lock (median of {}, max)", takeovers),
        fmt::format("{}, {}", format_ms(percentile(takeover_ms, 0.5)),
                    format_ms(percentile(takeover_ms, 1.0))));
    if (proc_net_unix_line(name)) log.failed("the name is still bound after every holder is gone");
    else
        log.say("Every holder is gone and so is the name: nothing to clean up, no lock file left behind.");
}

}  // namespace

TourStop once_stop() {
    return {"once", "single-instance lock on an abstract unix socket",
            [] { return std::optional<std::string>(); }, run_stop};
}

}  // namespace ktricks::tour
