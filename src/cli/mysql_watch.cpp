// ktricks mysql-watch: argument parsing for the table-change watcher (library: ktricks/mysqlwatch.hpp).
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "cli/common.hpp"
#include "ktricks/core/child.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/mysqlwatch.hpp"

namespace ktricks::cli {
namespace {

struct MysqlWatchOptions {
    std::string datadir = "/var/lib/mysql";
    std::string mode = "auto";
    mysqlwatch::Credentials credentials;
    std::string db = "*";
    std::string table = "*";
    long long debounce_ms = 0;
    std::string exec;
    bool json = false;
    bool check = false;
    bool probe = false;
    bool quiet = false;
    std::size_t count = 0;
};

void print_text(const mysqlwatch::Change& change) {
    std::string name = change.table.empty() ? change.db : fmt::format("{}.{}", change.db, change.table);
    std::string extra;
    if (!change.new_table.empty())
        extra += fmt::format(" -> {}.{}", change.new_db.empty() ? change.db : change.new_db, change.new_table);
    if (!change.engine.empty()) extra += fmt::format(" [{}]", change.engine);
    if (change.rows) extra += fmt::format(" rows={}", *change.rows);
    if (change.delayed) extra += " (delayed: seen at page flush)";
    fmt::print("{} {} {} via {}{}\n", format_timestamp(change.when), change.event, printable(name),
               mysqlwatch::to_string(change.via), printable(extra));
    std::fflush(stdout);
}

int run_mysql_watch(const MysqlWatchOptions& options) {
    mysqlwatch::WatchOptions watch;
    watch.datadir = options.datadir;
    watch.mode = mysqlwatch::parse_mode(options.mode);
    watch.credentials = options.credentials;
    watch.db_glob = options.db;
    watch.table_glob = options.table;
    watch.debounce = std::chrono::milliseconds(options.debounce_ms);
    watch.max_changes = options.count;
    if (options.quiet) watch.log = [](const std::string&) {};
    if (options.check) {
        auto report = mysqlwatch::check(watch, options.probe);
        fmt::print("{}", mysqlwatch::format_report(report));
        bool any_usable = false;
        for (const auto& [path, usable] : report.paths) any_usable = any_usable || usable;
        return any_usable ? exit_code::ok : exit_code::no_input;
    }
    mysqlwatch::watch(watch, [&](const mysqlwatch::Change& change) {
        if (options.json) {
            fmt::print("{}", mysqlwatch::to_event(change).to_line());
            std::fflush(stdout);
        } else if (options.exec.empty()) {
            print_text(change);
        }
        if (!options.exec.empty()) {
            SpawnOptions spawn;
            spawn.argv = {"/bin/sh", "-c", options.exec};
            for (const auto& [key, value] : mysqlwatch::to_environment(change)) spawn.set_env.push_back(key + "=" + value);
            try {
                Child::spawn(spawn).wait();
            } catch (const std::exception& error) {
                std::cerr << "ktricks mysql-watch: --exec: " << error.what() << '\n';
            }
        }
    });
    return 0;
}

}  // namespace

Subcommand add_mysql_watch(CLI::App& app) {
    auto options = std::make_shared<MysqlWatchOptions>();
    auto* sub = add_subcommand(app, "mysql-watch");
    sub->add_option("--datadir", options->datadir, "The server's data directory")->capture_default_str();
    sub->add_option("--mode", options->mode,
                    "auto (binlog if there is one, else redo+query with a login, else files), binlog, redo or files")
        ->capture_default_str();
    sub->add_option("--defaults-file", options->credentials.defaults_file, "Client option file for the redo path's query");
    sub->add_option("--socket", options->credentials.socket, "Server socket for the redo path's query");
    sub->add_option("--user", options->credentials.user, "SQL user for the redo path's query");
    sub->add_option("--password", options->credentials.password, "SQL password (prefer --defaults-file)");
    sub->add_option("--db", options->db, "Only databases matching this glob (system schemas only when named)")->capture_default_str();
    sub->add_option("--table", options->table, "Only tables matching this glob")->capture_default_str();
    sub->add_option("--debounce", options->debounce_ms,
                    "Per table: at most one change event per MS milliseconds (plus one trailing event)")
        ->check(CLI::NonNegativeNumber);
    sub->add_option("--exec", options->exec,
                    "Run this shell command for each event, with KTRICKS_EVENT, KTRICKS_DB, KTRICKS_TABLE, KTRICKS_ENGINE, "
                    "KTRICKS_VIA, KTRICKS_ROWS, KTRICKS_TS in its environment");
    sub->add_option("--count", options->count, "Exit after this many events");
    sub->add_flag("--json", options->json, "One JSON object per event");
    sub->add_flag("--check", options->check, "Print the data directory, server version, usable paths and blind spots");
    sub->add_flag("--probe", options->probe,
                  "With --check and a login: create ktricks_probe.probe, commit one row, measure commit-to-event, drop it");
    sub->add_flag("--quiet", options->quiet, "No log lines on stderr (state changes, corrupt events)");
    sub->footer(
        "Examples:\n"
        "  ktricks mysql-watch --json                                  # /var/lib/mysql, binlog if enabled\n"
        "  ktricks mysql-watch --datadir /srv/db --db shop --table 'order*'\n"
        "  ktricks mysql-watch --mode redo --socket /run/mysqld/mysqld.sock --user watcher\n"
        "  ktricks mysql-watch --exec 'echo $KTRICKS_DB.$KTRICKS_TABLE changed' --debounce 500\n"
        "  ktricks mysql-watch --check --socket /run/mysqld/mysqld.sock --user root --probe\n"
        "Exit status: 0 when stopped by INT/TERM or after --count events; --check: 0, or 66 when no detection path is\n"
        "usable. A corrupt binlog event is logged and skipped, never fatal.");
    return {sub, [options] { return run_mysql_watch(*options); }};
}

}  // namespace ktricks::cli
