// Tour stop "mysql-watch": a throwaway MariaDB in a temporary directory (binlog on), a watcher on
// its data directory, a few statements, the events and their latency; then the server is stopped
// and its directory removed.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <stdlib.h>

#include <fmt/format.h>

#include <filesystem>
#include <mutex>
#include <thread>

#include "cli/tour.hpp"
#include "ktricks/core/child.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/mysqlwatch.hpp"

namespace ktricks::cli {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;

bool on_path(const char* program) {
    for (const char* dir : {"/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"})
        if (fs::exists(fs::path(dir) / program)) return true;
    return false;
}

struct TempTree {
    fs::path path;
    TempTree() {
        std::string pattern = "/tmp/ktricks-tour-mysql-XXXXXX";
        if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
        path = pattern;
    }
    ~TempTree() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
};

void run_sql(const fs::path& socket, const std::string& sql) {
    SpawnOptions spawn;
    spawn.argv = {"mariadb", "--no-defaults", "-S", socket.string(), "-uroot", "-e", sql};
    auto status = Child::spawn(spawn).wait(std::chrono::seconds(10));
    if (!status || status->code != 0) throw std::runtime_error("mariadb client failed: " + sql);
}

void run_stop(TourLog& log) {
    TempTree tree;
    fs::path datadir = tree.path / "data", socket = tree.path / "sock";
    SpawnOptions install;
    install.argv = {"mariadb-install-db", "--no-defaults", "--datadir=" + datadir.string(), "--user=root",
                    "--auth-root-authentication-method=normal", "--skip-test-db"};
    Fd null(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    install.stdout_fd = null.get();
    install.stderr_fd = null.get();
    auto installed = Child::spawn(install).wait(std::chrono::seconds(30));
    if (!installed || installed->code != 0) throw std::runtime_error("mariadb-install-db failed");
    SpawnOptions server_options;
    server_options.argv = {"mariadbd", "--no-defaults", "--datadir=" + datadir.string(), "--socket=" + socket.string(),
                           "--skip-networking", "--user=root", "--pid-file=" + (tree.path / "pid").string(),
                           "--log-bin=" + (datadir / "binlog").string(), "--binlog-format=ROW",
                           "--log-error=" + (tree.path / "error.log").string()};
    Child server = Child::spawn(server_options);
    for (int i = 0; i < 100 && !fs::exists(socket); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    log.say(fmt::format("A throwaway MariaDB runs on {} (binlog on, no TCP port).", datadir.string()));

    std::mutex mutex;
    std::vector<mysqlwatch::Change> seen;
    mysqlwatch::WatchOptions options;
    options.datadir = datadir;
    options.timeout = std::chrono::seconds(8);
    options.max_changes = 13;  // create db, create table, 10 inserts, drop: the rollback adds nothing
    options.log = [](const std::string&) {};
    std::thread watcher([&] {
        mysqlwatch::watch(options, [&](const mysqlwatch::Change& change) {
            std::lock_guard lock(mutex);
            seen.push_back(change);
        });
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    run_sql(socket, "CREATE DATABASE shop; CREATE TABLE shop.`order-items` (id INT PRIMARY KEY AUTO_INCREMENT, v INT) ENGINE=InnoDB");
    std::vector<double> latencies;
    for (int i = 0; i < 10; ++i) {
        std::size_t before;
        {
            std::lock_guard lock(mutex);
            before = seen.size();
        }
        auto committed = Clock::now();  // the client is started here; the server answers it after the binlog write
        run_sql(socket, "INSERT INTO shop.`order-items` (v) VALUES (1)");
        for (int wait = 0; wait < 200; ++wait) {
            std::lock_guard lock(mutex);
            if (seen.size() > before) {
                latencies.push_back(std::chrono::duration<double, std::milli>(seen.back().when - committed).count());
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    run_sql(socket, "BEGIN; INSERT INTO shop.`order-items` (v) VALUES (2); ROLLBACK; DROP TABLE shop.`order-items`");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ::kill(server.pid(), SIGTERM);
    server.wait(std::chrono::seconds(20));
    watcher.join();
    std::lock_guard lock(mutex);
    for (std::size_t i = 0; i < seen.size() && i < 5; ++i) {
        std::string line = mysqlwatch::to_event(seen[i]).to_line();
        log.say("  " + line.substr(0, line.size() - 1));
    }
    if (seen.size() > 5) log.say(fmt::format("  ... {} events in all (the rolled-back insert is not among them)", seen.size()));
    if (latencies.size() < 10) log.failed(fmt::format("only {} of 10 commits produced an event", latencies.size()));
    if (!latencies.empty()) {
        log.say("Latency below runs from starting the `mariadb` client (its start-up included) to the event.");
        log.measured("mysql-watch binlog: client start to event, p50", format_ms(percentile(latencies, 0.5)));
        log.measured("mysql-watch binlog: client start to event, max", format_ms(percentile(latencies, 1.0)));
    }
    log.say("Server stopped, its directory removed.");
}

}  // namespace

TourStop mysql_watch_tour_stop() {
    return TourStop{
        "mysql-watch",
        "mysql-watch: which tables changed, from the binlog a throwaway MariaDB writes",
        [] () -> std::optional<std::string> {
            if (!on_path("mariadbd") || !on_path("mariadb-install-db") || !on_path("mariadb"))
                return std::string("MariaDB (mariadb-server, mariadb-client) is not installed");
            if (::geteuid() != 0) return std::string("needs root (the throwaway server runs as --user=root)");
            return std::nullopt;
        },
        run_stop,
    };
}

}  // namespace ktricks::cli
