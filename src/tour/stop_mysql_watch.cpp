// Tour stop "mysql-watch": a throwaway MariaDB in a temporary directory (binlog on), a watcher on
// its data directory, a few statements, the events and their latency; then the server is stopped
// and its directory removed.
#include <signal.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <thread>

#include "ktricks/core/child.hpp"
#include "ktricks/mysqlwatch.hpp"
#include "tour/support.hpp"

namespace ktricks::tour {
namespace {
namespace fs = std::filesystem;

// The MariaDB programs, found where a non-root PATH may not look (mariadbd is in /usr/sbin).
struct MariaDb {
    std::string client = find_program("mariadb").value_or("mariadb");
    std::string install_db = find_program("mariadb-install-db").value_or("mariadb-install-db");
    std::string server = find_program("mariadbd").value_or("mariadbd");
};

void run_sql(const MariaDb& programs, const fs::path& socket, const OutputLog& output,
             const std::string& sql) {
    if (!run_quiet({programs.client, "--no-defaults", "-S", socket.string(), "-uroot", "-e", sql},
                   std::chrono::seconds(10), output.path()))
        throw std::runtime_error("mariadb client failed: " + sql);
}

void run_stop(TourLog& log) {
    MariaDb programs;
    TempDir tree("mysql");
    // MariaDB writes warnings (max_open_files ...) to stderr before its error log is open: one file for both.
    OutputLog output(log, tree / "mariadb.log");
    fs::path datadir = tree / "data", socket = tree / "sock";
    if (!run_quiet({programs.install_db, "--no-defaults", "--datadir=" + datadir.string(), "--user=root",
                    "--auth-root-authentication-method=normal", "--skip-test-db"},
                   std::chrono::seconds(30), output.path()))
        throw std::runtime_error("mariadb-install-db failed");
    SpawnOptions server_options;
    server_options.argv = {programs.server,
                           "--no-defaults",
                           "--datadir=" + datadir.string(),
                           "--socket=" + socket.string(),
                           "--skip-networking",
                           "--user=root",
                           "--pid-file=" + (tree / "pid").string(),
                           "--log-bin=" + (datadir / "binlog").string(),
                           "--binlog-format=ROW",
                           "--log-error=" + output.path().string()};
    Child server = spawn_quiet(server_options, output.path());
    if (!wait_for([&] { return fs::exists(socket); }, std::chrono::seconds(5)))
        throw std::runtime_error("mariadbd did not open its socket within 5 s");
    log.say(fmt::format("A throwaway MariaDB runs on {} (binlog on, no TCP port).", datadir.string()));

    std::mutex mutex;
    std::vector<mysqlwatch::Change> seen;
    mysqlwatch::WatchOptions options;
    options.datadir = datadir;
    options.log = [](const std::string&) {};
    std::exception_ptr failure;
    // Ends by itself: after 13 changes (create db, create table, 10 inserts, drop: the rollback adds
    // nothing), or after 8 s without them.
    std::jthread watcher([&] {
        try {
            EventLoop loop;
            mysqlwatch::Watcher watch(loop, options, [&](const mysqlwatch::Change& change) {
                std::lock_guard lock(mutex);
                seen.push_back(change);
                if (seen.size() >= 13) loop.stop();
            });
            watch.start();
            loop.add_timer(std::chrono::seconds(8), [&] { loop.stop(); });
            loop.run();
        } catch (...) {
            failure = std::current_exception();
        }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    run_sql(
        programs, socket, output,
        "CREATE DATABASE shop; CREATE TABLE shop.`order-items` (id INT PRIMARY KEY AUTO_INCREMENT, v INT) ENGINE=InnoDB");
    std::vector<double> latencies;
    for (int i = 0; i < 10; ++i) {
        std::size_t before;
        {
            std::lock_guard lock(mutex);
            before = seen.size();
        }
        // The client is started here; the server answers it after the binlog write. Change::when is
        // the watcher's system_clock reading.
        auto committed = std::chrono::system_clock::now();
        run_sql(programs, socket, output, "INSERT INTO shop.`order-items` (v) VALUES (1)");
        wait_for(
            [&] {
                std::lock_guard lock(mutex);
                if (seen.size() == before) return false;
                latencies.push_back(to_ms(seen.back().when - committed));
                return true;
            },
            std::chrono::milliseconds(200));
    }
    run_sql(programs, socket, output,
            "BEGIN; INSERT INTO shop.`order-items` (v) VALUES (2); ROLLBACK; DROP TABLE shop.`order-items`");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    server.signal(SIGTERM);
    auto stopped = server.wait(std::chrono::seconds(20));
    watcher.join();
    if (failure) std::rethrow_exception(failure);
    std::lock_guard lock(mutex);
    for (std::size_t i = 0; i < seen.size() && i < 5; ++i) {
        std::string line = mysqlwatch::to_event(seen[i]).to_line();
        log.say("  " + line.substr(0, line.size() - 1));
    }
    auto inserts = std::count_if(seen.begin(), seen.end(), [](const mysqlwatch::Change& change) {
        return change.event == "change" && change.table == "order-items";
    });
    bool dropped = std::any_of(seen.begin(), seen.end(),
                               [](const mysqlwatch::Change& change) { return change.event == "drop"; });
    if (seen.size() > 5)
        log.say(
            fmt::format("  ... {} events in all, {} of them changes to order-items", seen.size(), inserts));
    // The rollback came between the last insert and the DROP: once the drop is seen, it is settled.
    if (inserts > 10) log.failed("the rolled-back insert produced an event");
    else if (inserts == 10 && dropped)
        log.say("The rolled-back insert is not among them: a rollback leaves no binlog event.");
    if (latencies.size() < 10)
        log.failed(fmt::format("only {} of 10 commits produced an event", latencies.size()));
    if (!latencies.empty()) {
        log.say(
            "Latency below runs from starting the `mariadb` client (its start-up included) to the event.");
        log.measured("mysql-watch binlog: client start to event, p50", format_ms(percentile(latencies, 0.5)));
        log.measured("mysql-watch binlog: client start to event, max", format_ms(percentile(latencies, 1.0)));
    }
    if (!stopped) log.failed("mariadbd did not stop within 20 s of SIGTERM");
    else
        log.say("Server stopped; its directory goes with the stop.");
}

}  // namespace

TourStop mysql_watch_stop() {
    return TourStop{
        "mysql-watch",
        "which tables changed, from the binlog a throwaway MariaDB writes",
        []() -> std::optional<std::string> {
            if (!find_program("mariadbd") || !find_program("mariadb-install-db") || !find_program("mariadb"))
                return std::string("MariaDB (mariadb-server, mariadb-client) is not installed");
            if (::geteuid() != 0) return std::string("needs root (the throwaway server runs as --user=root)");
            return std::nullopt;
        },
        run_stop,
    };
}

}  // namespace ktricks::tour
