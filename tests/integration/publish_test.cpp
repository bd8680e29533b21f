// --publish from the front door (procwatch here; netwatch and sockets --watch share PublishLink):
// the events travel over a SOCK_SEQPACKET socket to ktricks-publish, which sends them to a real
// nats-server (JetStream) or redis-server started by the test on a loopback port.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>

#include "brokers.hpp"
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

// A shell whose comm is unique to the test: its exec events are the ones the watcher must publish.
// It lives 50 ms (sleep is not its last command, so dash forks it rather than exec it), so that
// procwatch reads its command line; the argument is the event's number.
struct Probe {
    TempDir dir;
    std::string path = dir / "ktpwprobe";
    Probe() { std::filesystem::create_symlink("/bin/sh", path); }
    void run(const std::string& arg) { ktricks::test::run({path, "-c", "sleep 0.05; :", arg}); }
};

// Starts procwatch --publish and waits until a probe's exec reaches its stdout (it is watching).
Process start_procwatch(Probe& probe, const std::string& url, const std::string& spool) {
    Process watcher = Process::start({KTRICKS_BINARY, "procwatch", "--event", "exec", "--comm", "ktpwprobe",
                                      "--json", "--publish", url, "--spool", spool, "--duration", "100"});
    bool ready = eventually(
        [&] {
            probe.run("warmup");
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
    for (int i = 0; i < execs; ++i) probe.run(std::to_string(i));
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
    for (int i = 0; i < execs; ++i) probe.run(std::to_string(i));
    watcher.signal(SIGTERM);
    EXPECT_EQ(watcher.wait(15s), 0) << watcher.describe();
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
        for (int i = 0; i < execs / 2; ++i) probe.run(std::to_string(i));
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
    for (int i = execs / 2; i < execs; ++i) probe.run(std::to_string(i));
    watcher.signal(SIGTERM);
    EXPECT_EQ(watcher.wait(15s), 0) << watcher.describe();
    auto events = jetstream_events(nats.port(), "PW");
    ASSERT_TRUE(events) << nats.log();
    EXPECT_EQ(probe_args(*events), expected_args());
}

}  // namespace
}  // namespace ktricks::test
