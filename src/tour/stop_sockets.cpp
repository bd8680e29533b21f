// Tour stop "sockets": a scratch network namespace with a few thousand loopback connections,
// listed by the `ktricks` front door, ss and netstat (timed side by side, the same rows), then the
// process events of a child.
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sys/mman.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>

#include "ktricks/core/child.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/core/proc.hpp"
#include "ktricks/netlink.hpp"
#include "ktricks/procwatch.hpp"
#include "ktricks/sockets.hpp"
#include "tour/support.hpp"

namespace ktricks::tour {
namespace {

constexpr int connections = 3000;

// A fresh network namespace, held by a descriptor (it lives as long as the fd or a socket in it).
Fd scratch_namespace() {
    Fd result;
    netlink::run_in_netns(netlink::open_netns("/proc/self/ns/net").get(), "self", [&] {
        if (::unshare(CLONE_NEWNET) < 0) throw_errno("unshare", "CLONE_NEWNET");
        result = netlink::open_netns("/proc/thread-self/ns/net");
    });
    return result;
}

void loopback_up() {
    Fd probe(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq request{};
    std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
    if (::ioctl(probe.get(), SIOCGIFFLAGS, &request) < 0) throw_errno("SIOCGIFFLAGS", "lo");
    request.ifr_flags |= IFF_UP;
    if (::ioctl(probe.get(), SIOCSIFFLAGS, &request) < 0) throw_errno("SIOCSIFFLAGS", "lo");
}

// Both ends of `count` connections to one listener on 127.0.0.1:port.
std::vector<Fd> open_connections(int count, std::uint16_t port) {
    std::vector<Fd> fds;
    Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) < 0)
        throw_errno("bind", "tour listener");
    if (::listen(listener.get(), 4096) < 0) throw_errno("listen", "tour listener");
    for (int i = 0; i < count; ++i) {
        Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (::connect(client.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) < 0)
            throw_errno("connect", "tour");
        Fd server(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!server) throw_errno("accept", "tour");
        fds.push_back(std::move(client));
        fds.push_back(std::move(server));
    }
    fds.push_back(std::move(listener));
    return fds;
}

// argv run inside the scratch namespace. setns in the child rather than nsenter in front of the
// command, so that the time measured is the listing program's alone.
SpawnOptions in_namespace(std::vector<std::string> argv, int netns) {
    SpawnOptions spawn;
    spawn.argv = std::move(argv);
    spawn.setup_in_child = [netns](ChildSetupError& error) {
        if (::setns(netns, CLONE_NEWNET) < 0) error.fail(errno, "setns", "scratch network namespace");
    };
    return spawn;
}

// Runs the command quietly to the end; throws, naming it, unless it exited with status 0.
void run_checked(const SpawnOptions& spawn) {
    auto status = spawn_quiet(spawn).wait().value();  // no timeout: always a status
    if (status.shell_status() != 0)
        throw std::runtime_error(fmt::format("`{}` {}", shell_join(spawn.argv), status.to_string()));
}

// Rows the command lists (one run): the lines it prints, less its `header` lines.
std::size_t rows(SpawnOptions spawn, std::size_t header) {
    Fd capture(::memfd_create("tour-rows", MFD_CLOEXEC));
    if (!capture) throw_errno("memfd_create", "tour-rows");
    spawn.stdout_fd = capture.get();
    run_checked(spawn);
    std::size_t lines = 0;
    char buffer[65536];
    ssize_t got;
    off_t offset = 0;
    while ((got = ::pread(capture.get(), buffer, sizeof(buffer), offset)) > 0) {
        lines += static_cast<std::size_t>(std::count(buffer, buffer + got, '\n'));
        offset += got;
    }
    return lines > header ? lines - header : 0;
}

// Median wall time, spawn to exit, of each command (output to /dev/null), over `runs` rounds that
// run every command once in turn: a disturbance (another process, a cache flush, frequency scaling)
// then hits all of them rather than one.
std::vector<double> interleaved_medians(const std::vector<SpawnOptions>& commands, int runs) {
    std::vector<std::vector<double>> ms(commands.size());
    for (int round = 0; round < runs; ++round)
        for (std::size_t i = 0; i < commands.size(); ++i) {
            auto start = Clock::now();
            run_checked(commands[i]);
            ms[i].push_back(ms_since(start));
        }
    std::vector<double> medians;
    for (auto& sample : ms) medians.push_back(percentile(std::move(sample), 0.5));
    return medians;
}

// "0.62x the time of ss -tan: 1.6x faster"; the word comes from the ratio, within 5% it is a tie.
std::string compared(double ours, double theirs, std::string_view them) {
    if (theirs <= 0) return fmt::format("{} took no measurable time", them);
    double ratio = ours / theirs;
    if (ratio < 0.95) return fmt::format("{:.2f}x the time of {}: {:.1f}x faster", ratio, them, 1 / ratio);
    if (ratio > 1.05) return fmt::format("{:.2f}x the time of {}: {:.1f}x slower", ratio, them, ratio);
    return fmt::format("{:.2f}x the time of {}: as fast (within 5%)", ratio, them);
}

// ktricks and ss (and netstat, if installed) on the same sockets, timed side by side.
void compare_with_ss(TourLog& log, int netns) {
    if (!find_program("ss")) {
        log.say("ss is not installed: skipping the side-by-side timing.");
        return;
    }
    std::string self = ktricks_program();
    auto ours = in_namespace({self, "sockets", "-tan"}, netns);
    auto theirs = in_namespace({"ss", "-tan"}, netns);
    // A run each before timing also warms the page cache for both binaries.
    std::size_t our_rows = rows(ours, 1), their_rows = rows(theirs, 1);
    if (our_rows != their_rows)
        log.failed(fmt::format("ktricks listed {} rows, ss {}", our_rows, their_rows));
    std::vector<SpawnOptions> commands{ours, theirs};
    bool netstat = find_program("netstat").has_value();
    std::size_t netstat_rows = 0;
    if (netstat) {
        commands.push_back(in_namespace({"netstat", "-tan"}, netns));
        netstat_rows = rows(commands.back(), 2);
    }

    constexpr int runs = 7;
    auto ms = interleaved_medians(commands, runs);
    log.measured(fmt::format("ktricks sockets -tan, {} rows (median of {}, interleaved)", our_rows, runs),
                 format_ms(ms[0]));
    log.measured(fmt::format("ss -tan, {} rows", their_rows), format_ms(ms[1]));
    log.measured("ktricks sockets -tan vs ss -tan", compared(ms[0], ms[1], "ss -tan"));
    if (netstat) {
        log.measured(fmt::format("netstat -tan, {} rows (parses /proc/net/tcp)", netstat_rows),
                     format_ms(ms[2]));
        log.measured("ktricks sockets -tan vs netstat -tan", compared(ms[0], ms[2], "netstat -tan"));
    } else {
        log.say("netstat is not installed: skipped.");
    }

    // -p walks /proc/*/fd of the whole machine: its cost depends on everything else running.
    constexpr int p_runs = 3;
    auto p_ms = interleaved_medians(
        {in_namespace({self, "sockets", "-tanp"}, netns), in_namespace({"ss", "-tanp"}, netns)}, p_runs);
    log.measured(
        fmt::format("ktricks sockets -tanp, with owning processes (median of {}, interleaved)", p_runs),
        format_ms(p_ms[0]));
    log.measured("ss -tanp", format_ms(p_ms[1]));
    log.measured("ktricks sockets -tanp vs ss -tanp", compared(p_ms[0], p_ms[1], "ss -tanp"));
}

void run_stop(TourLog& log) {
    // Raise the soft descriptor limit to the hard one: 2 fds per connection.
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    if (limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &limit);
    }
    Fd scratch = scratch_namespace();
    std::vector<Fd> held;
    {
        netlink::NetnsGuard guard(scratch.get(), "scratch");
        loopback_up();
        held = open_connections(connections, 7000);
    }
    std::string netns_path = fmt::format("/proc/{}/fd/{}", ::getpid(), scratch.get());
    log.say(fmt::format("Opened {} loopback connections ({} sockets) in a scratch network namespace.",
                        connections, 2 * connections + 1));

    compare_with_ss(log, scratch.get());

    // The kernel filters: only the listener's side of each connection comes back.
    sockets::Query query;
    query.tcp = true;
    query.filter = sockets::Filter::parse("sport = :7000");
    auto start = Clock::now();
    auto listing = sockets::list(query, netns_path);
    double filtered_ms = ms_since(start);
    log.measured(
        fmt::format("library call, filter \"sport = :7000\" compiled to inet_diag bytecode: {} sockets",
                    listing.sockets.size()),
        format_ms(filtered_ms));
    if (listing.sockets.size() != static_cast<std::size_t>(connections))
        log.failed(fmt::format("expected {} server-side sockets", connections));
    held.clear();

    // Process events of a child we start, pushed by the proc connector.
    std::atomic<bool> listening = false;
    std::mutex lock;
    std::vector<std::string> lines;
    std::exception_ptr failure;
    pid_t child_pid = 0;
    std::jthread watcher([&](std::stop_token stop) {
        try {
            procwatch::Options options;
            options.events = {procwatch::EventType::fork, procwatch::EventType::exec,
                              procwatch::EventType::exit};
            procwatch::Callbacks callbacks;
            callbacks.on_event = [&](const procwatch::ProcessEvent& event,
                                     const procwatch::Enrichment& enrichment) {
                std::lock_guard guard(lock);
                if (child_pid && (event.tgid == child_pid || event.parent_tgid == child_pid))
                    lines.push_back(fmt::format(
                        "{:<5} pid {} {}{}", procwatch::to_string(event.type), event.tgid,
                        enrichment.command.empty() ? enrichment.comm : shell_join(enrichment.command),
                        event.type == procwatch::EventType::exit
                            ? fmt::format(" -> exit status {}", event.exit_status())
                            : std::string()));
            };
            EventLoop loop;
            procwatch::Watcher watch(loop, options, callbacks);
            watch.start();
            listening = true;
            loop.add_timer(
                std::chrono::milliseconds(20),
                [&] {
                    if (stop.stop_requested()) loop.stop();
                },
                std::chrono::milliseconds(20));
            loop.run();
        } catch (...) {
            failure = std::current_exception();
            listening = true;
        }
    });
    if (!wait_for([&] { return listening.load(); }, std::chrono::seconds(5)))
        throw std::runtime_error("the proc connector watcher did not start within 5 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    SpawnOptions spawn;
    spawn.argv = {"/bin/sh", "-c", "sleep 0.2; /bin/true; exit 3"};
    // Under the lock, so the watcher knows the pid before it matches the child's first event.
    Child child = [&] {
        std::lock_guard guard(lock);
        Child started = Child::spawn(spawn);
        child_pid = started.pid();
        return started;
    }();
    child.wait();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    watcher.request_stop();
    watcher.join();
    if (failure) std::rethrow_exception(failure);
    log.say("The proc connector's events for a child we started, pushed by the kernel as they happened:");
    for (const auto& line : lines) log.say("  " + line);
    bool exited = std::any_of(lines.begin(), lines.end(), [](const std::string& l) {
        return l.find("exit status 3") != std::string::npos;
    });
    if (!exited) log.failed("the child's exit (status 3) was not seen");
}

}  // namespace

TourStop sockets_stop() {
    return {"sockets", "sock_diag netlink listing timed against ss, and proc connector process events",
            [] {
                if (::geteuid() != 0)
                    return std::optional<std::string>("needs root (network namespaces, proc connector)");
                return std::optional<std::string>();
            },
            run_stop};
}

}  // namespace ktricks::tour
