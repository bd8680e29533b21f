// The FUSE filesystem (libfuse 3, high-level API, multithreaded loop).
//
// Guarantees: every st_size is exact from the first stat (see media.cpp); a remux is produced in full
// into the cache on first open (reads wait for it; remuxing copies packets at disk speed); a
// transcode is produced segment by segment by one worker thread per file, shared by all readers,
// which starts at the segment a read asks for (a seek) and runs a few segments ahead of the furthest
// reader; the worker exits `grace_seconds` after the last close. Cache entries are written to a
// temporary name and renamed, so a full disk leaves no partial entry (the segment is then served
// from memory and the error logged).
// Trades away: a remux's first open waits for the whole remux; a source file changed while open
// keeps serving the old layout until closed.
//
// Lock order: Tvfs::mutex_ (maps) before Output::mutex (one file's segments); never the reverse.
#define FUSE_USE_VERSION 31
#include <fuse.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "ktricks/core/service.hpp"
#include "ktricks/core/child.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "tvfs/av.hpp"
#include "tvfs/cache_json.hpp"

namespace ktricks::tvfs {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

void log_line(const std::string& text) { log_info("{}", text); }

// One output file being read: its segments (transcodes) or its MP4 (remux) in the cache.
struct Output {
    std::string source;        // absolute source path
    std::string dir;           // cache directory of this output
    Entry entry;
    const Profile* profile = nullptr;
    std::mutex mutex;
    std::condition_variable changed;
    int readers = 0;
    Clock::time_point last_close = Clock::now();
    // transcodes
    std::vector<char> done;
    std::map<std::size_t, std::shared_ptr<const std::string>> memory;  // recent and unstorable segments
    std::set<std::size_t> failed;
    std::size_t cursor = 0, wanted = 0;
    bool worker_running = false, stopping = false;
    std::thread worker;
    // remux
    std::mutex remux_mutex;  // held while the one remux runs; taken without `mutex`
    bool remux_ready = false;
    std::string remux_error;

    ~Output() {
        if (worker.joinable()) worker.join();
    }
};

class Tvfs {
public:
    explicit Tvfs(const MountOptions& options) : options_(options), profile_(load_profile(options.profile)) {
        source_ = fs::canonical(options.source).string();
        cache_ = options.cache_dir;
        if (cache_.empty()) {
            const char* xdg = std::getenv("XDG_CACHE_HOME");
            const char* home = std::getenv("HOME");
            cache_ = xdg ? fmt::format("{}/ktricks-tvfs", xdg) : home && ::geteuid() != 0 ? fmt::format("{}/.cache/ktricks-tvfs", home) : "/var/cache/ktricks-tvfs";
        }
        fs::create_directories(cache_ + "/out");
        probe_file_ = fmt::format("{}/probe-{}.json", cache_, std::hash<std::string>{}(profile_.name + profile_.describe()));
        load_probe_cache();
        scan_cache_usage();
    }

    ~Tvfs() { stop_workers(); }

    const Profile& profile() const { return profile_; }
    const std::string& source_root() const { return source_; }
    const MountOptions& options() const { return options_; }

    // ---- names and probes ----
    struct Item {
        std::string source_name;
        bool directory = false;
    };
    using Listing = std::map<std::string, Item>;  // mount name -> source

    std::shared_ptr<const Listing> listing(const std::string& dir) {
        {
            std::lock_guard lock(mutex_);
            if (auto found = listings_.find(dir); found != listings_.end()) return found->second;
        }
        auto result = std::make_shared<Listing>();
        std::vector<std::pair<std::string, Entry>> converted;
        std::error_code error;
        for (const auto& dirent : fs::directory_iterator(source_ + dir, error)) {
            auto name = dirent.path().filename().string();
            if (name.starts_with(".")) continue;
            std::error_code type_error;
            if (dirent.is_directory(type_error)) {
                (*result)[name] = Item{name, true};
                continue;
            }
            if (!dirent.is_regular_file(type_error)) continue;
            auto entry = lookup_entry(join(dir, name));
            if (!entry || entry->decision.action == Action::skip) continue;
            if (entry->decision.action == Action::pass_through) (*result)[name] = Item{name, false};
            else converted.emplace_back(name, *entry);
        }
        // Pass-through names win; a converted name that collides keeps its source name in front.
        for (const auto& [name, entry] : converted) {
            auto shown = output_name(name, entry.decision);
            if (result->count(shown)) shown = name + entry.decision.extension;
            (*result)[shown] = Item{name, false};
        }
        save_probe_cache();
        std::lock_guard lock(mutex_);
        listings_[dir] = result;
        return result;
    }

    // The probe entry of a source file (relative path "/a/b.mkv"), from the cache if size and mtime match.
    std::optional<Entry> lookup_entry(const std::string& rel) {
        struct stat st{};
        auto path = source_ + rel;
        if (::stat(path.c_str(), &st) != 0) return std::nullopt;
        std::int64_t mtime = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
        std::shared_ptr<std::mutex> slot;
        {
            std::lock_guard lock(mutex_);
            if (auto found = probes_.find(rel); found != probes_.end() && found->second.size == st.st_size && found->second.mtime_ns == mtime)
                return found->second;
            auto& s = probe_locks_[rel];
            if (!s) s = std::make_shared<std::mutex>();
            slot = s;
        }
        std::lock_guard probing(*slot);  // one probe per file even when many threads stat it at once
        {
            std::lock_guard lock(mutex_);
            if (auto found = probes_.find(rel); found != probes_.end() && found->second.size == st.st_size && found->second.mtime_ns == mtime)
                return found->second;
        }
        Entry entry;
        entry.size = st.st_size;
        entry.mtime_ns = mtime;
        try {
            entry.media = probe(path);
            entry.decision = decide(entry.media, profile_);
            if (entry.decision.action == Action::pass_through) entry.layout.size = static_cast<std::uint64_t>(st.st_size);
            else if (entry.decision.action == Action::remux) entry.layout.size = remux_size(path, entry.decision);
            else if (entry.decision.action != Action::skip) entry.layout = transcode_layout(path, entry.media, entry.decision, profile_);
            entry.layout.action = entry.decision.action;
            if (entry.decision.action == Action::skip)
                log_line(fmt::format("{}: skipped: {}", printable(path), entry.decision.reasons.empty() ? "" : entry.decision.reasons.front()));
        } catch (const std::exception& error) {
            entry.decision = Decision{};
            entry.decision.reasons = {error.what()};
            log_line(fmt::format("skipped (unreadable or corrupt): {}", error.what()));
        }
        std::lock_guard lock(mutex_);
        probes_[rel] = entry;
        probes_dirty_ = true;
        return entry;
    }

    struct Resolved {
        bool directory = false;
        std::string source_rel;
        std::optional<Entry> entry;
    };

    std::optional<Resolved> resolve(const std::string& path) {
        if (path == "/") return Resolved{true, "", std::nullopt};
        auto slash = path.rfind('/');
        auto dir = path.substr(0, slash);
        auto name = path.substr(slash + 1);
        auto items = listing(dir);
        auto found = items->find(name);
        if (found == items->end()) return std::nullopt;
        Resolved resolved;
        resolved.directory = found->second.directory;
        resolved.source_rel = join(dir, found->second.source_name);
        if (!resolved.directory) {
            resolved.entry = lookup_entry(resolved.source_rel);
            if (!resolved.entry || resolved.entry->decision.action == Action::skip) return std::nullopt;
        }
        return resolved;
    }

    // ---- outputs ----
    std::shared_ptr<Output> output(const std::string& source_rel, const Entry& entry) {
        auto key = fmt::format("{:016x}", std::hash<std::string>{}(fmt::format("{}\n{}\n{}\n{}", source_rel, entry.size, entry.mtime_ns, profile_.describe())));
        std::lock_guard lock(mutex_);
        auto& slot = outputs_[key];
        if (!slot) {
            slot = std::make_shared<Output>();
            slot->source = source_ + source_rel;
            slot->dir = cache_ + "/out/" + key;
            slot->entry = entry;
            slot->profile = &profile_;
            slot->done.assign(entry.layout.segments.size(), 0);
            std::error_code ignored;
            for (std::size_t k = 0; k < slot->done.size(); ++k)
                slot->done[k] = fs::file_size(segment_path(*slot, k), ignored) == entry.layout.segments[k].bytes;
        }
        touch(key);
        return slot;
    }

    static std::string segment_path(const Output& out, std::size_t k) { return fmt::format("{}/{}.ts", out.dir, k); }

    void open_output(Output& out) {
        {
            std::lock_guard lock(out.mutex);
            ++out.readers;
        }
        if (out.entry.decision.action != Action::remux) return;
        std::lock_guard lock(out.remux_mutex);
        if (out.remux_ready) return;
        auto final_path = out.dir + "/remux.mp4";
        std::error_code ignored;
        if (fs::file_size(final_path, ignored) == out.entry.layout.size) {
            out.remux_ready = true;
            return;
        }
        // Produced under the file's lock: concurrent openers wait for the one remux.
        fs::create_directories(out.dir, ignored);
        auto temp = final_path + ".part";
        try {
            make_room(out.entry.layout.size);
            remux(out.source, out.entry.decision, temp);
            auto made = fs::file_size(temp);
            if (made != out.entry.layout.size)
                throw std::runtime_error(fmt::format("remux produced {} bytes, {} announced", made, out.entry.layout.size));
            fs::rename(temp, final_path);
            add_usage(made);
            out.remux_ready = true;
        } catch (const std::exception& error) {
            fs::remove(temp, ignored);
            out.remux_error = error.what();
            log_line(fmt::format("{}: remux failed: {}", printable(out.source), error.what()));
        }
    }

    void release_output(Output& out) {
        std::lock_guard lock(out.mutex);
        --out.readers;
        out.last_close = Clock::now();
        out.changed.notify_all();
    }

    // Copies [offset, offset+size) of a transcoded output into `buffer`; returns bytes or -errno.
    int read_segments(Output& out, char* buffer, std::size_t size, std::uint64_t offset) {
        const auto& layout = out.entry.layout;
        if (offset >= layout.size) return 0;
        size = static_cast<std::size_t>(std::min<std::uint64_t>(size, layout.size - offset));
        std::size_t copied = 0;
        auto k = static_cast<std::size_t>(std::upper_bound(layout.segments.begin(), layout.segments.end(), offset,
                                                           [](std::uint64_t value, const Segment& s) { return value < s.offset; }) -
                                          layout.segments.begin()) - 1;
        while (copied < size && k < layout.segments.size()) {
            const auto& segment = layout.segments[k];
            std::uint64_t within = offset + copied - segment.offset;
            auto take = static_cast<std::size_t>(std::min<std::uint64_t>(size - copied, segment.bytes - within));
            if (!copy_from_segment(out, k, within, take, buffer + copied)) return copied ? static_cast<int>(copied) : -EIO;
            copied += take;
            ++k;
        }
        return static_cast<int>(copied);
    }

    // Copies [within, within+take) of segment k, waiting for the worker to make it; false if it cannot be made.
    bool copy_from_segment(Output& out, std::size_t k, std::uint64_t within, std::size_t take, char* destination) {
        std::unique_lock lock(out.mutex);
        // A read ahead of (or behind) the worker repositions it: a TV seeking.
        if (!out.done[k] && !out.memory.count(k) && (k < out.cursor || k > out.cursor + 2)) out.cursor = k;
        out.wanted = std::max(out.wanted, k + 3);
        if (out.wanted < out.cursor) out.wanted = out.cursor + 3;
        ensure_worker(out);
        out.changed.notify_all();
        while (true) {
            if (auto found = out.memory.find(k); found != out.memory.end()) {
                std::memcpy(destination, found->second->data() + within, take);
                return true;
            }
            if (out.done[k]) {
                lock.unlock();  // the worker must not wait for our disk read
                Fd fd(::open(segment_path(out, k).c_str(), O_RDONLY | O_CLOEXEC));
                auto got = fd ? ::pread(fd.get(), destination, take, static_cast<off_t>(within)) : -1;
                if (got == static_cast<ssize_t>(take)) return true;
                lock.lock();
                out.done[k] = 0;  // evicted under us: produce it again (same bytes: deterministic)
                out.cursor = std::min(out.cursor, k);
                ensure_worker(out);
                out.changed.notify_all();
                continue;
            }
            if (out.failed.count(k)) return false;
            out.changed.wait_for(lock, std::chrono::milliseconds(200));
        }
    }

    void ensure_worker(Output& out) {
        if (out.worker_running || out.stopping) return;
        if (out.worker.joinable()) out.worker.join();  // a worker that exited after its grace period
        out.worker_running = true;
        out.worker = std::thread([this, &out] { work(out); });
    }

    void work(Output& out) {
        ::pthread_setname_np(::pthread_self(), "tvfs-segment");  // so tests and ps can count them
        ::sigset_t all;
        ::sigfillset(&all);
        ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
        std::unique_lock lock(out.mutex);
        auto grace = std::chrono::milliseconds(static_cast<long>(options_.grace_seconds * 1000));
        while (!out.stopping) {
            std::optional<std::size_t> next;
            for (std::size_t j = out.cursor; j < out.done.size() && j <= out.wanted; ++j)
                if (!out.done[j] && !out.memory.count(j) && !out.failed.count(j)) {
                    next = j;
                    break;
                }
            if (!next) {
                if (out.readers == 0 && Clock::now() - out.last_close >= grace) break;
                out.changed.wait_for(lock, std::chrono::milliseconds(100));
                continue;
            }
            std::size_t k = *next;
            lock.unlock();
            std::shared_ptr<const std::string> data;
            try {
                data = std::make_shared<const std::string>(
                    produce_segment(out.source, out.entry.media, out.entry.decision, *out.profile, out.entry.layout, k));
            } catch (const std::exception& error) {
                log_line(fmt::format("{}: segment {}: {}", printable(out.source), k, error.what()));
            }
            bool stored = data && store_segment(out, k, *data);
            lock.lock();
            if (!data) {
                out.failed.insert(k);
            } else if (stored) {
                out.done[k] = 1;
            }
            if (data) {
                out.memory[k] = data;
                while (out.memory.size() > 4) {
                    // Keep only what the disk does not hold, plus the newest few.
                    auto oldest = out.memory.begin();
                    if (oldest->first == k) ++oldest;
                    out.memory.erase(oldest);
                }
            }
            if (out.cursor == k) out.cursor = k + 1;
            out.changed.notify_all();
        }
        out.worker_running = false;
        out.memory.clear();
        out.changed.notify_all();
    }

    bool store_segment(Output& out, std::size_t k, const std::string& data) {
        std::error_code ignored;
        fs::create_directories(out.dir, ignored);
        make_room(data.size());
        auto final_path = segment_path(out, k);
        auto temp = final_path + ".part";
        Fd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        bool ok = bool(fd);
        for (std::size_t written = 0; ok && written < data.size();) {
            auto n = ::write(fd.get(), data.data() + written, data.size() - written);
            if (n <= 0) ok = false;
            else written += static_cast<std::size_t>(n);
        }
        int error = errno;
        fd = Fd();
        if (ok && ::rename(temp.c_str(), final_path.c_str()) == 0) {
            add_usage(data.size());
            return true;
        }
        ::unlink(temp.c_str());
        log_line(fmt::format("cache {}: {} (segment served from memory, not cached)", cache_, std::strerror(error)));
        return false;
    }

    // ---- cache size: LRU over output directories, oldest use first, never one being read ----
    void scan_cache_usage() {
        std::error_code error;
        for (const auto& dir : fs::directory_iterator(cache_ + "/out", error)) {
            std::uint64_t bytes = 0;
            std::error_code inner;
            for (const auto& file : fs::directory_iterator(dir.path(), inner)) {
                if (file.path().extension() == ".part") fs::remove(file.path(), inner);  // a crash mid-write
                else bytes += file.file_size(inner);
            }
            auto key = dir.path().filename().string();
            used_ += bytes;
            auto age = fs::last_write_time(dir.path(), inner);
            last_use_[key] = static_cast<std::int64_t>(age.time_since_epoch().count());
        }
    }

    void touch(const std::string& key) { last_use_[key] = ++use_clock_ + (std::int64_t{1} << 62); }

    void add_usage(std::uint64_t bytes) {
        std::lock_guard lock(usage_mutex_);
        used_ += bytes;
    }

    void make_room(std::uint64_t bytes) {
        std::lock_guard lock(mutex_);
        std::lock_guard usage_lock(usage_mutex_);
        while (used_ + bytes > options_.cache_size) {
            std::string victim;
            std::int64_t oldest = INT64_MAX;
            std::error_code ignored;
            for (const auto& dir : fs::directory_iterator(cache_ + "/out", ignored)) {
                auto key = dir.path().filename().string();
                auto out = outputs_.find(key);
                if (out != outputs_.end() && out->second.use_count() > 1) continue;  // open: in use
                if (out != outputs_.end()) {
                    std::lock_guard out_lock(out->second->mutex);
                    if (out->second->readers > 0 || out->second->worker_running) continue;
                }
                auto use = last_use_.count(key) ? last_use_[key] : 0;
                if (use < oldest) {
                    oldest = use;
                    victim = key;
                }
            }
            if (victim.empty()) return;  // everything is being read: over the limit until they close
            std::uint64_t freed = 0;
            for (const auto& file : fs::directory_iterator(cache_ + "/out/" + victim, ignored)) freed += file.file_size(ignored);
            fs::remove_all(cache_ + "/out/" + victim, ignored);
            used_ -= std::min(used_, freed);
            if (auto out = outputs_.find(victim); out != outputs_.end() && out->second->worker.joinable())
                out->second->worker.join();  // it has exited (checked above): reap it before the Output goes
            outputs_.erase(victim);
            last_use_.erase(victim);
        }
    }

    void stop_workers() {
        std::map<std::string, std::shared_ptr<Output>> outputs;
        {
            std::lock_guard lock(mutex_);
            outputs = outputs_;
        }
        for (auto& [key, out] : outputs) {
            {
                std::lock_guard lock(out->mutex);
                out->stopping = true;
                out->changed.notify_all();
            }
            if (out->worker.joinable()) out->worker.join();
        }
    }

    // ---- changes in SRC ----
    void forget(const std::string& dir) {
        std::lock_guard lock(mutex_);
        listings_.erase(dir);
    }

    void forget_file(const std::string& rel) {
        std::lock_guard lock(mutex_);
        probes_.erase(rel);
        probes_dirty_ = true;
    }

    std::vector<std::string> names_of(const std::string& dir, const std::string& source_name) {
        std::vector<std::string> names;
        std::lock_guard lock(mutex_);
        if (auto found = listings_.find(dir); found != listings_.end())
            for (const auto& [shown, item] : *found->second)
                if (item.source_name == source_name) names.push_back(shown);
        return names;
    }

    void save_probe_cache() {
        nlohmann::json json = nlohmann::json::object();
        {
            std::lock_guard lock(mutex_);
            if (!probes_dirty_) return;
            probes_dirty_ = false;
            for (const auto& [rel, entry] : probes_) json[rel] = entry;
        }
        auto temp = probe_file_ + ".part";
        {
            std::ofstream file(temp, std::ios::trunc);
            file << json.dump();
            if (!file) {
                log_line(fmt::format("{}: cannot write the probe cache", temp));
                std::error_code ignored;
                fs::remove(temp, ignored);
                return;
            }
        }
        std::error_code ignored;
        fs::rename(temp, probe_file_, ignored);
    }

    void load_probe_cache() {
        std::ifstream file(probe_file_);
        if (!file) return;
        try {
            auto json = nlohmann::json::parse(file);
            for (const auto& [rel, value] : json.items()) probes_[rel] = value.get<Entry>();
        } catch (const std::exception& error) {
            log_line(fmt::format("{}: ignoring the probe cache: {}", probe_file_, error.what()));
            probes_.clear();
        }
    }

    static std::string join(const std::string& dir, const std::string& name) { return dir + "/" + name; }

private:
    MountOptions options_;
    Profile profile_;
    std::string source_, cache_, probe_file_;
    std::mutex mutex_;
    std::map<std::string, std::shared_ptr<const Listing>> listings_;
    std::map<std::string, Entry> probes_;
    std::map<std::string, std::shared_ptr<std::mutex>> probe_locks_;
    bool probes_dirty_ = false;
    std::map<std::string, std::shared_ptr<Output>> outputs_;
    std::mutex usage_mutex_;  // after mutex_
    std::map<std::string, std::int64_t> last_use_;
    std::int64_t use_clock_ = 0;
    std::uint64_t used_ = 0;
};

Tvfs& self() { return *static_cast<Tvfs*>(fuse_get_context()->private_data); }

struct Handle {
    int fd = -1;                       // pass-through and remux
    std::shared_ptr<Output> output;
    ~Handle() {
        if (fd >= 0) ::close(fd);
    }
};

void fill_stat(const Tvfs& tvfs, const Tvfs::Resolved& r, struct stat* st) {
    std::memset(st, 0, sizeof(*st));
    struct stat source{};
    ::stat((tvfs.source_root() + r.source_rel).c_str(), &source);
    st->st_mtim = source.st_mtim;
    st->st_ctim = source.st_ctim;
    st->st_atim = source.st_atim;
    st->st_uid = source.st_uid;
    st->st_gid = source.st_gid;
    if (r.directory) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
        return;
    }
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = static_cast<off_t>(r.entry->layout.size);
    st->st_blocks = (st->st_size + 511) / 512;
}

int op_getattr(const char* path, struct stat* st, fuse_file_info*) {
    try {
        auto r = self().resolve(path);
        if (!r) return -ENOENT;
        fill_stat(self(), *r, st);
        return 0;
    } catch (const std::exception& error) {
        log_line(fmt::format("getattr {}: {}", printable(path), error.what()));
        return -EIO;
    }
}

int op_readdir(const char* path, void* buffer, fuse_fill_dir_t filler, off_t, fuse_file_info*, fuse_readdir_flags) {
    try {
        auto r = self().resolve(path);
        if (!r || !r->directory) return -ENOENT;
        filler(buffer, ".", nullptr, 0, fuse_fill_dir_flags{});
        filler(buffer, "..", nullptr, 0, fuse_fill_dir_flags{});
        auto dir = std::string(path) == "/" ? std::string() : std::string(path);
        for (const auto& [name, item] : *self().listing(dir)) filler(buffer, name.c_str(), nullptr, 0, fuse_fill_dir_flags{});
        return 0;
    } catch (const std::exception& error) {
        log_line(fmt::format("readdir {}: {}", printable(path), error.what()));
        return -EIO;
    }
}

int op_open(const char* path, fuse_file_info* fi) {
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
    try {
        auto& tvfs = self();
        auto r = tvfs.resolve(path);
        if (!r || r->directory) return -ENOENT;
        auto handle = std::make_unique<Handle>();
        auto action = r->entry->decision.action;
        if (action == Action::pass_through) {
            handle->fd = ::open((tvfs.source_root() + r->source_rel).c_str(), O_RDONLY | O_CLOEXEC);
            if (handle->fd < 0) return -errno;
        } else {
            handle->output = tvfs.output(r->source_rel, *r->entry);
            tvfs.open_output(*handle->output);
            if (action == Action::remux) {
                if (!handle->output->remux_error.empty()) {
                    tvfs.release_output(*handle->output);
                    return -EIO;
                }
                handle->fd = ::open((handle->output->dir + "/remux.mp4").c_str(), O_RDONLY | O_CLOEXEC);
                if (handle->fd < 0) {
                    int error = errno;
                    tvfs.release_output(*handle->output);
                    return -error;
                }
            }
        }
        fi->fh = reinterpret_cast<std::uint64_t>(handle.release());
        return 0;
    } catch (const std::exception& error) {
        log_line(fmt::format("open {}: {}", printable(path), error.what()));
        return -EIO;
    }
}

int op_read(const char*, char* buffer, size_t size, off_t offset, fuse_file_info* fi) {
    auto* handle = reinterpret_cast<Handle*>(fi->fh);
    if (handle->fd >= 0) {
        auto n = ::pread(handle->fd, buffer, size, offset);
        return n < 0 ? -errno : static_cast<int>(n);
    }
    try {
        return self().read_segments(*handle->output, buffer, size, static_cast<std::uint64_t>(offset));
    } catch (const std::exception& error) {
        log_line(fmt::format("read {}: {}", printable(handle->output->source), error.what()));
        return -EIO;
    }
}

int op_release(const char*, fuse_file_info* fi) {
    std::unique_ptr<Handle> handle(reinterpret_cast<Handle*>(fi->fh));
    if (handle->output) self().release_output(*handle->output);
    return 0;
}

void* op_init(fuse_conn_info*, fuse_config* config) {
    // Short kernel caches: inotify invalidates them anyway, the timeouts bound any race.
    config->entry_timeout = 1;
    config->attr_timeout = 1;
    config->negative_timeout = 1;
    return fuse_get_context()->private_data;
}

// minidlna, restarted with -r (incremental rescan) after SRC changes: a running minidlna cannot be
// told to rescan, and its own inotify sees nothing behind a FUSE mount.
class Dlna {
public:
    Dlna(const MountOptions& options, const std::string& cache) : options_(options) {
        dir_ = fmt::format("{}/minidlna-{}", cache, ::getpid());
        fs::create_directories(dir_ + "/db");
        std::ofstream conf(dir_ + "/minidlna.conf", std::ios::trunc);
        conf << fmt::format(
            "media_dir=V,{}\ndb_dir={}/db\nlog_dir={}\nport={}\nnetwork_interface={}\nfriendly_name=ktricks tvfs\n"
            "inotify=no\nnotify_interval=60\nstrict_dlna=no\nenable_tivo=no\n",
            fs::absolute(options.mountpoint).string(), dir_, dir_, options.dlna_port, options.dlna_iface);
    }
    ~Dlna() {
        stop();
        std::error_code ignored;
        fs::remove_all(dir_, ignored);
    }
    void start(bool rescan) {
        SpawnOptions spawn;
        spawn.argv = {"minidlnad", "-f", dir_ + "/minidlna.conf", "-S", "-P", dir_ + "/minidlna.pid"};
        if (rescan) spawn.argv.push_back("-r");
        spawn.parent_death_signal = SIGTERM;
        child_.emplace(Child::spawn(spawn));
        log_line(fmt::format("minidlna pid {} serving {} on {} port {}{}", child_->pid(), options_.mountpoint, options_.dlna_iface,
                             options_.dlna_port, rescan ? " (rescan)" : ""));
    }
    void stop() {
        if (!child_) return;
        child_->signal(SIGTERM);
        if (!child_->wait(std::chrono::seconds(5))) {
            child_->signal(SIGKILL);
            child_->wait();
        }
        child_.reset();
    }
    void restart() {
        stop();
        start(true);
    }

private:
    MountOptions options_;
    std::string dir_;
    std::optional<Child> child_;
};

// inotify on every SRC directory; runs until `stop` is written to.
class Watcher {
public:
    Watcher(Tvfs& tvfs, fuse* f, Dlna* dlna) : tvfs_(tvfs), fuse_(f), dlna_(dlna) {
        inotify_ = Fd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
        if (!inotify_) throw_errno("inotify_init1");
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) throw_errno("pipe2");
        stop_read_ = Fd(fds[0]);
        stop_ = Fd(fds[1]);
        add_tree("");
        thread_ = std::thread([this] { run(); });
    }
    ~Watcher() {
        std::uint64_t one = 1;
        [[maybe_unused]] auto ignored = ::write(stop_.get(), &one, sizeof(one));
        thread_.join();
    }

private:
    void add_tree(const std::string& rel) {
        int wd = ::inotify_add_watch(inotify_.get(), (tvfs_.source_root() + rel).c_str(),
                                     IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF | IN_ONLYDIR);
        if (wd < 0) {
            log_line(fmt::format("inotify_add_watch {}: {}", tvfs_.source_root() + rel, std::strerror(errno)));
            return;
        }
        dirs_[wd] = rel;
        std::error_code error;
        for (const auto& dirent : fs::directory_iterator(tvfs_.source_root() + rel, error)) {
            std::error_code type_error;
            if (dirent.is_directory(type_error)) add_tree(rel + "/" + dirent.path().filename().string());
        }
    }
    void run() {
        ::sigset_t all;
        ::sigfillset(&all);
        ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
        bool dlna_pending = false;
        Clock::time_point dlna_due{};
        while (true) {
            pollfd fds[2] = {{inotify_.get(), POLLIN, 0}, {stop_read_.get(), POLLIN, 0}};
            ::poll(fds, 2, 500);
            if (fds[1].revents) break;
            bool changed = false;
            alignas(inotify_event) char buffer[16384];
            ssize_t n;
            while ((n = ::read(inotify_.get(), buffer, sizeof(buffer))) > 0) {
                for (char* p = buffer; p < buffer + n;) {
                    auto* event = reinterpret_cast<inotify_event*>(p);
                    p += sizeof(inotify_event) + event->len;
                    auto found = dirs_.find(event->wd);
                    if (found == dirs_.end()) continue;
                    std::string dir = found->second;
                    std::string name = event->len ? event->name : "";
                    if (event->mask & IN_IGNORED) {
                        dirs_.erase(found);
                        continue;
                    }
                    if (name.empty() || name.starts_with(".")) continue;
                    changed = true;
                    if ((event->mask & IN_ISDIR) && (event->mask & (IN_CREATE | IN_MOVED_TO))) add_tree(dir + "/" + name);
                    auto old_names = tvfs_.names_of(dir, name);
                    tvfs_.forget_file(dir + "/" + name);
                    tvfs_.forget(dir);
                    tvfs_.forget(dir + "/" + name);
                    // The kernel's dentry and attribute caches: drop what it holds for old and new names.
                    old_names.push_back(name);
                    for (const auto& shown : old_names) fuse_invalidate_path(fuse_, (dir + "/" + shown).c_str());
                    fuse_invalidate_path(fuse_, dir.empty() ? "/" : dir.c_str());
                }
            }
            // Outputs that were open when the cache went over its limit become evictable once
            // closed: enforce the limit here too, not only before the next write.
            tvfs_.make_room(0);
            if (changed) {
                tvfs_.save_probe_cache();
                dlna_pending = true;
                dlna_due = Clock::now() + std::chrono::seconds(2);  // debounce: a copy is many events
            }
            if (dlna_ && dlna_pending && Clock::now() >= dlna_due) {
                dlna_pending = false;
                try {
                    dlna_->restart();
                } catch (const std::exception& error) {
                    log_line(fmt::format("minidlna restart: {}", error.what()));
                }
            }
        }
    }

    Tvfs& tvfs_;
    fuse* fuse_;
    Dlna* dlna_;
    Fd inotify_;
    Fd stop_read_, stop_;
    std::map<int, std::string> dirs_;
    std::thread thread_;
};

struct FuseArgs {
    fuse_args args = FUSE_ARGS_INIT(0, nullptr);
    ~FuseArgs() { fuse_opt_free_args(&args); }
    void add(const std::string& arg) {
        if (fuse_opt_add_arg(&args, arg.c_str()) != 0) throw std::bad_alloc();
    }
};

}  // namespace

int mount(const MountOptions& given) {
    // fuse_daemonize() changes to "/" even in the foreground: every path is made absolute first.
    MountOptions options = given;
    options.source = fs::absolute(given.source).lexically_normal().string();
    options.mountpoint = fs::absolute(given.mountpoint).lexically_normal().string();
    if (options.mountpoint.size() > 1 && options.mountpoint.ends_with('/')) options.mountpoint.pop_back();
    if (!options.cache_dir.empty()) options.cache_dir = fs::absolute(given.cache_dir).lexically_normal().string();
    if (!options.profile.empty() && options.profile.find('/') != std::string::npos) options.profile = fs::absolute(given.profile).string();
    struct stat st{};
    if (::stat(options.source.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw InputError(fmt::format("source {} is not a directory", printable(options.source)));
    if (::stat(options.mountpoint.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw InputError(fmt::format("mount point {} is not a directory", printable(options.mountpoint)));
    if (::access("/dev/fuse", R_OK | W_OK) != 0) throw_errno("open", "/dev/fuse");
    av_log_set_level(AV_LOG_ERROR);
    Tvfs tvfs(options);

    fuse_operations ops{};
    ops.getattr = op_getattr;
    ops.readdir = op_readdir;
    ops.open = op_open;
    ops.read = op_read;
    ops.release = op_release;
    ops.init = op_init;
    FuseArgs args;
    args.add("ktricks-tvfs");
    args.add("-o");
    args.add("ro,fsname=tvfs,subtype=tvfs,default_permissions");
    for (const auto& option : options.fuse_options) {
        args.add("-o");
        args.add(option);
    }
    fuse* f = fuse_new(&args.args, &ops, sizeof(ops), &tvfs);
    if (!f) throw InputError("fuse_new: bad FUSE options (see the message above)");
    struct Destroy {
        fuse* f;
        ~Destroy() { fuse_destroy(f); }
    } destroy{f};
    if (fuse_mount(f, options.mountpoint.c_str()) != 0) throw std::runtime_error(fmt::format("fuse_mount {}: failed", options.mountpoint));
    struct Unmount {
        fuse* f;
        ~Unmount() { fuse_unmount(f); }
    } unmount{f};
    if (fuse_set_signal_handlers(fuse_get_session(f)) != 0) throw std::runtime_error("fuse_set_signal_handlers failed");
    struct Handlers {
        fuse* f;
        ~Handlers() { fuse_remove_signal_handlers(fuse_get_session(f)); }
    } handlers{f};
    if (fuse_daemonize(options.foreground ? 1 : 0) != 0) throw std::runtime_error("fuse_daemonize failed");
    log_line(fmt::format("{} mounted on {} (profile {})", tvfs.source_root(), options.mountpoint, tvfs.profile().name));
    std::optional<Dlna> dlna;
    if (options.dlna) {
        dlna.emplace(options, options.cache_dir.empty() ? "/tmp" : options.cache_dir);
        dlna->start(false);
    }
    int status;
    {
        Watcher watcher(tvfs, f, dlna ? &*dlna : nullptr);
        // Under systemd (Type=notify): the mount is in place and answers once the loop runs.
        notify_ready(fmt::format("{} on {}", tvfs.source_root(), options.mountpoint));
        status = fuse_loop_mt(f, 0);
        notify_stopping();
    }
    dlna.reset();
    tvfs.stop_workers();
    tvfs.save_probe_cache();
    log_line("unmounted");
    // libfuse reports the signal that ended the loop; SIGINT/SIGTERM/SIGHUP are a clean unmount.
    return status == 0 || status == SIGINT || status == SIGTERM || status == SIGHUP ? 0 : exit_code::software;
}

}  // namespace ktricks::tvfs
