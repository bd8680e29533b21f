// Tour stop "sockets": a scratch network namespace with a few thousand loopback connections,
// listed by ktricks, ss and netstat (timed, the same rows), then the process events of a child.
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

#include "cli/tour.hpp"
#include "ktricks/core/child.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/core/proc.hpp"
#include "ktricks/netlink.hpp"
#include "ktricks/procwatch.hpp"
#include "ktricks/sockets.hpp"

namespace ktricks::cli {
namespace {

using Clock = std::chrono::steady_clock;
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
    if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) < 0) throw_errno("bind", "tour listener");
    if (::listen(listener.get(), 4096) < 0) throw_errno("listen", "tour listener");
    for (int i = 0; i < count; ++i) {
        Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (::connect(client.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) < 0) throw_errno("connect", "tour");
        Fd server(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!server) throw_errno("accept", "tour");
        fds.push_back(std::move(client));
        fds.push_back(std::move(server));
    }
    fds.push_back(std::move(listener));
    return fds;
}

// Median wall time of `runs` runs of argv (stdout to /dev/null), and the line count of one run.
std::pair<double, std::size_t> time_command(const std::vector<std::string>& argv, int runs) {
    std::vector<double> ms;
    Fd null(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    for (int i = 0; i < runs; ++i) {
        SpawnOptions spawn;
        spawn.argv = argv;
        spawn.stdout_fd = null.get();
        spawn.stderr_fd = null.get();
        auto start = Clock::now();
        Child child = Child::spawn(spawn);
        child.wait();
        ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    }
    Fd capture(::memfd_create("tour-rows", MFD_CLOEXEC));
    SpawnOptions spawn;
    spawn.argv = argv;
    spawn.stdout_fd = capture.get();
    spawn.stderr_fd = null.get();
    Child::spawn(spawn).wait();
    std::size_t lines = 0;
    char buffer[65536];
    ssize_t got;
    off_t offset = 0;
    while ((got = ::pread(capture.get(), buffer, sizeof(buffer), offset)) > 0) {
        lines += static_cast<std::size_t>(std::count(buffer, buffer + got, '\n'));
        offset += got;
    }
    return {percentile(ms, 0.5), lines};
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
    log.say(fmt::format("Opened {} loopback connections ({} sockets) in a scratch network namespace.", connections,
                        2 * connections + 1));

    std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    auto in_namespace = [&](std::vector<std::string> argv) {
        std::vector<std::string> full{"nsenter", "--net=" + netns_path};
        full.insert(full.end(), argv.begin(), argv.end());
        return full;
    };
    bool have_nsenter = true;
    try {
        find_program("nsenter");
    } catch (const std::exception&) {
        have_nsenter = false;
    }
    if (have_nsenter) {
        constexpr int runs = 3;
        auto [k, k_rows] = time_command(in_namespace({self, "sockets", "-tan"}), runs);
        auto [s, s_rows] = time_command(in_namespace({"ss", "-tan"}), runs);
        log.measured(fmt::format("ktricks sockets -tan, {} rows (median of {})", k_rows - 1, runs), format_ms(k));
        log.measured(fmt::format("ss -tan, {} rows", s_rows - 1), format_ms(s));
        if (k_rows != s_rows) log.failed(fmt::format("ktricks listed {} rows, ss {}", k_rows - 1, s_rows - 1));
        try {
            find_program("netstat");
            auto [n, n_rows] = time_command(in_namespace({"netstat", "-tan"}), runs);
            log.measured(fmt::format("netstat -tan, {} rows (parses /proc/net/tcp)", n_rows - 2), format_ms(n));
        } catch (const SpawnError&) {
            log.say("netstat is not installed: skipped.");
        }
        // -p walks /proc/*/fd of the whole machine: its cost depends on everything else running.
        auto [kp, kp_rows] = time_command(in_namespace({self, "sockets", "-tanp"}), 1);
        auto [sp, sp_rows] = time_command(in_namespace({"ss", "-tanp"}), 1);
        log.measured("ktricks sockets -tanp (with owning processes, one run)", format_ms(kp));
        log.measured("ss -tanp", format_ms(sp));
        (void)kp_rows;
        (void)sp_rows;
    } else {
        log.say("nsenter is not installed: skipping the side-by-side timing.");
    }

    // The kernel filters: only the listener's side of each connection comes back.
    sockets::Query query;
    query.tcp = true;
    query.filter = sockets::Filter::parse("sport = :7000");
    auto start = Clock::now();
    auto listing = sockets::list(query, netns_path);
    double filtered_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    log.measured(fmt::format("library call, filter \"sport = :7000\" compiled to inet_diag bytecode: {} sockets",
                             listing.sockets.size()),
                 format_ms(filtered_ms));
    if (listing.sockets.size() != static_cast<std::size_t>(connections))
        log.failed(fmt::format("expected {} server-side sockets", connections));
    held.clear();

    // Process events of a child we start, pushed by the proc connector.
    std::atomic<bool> listening = false, done = false;
    std::mutex lock;
    std::vector<std::string> lines;
    std::exception_ptr failure;
    pid_t child_pid = 0;
    std::thread watcher([&] {
        try {
            procwatch::Options options;
            options.events = {procwatch::EventType::fork, procwatch::EventType::exec, procwatch::EventType::exit};
            procwatch::watch(
                options,
                [&](const procwatch::ProcessEvent& event, const procwatch::Enrichment& enrichment) {
                    std::lock_guard guard(lock);
                    if (child_pid && (event.tgid == child_pid || event.parent_tgid == child_pid))
                        lines.push_back(fmt::format("{:<5} pid {} {}{}", procwatch::to_string(event.type), event.tgid,
                                                    enrichment.command.empty() ? enrichment.comm
                                                                               : shell_join(enrichment.command),
                                                    event.type == procwatch::EventType::exit
                                                        ? fmt::format(" -> exit status {}", event.exit_status())
                                                        : std::string()));
                },
                [] {}, [&] { return listening = true, !done.load(); }, {}, 20);
        } catch (...) {
            failure = std::current_exception();
            listening = true;
        }
    });
    while (!listening) std::this_thread::sleep_for(std::chrono::milliseconds(5));
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
    done = true;
    watcher.join();
    if (failure) std::rethrow_exception(failure);
    log.say("The proc connector's events for a child we started (no polling):");
    for (const auto& line : lines) log.say("  " + line);
    bool exited = std::any_of(lines.begin(), lines.end(), [](const std::string& l) { return l.find("exit status 3") != std::string::npos; });
    if (!exited) log.failed("the child's exit (status 3) was not seen");
}

}  // namespace

TourStop sockets_tour_stop() {
    return {"sockets", "ss but faster: sock_diag netlink listing, and proc connector process events",
            [] {
                if (::geteuid() != 0) return std::optional<std::string>("needs root (network namespaces, proc connector)");
                return std::optional<std::string>();
            },
            run_stop};
}

}  // namespace ktricks::cli
