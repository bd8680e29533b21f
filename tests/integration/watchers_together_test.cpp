// Watchers as components: netwatch, mysql-watch, procwatch and the sockets destroy watcher as objects
// on one caller-owned EventLoop in this one process (no signals taken, nothing written to stdout),
// against a real veth pair and real TCP sockets in a private network namespace, a real MariaDB and
// the real proc connector. Also the core Runner behind procwatch --exec.
#include <netinet/in.h>
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fmt/ranges.h>

#include <algorithm>
#include <functional>
#include <set>
#include <thread>

#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/socket_address.hpp"
#include "ktricks/mysqlwatch.hpp"
#include "ktricks/netlink.hpp"
#include "ktricks/netwatch.hpp"
#include "ktricks/procwatch.hpp"
#include "ktricks/sockets.hpp"
#include "mariadb_server.hpp"
#include "process_helpers.hpp"

namespace ktricks::test {
namespace {

// `ip netns add NAME`, deleted (with the veth pair inside) when the test ends.
class ScratchNetns {
public:
    ScratchNetns() : name_(fmt::format("ktwt-{}", ::getpid())) {
        auto result = run({"ip", "netns", "add", name_});
        if (result.status != 0) throw std::runtime_error("ip netns add: " + result.describe);
    }
    ~ScratchNetns() { run({"ip", "netns", "del", name_}); }
    const std::string& name() const { return name_; }
    int ip(std::vector<std::string> args) const {
        args.insert(args.begin(), {"ip", "-n", name_});
        return run(args).status.value_or(-1);
    }

private:
    std::string name_;
};

Child start(std::vector<std::string> argv) {
    SpawnOptions options;
    options.argv = std::move(argv);
    return Child::spawn(options);
}

TEST(WatchersTogether, NetwatchMysqlWatchProcwatchAndSocketsShareOneEventLoop) {
    if (::geteuid() != 0 || !MariaDbServer::available()) GTEST_SKIP() << "needs root and MariaDB";
    MariaDbServer server({.binlog = true});
    server.start();
    server.sql("CREATE DATABASE together; CREATE TABLE together.t (v INT)");
    ScratchNetns netns;
    ASSERT_EQ(netns.ip({"link", "add", "va", "type", "veth", "peer", "name", "vb"}), 0);

    EventLoop loop;
    std::vector<std::string> net_events, tables;
    std::set<pid_t> exited;

    netwatch::WatchOptions net_options;
    net_options.wifi = false;
    net_options.initial = false;
    netwatch::Callbacks net_callbacks;
    net_callbacks.on_event = [&](const netwatch::NetEvent& event) {
        if (event.iface == "va") net_events.push_back(event.type);
    };
    netwatch::Watcher net(loop, net_options, net_callbacks);
    // The watcher's sockets belong to the namespace they were opened in.
    Fd netns_fd = netlink::open_netns(netns.name());
    netlink::run_in_netns(netns_fd.get(), netns.name(), [&] { net.start(); });

    mysqlwatch::WatchOptions mysql_options;
    mysql_options.datadir = server.datadir();
    mysql_options.db_glob = "together";
    mysql_options.log = [](const std::string&) {};
    mysqlwatch::Watcher mysql(loop, mysql_options, [&](const mysqlwatch::Change& change) {
        if (change.event == "change") tables.push_back(change.table);
    });
    mysql.start();

    procwatch::Options proc_options;
    proc_options.events = {procwatch::EventType::exit};
    procwatch::Callbacks proc_callbacks;
    proc_callbacks.on_event = [&](const procwatch::ProcessEvent& event, const procwatch::Enrichment&) {
        if (event.exit_status() == 42) exited.insert(event.tgid);
    };
    procwatch::Watcher proc(loop, proc_options, proc_callbacks);
    proc.start();

    // Destroyed TCP sockets of the scratch namespace (its loopback only).
    ASSERT_EQ(netns.ip({"link", "set", "lo", "up"}), 0);
    std::vector<std::uint16_t> closed_ports;
    sockets::WatchOptions socket_options;
    socket_options.query.tcp = true;
    socket_options.netns = netns.name();
    sockets::WatchCallbacks socket_callbacks;
    socket_callbacks.on_socket = [&](const sockets::SocketInfo& socket) {
        if (socket.state == sockets::listen || socket.state == sockets::closed)
            closed_ports.push_back(socket.local.port);
    };
    sockets::Watcher socket_watcher(loop, socket_options, socket_callbacks);
    socket_watcher.start();
    // A listener in the namespace, closed at once: the kernel destroys it on close.
    auto listen_and_close = [&] {
        std::uint16_t port = 0;
        netlink::run_in_netns(netns_fd.get(), netns.name(), [&] {
            Fd listener = bind_socket(SocketAddress::parse("tcp://127.0.0.1:0"));
            port = SocketAddress::of_socket(listener.get()).port();
        });
        return port;
    };
    std::uint16_t listener_port = listen_and_close();

    auto pump_until = [&](const std::function<bool()>& done) {
        auto deadline = Clock::now() + 10s;
        while (!done() && Clock::now() < deadline) loop.run_once(50ms);
        return done();
    };
    // A veth end is up (carrier) only when its peer is up too.
    ASSERT_EQ(netns.ip({"link", "set", "vb", "up"}), 0);
    ASSERT_EQ(netns.ip({"link", "set", "va", "up"}), 0);
    server.sql("INSERT INTO together.t VALUES (1)");
    Child child = start({"/bin/sh", "-c", "exit 42"});
    pid_t child_pid = child.pid();
    child.wait();

    EXPECT_TRUE(pump_until([&] {
        return std::count(net_events.begin(), net_events.end(), "link-up") > 0 && !tables.empty() &&
               exited.count(child_pid) &&
               std::count(closed_ports.begin(), closed_ports.end(), listener_port) > 0;
    }));
    EXPECT_NE(std::find(net_events.begin(), net_events.end(), "link-up"), net_events.end())
        << fmt::format("netwatch saw on va: {}", fmt::join(net_events, " "));
    EXPECT_EQ(tables, std::vector<std::string>{"t"});
    EXPECT_TRUE(exited.count(child_pid)) << "procwatch did not report the exit of pid " << child_pid;
    EXPECT_NE(std::find(closed_ports.begin(), closed_ports.end(), listener_port), closed_ports.end())
        << fmt::format("sockets saw closed ports {} but not {}", fmt::join(closed_ports, " "), listener_port);

    // stop() takes each off the loop: nothing more arrives.
    net.stop();
    mysql.stop();
    proc.stop();
    socket_watcher.stop();
    ASSERT_EQ(netns.ip({"link", "set", "va", "down"}), 0);
    auto closed_before = closed_ports.size();
    listen_and_close();
    server.sql("INSERT INTO together.t VALUES (2)");
    auto events_before = net_events.size();
    loop.run_once(200ms);
    EXPECT_EQ(net_events.size(), events_before);
    EXPECT_EQ(tables.size(), 1u);
    EXPECT_EQ(closed_ports.size(), closed_before);
}

TEST(ProcwatchExec, ScriptPastItsTimeoutIsKilledWithItsChildren) {
    if (::geteuid() != 0) GTEST_SKIP() << "the proc connector needs CAP_NET_ADMIN";
    TempDir temp;
    std::string probe = temp / "ktricks-tmo";
    std::filesystem::create_symlink("/bin/sh", probe);  // comm is the name executed: ktricks-tmo
    std::string pids = temp / "pids";
    auto watcher = Process::start({KTRICKS_BINARY, "procwatch", "--event", "exit", "--comm", "ktricks-tmo",
                                   "--exec", "sleep 30 & echo $! >> " + pids + "; wait", "--exec-timeout",
                                   "0.3", "--duration", "30"});
    ASSERT_TRUE(eventually(
        [&] {
            Child child = start({probe, "-c", "exit 5"});
            child.wait();
            return !read_file(pids).empty();
        },
        10s, 100ms))
        << watcher.describe();
    pid_t sleeper = std::stoi(lines_of(read_file(pids)).front());
    // SIGTERM to the script's group at 0.3 s: the background sleep dies with the shell.
    EXPECT_TRUE(eventually_gone(sleeper)) << "the script's child outlived --exec-timeout";
    EXPECT_TRUE(eventually([&] { return watcher.err().find("timed out after") != std::string::npos; }, 3s))
        << watcher.describe();
    EXPECT_TRUE(watcher.running());
}

// --exec-timeout and --exec-concurrency are one pair of flags, the same on every watcher that runs
// scripts (they all hand their scripts to core's Runner). mysql-watch's runs are in
// mysql_watch_test.cpp (MysqlWatchBinlog.ExecTimeout..., ExecConcurrency...), which has the server.
TEST(ExecFlags, NetwatchMysqlWatchAndProcwatchTakeTheSameTwoFlags) {
    for (std::string watcher : {"netwatch", "mysql-watch", "procwatch"}) {
        auto help = run({KTRICKS_BINARY, watcher, "--help"});
        EXPECT_EQ(help.status, 0) << help.describe;
        for (const char* flag : {"--exec-timeout", "--exec-concurrency"})
            EXPECT_NE(help.out.find(flag), std::string::npos) << watcher << " --help lacks " << flag;
        std::vector<std::string> argv = {KTRICKS_BINARY, watcher, "--exec", "true", "--exec-timeout", "soon"};
        if (watcher == "netwatch")
            argv.insert(argv.begin() + 2, {"--on", "link-add"});  // --exec needs an --on
        auto bad = run(argv);
        EXPECT_EQ(bad.status, 64) << bad.describe;
        EXPECT_NE(bad.err.find("--exec-timeout"), std::string::npos) << bad.describe;
    }
}

// Lines "start"/"end" that scripts append: true if no two runs overlapped.
bool one_at_a_time(const std::vector<std::string>& lines) {
    for (std::size_t i = 0; i < lines.size(); ++i)
        if (lines[i] != (i % 2 ? "end" : "start")) return false;
    return true;
}

TEST(ExecFlags, NetwatchExecTimeoutKillsARuleWithoutATimeoutOfItsOwn) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for a network namespace";
    ScratchNetns netns;
    TempDir dir;
    std::string pids = dir / "pids";
    auto watcher = Process::start({"ip", "netns", "exec", netns.name(), KTRICKS_BINARY, "netwatch", "--json",
                                   "--no-initial", "--exec-timeout", "0.3", "--on", "link-add", "--exec",
                                   "sleep 30 & echo $! >> " + pids + "; wait"});
    ASSERT_TRUE(eventually([&] { return watcher.out().find("\"event\":\"ready\"") != std::string::npos; }))
        << watcher.describe();
    ASSERT_EQ(netns.ip({"link", "add", "va", "type", "veth", "peer", "name", "vb"}), 0);
    ASSERT_TRUE(eventually([&] { return !read_file(pids).empty(); }, 5s)) << watcher.describe();
    pid_t sleeper = std::stoi(lines_of(read_file(pids)).front());
    EXPECT_TRUE(eventually_gone(sleeper)) << "the script's child outlived --exec-timeout";
    EXPECT_TRUE(eventually([&] { return watcher.out().find("script-timeout") != std::string::npos; }, 3s))
        << watcher.describe();
    EXPECT_TRUE(watcher.running());
}

TEST(ExecFlags, NetwatchExecConcurrencyOneRunsScriptsOfDifferentInterfacesOneAtATime) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for a network namespace";
    ScratchNetns netns;
    TempDir dir;
    std::string log = dir / "log";
    ASSERT_EQ(netns.ip({"link", "add", "va", "type", "veth", "peer", "name", "vb"}), 0);
    auto watcher = Process::start({"ip", "netns", "exec", netns.name(), KTRICKS_BINARY, "netwatch", "--json",
                                   "--no-initial", "--exec-concurrency", "1", "--on", "addr-add", "--exec",
                                   fmt::format("echo start >> {0}; sleep 0.3; echo end >> {0}", log)});
    ASSERT_TRUE(eventually([&] { return watcher.out().find("\"event\":\"ready\"") != std::string::npos; }))
        << watcher.describe();
    // Two interfaces: two keys, which without the limit would run side by side.
    ASSERT_EQ(netns.ip({"addr", "add", "10.9.0.1/24", "dev", "va"}), 0);
    ASSERT_EQ(netns.ip({"addr", "add", "10.9.1.1/24", "dev", "vb"}), 0);
    ASSERT_TRUE(eventually([&] { return lines_of(read_file(log)).size() == 4; }, 5s)) << watcher.describe();
    EXPECT_TRUE(one_at_a_time(lines_of(read_file(log)))) << read_file(log);
}

TEST(ExecFlags, ProcwatchExecConcurrencyOneRunsScriptsOfDifferentPidsOneAtATime) {
    if (::geteuid() != 0) GTEST_SKIP() << "the proc connector needs CAP_NET_ADMIN";
    TempDir temp;
    std::string probe = temp / "ktricks-cnc";
    std::filesystem::create_symlink("/bin/sh", probe);  // comm is the name executed: ktricks-cnc
    std::string log = temp / "log";
    auto watcher = Process::start(
        {KTRICKS_BINARY, "procwatch", "--event", "exit", "--comm", "ktricks-cnc", "--exec-concurrency", "1",
         "--exec", fmt::format("echo start >> {0}; sleep 0.3; echo end >> {0}", log), "--duration", "30"});
    // The watcher is ready when a probe's exit runs a script; then two more exits, two more pids.
    ASSERT_TRUE(eventually(
        [&] {
            start({probe, "-c", "exit 0"}).wait();
            return !read_file(log).empty();
        },
        10s, 300ms))
        << watcher.describe();
    ASSERT_TRUE(eventually([&] { return lines_of(read_file(log)).size() >= 2; }, 5s)) << watcher.describe();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the ready-probes' runs finish
    auto before = lines_of(read_file(log)).size();
    // Two exits 50 ms apart: the second script is due while the first (0.3 s) still runs.
    start({probe, "-c", "exit 0"}).wait();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    start({probe, "-c", "exit 0"}).wait();
    ASSERT_TRUE(eventually([&] { return lines_of(read_file(log)).size() >= before + 4; }, 15s))
        << "log:\n"
        << read_file(log) << watcher.describe();
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    EXPECT_TRUE(one_at_a_time(lines_of(read_file(log)))) << read_file(log);
}

}  // namespace
}  // namespace ktricks::test
