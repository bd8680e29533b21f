// mysql-watch: learn which MySQL/MariaDB tables changed by watching the server's data directory
// with inotify. No SQL login, no replication privilege, no trigger: read access to the files.
//
// Three detection paths (Via), chosen by Mode:
//   binlog  the binary log is tailed: every appended event is parsed (checksum verified), tables
//           come from TABLE_MAP events and DDL from QUERY events. Exact, per committed transaction
//           (a rolled-back InnoDB transaction never reaches the binlog).
//   redo    a write to ib_logfile0 / aria_log.* says "something committed"; one query of
//           information_schema.TABLES.UPDATE_TIME (needs a login) names the tables.
//   file    the tables' own files: .MYD (MyISAM) immediately, .MAI (Aria) at statement end, .ibd
//           (InnoDB) only when the page cleaner flushes (late, or never with Linux native AIO);
//           CREATE/DROP/RENAME/TRUNCATE from directory events.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"

namespace ktricks::mysqlwatch {

enum class Via { binlog, redo, file };
enum class Mode { automatic, binlog, redo, files };

std::string_view to_string(Via via) noexcept;
// "auto", "binlog", "redo", "files"; throws InputError for anything else.
Mode parse_mode(std::string_view text);

// A place in the binary log where a whole transaction (or DDL statement) ends: resuming there
// repeats nothing and skips nothing. `gtid` is MariaDB's domain-server-sequence of that
// transaction, "" when the server wrote none.
struct Position {
    std::string file;  // file name inside the data directory ("binlog.000003"), no directory
    std::uint64_t offset = 0;
    std::string gtid;
    bool operator==(const Position&) const = default;
};

// One thing that happened to one table (or to a database, when table is empty).
struct Change {
    std::string event;  // change | create | drop | rename | truncate
    std::string db;
    std::string table;
    std::string new_table;  // rename: the new name (db stays the same unless new_db is set)
    std::string new_db;
    std::string engine;  // InnoDB, MyISAM, Aria, ... or "" if unknown
    Via via = Via::binlog;
    std::optional<std::uint64_t> rows;  // binlog ROW format: rows written/updated/deleted
    bool delayed = false;               // file path on .ibd: seen when flushed, not when committed
    std::chrono::system_clock::time_point when = std::chrono::system_clock::now();
    // Binlog path: where the transaction ends and this change's place in it; together a stable id
    // ("binlog.000003:1234:0") that a restarted watcher gives the same change again.
    std::optional<Position> position;
    std::uint32_t index = 0;
    // --rows: one change per row (event "row"), with the row images. `op` is "c" (insert), "u"
    // (update) or "d" (delete); `before`/`after` are JSON objects {column: value} (null where the
    // operation has none), column names from binlog_row_metadata=FULL, else "@1", "@2", ...
    // (docs/mysql-watch.md lists every type's JSON form). `binlog_time` is the event's timestamp.
    std::string op;
    nlohmann::ordered_json before, after;
    std::uint32_t binlog_time = 0;
};

// {"ts","source":"mysql","event","db","table","engine","via","rows"?,...}; scripts get its
// environment(): KTRICKS_EVENT, KTRICKS_DB, KTRICKS_TABLE, KTRICKS_ENGINE, KTRICKS_VIA, KTRICKS_ROWS, ...
Event to_event(const Change& change);

// ---- MariaDB's "filename" character set (identifier <-> file name) ----

// `my@002dtable` -> `my-table`, `gr@1i@1je` -> `größe`: letters, digits and `_` stand for
// themselves, `@XXXX` is a hex code point, `@` + two characters indexes MariaDB's table of letters.
// nullopt if `name` is not a valid encoding.
std::optional<std::string> decode_filename(std::string_view name);
// The inverse (UTF-8 identifier -> file name); nullopt for invalid UTF-8.
std::optional<std::string> encode_filename(std::string_view identifier);

// What a file inside a database directory stands for.
struct TableFile {
    std::string table;       // decoded, partition suffix removed
    std::string extension;   // "ibd", "MYD", ...
    std::string engine;      // from the extension ("" if it tells nothing)
    bool temporary = false;  // #sql... (ALTER/TRUNCATE/DROP work files)
    bool partition = false;  // t#P#p0 (or a subpartition)
};
std::optional<TableFile> parse_table_file(std::string_view file_name);

// ---- binary log ----

struct TableMap;

// Incremental parser of a binlog file's bytes (v4 format, as MariaDB and MySQL write it).
// Bytes are fed as they are appended; an event is parsed once it is complete. Row events are
// buffered per transaction and reported at its XID / COMMIT; ROLLBACK discards them.
// A corrupt event (bad length, bad checksum, end position that does not match) is reported and
// the parser resynchronises at the next offset where a valid event starts.
class BinlogParser {
public:
    struct Output {
        std::vector<Change> changes;
        std::vector<std::string> problems;     // corrupt events, unsupported features
        std::optional<std::string> rotate_to;  // a ROTATE event names the next file
        // Ends of transactions (and of statements outside one), in order: the changes before
        // changes[boundary.changes] belong to transactions that end at or before boundary.offset.
        struct Boundary {
            std::size_t changes = 0;
            std::uint64_t offset = 0;
            std::string gtid;
        };
        std::vector<Boundary> boundaries;
    };

    // The bytes fed begin at offset 0 of the file (with the magic number).
    BinlogParser();
    Output feed(std::string_view bytes);
    // Offset in the file of the next unparsed byte.
    std::uint64_t offset() const noexcept { return offset_ + consumed_; }
    bool checksums() const noexcept { return checksum_; }
    std::size_t pending_bytes() const noexcept { return buffer_.size() - consumed_; }
    // The end of the last whole transaction parsed (or of the format description): a place a
    // later reader can resume at; also tracked while quiet.
    std::uint64_t safe_offset() const noexcept { return safe_offset_; }
    const std::string& last_gtid() const noexcept { return safe_gtid_; }

    // Row images: each row of a ROWS event becomes one Change with op/before/after, instead of one
    // change per table and transaction. A row event that cannot be decoded is reported in
    // `problems` and becomes a table-level change, so nothing is silently dropped.
    void set_rows(bool rows) noexcept { rows_ = rows; }

    // Skips the events of an existing file without reporting them (a watcher starting late wants
    // what happens next, but needs the format description and the table map).
    void set_quiet(bool quiet) noexcept { quiet_ = quiet; }

private:
    void parse_event(std::string_view event, Output& out);
    bool plausible_at(std::size_t at) const;
    void resync(Output& out);
    void add_change(Change change, Output& out, bool in_group);
    void commit(Output& out);

    std::string buffer_;
    std::size_t consumed_ = 0;
    std::uint64_t offset_ = 0;  // file offset of buffer_[0]
    bool magic_pending_ = true;
    bool checksum_ = false;
    bool quiet_ = false;
    bool rows_ = false;
    bool in_group_ = false;
    bool encrypted_ = false;
    bool boundary_pending_ = false;  // a transaction or statement ended in the event just parsed
    std::uint64_t safe_offset_ = 0;
    std::string gtid_, safe_gtid_;
    std::string post_header_lengths_;  // from the format description, one byte per event type
    std::map<std::uint64_t, std::shared_ptr<TableMap>> tables_;  // rows.hpp
    std::vector<Change> group_;
};

// Database and table named by an SQL statement, as far as a small tokenizer can tell:
// CREATE/DROP/ALTER/RENAME/TRUNCATE TABLE, CREATE/DROP DATABASE, INSERT/UPDATE/DELETE/REPLACE.
// `default_db` is the session's database. Empty if the statement is none of those.
std::vector<Change> changes_from_statement(std::string_view sql, std::string_view default_db);

// ---- state file (--state) ----

// {"file":"binlog.000003","pos":1234,"gtid":"0-1-57"}. load_position: nullopt when the file does
// not exist; throws DataError naming the file for anything it cannot use.
std::optional<Position> load_position(const std::filesystem::path& path);
// Replaces the file atomically (write to FILE.tmp, rename): a reader or a restarted watcher sees
// the old or the new position, never a torn one, also after kill -9. `durable` adds fsync of the
// file and its directory (survives power loss; costs a disk flush).
void save_position(const std::filesystem::path& path, const Position& position, bool durable = false);

// ---- the watcher ----

struct Credentials {
    std::string defaults_file;
    std::string socket;
    std::string user;
    std::string password;
};

struct WatchOptions {
    std::filesystem::path datadir = "/var/lib/mysql";
    Mode mode = Mode::automatic;
    Credentials credentials;
    std::string db_glob = "*";
    std::string table_glob = "*";
    std::chrono::milliseconds debounce{0};     // per table: at most one event per window (+ a trailing one)
    std::chrono::milliseconds redo_delay{20};  // redo path: wait this long after the log write
    // Binlog path: continue at this position (from a state file) instead of at the end of the
    // current binlog; newer files are read from their first byte. If the file is no longer in the
    // index (purged), reading starts at the oldest file there and `log` says so.
    std::optional<Position> resume;
    // Binlog path: one change per row with its values (BinlogParser::set_rows), not per table.
    bool rows = false;
    // Binlog path: called on the loop after every change of a transaction was passed to on_change
    // (or filtered out): resuming at this position repeats none of them. Once at start too, with
    // where reading begins. Not compatible with `debounce` (a held-back change would be skipped).
    std::function<void(const Position&)> on_position;
    // Warnings and state changes ("binlog binlog.000002 opened"), one line each. Unset: the core
    // logger (log_info).
    std::function<void(const std::string&)> log;
};

// The watcher, on the caller's EventLoop: start() puts the inotify watches in place (or starts
// waiting for the data directory to appear) and returns; `on_change` is then called on the loop for
// each change that passes the filters. It survives server restarts and binlog rotation. Signals,
// output and the service manager are the caller's business.
class Watcher {
public:
    Watcher(EventLoop& loop, WatchOptions options, std::function<void(const Change&)> on_change);
    ~Watcher();
    Watcher(const Watcher&) = delete;
    Watcher& operator=(const Watcher&) = delete;
    // Throws std::system_error if inotify cannot be set up.
    void start();
    // Removes every watch and source from the loop; no change is delivered after it.
    void stop() noexcept;
    // The latest state line ("watching /var/lib/mysql (paths: binlog)"), e.g. for STATUS=.
    const std::string& status() const noexcept;

private:
    class Impl;
    std::unique_ptr<Impl> impl_;
};

// Whether a change passes options.db_glob / table_glob (system schemas only when named).
bool passes_filters(const WatchOptions& options, const Change& change);

// Decodes one binlog file from its first byte, synchronously (no watching, no engine lookup):
// on_change gets every change that passes the filters, with the ids the watcher would give it;
// options.rows and options.log apply. Returns the bytes read. Throws std::system_error if the
// file cannot be opened or read; corrupt events go to options.log and are skipped.
std::uint64_t read_binlog_file(const std::filesystem::path& path, const WatchOptions& options,
                               const std::function<void(const Change&)>& on_change);

// What --check prints: where the server writes, which paths work and what each cannot see.
struct CheckReport {
    std::filesystem::path datadir;
    std::string server_version;  // "" without a login
    std::optional<std::filesystem::path> binlog_index;
    std::vector<std::pair<std::string, bool>> paths;  // ("binlog", usable), ...
    std::vector<std::string> blind_spots;
    std::optional<double> probe_latency_ms;  // measured on a probe table when a login allows it
    Mode chosen = Mode::files;
};
CheckReport check(const WatchOptions& options, bool probe);
std::string format_report(const CheckReport& report);

}  // namespace ktricks::mysqlwatch
