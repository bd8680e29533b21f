// --publish from the front door (procwatch, netwatch, sockets --watch; they share PublishLink):
// the events travel over a SOCK_SEQPACKET socket to ktricks-publish, which sends them to a real
// nats-server (JetStream) or redis-server started by the test on a loopback port. The consumer
// example (examples/events_consume.cpp) reads some of the streams back.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>

#include "brokers.hpp"
#include "netns_helpers.hpp"
#include "process_helpers.hpp"

namespace ktricks::test {
namespace {

using nlohmann::json;
constexpr int execs = 100;

std::vector<json> events_of_lines(const std::string& text) {
    std::vector<json> events;
    for (const auto& line : lines_of(text)) events.push_back(json::parse(line, nullptr, false));
    return events;
}

std::vector<std::string> probe_args(const std::vector<json>& events);

// A shell whose comm is unique to the test: its exec events are the ones the watcher must publish.
// Its sleep is never its last command, so dash forks it rather than exec it and the probe keeps its
// name; the argument is the event's number.

struct Probe {
    TempDir dir;
    std::string path = dir / "ktpwprobe";
    Probe() { std::filesystem::create_symlink("/bin/sh", path); }
    // A short-lived probe, for finding out whether procwatch is subscribed yet.
    void run_briefly(const std::string& arg) { ktricks::test::run({path, "-c", "sleep 0.2; :", arg}); }
    // Runs the probe with ARG and keeps it alive until WATCHER has printed its exec event. procwatch names
    // a process from /proc when it reads the event; a probe already gone by then (procwatch starved of CPU
    // on a loaded machine) could not be named and would not match --comm. One probe at a time, so the
    // events happen in the order the test expects.
    void run(Process& watcher, const std::string& arg) {
        std::string go = dir / ("go-" + arg);
        Process probe = Process::start({path, "-c", "while [ ! -e " + go + " ]; do sleep 0.01; done", arg});
        bool seen = eventually(
            [&] {
                auto args = probe_args(events_of_lines(watcher.out()));
                return std::find(args.begin(), args.end(), arg) != args.end();
            },
            10s, 5ms);
        EXPECT_TRUE(seen) << "procwatch never printed the exec of probe " << arg << "\n"
                          << watcher.describe();
        std::ofstream{go};
        EXPECT_EQ(probe.wait(10s), 0);
    }
};

// Starts procwatch --publish and waits until a probe's exec reaches its stdout (it is watching).
Process start_procwatch(Probe& probe, const std::string& url, const std::string& spool) {
    Process watcher = Process::start({KTRICKS_BINARY, "procwatch", "--event", "exec", "--comm", "ktpwprobe",
                                      "--json", "--publish", url, "--spool", spool, "--duration", "100"});
    bool ready = eventually(
        [&] {
            probe.run_briefly("warmup");
            return watcher.out().find("warmup") != std::string::npos;
        },
        10s, 100ms);
    if (!ready) ADD_FAILURE() << "procwatch did not start\n" << watcher.describe();
    return watcher;
}

// The probe arguments of the exec events, in stream order (warmups left out).
std::vector<std::string> probe_args(const std::vector<json>& events) {
    std::vector<std::string> args;
    for (const json& e : events)
        if (e.value("event", "") == "exec" && e.contains("command") && e["command"].size() == 4 &&
            e["command"][3] != "warmup")
            args.push_back(e["command"][3].get<std::string>());
    return args;
}

std::vector<std::string> expected_args() {
    std::vector<std::string> args;
    for (int i = 0; i < execs; ++i) args.push_back(std::to_string(i));
    return args;
}

class ProcwatchPublish : public ::testing::Test {
protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "the proc connector needs CAP_NET_ADMIN";
    }
};

TEST_F(ProcwatchPublish, NatsGetsEveryEventInOrderAndSigtermWaitsForTheirAcknowledgement) {
    if (!NatsServer::available()) GTEST_SKIP() << "needs nats-server (scripts/install-deps.sh)";
    NatsServer nats(free_port());
    Probe probe;
    TempDir dir;
    Process watcher = start_procwatch(
        probe, fmt::format("nats://127.0.0.1:{}/ktricks.{{host}}.{{source}}?stream=PW", nats.port()),
        dir / "spool");
    for (int i = 0; i < execs; ++i) probe.run(watcher, std::to_string(i));
    ASSERT_TRUE(eventually([&] { return probe_args(events_of_lines(watcher.out())).size() == execs; }, 10s))
        << watcher.describe();
    watcher.signal(SIGTERM);
    EXPECT_EQ(watcher.wait(15s), 0) << watcher.describe();
    auto events = jetstream_events(nats.port(), "PW");
    ASSERT_TRUE(events) << nats.log();
    EXPECT_EQ(probe_args(*events), expected_args());
    // Nothing waits in the spool: every event was acknowledged by the stream before the exit.
    EXPECT_TRUE(std::filesystem::is_empty(dir / "spool"));
}

TEST_F(ProcwatchPublish, RedisGetsEveryEventInOrder) {
    if (!RedisServer::available()) GTEST_SKIP() << "needs redis-server (scripts/install-deps.sh)";
    RedisServer redis;
    Probe probe;
    TempDir dir;
    Process watcher = start_procwatch(
        probe, fmt::format("redis://127.0.0.1:{}/ktricks:{{source}}", redis.port()), dir / "spool");
    for (int i = 0; i < execs; ++i) probe.run(watcher, std::to_string(i));
    watcher.signal(SIGTERM);
    EXPECT_EQ(watcher.wait(15s), 0) << watcher.describe();
    EXPECT_EQ(probe_args(events_of_lines(watcher.out())), expected_args()) << "printed by procwatch";
    EXPECT_EQ(probe_args(redis.stream("ktricks:procwatch")), expected_args());
}

// The broker is down for the whole run: SIGTERM leaves every event in the spool, and the next
// watcher on the same spool sends them, in order, before its own, once the broker is up.
TEST_F(ProcwatchPublish, BrokerDownSigtermSpoolsAndTheNextRunSendsTheSpoolFirst) {
    if (!NatsServer::available()) GTEST_SKIP() << "needs nats-server (scripts/install-deps.sh)";
    int port = free_port();
    std::string url = fmt::format("nats://127.0.0.1:{}/ktricks.{{source}}?stream=PW", port);
    Probe probe;
    TempDir dir;
    {
        Process watcher = start_procwatch(probe, url, dir / "spool");
        for (int i = 0; i < execs / 2; ++i) probe.run(watcher, std::to_string(i));
        ASSERT_TRUE(
            eventually([&] { return probe_args(events_of_lines(watcher.out())).size() == execs / 2; }, 10s))
            << watcher.describe();
        watcher.signal(SIGTERM);
        EXPECT_EQ(watcher.wait(15s), 0) << watcher.describe();
        EXPECT_NE(watcher.err().find("spooling events"), std::string::npos) << watcher.describe();
    }
    std::size_t spooled = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir / "spool"))
        spooled += entry.path().extension() == ".ev";
    EXPECT_GE(spooled, static_cast<std::size_t>(execs / 2));  // and the warmups
    NatsServer nats(port);
    Process watcher = start_procwatch(probe, url, dir / "spool");
    for (int i = execs / 2; i < execs; ++i) probe.run(watcher, std::to_string(i));
    watcher.signal(SIGTERM);
    EXPECT_EQ(watcher.wait(15s), 0) << watcher.describe();
    auto events = jetstream_events(nats.port(), "PW");
    ASSERT_TRUE(events) << nats.log();
    EXPECT_EQ(probe_args(*events), expected_args());
}

// --- netwatch and sockets --watch, with either broker ------------------------------------------

// One broker of either kind, the URL a watcher publishes to, and what the stream holds.
class Broker {
public:
    explicit Broker(const std::string& kind) : kind_(kind) {
        if (kind == "nats") nats_ = std::make_unique<NatsServer>(port_);
        else
            redis_ = std::make_unique<RedisServer>();
    }
    static bool available(const std::string& kind) {
        return kind == "nats" ? NatsServer::available() : RedisServer::available();
    }
    // A URL for a broker of `kind` at `port` (which may be closed: events are then spooled).
    static std::string url_for(const std::string& kind, int port, const std::string& source) {
        return kind == "nats" ? fmt::format("nats://127.0.0.1:{}/ktricks.{{host}}.{{source}}?stream=PW", port)
                              : fmt::format("redis://127.0.0.1:{}/ktricks:{}", port, source);
    }
    int port() const { return nats_ ? nats_->port() : redis_->port(); }
    std::string url(const std::string& source) const { return url_for(kind_, port(), source); }
    // The consumer example's URL for the same stream (JetStream: the stream's name).
    std::string consumer_url(const std::string& source) const {
        return nats_ ? fmt::format("nats://127.0.0.1:{}/PW", port())
                     : fmt::format("redis://127.0.0.1:{}/ktricks:{}", port(), source);
    }
    std::vector<json> events(const std::string& source) const {
        if (redis_) return redis_->stream("ktricks:" + source);
        auto events = jetstream_events(port(), "PW");
        if (!events) ADD_FAILURE() << "cannot read stream PW\n" << nats_->log();
        return events.value_or(std::vector<json>());
    }

private:
    std::string kind_;
    int port_ = free_port();
    std::unique_ptr<NatsServer> nats_;
    std::unique_ptr<RedisServer> redis_;
};

// `count` TCP connections to a listener in NETNS, each opened and closed.
void churn(const Netns& netns, int count) {
    std::vector<std::string> argv = netns.exec_prefix();
    argv.insert(argv.end(), {"python3", "-c",
                             "import socket, sys\n"
                             "l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(64)\n"
                             "for i in range(int(sys.argv[1])):\n"
                             "    c = socket.create_connection(l.getsockname()); s, _ = l.accept()\n"
                             "    c.close(); s.close()\n"
                             "l.close()\n",
                             std::to_string(count)});
    auto result = run(argv);
    ASSERT_EQ(result.status, 0) << result.describe;
}

// The events a watcher printed with --json (its `ready` line is printed, not published).
std::vector<json> printed_events(const Process& watcher) {
    std::vector<json> events;
    for (const json& e : events_of_lines(watcher.out()))
        if (e.is_object() && e.value("event", "") != "ready") events.push_back(e);
    return events;
}

std::size_t count_events(const std::vector<json>& events, const std::string& kind) {
    std::size_t count = 0;
    for (const json& e : events) count += e.value("event", "") == kind;
    return count;
}

// What the consumer example prints of the stream (one JSON line per event, repeats dropped).
std::vector<json> consumed(const std::string& url) {
    auto result = run({EVENTS_CONSUME_BINARY, "--idle-exit", "1000", url}, {}, 30s);
    EXPECT_EQ(result.status, 0) << result.describe;
    return events_of_lines(result.out);
}

// Runs `sockets --watch --publish URL` in NETNS until it has printed COUNT destroy events after it
// was first seen subscribed, then ends it with SIGTERM (exit 0 expected). It has no readiness line:
// the namespace churns until a destroy event is printed. Each connection's server side is destroyed
// once its close completes (the client's side waits in TIME_WAIT), so COUNT connections give at
// least COUNT more.
Process watch_sockets(const Netns& netns, const std::string& url, const std::string& spool, int count) {
    Process watcher = Process::start({KTRICKS_BINARY, "sockets", "--netns", netns.name(), "--watch", "-t",
                                      "--json", "--publish", url, "--spool", spool});
    EXPECT_TRUE(eventually(
        [&] {
            churn(netns, 1);
            return count_events(printed_events(watcher), "destroy") > 0;
        },
        10s, 100ms))
        << watcher.describe();
    std::size_t before = count_events(printed_events(watcher), "destroy");
    churn(netns, count);
    EXPECT_TRUE(eventually(
        [&] {
            return count_events(printed_events(watcher), "destroy") >=
                   before + static_cast<std::size_t>(count);
        },
        10s))
        << watcher.describe();
    watcher.signal(SIGTERM);
    EXPECT_EQ(watcher.wait(15s), 0) << watcher.describe();
    return watcher;
}

class WatcherPublish : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
        if (!Broker::available(GetParam())) GTEST_SKIP() << "needs " << GetParam() << " (install-deps.sh)";
    }
};

// sockets --watch in the test's namespace: every destroy event it printed is in the stream, in the
// printed order; SIGTERM exits 0 with the spool empty; the consumer example reads the same events.
TEST_P(WatcherPublish, SocketsWatchEveryEventInOrderAndTheConsumerExampleReadsThem) {
    Broker broker(GetParam());
    Netns netns;
    TempDir dir;
    Process watcher = watch_sockets(netns, broker.url("sockets"), dir / "spool", 50);
    auto printed = printed_events(watcher);
    EXPECT_EQ(broker.events("sockets"), printed);
    EXPECT_TRUE(std::filesystem::is_empty(dir / "spool"));
    EXPECT_EQ(consumed(broker.consumer_url("sockets")), printed);
}

// netwatch on the host, following the test's namespace (--all-netns): the veth events of the
// namespace, and everything else it printed, are in the stream in the printed order.
TEST_P(WatcherPublish, NetwatchVethEventsArriveInOrder) {
    Broker broker(GetParam());
    Netns netns;
    TempDir dir;
    Process watcher =
        Process::start({KTRICKS_BINARY, "netwatch", "--json", "--no-initial", "--no-wifi", "--all-netns",
                        "--publish", broker.url("netwatch"), "--spool", dir / "spool"});
    ASSERT_TRUE(eventually([&] { return watcher.out().find("\"event\":\"ready\"") != std::string::npos; }))
        << watcher.describe();
    constexpr int pairs = 10;
    for (int i = 0; i < pairs; ++i) {
        netns.ip(fmt::format("link add ka{0} type veth peer name kb{0}", i));
        netns.ip(fmt::format("addr add 10.77.{}.1/24 dev ka{}", i, i));
        netns.ip(fmt::format("link set kb{} up", i));
        netns.ip(fmt::format("link set ka{} up", i));
    }
    // Ours: link-add of ka0, kb0, ka1, ... in that order.
    auto ours = [&](const std::vector<json>& events) {
        std::vector<std::string> names;
        for (const json& e : events)
            if (e.value("netns", "") == netns.name() && e.value("event", "") == "link-add")
                names.push_back(e.value("iface", ""));
        return names;
    };
    // The last change made: ka9 up (its peer is up, so it has a carrier).
    auto last_seen = [&] {
        for (const json& e : printed_events(watcher))
            if (e.value("netns", "") == netns.name() && e.value("event", "") == "link-up" &&
                e.value("iface", "") == fmt::format("ka{}", pairs - 1))
                return true;
        return false;
    };
    ASSERT_TRUE(eventually(last_seen, 20s)) << watcher.describe();
    watcher.signal(SIGTERM);
    EXPECT_EQ(watcher.wait(15s), 0) << watcher.describe();
    auto printed = printed_events(watcher);
    auto published = broker.events("netwatch");
    EXPECT_EQ(published, printed);
    auto names = ours(published);
    for (int i = 0; i < pairs; ++i) {
        auto a = std::find(names.begin(), names.end(), fmt::format("ka{}", i));
        EXPECT_NE(a, names.end()) << "ka" << i;
        if (i) {
            EXPECT_LT(std::find(names.begin(), names.end(), fmt::format("ka{}", i - 1)), a);
        }
    }
    EXPECT_TRUE(std::filesystem::is_empty(dir / "spool"));
}

// The broker is down for a whole sockets --watch run: SIGTERM leaves every event in the spool (exit
// 0: spooled is accepted); the next run on the same spool sends them first, once the broker is up.
TEST_P(WatcherPublish, SocketsWatchBrokerDownSigtermSpoolsAndTheNextRunSendsThemFirst) {
    Netns netns;
    TempDir dir;
    int port = free_port();
    auto watch = [&](const std::string& url) { return watch_sockets(netns, url, dir / "spool", 20); };
    Process first = watch(Broker::url_for(GetParam(), port, "sockets"));
    EXPECT_NE(first.err().find("spooling events"), std::string::npos) << first.describe();
    std::size_t spooled = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir / "spool"))
        spooled += entry.path().extension() == ".ev";
    auto expected = printed_events(first);
    EXPECT_EQ(spooled, expected.size());
    std::unique_ptr<NatsServer> nats;
    std::unique_ptr<RedisServer> redis;
    if (GetParam() == "nats") nats = std::make_unique<NatsServer>(port);
    else
        redis = std::make_unique<RedisServer>(port);
    Process second = watch(Broker::url_for(GetParam(), port, "sockets"));
    for (const json& e : printed_events(second)) expected.push_back(e);
    std::vector<json> published;
    if (nats) published = jetstream_events(port, "PW").value_or(std::vector<json>());
    else
        published = redis->stream("ktricks:sockets");
    EXPECT_EQ(published, expected);
    EXPECT_TRUE(std::filesystem::is_empty(dir / "spool"));
}

INSTANTIATE_TEST_SUITE_P(Brokers, WatcherPublish, ::testing::Values("nats", "redis"),
                         [](const auto& param) { return param.param; });

}  // namespace
}  // namespace ktricks::test
