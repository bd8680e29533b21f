// ktricks mysql-watch against a real MariaDB: one server with a binary log and one without, each
// shared by its suite (a server starts in about a second; a watcher per test, on its own database).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <fstream>
#include <iostream>
#include <set>
#include <thread>

#include "brokers.hpp"
#include "mariadb_server.hpp"
#include "process_helpers.hpp"

namespace ktricks::test {
namespace {

using nlohmann::json;

std::vector<json> events_of(const Process& watcher) {
    std::vector<json> events;
    for (const auto& line : lines_of(watcher.out())) {
        auto parsed = json::parse(line, nullptr, false);
        if (!parsed.is_discarded()) events.push_back(parsed);
    }
    return events;
}

bool has_event(const Process& watcher, const std::string& event, const std::string& db,
               const std::string& table, const std::string& via = "") {
    for (const json& e : events_of(watcher))
        if (e.value("event", "") == event && e.value("db", "") == db && e.value("table", "") == table &&
            (via.empty() || e.value("via", "") == via))
            return true;
    return false;
}

int count_events(const Process& watcher, const std::string& event, const std::string& table) {
    int count = 0;
    for (const json& e : events_of(watcher))
        count += e.value("event", "") == event && e.value("table", "") == table;
    return count;
}

Process start_watcher(const MariaDbServer& server, const std::string& db,
                      std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {KTRICKS_BINARY, "mysql-watch", "--datadir", server.datadir(),
                                     "--json",       "--db",        db};
    argv.insert(argv.end(), extra.begin(), extra.end());
    Process watcher = Process::start(argv);
    if (!eventually([&] { return watcher.err().find("watching") != std::string::npos; }))
        ADD_FAILURE() << "the watcher did not start\n" << watcher.describe();
    return watcher;
}

// One throwaway server per suite (starting one costs about a second), with or without a binary log.
template <bool WithBinlog>
class MariaDbSuite : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (!MariaDbServer::available()) return;
        server_ = new MariaDbServer({.binlog = WithBinlog});
        server_->start();
    }
    static void TearDownTestSuite() {
        delete server_;
        server_ = nullptr;
    }
    void SetUp() override {
        if (!server_) GTEST_SKIP() << "needs root and MariaDB (mariadb-server, mariadb-client)";
    }
    static inline MariaDbServer* server_ = nullptr;
};
using MysqlWatchBinlog = MariaDbSuite<true>;

TEST_F(MysqlWatchBinlog, SingleRowCommitsToInnodbMyisamAndAriaNameTheirTables) {
    server_->sql(
        "CREATE DATABASE engines; CREATE TABLE engines.inno (v INT) ENGINE=InnoDB;"
        "CREATE TABLE engines.myi (v INT) ENGINE=MyISAM; CREATE TABLE engines.ari (v INT) ENGINE=Aria");
    Process watcher = start_watcher(*server_, "engines");
    server_->sql("INSERT INTO engines.inno VALUES (1)");
    server_->sql("INSERT INTO engines.myi VALUES (1)");
    server_->sql("INSERT INTO engines.ari VALUES (1)");
    EXPECT_TRUE(eventually([&] {
        return has_event(watcher, "change", "engines", "inno", "binlog") &&
               has_event(watcher, "change", "engines", "myi", "binlog") &&
               has_event(watcher, "change", "engines", "ari", "binlog");
    })) << watcher.describe();
    for (const json& e : events_of(watcher)) {
        if (e["table"] == "inno") {
            EXPECT_EQ(e["engine"], "InnoDB");
        }
        if (e["table"] == "myi") {
            EXPECT_EQ(e["engine"], "MyISAM");
        }
        if (e["table"] == "ari") {
            EXPECT_EQ(e["engine"], "Aria");
        }
        EXPECT_EQ(e["source"], "mysql");
    }
}

TEST_F(MysqlWatchBinlog, NamesWithDashSpaceAndNonAsciiLettersAreReportedAsWritten) {
    server_->sql(
        "CREATE DATABASE `odd-db`; CREATE TABLE `odd-db`.`my table` (v INT); CREATE TABLE `odd-db`.`größe` (v INT) ENGINE=Aria");
    Process watcher = start_watcher(*server_, "odd-db");
    server_->sql("INSERT INTO `odd-db`.`my table` VALUES (1); INSERT INTO `odd-db`.`größe` VALUES (1)");
    EXPECT_TRUE(eventually([&] {
        return has_event(watcher, "change", "odd-db", "my table") &&
               has_event(watcher, "change", "odd-db", "größe");
    })) << watcher.describe();
}

TEST_F(MysqlWatchBinlog, PartitionedTableIsReportedAsTheTable) {
    server_->sql("CREATE DATABASE parts; CREATE TABLE parts.p (id INT) PARTITION BY HASH(id) PARTITIONS 3");
    Process watcher = start_watcher(*server_, "parts");
    server_->sql("INSERT INTO parts.p VALUES (1), (2), (3)");
    EXPECT_TRUE(eventually([&] { return has_event(watcher, "change", "parts", "p"); })) << watcher.describe();
    for (const json& e : events_of(watcher)) {
        EXPECT_EQ(e["engine"], "InnoDB");
        EXPECT_EQ(e["rows"], 3);
    }
}

TEST_F(MysqlWatchBinlog, CreateRenameTruncateAndDropAreReported) {
    server_->sql("CREATE DATABASE ddl");
    Process watcher = start_watcher(*server_, "ddl");
    server_->sql(
        "CREATE TABLE ddl.a (v INT); RENAME TABLE ddl.a TO ddl.b; TRUNCATE TABLE ddl.b; DROP TABLE ddl.b");
    EXPECT_TRUE(eventually([&] { return has_event(watcher, "drop", "ddl", "b"); })) << watcher.describe();
    EXPECT_TRUE(has_event(watcher, "create", "ddl", "a"));
    EXPECT_TRUE(has_event(watcher, "rename", "ddl", "a"));
    EXPECT_TRUE(has_event(watcher, "truncate", "ddl", "b"));
    for (const json& e : events_of(watcher))
        if (e["event"] == "rename") {
            EXPECT_EQ(e["new_table"], "b");
        }
}

TEST_F(MysqlWatchBinlog, RolledBackTransactionProducesNoChange) {
    server_->sql(
        "CREATE DATABASE rb; CREATE TABLE rb.t (v INT) ENGINE=InnoDB; CREATE TABLE rb.marker (v INT)");
    Process watcher = start_watcher(*server_, "rb");
    server_->sql("BEGIN; INSERT INTO rb.t VALUES (1); ROLLBACK");
    server_->sql(
        "INSERT INTO rb.marker VALUES (1)");  // committed after the rollback: once seen, all before it was read
    ASSERT_TRUE(eventually([&] { return has_event(watcher, "change", "rb", "marker"); }))
        << watcher.describe();
    EXPECT_EQ(count_events(watcher, "change", "t"), 0) << watcher.describe();
}

TEST_F(MysqlWatchBinlog, FlushBinaryLogsLosesNothing) {
    server_->sql("CREATE DATABASE rot; CREATE TABLE rot.t (v INT)");
    Process watcher = start_watcher(*server_, "rot", {"--table", "t"});
    std::string statements;
    for (int i = 0; i < 20; ++i) statements += "INSERT INTO rot.t VALUES (1); FLUSH BINARY LOGS;";
    server_->sql(statements);
    // Each commit once: the server creates a file before it lists it in the index, and a watcher
    // that took the lagging index for a purge re-read the file before (CI saw 22 lines for 20).
    auto ids = [&] {
        std::set<std::string> seen;
        for (const json& e : events_of(watcher))
            if (e.value("event", "") == "change") seen.insert(e.value("id", ""));
        return seen.size();
    };
    EXPECT_TRUE(eventually([&] { return ids() == 20; })) << watcher.describe();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a repeat would come right after
    EXPECT_EQ(count_events(watcher, "change", "t"), 20) << watcher.describe();
}

// --state: the watcher is killed with SIGKILL twice while a workload commits 600 single-row
// transactions (and the binlog rotates, also while no watcher runs); each restart resumes from the
// state file. Every transaction must be reported (by its stable id), and a restart may repeat at
// most the one transaction whose line was written before its position was saved.
TEST_F(MysqlWatchBinlog, KillNineAndRestartWithStateLosesNothing) {
    constexpr int total = 600;
    server_->sql("CREATE DATABASE res; CREATE TABLE res.t (v INT) ENGINE=InnoDB");
    TempDir dir;
    std::string state = dir / "state";
    std::string script;
    for (int i = 0; i < total; ++i) {
        script += fmt::format("INSERT INTO res.t VALUES ({}); DO SLEEP(0.004);", i);
        if (i % 150 == 149) script += "FLUSH BINARY LOGS;";
    }
    std::vector<Process> runs;
    runs.push_back(start_watcher(*server_, "res", {"--state", state}));
    Process workload =
        Process::start({"mariadb", "--no-defaults", "-S", server_->socket(), "-uroot", "-e", script});
    auto ids = [&](int* lines) {
        std::set<std::string> unique;
        if (lines) *lines = 0;
        for (const Process& run : runs)
            for (const json& e : events_of(run))
                if (e.value("table", "") == "t" && e.value("event", "") == "change") {
                    unique.insert(e.value("id", ""));
                    if (lines) ++*lines;
                }
        return unique.size();
    };
    for (int kill = 1; kill <= 2; ++kill) {
        std::size_t target = static_cast<std::size_t>(total) * kill / 4;
        ASSERT_TRUE(eventually([&] { return ids(nullptr) >= target; }, 30s)) << runs.back().describe();
        runs.back().kill_group();
        // Commits and a rotation happen while no watcher runs.
        std::this_thread::sleep_for(200ms);
        server_->sql("FLUSH BINARY LOGS");
        runs.push_back(start_watcher(*server_, "res", {"--state", state}));
        EXPECT_NE(runs.back().err().find("resuming at binlog."), std::string::npos) << runs.back().describe();
    }
    EXPECT_EQ(workload.wait(60s), 0) << workload.describe();
    int lines = 0;
    EXPECT_TRUE(eventually([&] { return ids(&lines) == total; }, 30s))
        << "unique " << ids(nullptr) << " of " << total << "\n"
        << runs.back().describe();
    EXPECT_LE(lines - total, 2) << "duplicates beyond one per restart";
    EXPECT_EQ(ids(nullptr), static_cast<std::size_t>(total));
    auto saved = json::parse(read_file(state), nullptr, false);
    // (no "gtid" when the last position is the start of a file rotated to after the last commit)
    EXPECT_TRUE(saved.contains("file") && saved.contains("pos")) << read_file(state);
}

TEST_F(MysqlWatchBinlog, StateFileThatIsNotJsonIsRefusedWithOneLine) {
    TempDir dir;
    write_file(dir / "state", "binlog.000001 1234\n");
    auto result =
        run({KTRICKS_BINARY, "mysql-watch", "--datadir", server_->datadir(), "--state", dir / "state"});
    EXPECT_EQ(result.status, 65) << result.describe;
    EXPECT_NE(result.err.find("state file"), std::string::npos) << result.describe;
}

TEST_F(MysqlWatchBinlog, FirstRunWithStateSavesTheCurrentEndThenEachTransaction) {
    server_->sql("CREATE DATABASE st1; CREATE TABLE st1.t (v INT)");
    TempDir dir;
    std::string state = dir / "state";
    Process watcher = start_watcher(*server_, "st1", {"--state", state});
    // Saved at start: a watcher killed before the first commit still resumes at the right place.
    ASSERT_TRUE(eventually([&] { return std::filesystem::exists(state); })) << watcher.describe();
    auto before = json::parse(read_file(state));
    server_->sql("INSERT INTO st1.t VALUES (1)");
    ASSERT_TRUE(eventually([&] { return count_events(watcher, "change", "t") == 1; })) << watcher.describe();
    auto event = events_of(watcher).back();
    ASSERT_TRUE(eventually([&] {
        auto now = json::parse(read_file(state), nullptr, false);
        return now.value("pos", 0) == event.value("binlog_pos", 1) &&
               now.value("file", "") == event.value("binlog_file", "");
    })) << read_file(state)
        << "\n"
        << watcher.describe();
    EXPECT_GT(event.value("binlog_pos", 0), before.value("pos", 0));
    EXPECT_EQ(event.value("id", ""),
              fmt::format("{}:{}:0", event.value("binlog_file", ""), event.value("binlog_pos", 0)));
}

// --publish redis://: 2,000 transactions of 5 rows (10,000 rows) while the broker is SIGKILLed and
// restarted, then the watcher is SIGKILLed and restarted with --state. Every transaction must be in
// the stream (by its stable id) with its 5 rows; repeats are bounded.
TEST_F(MysqlWatchBinlog, RedisBrokerAndWatcherKilledDuringTenThousandRowsLoseNothing) {
    if (!RedisServer::available()) GTEST_SKIP() << "needs redis-server (scripts/install-deps.sh)";
    constexpr int transactions = 2000;
    server_->sql("CREATE DATABASE sk; CREATE TABLE sk.t (v INT) ENGINE=InnoDB");
    RedisServer redis;
    TempDir dir;
    std::string url = fmt::format("redis://127.0.0.1:{}/ktricks:{{db}}", redis.port());
    std::vector<std::string> args = {"--state", dir / "state", "--publish", url, "--spool", dir / "spool"};
    std::string script = "SET autocommit=1;";
    for (int i = 0; i < transactions; ++i)
        script += fmt::format("INSERT INTO sk.t VALUES ({0}),({0}),({0}),({0}),({0});", i);
    auto watcher = std::make_unique<Process>(start_watcher(*server_, "sk", args));
    Process workload =
        Process::start({"mariadb", "--no-defaults", "-S", server_->socket(), "-uroot", "-e", script});
    auto in_stream = [&] { return std::atoi(redis.cli({"XLEN", "ktricks:sk"}).c_str()); };
    ASSERT_TRUE(eventually([&] { return in_stream() >= transactions / 5; }, 60s)) << watcher->describe();
    redis.kill();
    std::this_thread::sleep_for(1s);  // events go to the spool meanwhile
    redis.start();
    ASSERT_TRUE(eventually([&] { return in_stream() >= transactions / 2; }, 60s)) << watcher->describe();
    watcher.reset();  // SIGKILL
    std::this_thread::sleep_for(300ms);
    watcher = std::make_unique<Process>(start_watcher(*server_, "sk", args));
    EXPECT_EQ(workload.wait(90s), 0) << workload.describe();
    std::set<std::string> ids;
    std::uint64_t rows = 0;
    std::size_t entries = 0;
    auto collect = [&] {
        ids.clear();
        rows = 0;
        auto events = redis.stream("ktricks:sk");
        entries = events.size();
        for (const json& e : events)
            if (e.value("table", "") == "t" && ids.insert(e.value("id", "")).second)
                rows += e.value("rows", 0);
        return ids.size() == static_cast<std::size_t>(transactions);
    };
    EXPECT_TRUE(eventually(collect, 60s)) << ids.size() << " of " << transactions << "\n"
                                          << watcher->describe();
    EXPECT_EQ(rows, 5u * transactions);
    EXPECT_LE(entries - ids.size(), 5u) << "repeats";
    std::cerr << "stream entries " << entries << ", unique " << ids.size() << ", rows " << rows << "\n";
}

// What a stream holds of one workload: unique ids of table `t`'s changes, their rows, all entries.
struct StreamCount {
    std::set<std::string> ids;
    std::uint64_t rows = 0;
    std::size_t entries = 0;
    void take(const std::vector<json>& events) {
        ids.clear();
        rows = 0;
        entries = events.size();
        for (const json& e : events)
            if (e.value("table", "") == "t" && ids.insert(e.value("id", "")).second)
                rows += e.value("rows", 0);
    }
};

// --publish nats://: 2,000 transactions of 5 rows (10,000 rows) while nats-server is SIGKILLed and
// restarted (same store directory), then the watcher is SIGKILLed and restarted with --state. Every
// transaction must be in the JetStream stream with its 5 rows; the stream drops repeats itself
// (Nats-Msg-Id = the event's id), so entries beyond the unique ids are bounded tightly.
TEST_F(MysqlWatchBinlog, NatsBrokerAndWatcherKilledDuringTenThousandRowsLoseNothing) {
    if (!NatsServer::available()) GTEST_SKIP() << "needs nats-server (scripts/install-deps.sh)";
    constexpr int transactions = 2000;
    server_->sql("CREATE DATABASE nk; CREATE TABLE nk.t (v INT) ENGINE=InnoDB");
    NatsServer nats(free_port());
    TempDir dir;
    std::string url = fmt::format("nats://127.0.0.1:{}/ktricks.{{host}}.{{db}}?stream=KT", nats.port());
    std::vector<std::string> args = {"--state", dir / "state", "--publish", url, "--spool", dir / "spool"};
    std::string script = "SET autocommit=1;";
    for (int i = 0; i < transactions; ++i)
        script += fmt::format("INSERT INTO nk.t VALUES ({0}),({0}),({0}),({0}),({0});", i);
    auto watcher = std::make_unique<Process>(start_watcher(*server_, "nk", args));
    Process workload =
        Process::start({"mariadb", "--no-defaults", "-S", server_->socket(), "-uroot", "-e", script});
    StreamCount count;
    auto in_stream = [&](std::size_t at_least) {
        auto events = jetstream_events(nats.port(), "KT");
        if (events) count.take(*events);
        return events && count.ids.size() >= at_least;
    };
    ASSERT_TRUE(eventually([&] { return in_stream(transactions / 5); }, 60s)) << watcher->describe();
    nats.kill();
    std::this_thread::sleep_for(1s);  // events go to the spool meanwhile
    nats.start();
    ASSERT_TRUE(eventually([&] { return in_stream(transactions / 2); }, 60s)) << watcher->describe();
    watcher.reset();  // SIGKILL
    std::this_thread::sleep_for(300ms);
    watcher = std::make_unique<Process>(start_watcher(*server_, "nk", args));
    EXPECT_EQ(workload.wait(90s), 0) << workload.describe();
    EXPECT_TRUE(eventually([&] { return in_stream(transactions); }, 60s))
        << count.ids.size() << " of " << transactions << "\n"
        << watcher->describe();
    EXPECT_EQ(count.rows, 5u * transactions);
    EXPECT_LE(count.entries - count.ids.size(), 2u) << "repeats the stream kept";
    std::cerr << "stream entries " << count.entries << ", unique " << count.ids.size() << ", rows "
              << count.rows << "\n";
}

TEST_F(MysqlWatchBinlog, ServerRestartIsSurvived) {
    server_->sql("CREATE DATABASE rs; CREATE TABLE rs.t (v INT)");
    Process watcher = start_watcher(*server_, "rs");
    server_->sql("INSERT INTO rs.t VALUES (1)");
    ASSERT_TRUE(eventually([&] { return count_events(watcher, "change", "t") == 1; })) << watcher.describe();
    server_->stop();
    server_->start();
    server_->sql("INSERT INTO rs.t VALUES (2)");
    EXPECT_TRUE(eventually([&] { return count_events(watcher, "change", "t") == 2; })) << watcher.describe();
    EXPECT_TRUE(watcher.running());
}

TEST_F(MysqlWatchBinlog, ExecRunsTheCommandWithTheEventInItsEnvironment) {
    server_->sql("CREATE DATABASE ex; CREATE TABLE ex.t (v INT)");
    TempDir out;
    Process watcher = start_watcher(
        *server_, "ex",
        {"--exec", fmt::format("echo \"$KTRICKS_EVENT $KTRICKS_DB $KTRICKS_TABLE $KTRICKS_ENGINE "
                               "$KTRICKS_VIA $KTRICKS_ROWS\" >> {}",
                               out / "log")});
    server_->sql("INSERT INTO ex.t VALUES (1), (2)");
    EXPECT_TRUE(eventually([&] { return read_file(out / "log") == "change ex t InnoDB binlog 2\n"; }))
        << read_file(out / "log") << watcher.describe();
}

// The script runs beside the watcher, not inside it: a hung script neither delays the next change
// nor the shutdown, and it does not outlive the watcher.
TEST_F(MysqlWatchBinlog, HungExecScriptDelaysNeitherTheNextChangeNorShutdown) {
    server_->sql("CREATE DATABASE hung; CREATE TABLE hung.a (v INT); CREATE TABLE hung.b (v INT)");
    TempDir out;
    std::string pids = out / "pids";
    Process watcher = start_watcher(*server_, "hung", {"--exec", "echo $$ >> " + pids + "; sleep 30"});
    server_->sql("INSERT INTO hung.a VALUES (1)");
    ASSERT_TRUE(eventually([&] {
        return has_event(watcher, "change", "hung", "a") && !read_file(pids).empty();
    })) << watcher.describe();
    // The next change while the first script sleeps: reported within 100 ms of the commit
    // returning (the client's own start is before that).
    server_->sql("INSERT INTO hung.b VALUES (1)");
    auto committed = Clock::now();
    ASSERT_TRUE(eventually([&] { return has_event(watcher, "change", "hung", "b"); }, 2s, 1ms))
        << watcher.describe();
    auto reported = Clock::now() - committed;
    EXPECT_LT(reported, 100ms) << std::chrono::duration_cast<std::chrono::milliseconds>(reported).count()
                               << " ms";
    pid_t script = std::stoi(lines_of(read_file(pids)).front());
    auto stopping = Clock::now();
    watcher.signal(SIGTERM);
    auto status = watcher.wait(2s);
    auto took = Clock::now() - stopping;
    ASSERT_TRUE(status.has_value()) << watcher.describe();
    EXPECT_EQ(*status, 0) << watcher.describe();
    EXPECT_LT(took, 1s) << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
    EXPECT_TRUE(process_gone(script))
        << "the script survived: " << read_file(fmt::format("/proc/{}/stat", script));
}

// --exec-timeout: the script (its whole process group) is killed, the watcher says so and goes on.
TEST_F(MysqlWatchBinlog, ExecTimeoutKillsTheScriptAndItsChildren) {
    server_->sql("CREATE DATABASE tmo; CREATE TABLE tmo.t (v INT)");
    TempDir out;
    std::string pids = out / "pids";
    Process watcher = start_watcher(
        *server_, "tmo", {"--exec", "sleep 30 & echo $! >> " + pids + "; wait", "--exec-timeout", "0.3"});
    server_->sql("INSERT INTO tmo.t VALUES (1)");
    ASSERT_TRUE(eventually([&] { return !read_file(pids).empty(); })) << watcher.describe();
    pid_t sleeper = std::stoi(lines_of(read_file(pids)).front());
    EXPECT_TRUE(eventually_gone(sleeper)) << "the script's child outlived --exec-timeout";
    EXPECT_TRUE(eventually([&] { return watcher.err().find("timed out after") != std::string::npos; }, 3s))
        << watcher.describe();
    EXPECT_TRUE(watcher.running());
}

// --exec-concurrency 1: scripts for two tables (two keys) run one after the other, never together.
TEST_F(MysqlWatchBinlog, ExecConcurrencyOneRunsScriptsOfDifferentTablesOneAtATime) {
    server_->sql("CREATE DATABASE conc; CREATE TABLE conc.a (v INT); CREATE TABLE conc.b (v INT)");
    TempDir out;
    std::string log = out / "log";
    Process watcher =
        start_watcher(*server_, "conc",
                      {"--exec", fmt::format("echo start >> {0}; sleep 0.3; echo end >> {0}", log),
                       "--exec-concurrency", "1"});
    server_->sql("INSERT INTO conc.a VALUES (1); INSERT INTO conc.b VALUES (1)");
    ASSERT_TRUE(eventually([&] { return lines_of(read_file(log)).size() == 4; }, 5s)) << watcher.describe();
    EXPECT_EQ(lines_of(read_file(log)), (std::vector<std::string>{"start", "end", "start", "end"}));
}

TEST_F(MysqlWatchBinlog, DebounceMergesABurstIntoALeadingAndATrailingEvent) {
    server_->sql("CREATE DATABASE deb; CREATE TABLE deb.t (v INT)");
    Process watcher = start_watcher(*server_, "deb", {"--debounce", "2000"});
    server_->sql("INSERT INTO deb.t VALUES (1)");
    ASSERT_TRUE(eventually([&] { return count_events(watcher, "change", "t") == 1; })) << watcher.describe();
    std::string burst;
    for (int i = 0; i < 9; ++i) burst += "INSERT INTO deb.t VALUES (1);";
    server_->sql(burst);  // within the window the first event opened: held back, then one trailing event
    EXPECT_TRUE(
        eventually([&] { return count_events(watcher, "change", "t") == 2; }, std::chrono::seconds(5)))
        << watcher.describe();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(count_events(watcher, "change", "t"), 2) << watcher.describe();
}

TEST_F(MysqlWatchBinlog, CheckWithProbeMeasuresTheBinlogPath) {
    auto result = run({KTRICKS_BINARY, "mysql-watch", "--check", "--probe", "--datadir", server_->datadir(),
                       "--socket", server_->socket(), "--user", "root"});
    ASSERT_EQ(result.status, 0) << result.describe;
    EXPECT_NE(result.out.find("path binlog: usable"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("auto mode uses: binlog"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("probe: the event came"), std::string::npos) << result.out;
    EXPECT_NE(server_->sql_status("USE ktricks_probe"), 0) << "the probe database was left behind";
}

TEST(MysqlWatchStartup, WatcherStartedBeforeTheServerWaitsForIt) {
    if (!MariaDbServer::available()) GTEST_SKIP() << "needs root and MariaDB";
    MariaDbServer server({.binlog = true, .install = false});
    Process watcher = Process::start(
        {KTRICKS_BINARY, "mysql-watch", "--datadir", server.datadir(), "--json", "--db", "late"});
    ASSERT_TRUE(eventually([&] {
        return watcher.err().find("waiting for the data directory") != std::string::npos;
    })) << watcher.describe();
    server.install();
    server.start();
    server.sql("CREATE DATABASE late; CREATE TABLE late.t (v INT); INSERT INTO late.t VALUES (1)");
    EXPECT_TRUE(eventually([&] { return has_event(watcher, "change", "late", "t", "binlog"); }))
        << watcher.describe();
}

// A binlog copied with one corrupt byte, then appended to as a server would: the watcher reports the
// bad event, skips to the next valid one and goes on reporting.
TEST_F(MysqlWatchBinlog, CorruptByteInACopiedBinlogIsReportedWithoutACrash) {
    server_->sql(
        "CREATE DATABASE cor; CREATE TABLE cor.t1 (v INT); CREATE TABLE cor.t2 (v INT); CREATE TABLE cor.t3 (v INT);"
        "FLUSH BINARY LOGS");
    auto index = read_file(std::filesystem::path(server_->datadir()) / "binlog.index");
    auto files = lines_of(index);
    ASSERT_FALSE(files.empty());
    std::filesystem::path current =
        std::filesystem::path(server_->datadir()) / std::filesystem::path(files.back()).filename();
    auto before = std::filesystem::file_size(current);
    server_->sql(
        "INSERT INTO cor.t1 VALUES (1); INSERT INTO cor.t2 VALUES (1); INSERT INTO cor.t3 VALUES (1)");
    std::string bytes = read_file(current);
    ASSERT_GT(bytes.size(), before);

    TempDir copy;
    std::filesystem::create_directory(copy / "data");
    write_file(copy / "data/binlog.index", "./binlog.000001\n");
    write_file(copy / "data/binlog.000001", bytes.substr(0, before));
    Process watcher = Process::start(
        {KTRICKS_BINARY, "mysql-watch", "--datadir", copy / "data", "--json", "--mode", "binlog"});
    ASSERT_TRUE(eventually([&] { return watcher.err().find("watching") != std::string::npos; }))
        << watcher.describe();
    std::string appended = bytes.substr(before);
    // Inside t1's transaction (the first third of what was appended): its event fails its checksum.
    appended[appended.size() / 6] ^= 0x5a;
    {
        std::ofstream out(copy / "data/binlog.000001", std::ios::binary | std::ios::app);
        out << appended;
    }
    EXPECT_TRUE(eventually([&] { return has_event(watcher, "change", "cor", "t3"); })) << watcher.describe();
    EXPECT_NE(watcher.err().find("corrupt event"), std::string::npos) << watcher.describe();
    EXPECT_TRUE(watcher.running());
}

using MysqlWatchNoBinlog = MariaDbSuite<false>;

TEST_F(MysqlWatchNoBinlog, FilesPathSeesMyisamCommitsAndDecodesFileNames) {
    server_->sql(
        "CREATE DATABASE `f-db`; CREATE TABLE `f-db`.`a b-c` (v INT) ENGINE=MyISAM;"
        "CREATE TABLE `f-db`.`größe` (v INT) ENGINE=MyISAM");
    Process watcher = start_watcher(*server_, "f-db", {"--mode", "files"});
    server_->sql("INSERT INTO `f-db`.`a b-c` VALUES (1); INSERT INTO `f-db`.`größe` VALUES (1)");
    EXPECT_TRUE(eventually([&] {
        return has_event(watcher, "change", "f-db", "a b-c", "file") &&
               has_event(watcher, "change", "f-db", "größe", "file");
    })) << watcher.describe();
}

TEST_F(MysqlWatchNoBinlog, FilesPathReportsCreateRenameTruncateAndDrop) {
    server_->sql("CREATE DATABASE fddl");
    Process watcher = start_watcher(*server_, "fddl", {"--mode", "files"});
    server_->sql(
        "CREATE TABLE fddl.a (v INT) ENGINE=InnoDB; RENAME TABLE fddl.a TO fddl.b; TRUNCATE TABLE fddl.b; DROP TABLE fddl.b");
    EXPECT_TRUE(eventually([&] { return has_event(watcher, "drop", "fddl", "b", "file"); }))
        << watcher.describe();
    EXPECT_TRUE(has_event(watcher, "create", "fddl", "a"));
    EXPECT_TRUE(has_event(watcher, "rename", "fddl", "a"));
    EXPECT_TRUE(has_event(watcher, "truncate", "fddl", "b"));
}

TEST_F(MysqlWatchNoBinlog, FilesPathFollowsADatabaseCreatedAfterItStarted) {
    Process watcher = start_watcher(*server_, "fnew", {"--mode", "files"});
    server_->sql(
        "CREATE DATABASE fnew; CREATE TABLE fnew.t (v INT) ENGINE=MyISAM; INSERT INTO fnew.t VALUES (1)");
    EXPECT_TRUE(eventually([&] {
        return has_event(watcher, "create", "fnew", "") && has_event(watcher, "create", "fnew", "t") &&
               has_event(watcher, "change", "fnew", "t");
    })) << watcher.describe();
    server_->sql("DROP DATABASE fnew");
    EXPECT_TRUE(eventually([&] { return has_event(watcher, "drop", "fnew", ""); })) << watcher.describe();
}

TEST_F(MysqlWatchNoBinlog, FilesPathTellsARenameFromATruncate) {
    server_->sql("CREATE DATABASE fren; CREATE TABLE fren.a (v INT) ENGINE=InnoDB");
    Process watcher = start_watcher(*server_, "fren", {"--mode", "files"});
    server_->sql(
        "RENAME TABLE fren.a TO fren.b; CREATE TABLE fren.a (v INT) ENGINE=InnoDB; DROP TABLE fren.b");
    ASSERT_TRUE(eventually([&] { return has_event(watcher, "drop", "fren", "b"); })) << watcher.describe();
    EXPECT_TRUE(has_event(watcher, "rename", "fren", "a"));
    EXPECT_TRUE(has_event(watcher, "create", "fren", "a"));
    EXPECT_EQ(count_events(watcher, "truncate", "a"), 0) << watcher.describe();
}

TEST_F(MysqlWatchNoBinlog, RedoPathNamesInnodbAndAriaTables) {
    server_->sql(
        "CREATE DATABASE redo; CREATE TABLE redo.inno (v INT) ENGINE=InnoDB; CREATE TABLE redo.ari (v INT) ENGINE=Aria");
    Process watcher =
        start_watcher(*server_, "redo", {"--mode", "redo", "--socket", server_->socket(), "--user", "root"});
    server_->sql("INSERT INTO redo.inno VALUES (1); INSERT INTO redo.ari VALUES (1)");
    EXPECT_TRUE(eventually([&] {
        return has_event(watcher, "change", "redo", "inno", "redo") &&
               has_event(watcher, "change", "redo", "ari", "redo");
    })) << watcher.describe();
}

TEST_F(MysqlWatchNoBinlog, CheckNamesTheMissingBinlogAsABlindSpot) {
    auto result = run({KTRICKS_BINARY, "mysql-watch", "--check", "--datadir", server_->datadir(), "--socket",
                       server_->socket(), "--user", "root"});
    ASSERT_EQ(result.status, 0) << result.describe;
    EXPECT_NE(result.out.find("path binlog: not usable"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("path redo: usable"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("blind spot: no binary log"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("server: 10."), std::string::npos) << result.out;
}

}  // namespace
}  // namespace ktricks::test
