// The watcher: one inotify instance, one epoll loop, no polling once the data directory exists.
//
// What inotify shows of a MariaDB 10.11 data directory (measured, see docs/mysql-watch.md):
//   - COMMIT of an InnoDB transaction writes ib_logfile0 and, with log_bin, the binlog; the
//     table's .ibd is written by the page cleaner later (or through Linux native AIO, which
//     produces no inotify event at all).
//   - A MyISAM statement writes .MYI and .MYD through write(2) at once; Aria writes .MAI (its
//     state) at statement end and keeps data pages (.MAD) in its own cache.
//   - CREATE TABLE creates t.frm, DROP deletes it, RENAME moves it; InnoDB TRUNCATE moves t.ibd to
//     #sql-ib*.ibd and creates a new t.ibd; ALTER builds #sql-alter-* and moves it over t.frm.
// One watch on the data directory covers the redo log, Aria's log, the binlog and its index; one
// watch per database directory covers the tables' files.
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <fstream>
#include <iostream>
#include <set>
#include <variant>

#include "ktricks/core/error.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/mysqlwatch.hpp"
#include "mysqlwatch/sql.hpp"
#include "mysqlwatch/watch_internal.hpp"

namespace ktricks::mysqlwatch {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

bool is_system_schema(std::string_view db) {
    return db == "mysql" || db == "sys" || db == "performance_schema" || db == "information_schema";
}

std::optional<fs::path> find_binlog_index(const fs::path& datadir) {
    std::error_code error;
    std::optional<fs::path> found;
    for (const auto& entry : fs::directory_iterator(datadir, error)) {
        auto name = entry.path().filename().string();
        if (!name.ends_with(".index") || name.find("relay") != std::string::npos) continue;
        if (!entry.is_regular_file(error)) continue;
        if (!found || entry.path() < *found) found = entry.path();
    }
    return found;
}

std::vector<fs::path> read_binlog_index(const fs::path& index, const fs::path& datadir) {
    std::vector<fs::path> files;
    std::ifstream in(index);
    for (std::string line; std::getline(in, line);) {
        if (line.empty()) continue;
        fs::path path(line);
        files.push_back(path.is_absolute() ? path : (datadir / path).lexically_normal());
    }
    return files;
}

bool credentials_given(const Credentials& credentials) {
    return !credentials.socket.empty() || !credentials.defaults_file.empty() || !credentials.user.empty();
}

std::string engine_of(const fs::path& datadir, const std::string& db, const std::string& table) {
    auto encoded_db = encode_filename(db);
    auto encoded_table = encode_filename(table);
    if (!encoded_db || !encoded_table) return "";
    fs::path base = datadir / *encoded_db / *encoded_table;
    std::error_code error;
    static const std::pair<const char*, const char*> by_extension[] = {
        {".ibd", "InnoDB"}, {".MYD", "MyISAM"}, {".MAD", "Aria"}, {".CSV", "CSV"}, {".ARZ", "ARCHIVE"}};
    for (auto [extension, engine] : by_extension)
        if (fs::exists(base.string() + extension, error)) return engine;
    // A partitioned table's engine is its partitions' (t#P#p0.ibd, ...).
    std::string prefix = *encoded_table + "#P#";
    for (const auto& entry : fs::directory_iterator(datadir / *encoded_db, error)) {
        auto name = entry.path().filename().string();
        if (!name.starts_with(prefix)) continue;
        if (auto file = parse_table_file(name); file && !file->engine.empty()) return file->engine;
    }
    return "";
}

namespace {

// A binlog file's sequence number, from its extension (binlog.000012: 12).
std::optional<std::uint64_t> binlog_sequence(const fs::path& file) {
    auto extension = file.extension().string();  // ".000012"
    if (extension.size() < 2) return std::nullopt;
    std::uint64_t sequence = 0;
    auto [end, error] = std::from_chars(extension.data() + 1, extension.data() + extension.size(), sequence);
    if (error != std::errc() || end != extension.data() + extension.size()) return std::nullopt;
    return sequence;
}

// No IN_MODIFY on the data directory itself: the server writes ib_logfile0, ibdata1 and the
// binlog all the time, and a directory watch cannot filter by name. The files a path needs (the
// current binlog, its index, the redo logs) get watches of their own, so an idle watcher in binlog
// mode is woken by nothing but the binlog.
constexpr std::uint32_t datadir_mask =
    IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
constexpr std::uint32_t directory_events = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR;

}  // namespace

class Watcher::Impl {
public:
    Impl(EventLoop& loop, WatchOptions options, std::function<void(const Change&)> on_change)
        : loop_(loop), options_(std::move(options)), on_change_(std::move(on_change)) {}
    ~Impl() { stop(); }

    void start() {
        inotify_ = Fd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
        if (!inotify_) throw_errno("inotify_init1");
        inotify_source_ = loop_.add_fd(inotify_.get(), EPOLLIN, [this](std::uint32_t) { read_inotify(); });
        if (!attach()) {
            log(fmt::format("waiting for the data directory {} to appear", options_.datadir.string()));
            // The directory does not exist yet, so there is nothing to put an inotify watch on
            // (its parent may not exist either): look again a few times a second.
            waiting_timer_ = loop_.add_timer(
                250ms,
                [this] {
                    if (attach()) loop_.remove(waiting_timer_);
                },
                250ms);
        }
    }

    void stop() noexcept {
        for (auto id : {inotify_source_, waiting_timer_, redo_timer_}) loop_.remove(id);
        inotify_source_ = waiting_timer_ = redo_timer_ = 0;
        for (auto& [key, slot] : debounce_) loop_.remove(slot.timer);
        debounce_.clear();
        inotify_.reset();
    }

    const std::string& status() const noexcept { return last_log_; }

private:
    void log(const std::string& line) {
        last_log_ = line;
        if (options_.log) options_.log(line);
        else
            log_info("{}", line);
    }
    std::string last_log_;

    bool binlog_wanted() const { return options_.mode == Mode::binlog || options_.mode == Mode::automatic; }
    bool binlog_active() const { return parser_ != nullptr; }
    bool redo_wanted() const {
        return options_.mode == Mode::redo ||
               (options_.mode == Mode::automatic && credentials_given(options_.credentials));
    }
    bool redo_active() const {
        return options_.mode == Mode::redo ||
               (options_.mode == Mode::automatic && !binlog_active() && redo_usable_);
    }
    bool file_changes_active() const {
        return options_.mode == Mode::files ||
               (options_.mode == Mode::automatic && !binlog_active() && !redo_usable_);
    }
    bool file_ddl_active() const { return options_.mode != Mode::binlog && !binlog_active(); }

    // ---- data directory ----

    bool attach() {
        struct stat st {};
        if (::stat(options_.datadir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
        datadir_wd_ = ::inotify_add_watch(inotify_.get(), options_.datadir.c_str(), datadir_mask);
        if (datadir_wd_ < 0) throw_errno("inotify_add_watch", options_.datadir.string());
        std::error_code error;
        for (const auto& entry : fs::directory_iterator(options_.datadir, error))
            if (entry.is_directory(error)) watch_database(entry.path().filename().string());
        if (redo_wanted()) {
            connect_for_redo(false);
            watch_redo_logs();
        }
        if (binlog_wanted()) start_binlog(true);
        if (options_.mode == Mode::binlog && !binlog_active())
            log("no binary log yet (log_bin off, or the server has not started): waiting for its index");
        log(fmt::format("watching {} (paths: {}{}{})", options_.datadir.string(),
                        binlog_active() ? "binlog " : "", redo_active() ? "redo " : "",
                        file_changes_active() ? "files"
                        : file_ddl_active()   ? "files(ddl)"
                                              : ""));
        // A resumed binlog has queued what happened while we were away; attach() never runs inside
        // read_inotify(), which flushes its own batch.
        flush();
        return true;
    }

    void detach() {
        log(fmt::format("the data directory {} went away; waiting for it", options_.datadir.string()));
        for (auto& [wd, db] : databases_) ::inotify_rm_watch(inotify_.get(), wd);
        databases_.clear();
        raw_names_.clear();
        for (int wd : redo_wds_) ::inotify_rm_watch(inotify_.get(), wd);
        redo_wds_.clear();
        unwatch(binlog_wd_);
        unwatch(index_wd_);
        datadir_wd_ = -1;
        parser_.reset();
        binlog_fd_.reset();
        waiting_timer_ = loop_.add_timer(
            250ms,
            [this] {
                if (attach()) loop_.remove(waiting_timer_);
            },
            250ms);
    }

    void watch_database(const std::string& raw) {
        if (raw.starts_with("#")) return;  // #innodb_temp, #innodb_redo (MySQL 8): not databases
        auto db = decode_filename(raw);
        if (!db) return;
        fs::path path = options_.datadir / raw;
        int wd = ::inotify_add_watch(inotify_.get(), path.c_str(), database_mask());
        if (wd < 0) {
            log(fmt::format("cannot watch database directory {}: {}", path.string(), std::strerror(errno)));
            return;
        }
        databases_[wd] = *db;
        raw_names_[wd] = raw;
    }

    // Table files' writes matter only to the files path; with the binlog they would only wake us.
    std::uint32_t database_mask() const { return directory_events | (file_changes_active() ? IN_MODIFY : 0); }

    void rewatch_databases() {
        for (const auto& [wd, raw] : raw_names_)
            ::inotify_add_watch(inotify_.get(), (options_.datadir / raw).c_str(), database_mask());
    }

    void watch_file(int& wd, const fs::path& path, std::uint32_t mask) {
        unwatch(wd);
        wd = ::inotify_add_watch(inotify_.get(), path.c_str(), mask);
        if (wd < 0) log(fmt::format("cannot watch {}: {}", path.string(), std::strerror(errno)));
    }

    void unwatch(int& wd) {
        if (wd >= 0) ::inotify_rm_watch(inotify_.get(), wd);
        wd = -1;
    }

    static bool is_redo_log(const std::string& name) {
        return name == "ib_logfile0" || (name.starts_with("aria_log.") && name != "aria_log_control");
    }

    void watch_redo_log(const std::string& name) {
        int wd = -1;
        watch_file(wd, options_.datadir / name, IN_MODIFY);
        if (wd >= 0) redo_wds_.insert(wd);
    }

    void watch_redo_logs() {
        std::error_code error;
        for (const auto& entry : fs::directory_iterator(options_.datadir, error))
            if (is_redo_log(entry.path().filename().string()))
                watch_redo_log(entry.path().filename().string());
    }

    // ---- inotify ----

    void read_inotify() {
        alignas(inotify_event) std::array<char, 64 * 1024> buffer;
        batch_.clear();
        for (;;) {
            ssize_t got = ::read(inotify_.get(), buffer.data(), buffer.size());
            if (got < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) break;
                throw_errno("read", "inotify");
            }
            for (ssize_t at = 0; at < got;) {
                const auto* event = reinterpret_cast<const inotify_event*>(buffer.data() + at);
                std::string name = event->len ? std::string(event->name) : std::string();
                at += sizeof(inotify_event) + event->len;
                if (event->mask & IN_Q_OVERFLOW) {
                    log("inotify queue overflowed: some file events were lost");
                    if (binlog_active()) read_binlog();
                    continue;
                }
                if (event->wd == datadir_wd_) on_datadir_event(event->mask, name);
                else if (event->wd == binlog_wd_) {
                    if (event->mask & IN_IGNORED) binlog_wd_ = -1;
                    else
                        read_binlog();
                } else if (event->wd == index_wd_) {
                    if (event->mask & IN_IGNORED) index_wd_ = -1;
                    else if (binlog_active())
                        check_index();
                    else if (binlog_wanted())
                        start_binlog(false);
                } else if (redo_wds_.contains(event->wd)) {
                    if (event->mask & IN_IGNORED) redo_wds_.erase(event->wd);
                    else
                        on_redo_log_write();
                } else if (auto db = databases_.find(event->wd); db != databases_.end())
                    on_database_event(db->first, event->mask, name, event->cookie);
            }
        }
        flush();
    }

    void flush() {
        // Swapped out first: a callback may stop the loop, but never re-enters the watcher.
        std::vector<std::variant<Change, Position>> batch;
        batch.swap(batch_);
        for (auto& item : batch) {
            if (auto* change = std::get_if<Change>(&item)) deliver(std::move(*change));
            else if (options_.on_position)
                options_.on_position(std::get<Position>(item));
        }
    }

    void on_datadir_event(std::uint32_t mask, const std::string& name) {
        if (mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
            if (datadir_wd_ >= 0 && !fs::exists(options_.datadir)) detach();
            return;
        }
        if (mask & IN_ISDIR) {
            if (mask & (IN_CREATE | IN_MOVED_TO)) {
                watch_database(name);
                if (file_ddl_active() && !name.starts_with("#"))
                    if (auto db = decode_filename(name)) queue(make_change("create", *db, "", "", Via::file));
            } else if (mask & (IN_DELETE | IN_MOVED_FROM)) {
                if (file_ddl_active() && !name.starts_with("#"))
                    if (auto db = decode_filename(name)) queue(make_change("drop", *db, "", "", Via::file));
            }
            return;
        }
        bool appeared = mask & (IN_CREATE | IN_MOVED_TO);
        if (binlog_active()) {
            if (name == index_path_.filename().string() && appeared) {
                // Rewritten through a new file and rename(2): the old watch went with the old inode.
                watch_file(index_wd_, index_path_, IN_MODIFY | IN_CLOSE_WRITE);
                check_index();
            } else if (name.starts_with(binlog_path_.stem().string() + ".") && appeared) {
                check_index();
            }
        } else if (binlog_wanted() && name.ends_with(".index") && appeared) {
            start_binlog(false);
        }
        if (appeared && is_redo_log(name) && redo_wanted()) watch_redo_log(name);
    }

    void on_redo_log_write() {
        if (!redo_usable_ && redo_wanted() && !binlog_active()) connect_for_redo(true);
        if (redo_active()) schedule_redo_query();
    }

    void on_database_event(int wd, std::uint32_t mask, const std::string& name, std::uint32_t cookie) {
        const std::string& db = databases_[wd];
        if (mask & IN_IGNORED) {
            databases_.erase(wd);
            raw_names_.erase(wd);
            return;
        }
        auto file = parse_table_file(name);
        if (!file) return;
        bool frm = file->extension == "frm";
        if (mask & IN_MOVED_FROM) {
            if (moves_.size() > 1024) moves_.clear();  // moved out of the watched tree: no MOVED_TO will come
            moves_[cookie] = Move{db, *file};
            return;
        }
        if (mask & IN_MOVED_TO) {
            auto from = moves_.find(cookie);
            if (from == moves_.end()) return;
            Move move = from->second;
            moves_.erase(from);
            // InnoDB's TRUNCATE: t.ibd becomes #sql-ib*.ibd, then a new t.ibd is created.
            if (file->extension == "ibd" && !move.file.temporary && file->temporary)
                truncating_.insert({move.db, move.file.table});
            if (!frm || !file_ddl_active()) return;
            if (move.file.temporary && !file->temporary) {
                queue(make_change("change", db, file->table, engine_of(options_.datadir, db, file->table),
                                  Via::file));
            } else if (!move.file.temporary && !file->temporary) {
                Change change = make_change("rename", move.db, move.file.table, "", Via::file);
                change.new_table = file->table;
                if (move.db != db) change.new_db = db;
                change.engine = engine_of(options_.datadir, db, file->table);
                queue(std::move(change));
            }
            return;
        }
        if (file->temporary) return;
        if (mask & IN_CREATE) {
            if (frm && file_ddl_active()) {
                queue(make_change("create", db, file->table, "", Via::file));
            } else if (file->extension == "ibd" && truncating_.erase({db, file->table}) &&
                       file_ddl_active()) {
                queue(make_change("truncate", db, file->table, "InnoDB", Via::file));
            }
            return;
        }
        if (mask & IN_DELETE) {
            if (frm && file_ddl_active()) queue(make_change("drop", db, file->table, "", Via::file));
            return;
        }
        if ((mask & IN_MODIFY) && file_changes_active()) {
            const std::string& ext = file->extension;
            if (ext == "MYD" || ext == "MAI" || ext == "CSV" || ext == "ARZ") {
                queue(make_change("change", db, file->table, file->engine, Via::file));
            } else if (ext == "ibd") {
                Change change = make_change("change", db, file->table, "InnoDB", Via::file);
                change.delayed = true;
                queue(std::move(change));
            }
        }
    }

    // ---- binlog ----

    void start_binlog(bool existing) {
        auto index = find_binlog_index(options_.datadir);
        if (!index) return;
        // An index created empty fills later: its writes retry this. Watched before it is read, so
        // that no write falls between the two.
        index_path_ = *index;
        watch_file(index_wd_, index_path_, IN_MODIFY | IN_CLOSE_WRITE);
        auto files = read_binlog_index(*index, options_.datadir);
        if (files.empty()) return;
        if (existing && options_.resume && !resumed_) {
            resumed_ = true;  // once: a later restart of the server is a rotation, not a resume
            resume(files, *options_.resume);
        } else {
            // A watcher that starts next to a running server reports what happens from now on; one
            // that sees the binlog appear reads it from its first byte.
            open_binlog(files.back(), existing ? skip_all : 0);
        }
        rewatch_databases();
        log(fmt::format("binlog path: tailing {}{}", binlog_path_.string(),
                        parser_ && parser_->checksums() ? " (CRC32 verified)" : ""));
    }

    // Continue where a previous watcher's state file says: quietly parse the file up to the offset
    // (for its format description), then report everything after it, then the newer files.
    void resume(const std::vector<fs::path>& files, const Position& position) {
        auto found = std::find_if(files.begin(), files.end(),
                                  [&](const fs::path& file) { return file.filename() == position.file; });
        if (found == files.end()) {
            log(fmt::format(
                "resume position {}:{} is not in the binlog index (purged?): reading from the oldest "
                "file there, {}; changes in between are lost",
                position.file, position.offset, files.front().filename().string()));
            open_binlog(files.front(), 0);
        } else {
            std::error_code error;
            auto size = fs::file_size(*found, error);
            if (!error && size < position.offset) {
                log(fmt::format(
                    "resume position {}:{} is beyond the end of that file ({} bytes): the binlog was "
                    "rewritten; continuing at its end",
                    position.file, position.offset, size));
                open_binlog(*found, skip_all);
            } else {
                log(fmt::format("resuming at {}:{}{}", position.file, position.offset,
                                position.gtid.empty() ? "" : " (gtid " + position.gtid + ")"));
                open_binlog(*found, position.offset);
            }
        }
        if (binlog_active()) check_index();
    }

    static constexpr std::uint64_t skip_all = ~std::uint64_t{0};

    // quiet_until: report nothing before this offset (skip_all: nothing already in the file).
    void open_binlog(const fs::path& path, std::uint64_t quiet_until) {
        Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) {
            log(fmt::format("cannot open binlog {}: {}", path.string(), std::strerror(errno)));
            return;
        }
        binlog_fd_ = std::move(fd);
        binlog_path_ = path;
        watch_file(binlog_wd_, path, IN_MODIFY);
        binlog_read_ = 0;
        parser_ = std::make_unique<BinlogParser>();
        parser_->set_rows(options_.rows);
        quiet_until_ = quiet_until;
        parser_->set_quiet(quiet_until_ > 0);
        read_binlog();
        if (parser_ && quiet_until_ > 0) end_quiet();
    }

    // Reporting starts here: tell on_position where (a restart without a state file begins at
    // the end of the binlog, so the first state written is that end, not nothing).
    void end_quiet() {
        quiet_until_ = 0;
        parser_->set_quiet(false);
        batch_.push_back(
            Position{binlog_path_.filename().string(), parser_->safe_offset(), parser_->last_gtid()});
    }

    void read_binlog() {
        if (!parser_) return;
        std::array<char, 64 * 1024> buffer;
        for (;;) {
            std::size_t want = buffer.size();
            if (quiet_until_ > binlog_read_ && quiet_until_ != skip_all)
                want = static_cast<std::size_t>(std::min<std::uint64_t>(want, quiet_until_ - binlog_read_));
            ssize_t got = ::pread(binlog_fd_.get(), buffer.data(), want, static_cast<off_t>(binlog_read_));
            if (got < 0) {
                if (errno == EINTR) continue;
                log(fmt::format("read {}: {}", binlog_path_.string(), std::strerror(errno)));
                return;
            }
            if (got == 0) break;
            binlog_read_ += got;
            auto out = parser_->feed(std::string_view(buffer.data(), static_cast<std::size_t>(got)));
            for (const std::string& problem : out.problems)
                log(fmt::format("{}: {}", binlog_path_.filename().string(), problem));
            std::size_t taken = 0;
            auto take = [&](std::size_t end, const Position* position) {
                for (std::uint32_t index = 0; taken < end; ++taken, ++index) {
                    Change& change = out.changes[taken];
                    change.engine =
                        engine_of(options_.datadir, change.new_db.empty() ? change.db : change.new_db,
                                  change.new_table.empty() ? change.table : change.new_table);
                    if (position) {
                        change.position = *position;
                        change.index = index;
                    }
                    queue(std::move(change));
                }
            };
            for (const auto& boundary : out.boundaries) {
                Position position{binlog_path_.filename().string(), boundary.offset, boundary.gtid};
                take(boundary.changes, &position);
                batch_.push_back(std::move(position));
            }
            take(out.changes.size(), nullptr);
            if (quiet_until_ != 0 && quiet_until_ != skip_all && binlog_read_ >= quiet_until_) end_quiet();
            if (out.rotate_to) {
                fs::path next = options_.datadir / *out.rotate_to;
                if (next != binlog_path_ && fs::exists(next)) {
                    open_binlog(next, 0);
                    return;
                }
            }
        }
    }

    // Rotation (FLUSH BINARY LOGS, max_binlog_size, a server restart) adds a file to the index: read
    // the rest of the current file, then every newer one from its first byte.
    void check_index() {
        auto files = read_binlog_index(index_path_, options_.datadir);
        auto current = std::find(files.begin(), files.end(), binlog_path_);
        if (current == files.end()) {
            // The server creates a new file (and writes the ROTATE event that read_binlog() follows)
            // before it adds the file to the index: an index read in between lags behind us. Keep
            // reading; the index write that follows calls this again. (Jumping to the index's last
            // file here re-read the file before, reporting its changes twice.)
            auto ours = binlog_sequence(binlog_path_);
            std::error_code error;
            if (ours && fs::exists(binlog_path_, error) &&
                std::none_of(files.begin(), files.end(), [&](const fs::path& file) {
                    auto theirs = binlog_sequence(file);
                    return theirs && *theirs >= *ours;
                })) {
                read_binlog();
                return;
            }
            // Ours is gone from the index (RESET MASTER, PURGE): the newest file, from its start.
            if (!files.empty()) open_binlog(files.back(), 0);
            return;
        }
        // read_binlog() follows ROTATE events itself, possibly across several files: continue from
        // wherever it stopped, never from the file we started in (that re-read files, twice reporting
        // their changes, when FLUSH BINARY LOGS ran in a tight loop).
        read_binlog();
        for (;;) {
            auto now = std::find(files.begin(), files.end(), binlog_path_);
            if (now == files.end() || now + 1 == files.end()) break;
            fs::path before = binlog_path_;
            open_binlog(*(now + 1), 0);
            if (binlog_path_ == before) break;  // could not open it (logged); the next index change retries
            log(fmt::format("binlog rotated to {}", binlog_path_.filename().string()));
        }
    }

    // ---- redo + query ----

    void connect_for_redo(bool quiet) {
        try {
            connection_ = std::make_unique<Connection>(options_.credentials);
            redo_usable_ = true;
            baseline_done_ = false;
            run_redo_query();  // the baseline: what exists before we start
        } catch (const std::exception& error) {
            connection_.reset();
            redo_usable_ = false;
            if (!quiet || options_.mode == Mode::redo)
                log(fmt::format("redo path unavailable: {}", error.what()));
        }
    }

    void schedule_redo_query() {
        if (redo_timer_) return;
        redo_timer_ = loop_.add_timer(options_.redo_delay, [this] {
            redo_timer_ = 0;
            run_redo_query();
            flush();
        });
    }

    // UPDATE_TIME has one-second resolution: a second commit to a table within the same second is
    // only seen when its row count or size moved, hence the three columns together.
    void run_redo_query() {
        if (!connection_) {
            connect_for_redo(true);
            return;
        }
        std::vector<Connection::Row> rows;
        try {
            rows = connection_->query(
                "SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE, UPDATE_TIME, TABLE_ROWS, DATA_LENGTH "
                "FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN "
                "('mysql', 'sys', 'performance_schema', 'information_schema')");
        } catch (const std::exception& error) {
            log(fmt::format("redo query failed ({}); reconnecting at the next log write", error.what()));
            connection_.reset();
            return;
        }
        std::map<std::pair<std::string, std::string>, std::string> seen;
        for (const auto& row : rows) {
            if (row.size() < 6 || !row[0] || !row[1]) continue;
            std::string state =
                fmt::format("{}|{}|{}", row[3].value_or(""), row[4].value_or(""), row[5].value_or(""));
            auto key = std::make_pair(*row[0], *row[1]);
            auto before = table_state_.find(key);
            bool changed = before != table_state_.end() ? before->second != state : row[3].has_value();
            if (baseline_done_ && changed)
                queue(make_change("change", key.first, key.second, row[2].value_or(""), Via::redo));
            seen.emplace(std::move(key), std::move(state));
        }
        table_state_ = std::move(seen);
        baseline_done_ = true;
    }

    // ---- delivery ----

    Change make_change(std::string event, std::string db, std::string table, std::string engine, Via via) {
        Change change;
        change.event = std::move(event);
        change.db = std::move(db);
        change.table = std::move(table);
        change.engine = std::move(engine);
        change.via = via;
        return change;
    }

    // File changes from one inotify read() are merged per table before delivery (one MyISAM INSERT
    // writes .MYI, .MYD, .MYI); binlog changes are one per committed transaction and table.
    void queue(Change change) {
        if (change.via != Via::binlog)
            for (const auto& item : batch_) {
                const Change* queued = std::get_if<Change>(&item);
                if (queued && queued->event == change.event && queued->db == change.db &&
                    queued->table == change.table && queued->new_table == change.new_table &&
                    queued->via == change.via)
                    return;
            }
        batch_.push_back(std::move(change));
    }

    bool passes_filters(const Change& change) const { return mysqlwatch::passes_filters(options_, change); }

    void deliver(Change change) {
        if (!passes_filters(change)) return;
        if (options_.debounce.count() > 0 && change.event == "change") {
            std::string key = change.db + '\0' + change.table;
            auto now = std::chrono::steady_clock::now();
            auto& slot = debounce_[key];
            if (slot.until > now) {
                slot.pending = change;
                if (!slot.timer) {
                    slot.timer = loop_.add_timer(slot.until - now, [this, key] {
                        auto& s = debounce_[key];
                        s.timer = 0;
                        if (s.pending) {
                            Change trailing = std::move(*s.pending);
                            s.pending.reset();
                            s.until = std::chrono::steady_clock::now() + options_.debounce;
                            emit(trailing);
                        }
                    });
                }
                return;
            }
            slot.until = now + options_.debounce;
        }
        emit(change);
    }

    void emit(const Change& change) { on_change_(change); }

    struct Move {
        std::string db;
        TableFile file;
    };
    struct Slot {
        std::chrono::steady_clock::time_point until;
        std::optional<Change> pending;
        EventLoop::SourceId timer = 0;
    };

    EventLoop& loop_;
    const WatchOptions options_;
    const std::function<void(const Change&)> on_change_;
    Fd inotify_;
    EventLoop::SourceId inotify_source_ = 0;
    int datadir_wd_ = -1;
    int binlog_wd_ = -1;
    int index_wd_ = -1;
    std::set<int> redo_wds_;
    std::map<int, std::string> raw_names_;
    EventLoop::SourceId waiting_timer_ = 0;
    std::map<int, std::string> databases_;
    std::map<std::uint32_t, Move> moves_;
    std::set<std::pair<std::string, std::string>> truncating_;
    // Changes and, binlog path, the positions after them, in binlog order.
    std::vector<std::variant<Change, Position>> batch_;
    std::map<std::string, Slot> debounce_;

    fs::path index_path_;
    fs::path binlog_path_;
    Fd binlog_fd_;
    std::uint64_t binlog_read_ = 0;
    std::uint64_t quiet_until_ = 0;
    bool resumed_ = false;
    std::unique_ptr<BinlogParser> parser_;

    std::unique_ptr<Connection> connection_;
    bool redo_usable_ = false;
    bool baseline_done_ = false;
    EventLoop::SourceId redo_timer_ = 0;
    std::map<std::pair<std::string, std::string>, std::string> table_state_;
};

bool passes_filters(const WatchOptions& options, const Change& change) {
    if (options.db_glob == "*" && is_system_schema(change.db)) return false;
    if (::fnmatch(options.db_glob.c_str(), change.db.c_str(), 0) != 0) return false;
    if (options.table_glob != "*" && ::fnmatch(options.table_glob.c_str(), change.table.c_str(), 0) != 0)
        return false;
    return true;
}

std::uint64_t read_binlog_file(const std::filesystem::path& path, const WatchOptions& options,
                               const std::function<void(const Change&)>& on_change) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("open", path.string());
    BinlogParser parser;
    parser.set_rows(options.rows);
    std::string file = path.filename().string();
    std::vector<char> buffer(1 << 20);
    std::uint64_t bytes = 0;
    for (;;) {
        ssize_t got = ::read(fd.get(), buffer.data(), buffer.size());
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) throw_errno("read", path.string());
        if (got == 0) break;
        bytes += static_cast<std::uint64_t>(got);
        auto out = parser.feed(std::string_view(buffer.data(), static_cast<std::size_t>(got)));
        for (const std::string& problem : out.problems)
            if (options.log) options.log(fmt::format("{}: {}", file, problem));
        std::size_t taken = 0;
        // Same ids as the watcher gives: the end of the transaction and the index in it.
        auto take = [&](std::size_t end, const Position* position) {
            for (std::uint32_t index = 0; taken < end; ++taken, ++index) {
                Change& change = out.changes[taken];
                if (position) {
                    change.position = *position;
                    change.index = index;
                }
                if (passes_filters(options, change)) on_change(change);
            }
        };
        for (const auto& boundary : out.boundaries) {
            Position position{file, boundary.offset, boundary.gtid};
            take(boundary.changes, &position);
        }
        take(out.changes.size(), nullptr);
    }
    return bytes;
}

Watcher::Watcher(EventLoop& loop, WatchOptions options, std::function<void(const Change&)> on_change)
    : impl_(std::make_unique<Impl>(loop, std::move(options), std::move(on_change))) {}
Watcher::~Watcher() = default;
void Watcher::start() { impl_->start(); }
void Watcher::stop() noexcept { impl_->stop(); }
const std::string& Watcher::status() const noexcept { return impl_->status(); }

}  // namespace ktricks::mysqlwatch
