// Tour stop "netwatch": a veth pair in a scratch network namespace, a rule on link-down, the peer
// toggled a few times; the time from `ip link set` to the event and to the rule's script, measured.
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "cli/tour.hpp"
#include "ktricks/core/child.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/netlink.hpp"
#include "ktricks/netwatch.hpp"

namespace ktricks::cli {
namespace {

using Clock = std::chrono::steady_clock;

void ip(const std::vector<std::string>& args) {
    SpawnOptions spawn;
    spawn.argv = {"ip"};
    spawn.argv.insert(spawn.argv.end(), args.begin(), args.end());
    auto status = Child::spawn(spawn).wait();
    if (!status || status->code != 0 || status->signaled)
        throw std::runtime_error(fmt::format("ip {} failed", fmt::join(args, " ")));
}

// The scratch namespace, deleted (with the veth pair in it) whatever happens.
struct ScratchNetns {
    std::string name = fmt::format("ktricks-tour-{}", ::getpid());
    ScratchNetns() { ip({"netns", "add", name}); }
    ~ScratchNetns() {
        try {
            ip({"netns", "del", name});
        } catch (...) {
        }
    }
};

void run_stop(TourLog& log) {
    ScratchNetns netns;
    ip({"-n", netns.name, "link", "add", "va", "type", "veth", "peer", "name", "vb"});
    ip({"-n", netns.name, "link", "set", "va", "up"});
    ip({"-n", netns.name, "link", "set", "vb", "up"});
    std::string stamp = fmt::format("/tmp/ktricks-tour-netwatch-{}", ::getpid());
    log.say(fmt::format("Namespace {} holds veth va <-> vb. Rule: on link-down,iface=va run 'date +%s%N >> {}'.",
                        netns.name, stamp));

    std::mutex mutex;
    std::vector<Clock::time_point> seen;  // when netwatch had the link-down event of va
    std::atomic<bool> ready{false};
    netwatch::WatchOptions options;
    options.rules.push_back(netwatch::parse_inline_rule("link-down,iface=va", "date +%s%N >> " + stamp, 1));
    options.wifi = false;
    options.duration = std::chrono::milliseconds(3500);
    options.on_event = [&](const netwatch::NetEvent& event) {
        if (event.initial) return;
        if (event.type == "link-down" && event.iface == "va") {
            std::lock_guard lock(mutex);
            seen.push_back(Clock::now());
        }
    };
    Fd netns_fd = netlink::open_netns(netns.name);
    std::exception_ptr failure;
    std::thread watcher([&] {
        try {
            netlink::run_in_netns(netns_fd.get(), netns.name, [&] {
                options.on_event = [&, inner = options.on_event](const netwatch::NetEvent& event) {
                    ready = true;
                    inner(event);
                };
                netwatch::watch(options);
            });
        } catch (...) {
            failure = std::current_exception();
        }
    });
    // The initial events arrive right after the watcher subscribed and dumped.
    auto deadline = Clock::now() + std::chrono::seconds(3);
    while (!ready && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));

    constexpr int toggles = 5;
    std::vector<double> to_event, to_script;
    for (int i = 0; i < toggles; ++i) {
        auto t0 = Clock::now();
        auto wall0 = std::chrono::system_clock::now();
        ip({"-n", netns.name, "link", "set", "vb", "down"});
        auto until = Clock::now() + std::chrono::seconds(2);
        std::size_t lines = 0;
        while (Clock::now() < until) {
            std::ifstream file(stamp);
            std::string line, last;
            lines = 0;
            while (std::getline(file, line)) ++lines, last = line;
            if (lines == static_cast<std::size_t>(i + 1)) {
                auto wall1 = std::chrono::system_clock::time_point(std::chrono::nanoseconds(std::stoll(last)));
                to_script.push_back(std::chrono::duration<double, std::milli>(wall1 - wall0).count());
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        {
            std::lock_guard lock(mutex);
            if (seen.size() == static_cast<std::size_t>(i + 1))
                to_event.push_back(std::chrono::duration<double, std::milli>(seen.back() - t0).count());
        }
        ip({"-n", netns.name, "link", "set", "vb", "up"});
        std::this_thread::sleep_for(std::chrono::milliseconds(150));
    }
    watcher.join();
    std::filesystem::remove(stamp);
    if (failure) std::rethrow_exception(failure);
    log.say(fmt::format("Toggled vb down/up {} times; netwatch saw va lose its carrier {} times and ran the rule {} times.",
                        toggles, to_event.size(), to_script.size()));
    if (to_event.size() != toggles || to_script.size() != toggles) {
        log.failed("not every toggle produced its event and its script run");
        return;
    }
    log.measured("ip link set -> link-down event (median)", format_ms(percentile(to_event, 0.5)));
    log.measured("ip link set -> script ran (median)", format_ms(percentile(to_script, 0.5)));
    log.say("No polling: the process slept in the kernel between events (rtnetlink multicast).");
}

}  // namespace

TourStop netwatch_tour_stop() {
    return {"netwatch", "network events run scripts without polling (a veth in a scratch namespace)",
            []() -> std::optional<std::string> {
                if (::geteuid() != 0) return "needs root (network namespaces)";
                if (::access("/usr/sbin/ip", X_OK) != 0 && ::access("/sbin/ip", X_OK) != 0 && ::access("/usr/bin/ip", X_OK) != 0)
                    return "needs iproute2's ip";
                return std::nullopt;
            },
            run_stop};
}

}  // namespace ktricks::cli
