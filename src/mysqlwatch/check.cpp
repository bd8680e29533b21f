// --check: which detection paths work on this server, and what each of them cannot see.
#include <unistd.h>

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "ktricks/mysqlwatch.hpp"
#include "mysqlwatch/sql.hpp"
#include "mysqlwatch/watch_internal.hpp"

namespace ktricks::mysqlwatch {
namespace fs = std::filesystem;

namespace {

// The first event of a binlog is its FORMAT_DESCRIPTION, which names the server version: no login
// needed to learn it.
std::string version_from_binlog(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    std::string head(4 + 19 + 2 + 50, '\0');
    if (!in.read(head.data(), static_cast<std::streamsize>(head.size()))) return "";
    if (head.compare(0, 4,
                     "\xfe"
                     "bin") != 0 ||
        static_cast<unsigned char>(head[4 + 4]) != 15)
        return "";
    std::string version = head.substr(4 + 19 + 2, 50);
    return version.substr(0, version.find('\0'));
}

std::optional<double> probe_latency(const WatchOptions& options, Connection& connection) {
    connection.execute("CREATE DATABASE IF NOT EXISTS ktricks_probe");
    connection.execute(
        "CREATE TABLE IF NOT EXISTS ktricks_probe.probe (id INT AUTO_INCREMENT PRIMARY KEY, at TIMESTAMP(6)) ENGINE=InnoDB");
    WatchOptions watch_options = options;
    watch_options.db_glob = "ktricks_probe";
    watch_options.table_glob = "probe";
    watch_options.log = [](const std::string&) {};
    std::optional<std::chrono::system_clock::time_point> seen;
    std::thread watcher([&] {
        EventLoop loop;
        Watcher probe(loop, watch_options, [&](const Change& change) {
            if (change.event != "change") return;
            seen = change.when;
            loop.stop();
        });
        probe.start();
        loop.add_timer(std::chrono::seconds(3), [&] { loop.stop(); });
        loop.run();
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    connection.execute("INSERT INTO ktricks_probe.probe (at) VALUES (NOW(6))");
    auto committed = std::chrono::system_clock::now();
    watcher.join();
    connection.execute("DROP DATABASE ktricks_probe");
    if (!seen) return std::nullopt;
    return std::chrono::duration<double, std::milli>(*seen - committed).count();
}

}  // namespace

CheckReport check(const WatchOptions& options, bool probe) {
    CheckReport report;
    report.datadir = options.datadir;
    bool readable = ::access(options.datadir.c_str(), R_OK | X_OK) == 0;
    if (!readable)
        report.blind_spots.push_back(
            fmt::format("cannot read {}: {}", options.datadir.string(), std::strerror(errno)));
    report.binlog_index = readable ? find_binlog_index(options.datadir) : std::nullopt;
    bool binlog_readable = false;
    if (report.binlog_index) {
        auto files = read_binlog_index(*report.binlog_index, options.datadir);
        if (!files.empty()) {
            binlog_readable = ::access(files.back().c_str(), R_OK) == 0;
            report.server_version = version_from_binlog(files.back());
            if (!binlog_readable)
                report.blind_spots.push_back(fmt::format("cannot read the binlog {}", files.back().string()));
        }
    } else {
        report.blind_spots.push_back(
            "no binary log (log_bin off): no exact per-commit path, no DDL from the binlog");
    }

    std::unique_ptr<Connection> connection;
    if (credentials_given(options.credentials)) {
        try {
            connection = std::make_unique<Connection>(options.credentials);
            report.server_version = connection->server_version();
        } catch (const std::exception& error) {
            report.blind_spots.push_back(
                fmt::format("no SQL login ({}): the redo path cannot name tables", error.what()));
        }
    } else {
        report.blind_spots.push_back(
            "no credentials given (--socket/--user/--defaults-file): the redo path is off");
    }
    if (connection) {
        auto variable = [&](const std::string& name) -> std::string {
            try {
                auto rows = connection->query(fmt::format("SELECT @@GLOBAL.{}", name));
                if (!rows.empty() && !rows[0].empty() && rows[0][0]) return *rows[0][0];
            } catch (const std::exception&) {}
            return "";
        };
        if (variable("log_bin") == "1" && variable("binlog_format") != "ROW")
            report.blind_spots.push_back(
                fmt::format("binlog_format={}: statements are parsed for their target table, "
                            "multi-table and stored-routine statements may be missed",
                            variable("binlog_format")));
        if (variable("encrypt_binlog") == "1")
            report.blind_spots.push_back("encrypt_binlog=ON: the binlog cannot be read; use --mode redo");
        if (variable("innodb_use_native_aio") == "1")
            report.blind_spots.push_back(
                "innodb_use_native_aio=ON: InnoDB page writes go through io_uring or, where the "
                "server falls back to libaio, io_submit, which inotify never sees (.ibd events "
                "may never come)");
        auto lwm = variable("innodb_max_dirty_pages_pct_lwm");
        if (!lwm.empty() && std::strtod(lwm.c_str(), nullptr) == 0.0)
            report.blind_spots.push_back(
                "innodb_max_dirty_pages_pct_lwm=0: InnoDB flushes pages late; .ibd events lag commits "
                "by seconds to minutes");
        if (variable("innodb_file_per_table") == "0")
            report.blind_spots.push_back(
                "innodb_file_per_table=OFF: InnoDB tables live in ibdata1; the file path cannot name them");
    }
    report.paths.emplace_back("binlog", binlog_readable);
    report.paths.emplace_back("redo", connection != nullptr);
    report.paths.emplace_back("files", readable);
    report.chosen = binlog_readable ? Mode::binlog : connection ? Mode::redo : Mode::files;
    if (probe && connection) {
        try {
            report.probe_latency_ms = probe_latency(options, *connection);
        } catch (const std::exception& error) {
            report.blind_spots.push_back(fmt::format("probe failed: {}", error.what()));
        }
    }
    return report;
}

std::string format_report(const CheckReport& report) {
    static constexpr const char* mode_names[] = {"auto", "binlog", "redo", "files"};
    std::string text = fmt::format("datadir: {}\n", report.datadir.string());
    text += fmt::format("server: {}\n", report.server_version.empty() ? "(unknown: no binlog and no login)"
                                                                      : report.server_version);
    text += fmt::format("binlog index: {}\n", report.binlog_index ? report.binlog_index->string() : "(none)");
    for (const auto& [path, usable] : report.paths)
        text += fmt::format("path {}: {}\n", path, usable ? "usable" : "not usable");
    text += fmt::format("auto mode uses: {}\n", mode_names[static_cast<int>(report.chosen)]);
    if (report.probe_latency_ms && *report.probe_latency_ms >= 0)
        text += fmt::format("probe: the event came {:.2f} ms after the COMMIT returned\n",
                            *report.probe_latency_ms);
    else if (report.probe_latency_ms)
        text += fmt::format(
            "probe: the event came {:.2f} ms before the COMMIT returned (the server writes the binlog "
            "before it answers)\n",
            -*report.probe_latency_ms);
    for (const std::string& spot : report.blind_spots) text += fmt::format("blind spot: {}\n", spot);
    return text;
}

}  // namespace ktricks::mysqlwatch
