// ktricks mysql-watch: argument parsing for the table-change watcher (library: ktricks/mysqlwatch.hpp).
#include <fmt/format.h>

#include <signal.h>
#include <unistd.h>

#include <memory>
#include <optional>

#include "cli/common.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/runner.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/mysqlwatch.hpp"
#include "ktricks/sinks.hpp"

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
    ExecFlags exec_flags;
    bool json = false;
    bool check = false;
    bool probe = false;
    bool quiet = false;
    bool rows = false;
    std::string read;  // --read BINLOG
    std::size_t count = 0;
    std::string state;    // --state FILE
    std::string publish;  // --publish URL
    std::string spool;
    std::uint64_t spool_max_mb = 256;
};

void print_text(const mysqlwatch::Change& change) {
    std::string name = change.table.empty() ? change.db : fmt::format("{}.{}", change.db, change.table);
    if (!change.op.empty()) {
        // --rows without --json: the row's values on one line, before -> after for an update.
        std::string values = change.op == "c"   ? change.after.dump()
                             : change.op == "d" ? change.before.dump()
                                                : change.before.dump() + " -> " + change.after.dump();
        fmt::print("{} row {} {} {}\n", format_timestamp(change.when), change.op, printable(name), values);
        std::fflush(stdout);
        return;
    }
    std::string extra;
    if (!change.new_table.empty())
        extra +=
            fmt::format(" -> {}.{}", change.new_db.empty() ? change.db : change.new_db, change.new_table);
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
    watch.rows = options.rows;
    if (options.rows && (watch.mode == mysqlwatch::Mode::redo || watch.mode == mysqlwatch::Mode::files))
        throw InputError(
            fmt::format("--rows needs the binlog path; --mode {} has no row images", options.mode));
    if (options.check) {
        auto report = mysqlwatch::check(watch, options.probe);
        fmt::print("{}", mysqlwatch::format_report(report));
        bool any_usable = false;
        for (const auto& [path, usable] : report.paths) any_usable = any_usable || usable;
        return any_usable ? exit_code::ok : exit_code::no_input;
    }
    if (!options.read.empty()) {
        // One file, from its start, then exit: what mariadb-binlog -v does, as events.
        watch.log = [quiet = options.quiet](const std::string& line) {
            if (!quiet) log_info("{}", line);
        };
        std::size_t printed = 0;
        mysqlwatch::read_binlog_file(options.read, watch, [&](const mysqlwatch::Change& change) {
            if (options.count && printed >= options.count) return;
            ++printed;
            if (options.json) fmt::print("{}", mysqlwatch::to_event(change).to_line());
            else
                print_text(change);
        });
        std::fflush(stdout);
        return exit_code::ok;
    }
    if (!options.state.empty()) {
        // The watcher reports each transaction's changes, then its end position; they are
        // acknowledged once written to stdout (fflush returned), so the position is saved right
        // after: a kill -9 repeats at most the transaction whose output was written but whose
        // position was not yet saved.
        watch.resume = mysqlwatch::load_position(options.state);
        watch.on_position = [&options](const mysqlwatch::Position& position) {
            mysqlwatch::save_position(options.state, position);
        };
    }
    EventLoop loop;
    std::optional<sinks::Publisher> publisher;
    std::string host;
    if (!options.publish.empty()) {
        sinks::PublisherOptions publish =
            sinks::publisher_options(options.publish, options.spool, options.spool_max_mb);
        publish.log = [quiet = options.quiet](const std::string& line) {
            if (!quiet) log_info("{}", line);
        };
        publisher.emplace(loop, std::move(publish));
        char name[256] = {};
        ::gethostname(name, sizeof name - 1);
        host = name;
    }
    std::uint64_t unpositioned = 0;
    Runner runner(loop, {.concurrency = options.exec_flags.concurrency}, log_script_end);
    auto timeout = exec_timeout(options.exec_flags);
    std::size_t delivered = 0;
    watch.log = [quiet = options.quiet](const std::string& line) {
        notify_status(line);
        if (!quiet) log_info("{}", line);
    };
    mysqlwatch::Watcher watcher(loop, watch, [&](const mysqlwatch::Change& change) {
        Event event = mysqlwatch::to_event(change);
        if (publisher) {
            // Stable id (host, source, position): the stream's consumers drop repeats by it. Only the
            // binlog path has positions; other paths' ids are unique but not stable across restarts.
            std::string id = change.position ? fmt::format("{}:mysql:{}:{}:{}", host, change.position->file,
                                                           change.position->offset, change.index)
                                             : fmt::format("{}:mysql:{}:{}:{}", host, ::getpid(),
                                                           format_timestamp(change.when), ++unpositioned);
            publisher->publish(event, id);  // returns once acknowledged or spooled
        }
        if (options.json) {
            fmt::print("{}", event.to_line());
            std::fflush(stdout);
        } else if (options.exec.empty()) {
            print_text(change);
        }
        if (!options.exec.empty()) {
            Job job;
            // One table's scripts run in the order of its changes; other tables' in parallel.
            job.key = change.db + '.' + change.table;
            job.argv = {"/bin/sh", "-c", options.exec};
            job.env = event.environment();
            job.input = event.to_line();
            job.timeout = timeout;
            job.label = fmt::format("--exec for {} {}", change.event, printable(job.key));
            runner.submit(std::move(job));
        }
        if (options.count && ++delivered >= options.count) loop.stop();
    });
    bool signaled = false;
    loop.add_signals({SIGINT, SIGTERM}, [&](const signalfd_siginfo&) {
        signaled = true;
        loop.stop();
    });
    if (publisher) publisher->start();
    watcher.start();
    // Under systemd (Type=notify): ready once the watches are in place, even while waiting for the
    // server; the status line says which.
    notify_ready(watcher.status());
    loop.run();
    notify_stopping();
    watcher.stop();
    // Every event was acknowledged or spooled when publish() returned: nothing to flush.
    if (publisher) publisher->stop();
    if (!options.state.empty()) {
        // Make the last position durable (each write was atomic, this makes it survive power loss).
        if (auto last = mysqlwatch::load_position(options.state))
            mysqlwatch::save_position(options.state, *last, true);
    }
    // --count: the scripts of the last events finish (bounded by their timeout) before we exit;
    // on a signal they are killed with their process groups.
    if (options.count && delivered >= options.count)
        while (runner.busy() && !signaled) loop.run_once(std::chrono::milliseconds(100));
    return 0;
}

}  // namespace

Subcommand add_mysql_watch(CLI::App& app) {
    auto options = std::make_shared<MysqlWatchOptions>();
    auto* sub = add_subcommand(app, "mysql-watch");
    sub->add_option("--datadir", options->datadir, "The server's data directory")->capture_default_str();
    sub->add_option(
           "--mode", options->mode,
           "auto (binlog if there is one, else redo+query with a login, else files), binlog, redo or files")
        ->capture_default_str();
    sub->add_option("--defaults-file", options->credentials.defaults_file,
                    "Client option file for the redo path's query");
    sub->add_option("--socket", options->credentials.socket, "Server socket for the redo path's query");
    sub->add_option("--user", options->credentials.user, "SQL user for the redo path's query");
    sub->add_option("--password", options->credentials.password, "SQL password (prefer --defaults-file)");
    sub->add_option("--db", options->db, "Only databases matching this glob (system schemas only when named)")
        ->capture_default_str();
    sub->add_option("--table", options->table, "Only tables matching this glob")->capture_default_str();
    auto* debounce =
        sub->add_option("--debounce", options->debounce_ms,
                        "Per table: at most one change event per MS milliseconds (plus one trailing event)")
            ->check(CLI::NonNegativeNumber);
    sub->add_option(
        "--exec", options->exec,
        "Run this shell command for each event, with KTRICKS_EVENT, KTRICKS_DB, KTRICKS_TABLE, KTRICKS_ENGINE, "
        "KTRICKS_VIA, KTRICKS_ROWS, KTRICKS_TS in its environment and the event's JSON on stdin; "
        "never blocks change detection");
    add_exec_flags(sub, options->exec_flags);
    sub->add_option("--count", options->count, "Exit after this many events");
    sub->add_option(
           "--state", options->state,
           "Binlog path: resume from the position saved in FILE, and save it after every transaction "
           "written out (restart after a crash repeats at most one transaction, loses none)")
        ->excludes(debounce);
    sub->add_option("--publish", options->publish,
                    "Also send every event to redis://HOST:PORT/STREAM[?maxlen=N&user=U&password_file=F] "
                    "(XADD MAXLEN ~ N) or nats://HOST:PORT/SUBJECT[?stream=NAME&replicas=N&creds_file=F"
                    "&token_file=F&tls=1&ca_file=F] (JetStream, Nats-Msg-Id = the event's id); "
                    "STREAM and SUBJECT may use {host} {source} {db} {table} (docs/events.md)");
    sub->add_option("--spool", options->spool,
                    "With --publish: directory where events wait, in order, while the broker is unreachable");
    sub->add_option(
           "--spool-max", options->spool_max_mb,
           "Spool cap in MiB; when full the oldest events are dropped and a spool_dropped event says so")
        ->capture_default_str();
    sub->add_flag(
        "--rows", options->rows,
        "Binlog path: one event per row with its values (op c/u/d, before, after; column names with "
        "binlog_row_metadata=FULL), instead of one per table and transaction");
    sub->add_option(
           "--read", options->read,
           "Decode this binlog file from its start and exit (no watching); with --rows, --json, --db, "
           "--table, --count")
        ->check(CLI::ExistingFile);
    sub->add_flag("--json", options->json, "One JSON object per event");
    sub->add_flag("--check", options->check,
                  "Print the data directory, server version, usable paths and blind spots");
    sub->add_flag(
        "--probe", options->probe,
        "With --check and a login: create ktricks_probe.probe, commit one row, measure commit-to-event, drop it");
    sub->add_flag("--quiet", options->quiet, "No log lines on stderr (state changes, corrupt events)");
    sub->footer(
        "Examples:\n"
        "  ktricks mysql-watch --json                                  # /var/lib/mysql, binlog if enabled\n"
        "  ktricks mysql-watch --datadir /srv/db --db shop --table 'order*'\n"
        "  ktricks mysql-watch --mode redo --socket /run/mysqld/mysqld.sock --user watcher\n"
        "  ktricks mysql-watch --exec 'echo $KTRICKS_DB.$KTRICKS_TABLE changed' --debounce 500\n"
        "  ktricks mysql-watch --json --state /var/lib/ktricks/mysql-watch.state   # resumes after a restart\n"
        "  ktricks mysql-watch --json --rows --db shop                 # row images (change data capture)\n"
        "  ktricks mysql-watch --check --socket /run/mysqld/mysqld.sock --user root --probe\n"
        "Exit status: 0 when stopped by INT/TERM or after --count events; --check: 0, or 66 when no detection path is\n"
        "usable. A corrupt binlog event is logged and skipped, never fatal.");
    return {sub, [options] { return run_mysql_watch(*options); }};
}

}  // namespace ktricks::cli
