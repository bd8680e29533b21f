// --publish to a 3-node NATS JetStream cluster (Debian's nats-server, loopback ports, stores in the
// test's temp dirs), stream with 3 replicas: the stream's leader is SIGKILLed while mysql-watch
// publishes a 10,000-event workload from a real MariaDB. The publisher's URL lists the three
// servers, so it reconnects to a survivor; the stream elects a new leader; nothing may be lost.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <charconv>
#include <iostream>
#include <set>

#include "brokers.hpp"
#include "mariadb_server.hpp"
#include "process_helpers.hpp"

namespace ktricks::test {
namespace {

using nlohmann::json;

struct Connection {
    natsConnection* connection = nullptr;
    jsCtx* js = nullptr;
    explicit Connection(int port) {
        std::string url = fmt::format("nats://127.0.0.1:{}", port);
        if (natsConnection_ConnectTo(&connection, url.c_str()) == NATS_OK)
            natsConnection_JetStream(&js, connection, nullptr);
    }
    ~Connection() {
        if (js) jsCtx_Destroy(js);
        if (connection) natsConnection_Destroy(connection);
    }
};

// The stream's leader (a server name) and message count, asked through the server at `port`;
// nullopt while there is no answer (no connection, no leader yet).
struct StreamState {
    std::string leader;
    std::uint64_t messages = 0;
};
std::optional<StreamState> stream_state(int port, const std::string& stream) {
    Connection nats(port);
    jsStreamInfo* info = nullptr;
    if (!nats.js || js_GetStreamInfo(&info, nats.js, stream.c_str(), nullptr, nullptr) != NATS_OK)
        return std::nullopt;
    StreamState state;
    if (info->Cluster && info->Cluster->Leader) state.leader = info->Cluster->Leader;
    state.messages = info->State.Msgs;
    jsStreamInfo_Destroy(info);
    if (state.leader.empty()) return std::nullopt;
    return state;
}

// Creates `stream` (subjects `subjects`, 3 replicas, file storage) once the cluster's JetStream
// has a meta leader to take the request.
bool add_stream(int port, const std::string& stream, const std::string& subjects) {
    Connection nats(port);
    if (!nats.js) return false;
    const char* subject_list[] = {subjects.c_str()};
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    config.Name = stream.c_str();
    config.Subjects = subject_list;
    config.SubjectsLen = 1;
    config.Storage = js_FileStorage;
    config.Replicas = 3;
    jsStreamInfo* info = nullptr;
    if (js_AddStream(&info, nats.js, &config, nullptr, nullptr) != NATS_OK) return false;
    jsStreamInfo_Destroy(info);
    return true;
}

// binlog.000001:1234:0 -> (binlog.000001, 1234): the binlog position of an event's transaction.
std::pair<std::string, std::uint64_t> position_of(const std::string& id) {
    auto first = id.find(':'), second = id.find(':', first + 1);
    std::uint64_t pos = 0;
    if (first != std::string::npos && second != std::string::npos)
        std::from_chars(id.data() + first + 1, id.data() + second, pos);
    return {id.substr(0, first), pos};
}

TEST(JetStreamCluster, LeaderKilledDuringTenThousandEventsLosesNothing) {
    if (!NatsServer::available()) GTEST_SKIP() << "needs nats-server (scripts/install-deps.sh)";
    if (!MariaDbServer::available())
        GTEST_SKIP() << "needs root and MariaDB (mariadb-server, mariadb-client)";
    constexpr int events = 10'000;  // single-row transactions: one event each
    MariaDbServer server({.binlog = true});
    server.start();
    // The test is about the broker side: commits need not each wait for InnoDB's log fsync.
    server.sql(
        "SET GLOBAL innodb_flush_log_at_trx_commit=2; CREATE DATABASE kc;"
        "CREATE TABLE kc.t (v INT) ENGINE=InnoDB");

    std::vector<int> ports, routes;
    for (int i = 0; i < 3; ++i) {
        ports.push_back(free_port());
        routes.push_back(free_port());
    }
    std::vector<std::unique_ptr<NatsServer>> nodes;
    for (int i = 0; i < 3; ++i) {
        std::vector<int> others;
        for (int j = 0; j < 3; ++j)
            if (j != i) others.push_back(routes[j]);
        nodes.push_back(std::make_unique<NatsServer>(ports[i], fmt::format("n{}", i + 1), routes[i], others));
    }
    ASSERT_TRUE(eventually([&] { return add_stream(ports[0], "KC", "kc.>"); }, 30s)) << nodes[0]->log();
    std::optional<StreamState> state;
    ASSERT_TRUE(eventually([&] { return (state = stream_state(ports[0], "KC")).has_value(); }, 30s));
    int leader = 0;
    while (nodes[leader]->name() != state->leader) ++leader;
    // The leader's server first: the publisher talks to it, so killing it also breaks the connection.
    std::string servers = fmt::format("127.0.0.1:{}", ports[leader]);
    for (int i = 0; i < 3; ++i)
        if (i != leader) servers += fmt::format(",127.0.0.1:{}", ports[i]);
    int survivor = (leader + 1) % 3;

    TempDir dir;
    Process watcher = Process::start({KTRICKS_BINARY, "mysql-watch", "--datadir", server.datadir(), "--json",
                                      "--db", "kc", "--state", dir / "state", "--publish",
                                      fmt::format("nats://{}/kc.{{host}}.{{db}}?stream=KC", servers),
                                      "--spool", dir / "spool"});
    ASSERT_TRUE(eventually([&] { return watcher.err().find("watching") != std::string::npos; }))
        << watcher.describe();
    std::string script = "SET autocommit=1;";
    for (int i = 0; i < events; ++i) script += fmt::format("INSERT INTO kc.t VALUES ({});", i);
    write_file(dir / "workload.sql", script);  // too long for one argument (MAX_ARG_STRLEN)
    Process workload = Process::start({"mariadb", "--no-defaults", "-S", server.socket(), "-uroot", "-e",
                                       "source " + dir / "workload.sql"});

    auto messages = [&] {
        auto now = stream_state(ports[survivor], "KC");
        return now ? now->messages : 0;
    };
    ASSERT_TRUE(eventually([&] { return messages() >= events * 3 / 10; }, 60s)) << watcher.describe();
    std::string old_leader = state->leader;
    nodes[leader]->kill();  // SIGKILL, mid-stream
    auto killed_at = std::chrono::steady_clock::now();
    ASSERT_TRUE(eventually(
        [&] {
            state = stream_state(ports[survivor], "KC");
            return state && state->leader != old_leader;
        },
        30s))
        << "no new leader\n"
        << nodes[survivor]->log();
    auto elected_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed_at)
            .count();
    EXPECT_EQ(workload.wait(90s), 0) << workload.describe();

    std::set<std::string> ids;
    std::size_t entries = 0, rows = 0;
    std::vector<std::string> order;  // ids in stream order, first occurrences
    auto collect = [&] {
        auto all = jetstream_events(ports[survivor], "KC");
        if (!all) return false;
        ids.clear();
        order.clear();
        rows = 0;
        entries = all->size();
        for (const json& e : *all)
            if (e.value("table", "") == "t" && ids.insert(e.value("id", "")).second) {
                order.push_back(e.value("id", ""));
                rows += e.value("rows", 0);
            }
        return ids.size() == static_cast<std::size_t>(events);
    };
    EXPECT_TRUE(eventually(collect, 60s, 500ms)) << ids.size() << " of " << events << "\n"
                                                 << watcher.describe();
    EXPECT_EQ(rows, static_cast<std::size_t>(events));
    // The stream drops a repeat by its Nats-Msg-Id; the new leader holds the same duplicate window.
    EXPECT_LE(entries - ids.size(), 2u) << "repeats the stream kept";
    // In binlog order: the spool keeps the publisher's order across the failover.
    for (std::size_t i = 1; i < order.size(); ++i)
        ASSERT_LT(position_of(order[i - 1]), position_of(order[i])) << order[i - 1] << " then " << order[i];
    watcher.signal(SIGTERM);
    EXPECT_EQ(watcher.wait(15s), 0) << watcher.describe();
    std::cerr << "leader " << old_leader << " killed; new leader " << state->leader << " after " << elected_ms
              << " ms; stream entries " << entries << ", unique " << ids.size() << ", rows " << rows
              << "\nwatcher log:\n"
              << watcher.err() << "\n";
}

}  // namespace
}  // namespace ktricks::test
