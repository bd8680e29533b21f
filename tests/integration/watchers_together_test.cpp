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
    EXPECT_TRUE(eventually(
        [&] {
            std::string stat = read_file(fmt::format("/proc/{}/stat", sleeper));
            return stat.empty() || stat.find(") Z") != std::string::npos;
        },
        3s))
        << "the script's child outlived --exec-timeout";
    EXPECT_TRUE(eventually([&] { return watcher.err().find("timed out after") != std::string::npos; }, 3s))
        << watcher.describe();
    EXPECT_TRUE(watcher.running());
}

}  // namespace
}  // namespace ktricks::test
