// Tour stop "netwatch": a veth pair in a scratch network namespace, a rule on link-down, the peer
// toggled a few times; the time from `ip link set` to the event and to the rule's script, measured.
#include <sys/resource.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <thread>

#include "ktricks/core/fd.hpp"
#include "ktricks/netlink.hpp"
#include "ktricks/netwatch.hpp"
#include "tour/support.hpp"

namespace ktricks::tour {
namespace {

// iproute2's ip, its output in the stop's log.
class Ip {
public:
    explicit Ip(const OutputLog& output)
        : program_(find_program("ip").value_or("ip")), output_(output.path()) {}
    void operator()(const std::vector<std::string>& args) const {
        std::vector<std::string> argv{program_};
        argv.insert(argv.end(), args.begin(), args.end());
        if (!run_quiet(argv, std::chrono::seconds(10), output_))
            throw std::runtime_error(fmt::format("ip {} failed", fmt::join(args, " ")));
    }

private:
    std::string program_;
    std::filesystem::path output_;
};

// The scratch namespace, deleted (with the veth pair in it) whatever happens.
struct ScratchNetns {
    const Ip& ip;
    std::string name = fmt::format("ktricks-tour-{}", ::getpid());
    explicit ScratchNetns(const Ip& run_ip) : ip(run_ip) { ip({"netns", "add", name}); }
    ~ScratchNetns() {
        try {
            ip({"netns", "del", name});
        } catch (...) {}
    }
};

// How often the calling thread blocked (voluntary context switches) and the CPU it used.
struct ThreadUsage {
    long wakeups = 0;
    double cpu_ms = 0;
};
ThreadUsage thread_usage() {
    rusage usage{};
    ::getrusage(RUSAGE_THREAD, &usage);
    auto ms = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) * 1000 + static_cast<double>(t.tv_usec) / 1000;
    };
    return {usage.ru_nvcsw, ms(usage.ru_utime) + ms(usage.ru_stime)};
}

void run_stop(TourLog& log) {
    TempDir dir("netwatch");
    OutputLog output(log, dir / "ip.log");
    Ip ip(output);
    ScratchNetns netns(ip);
    ip({"-n", netns.name, "link", "add", "va", "type", "veth", "peer", "name", "vb"});
    ip({"-n", netns.name, "link", "set", "va", "up"});
    ip({"-n", netns.name, "link", "set", "vb", "up"});
    std::string stamp = (dir / "stamps").string();
    log.say(
        fmt::format("Namespace {} holds veth va <-> vb. Rule: on link-down,iface=va run 'date +%s%N >> {}'.",
                    netns.name, stamp));

    std::mutex mutex;
    std::vector<Clock::time_point> seen;  // when netwatch had the link-down event of va
    std::atomic<bool> ready{false};
    netwatch::WatchOptions options;
    options.rules.push_back(netwatch::parse_inline_rule("link-down,iface=va", "date +%s%N >> " + stamp, 1));
    options.wifi = false;
    const auto duration = std::chrono::milliseconds(3500);
    netwatch::Callbacks callbacks;
    callbacks.on_event = [&](const netwatch::NetEvent& event) {
        if (event.initial) return;
        if (event.type == "link-down" && event.iface == "va") {
            std::lock_guard lock(mutex);
            seen.push_back(Clock::now());
        }
    };
    Fd netns_fd = netlink::open_netns(netns.name);
    std::exception_ptr failure;
    ThreadUsage used;
    // Ends by itself when `duration` has passed.
    std::jthread watcher([&] {
        try {
            netlink::run_in_netns(netns_fd.get(), netns.name, [&] {
                callbacks.on_event = [&, inner = callbacks.on_event](const netwatch::NetEvent& event) {
                    ready = true;
                    inner(event);
                };
                auto before = thread_usage();
                EventLoop loop;
                netwatch::Watcher watch(loop, options, callbacks);
                loop.add_timer(duration, [&] { loop.stop(); });
                watch.start();
                loop.run();
                auto after = thread_usage();
                used = {after.wakeups - before.wakeups, after.cpu_ms - before.cpu_ms};
            });
        } catch (...) {
            failure = std::current_exception();
        }
    });
    // The initial events arrive right after the watcher subscribed and dumped.
    wait_for([&] { return ready.load(); }, std::chrono::seconds(3));

    constexpr int toggles = 5;
    std::vector<double> to_event, to_script;
    for (int i = 0; i < toggles; ++i) {
        auto t0 = Clock::now();
        auto wall0 = std::chrono::system_clock::now();
        ip({"-n", netns.name, "link", "set", "vb", "down"});
        // The script's own clock reading, not when we notice its line, is the time it ran.
        auto script_ran = [&] {
            std::ifstream file(stamp);
            std::string line, last;
            std::size_t lines = 0;
            while (std::getline(file, line)) ++lines, last = line;
            if (lines != static_cast<std::size_t>(i + 1)) return false;
            auto wall1 = std::chrono::system_clock::time_point(std::chrono::nanoseconds(std::stoll(last)));
            to_script.push_back(to_ms(wall1 - wall0));
            return true;
        };
        wait_for(script_ran, std::chrono::seconds(2));
        {
            std::lock_guard lock(mutex);
            if (seen.size() == static_cast<std::size_t>(i + 1)) to_event.push_back(to_ms(seen.back() - t0));
        }
        ip({"-n", netns.name, "link", "set", "vb", "up"});
        std::this_thread::sleep_for(std::chrono::milliseconds(150));
    }
    watcher.join();
    if (failure) std::rethrow_exception(failure);
    log.say(fmt::format(
        "Toggled vb down/up {} times; netwatch saw va lose its carrier {} times and ran the rule {} times.",
        toggles, to_event.size(), to_script.size()));
    if (to_event.size() != toggles || to_script.size() != toggles) {
        log.failed("not every toggle produced its event and its script run");
        return;
    }
    log.measured("ip link set -> link-down event (median)", format_ms(percentile(to_event, 0.5)));
    log.measured("ip link set -> script ran (median)", format_ms(percentile(to_script, 0.5)));
    // A poll would wake the watcher on a schedule whether or not anything happened.
    constexpr auto poll = std::chrono::milliseconds(10);
    long poll_wakeups = static_cast<long>(duration / poll);
    log.measured(
        fmt::format("watching thread over {}, with the toggles and rule runs", format_ms(to_ms(duration))),
        fmt::format("{} wake-ups, {} of CPU (a {} ms poll alone would wake {} times)", used.wakeups,
                    format_ms(used.cpu_ms), poll.count(), poll_wakeups));
    if (used.wakeups < poll_wakeups / 2)
        log.say(
            "It slept in the kernel between events: rtnetlink multicast wakes it when something changes, not on a schedule.");
    else
        log.say("It woke about as often as a poll would: the events alone do not explain its wake-ups.");
}

}  // namespace

TourStop netwatch_stop() {
    return {"netwatch", "network events run scripts without polling (a veth in a scratch namespace)",
            []() -> std::optional<std::string> {
                if (::geteuid() != 0) return "needs root (network namespaces)";
                if (!find_program("ip")) return "needs iproute2's ip";
                return std::nullopt;
            },
            run_stop};
}

}  // namespace ktricks::tour
