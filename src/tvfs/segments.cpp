#include "tvfs/segments.hpp"
#include "tvfs/threads.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/core/service.hpp"
#include "tvfs/mp4_boxes.hpp"

namespace ktricks::tvfs {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Read-ahead: the worker runs this many segments past the furthest read.
constexpr std::size_t read_ahead = 3;
// Segments kept in memory per output besides those the disk could not take.
constexpr std::size_t memory_segments = 4;

Outputs::Outputs(std::string source_root, const Profile& profile, std::chrono::milliseconds grace,
                 OutputCache& cache)
    : source_root_(std::move(source_root)), profile_(profile), grace_(grace), cache_(cache) {}

std::string Outputs::segment_path(const Output& out, std::size_t k) {
    return fmt::format("{}/{}.ts", out.dir, k);
}

std::string Outputs::key(const std::string& rel, const Entry& entry) const {
    // output_format changes whenever the bytes of an output change, so an older cache entry is
    // never joined to new segments.
    return fmt::format(
        "{:016x}", std::hash<std::string>{}(fmt::format("{}\n{}\n{}\n{}\n{}", rel, entry.size, entry.mtime_ns,
                                                        profile_.describe(), output_format)));
}

namespace {

// Writes all of DATA at OFFSET of FD; false (errno set) if it cannot.
bool pwrite_all(int fd, const char* data, std::size_t size, std::uint64_t offset) {
    while (size > 0) {
        auto n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data += n;
        size -= static_cast<std::size_t>(n);
        offset += static_cast<std::uint64_t>(n);
    }
    return true;
}

std::string read_whole(const std::string& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    std::string data;
    if (!fd) return data;
    char buffer[65536];
    for (ssize_t n; (n = ::read(fd.get(), buffer, sizeof(buffer))) > 0;)
        data.append(buffer, static_cast<std::size_t>(n));
    return data;
}

}  // namespace

void Outputs::store_head(const std::string& path, const Entry& entry, const std::string& head) {
    if (!path.starts_with(source_root_)) return;  // not ours: its open makes the head itself
    write_head(cache_.directory(key(path.substr(source_root_.size()), entry)), head);
}

void Outputs::write_head(const std::string& dir, const std::string& head) {
    auto final_path = dir + "/head.mp4", temp = final_path + ".part";
    std::error_code ignored;
    fs::create_directories(dir, ignored);
    Fd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd && pwrite_all(fd.get(), head.data(), head.size(), 0) &&
        ::rename(temp.c_str(), final_path.c_str()) == 0) {
        cache_.add(head.size());
        return;
    }
    int error = errno;
    ::unlink(temp.c_str());
    log_info("cache {}: {} (the remux's head is made again on open)", printable(final_path),
             std::strerror(error));
}

std::shared_ptr<Output> Outputs::get(const std::string& rel, const Entry& entry) {
    auto key = this->key(rel, entry);
    std::lock_guard lock(mutex_);
    auto& slot = outputs_[key];
    if (!slot) {
        slot = std::make_shared<Output>();
        slot->source = source_root_ + rel;
        slot->dir = cache_.directory(key);
        slot->entry = entry;
        slot->stopping = stopped_;
        slot->done.assign(entry.layout.segments.size(), 0);
        std::error_code ignored;
        for (std::size_t k = 0; k < slot->done.size(); ++k)
            slot->done[k] = fs::file_size(segment_path(*slot, k), ignored) == entry.layout.segments[k].bytes;
    }
    cache_.touch(key);
    return slot;
}

std::shared_ptr<const std::string> Outputs::sidecar(Output& out) {
    std::lock_guard lock(out.sidecar_mutex);
    if (!out.sidecar)
        out.sidecar = std::make_shared<const std::string>(subtitle_srt(
            out.source, out.entry.decision.sidecar_subtitle, out.entry.decision.action != Action::remux));
    return out.sidecar;
}

void Outputs::open(Output& out) {
    {
        std::lock_guard lock(out.mutex);
        ++out.readers;
    }
    if (out.entry.decision.action != Action::remux) return;
    std::lock_guard lock(out.remux_mutex);
    if (out.remux_ready) return;
    out.remux_error.clear();
    try {
        start_remux(out);
        out.remux_ready = true;
    } catch (const std::exception& error) {
        out.remux_error = error.what();
        log_info("{}: remux failed: {}", printable(out.source), error.what());
    }
}

// Under out.remux_mutex: the complete MP4 from the cache, or its head now and its payload streamed
// by a thread (the head from the probe's dry run, kept in head.mp4, else from a new dry run).
void Outputs::start_remux(Output& out) {
    auto final_path = out.dir + "/remux.mp4", temp = final_path + ".part", head_path = out.dir + "/head.mp4";
    std::error_code ignored;
    fs::create_directories(out.dir, ignored);
    if (fs::file_size(final_path, ignored) == out.entry.layout.size) {
        auto file = std::make_shared<Fd>(::open(final_path.c_str(), O_RDONLY | O_CLOEXEC));
        if (*file) {
            std::lock_guard lock(out.mutex);
            out.remux_file = std::move(file);
            out.remux_available = out.entry.layout.size;
            out.remux_failed = false;
            return;
        }
    }
    RemuxPlan plan;
    plan.head = read_whole(head_path);
    try {
        auto mdat = parse_faststart_head(plan.head);
        plan.payload_start = mdat.payload_start;
        plan.payload_bytes = mdat.payload_bytes;
    } catch (const DataError&) {
        plan.head.clear();  // missing (evicted, or a cache from before streaming) or damaged
    }
    if (plan.head.empty() || plan.size() != out.entry.layout.size) {
        plan = remux_plan(out.source, out.entry.decision);
        write_head(out.dir, plan.head);
    }
    if (plan.size() != out.entry.layout.size)
        throw std::runtime_error(
            fmt::format("the remux's head says {} bytes, {} announced", plan.size(), out.entry.layout.size));
    make_room(out.entry.layout.size);
    auto file = std::make_shared<Fd>(::open(temp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!*file) throw std::runtime_error(fmt::format("open {}: {}", printable(temp), std::strerror(errno)));
    if (!pwrite_all(file->get(), plan.head.data(), plan.head.size(), 0))
        throw std::runtime_error(fmt::format("write {}: {}", printable(temp), std::strerror(errno)));
    std::lock_guard lock(out.mutex);
    if (out.stopping) throw std::runtime_error("the mount is stopping");
    out.remux_file = std::move(file);
    out.remux_available = plan.head.size();
    out.remux_failed = false;
    if (out.worker.joinable()) out.worker.join();  // a stream that failed before: it has exited
    out.worker_running = true;
    out.worker =
        std::thread([this, &out, plan = std::move(plan)]() mutable { stream(out, std::move(plan)); });
}

// The remux's thread: appends mdat's payload to remux.mp4.part as the muxer writes it, then renames
// it into place. Readers wait on out.changed for remux_available.
void Outputs::stream(Output& out, RemuxPlan plan) {
    enter_tvfs_thread("tvfs-remux");
    auto final_path = out.dir + "/remux.mp4", temp = final_path + ".part";
    std::shared_ptr<Fd> file;
    {
        std::lock_guard lock(out.mutex);
        file = out.remux_file;
    }
    const std::uint64_t head = plan.head.size();
    try {
        stream_remux(
            out.source, out.entry.decision, plan,
            [&](std::uint64_t offset, const std::uint8_t* data, std::size_t size) {
                {
                    std::lock_guard lock(out.mutex);
                    if (out.stopping) throw std::runtime_error("the mount is stopping");
                }
                if (!pwrite_all(file->get(), reinterpret_cast<const char*>(data), size, head + offset))
                    throw std::runtime_error(
                        fmt::format("write {}: {}", printable(temp), std::strerror(errno)));
                std::lock_guard lock(out.mutex);
                out.remux_available = head + offset + size;
                out.changed.notify_all();
            });
        if (::rename(temp.c_str(), final_path.c_str()) != 0)
            throw std::runtime_error(fmt::format("rename {}: {}", printable(temp), std::strerror(errno)));
        cache_.add(plan.size());
    } catch (const std::exception& error) {
        ::unlink(temp.c_str());
        log_info("{}: remux failed: {}", printable(out.source), error.what());
        {
            std::lock_guard lock(out.mutex);
            out.remux_failed = true;
            out.worker_running = false;
            out.changed.notify_all();
        }
        // Last, and taking no lock after it: an opener that sees remux_ready false starts a new
        // stream and joins this thread under out.mutex.
        std::lock_guard lock(out.remux_mutex);
        out.remux_ready = false;
        out.remux_error = error.what();
        return;
    }
    std::lock_guard remux_lock(out.remux_mutex);
    std::lock_guard lock(out.mutex);
    out.worker_running = false;
    if (out.readers == 0) {  // complete and closed: give back the descriptor, as release() does
        out.remux_file.reset();
        out.remux_ready = false;
    }
    out.changed.notify_all();
}

int Outputs::read_remux(Output& out, char* buffer, std::size_t size, std::uint64_t offset) {
    std::uint64_t end = offset + size;
    std::unique_lock lock(out.mutex);
    out.changed.wait(lock, [&] { return out.remux_available >= end || out.remux_failed || out.stopping; });
    if (!out.remux_file || out.remux_available <= offset) return -EIO;
    auto file = out.remux_file;
    auto take = static_cast<std::size_t>(std::min(end, out.remux_available) - offset);
    lock.unlock();  // the streaming thread must not wait for our disk read
    std::size_t got = 0;
    while (got < take) {
        auto n = ::pread(file->get(), buffer + got, take - got, static_cast<off_t>(offset + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return got ? static_cast<int>(got) : (n < 0 ? -errno : -EIO);
        got += static_cast<std::size_t>(n);
    }
    return static_cast<int>(got);
}

void Outputs::release(Output& out) {
    std::unique_lock<std::mutex> remux_lock;
    if (out.entry.decision.action == Action::remux) remux_lock = std::unique_lock(out.remux_mutex);
    std::lock_guard lock(out.mutex);
    --out.readers;
    out.last_close = Clock::now();
    // A complete remux nobody reads gives back its descriptor (a DLNA scan opens every file); the
    // next open takes remux.mp4 from the cache again.
    if (remux_lock && out.readers == 0 && !out.worker_running && out.remux_file &&
        out.remux_available == out.entry.layout.size) {
        out.remux_file.reset();
        out.remux_ready = false;
    }
    out.changed.notify_all();
}

int Outputs::read(Output& out, char* buffer, std::size_t size, std::uint64_t offset) {
    const auto& layout = out.entry.layout;
    if (offset >= layout.size) return 0;
    size = static_cast<std::size_t>(std::min<std::uint64_t>(size, layout.size - offset));
    if (out.entry.decision.action == Action::remux) return read_remux(out, buffer, size, offset);
    std::size_t copied = 0;
    auto after = std::upper_bound(layout.segments.begin(), layout.segments.end(), offset,
                                  [](std::uint64_t value, const Segment& s) { return value < s.offset; });
    auto k = static_cast<std::size_t>(after - layout.segments.begin()) - 1;
    while (copied < size && k < layout.segments.size()) {
        const auto& segment = layout.segments[k];
        std::uint64_t within = offset + copied - segment.offset;
        auto take = static_cast<std::size_t>(std::min<std::uint64_t>(size - copied, segment.bytes - within));
        if (!copy_from_segment(out, k, within, take, buffer + copied))
            return copied ? static_cast<int>(copied) : -EIO;
        copied += take;
        ++k;
    }
    return static_cast<int>(copied);
}

// Copies [within, within+take) of segment k, waiting for the worker to make it; false if it cannot be made.
bool Outputs::copy_from_segment(Output& out, std::size_t k, std::uint64_t within, std::size_t take,
                                char* destination) {
    std::unique_lock lock(out.mutex);
    // A read ahead of (or behind) the worker repositions it: a TV seeking.
    // The read-ahead then restarts from there, also for a read of a segment already made (a metadata
    // reader's tail read): read-ahead raised far from the worker's position would make every segment
    // in between, which nobody asked for (a reader still reading at the old position moves the worker
    // back with its next read).
    if (k < out.cursor || k > out.cursor + 2) {
        out.cursor = k;
        out.wanted = k;
    }
    out.wanted = std::max(out.wanted, k + read_ahead);
    if (out.wanted < out.cursor) out.wanted = out.cursor + read_ahead;
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
            out.done[k] = 0;  // evicted under us: made again (the same bytes: segments are deterministic)
            out.cursor = std::min(out.cursor, k);
            ensure_worker(out);
            out.changed.notify_all();
            continue;
        }
        if (out.failed.count(k) || out.stopping) return false;
        out.changed.wait_for(lock, std::chrono::milliseconds(200));
    }
}

// Called with out.mutex held.
void Outputs::ensure_worker(Output& out) {
    if (out.worker_running || out.stopping) return;
    if (out.worker.joinable()) out.worker.join();  // a worker that exited after its grace period
    out.worker_running = true;
    out.worker = std::thread([this, &out] { work(out); });
}

// Segments made at once by one output's worker: x264 runs on one thread per segment (its VBV is not
// repeatable with threads, media.cpp), so a sequential read uses two cores by making two segments.
constexpr std::size_t parallel_segments = 2;

void Outputs::work(Output& out) {
    enter_tvfs_thread("tvfs-segment");
    auto produce = [&](std::size_t k) -> std::shared_ptr<const std::string> {
        try {
            return std::make_shared<const std::string>(produce_segment(
                out.source, out.entry.media, out.entry.decision, profile_, out.entry.layout, k));
        } catch (const std::exception& error) {
            log_info("{}: segment {}: {}", printable(out.source), k, error.what());
            return nullptr;
        }
    };
    std::unique_lock lock(out.mutex);
    while (!out.stopping) {
        std::vector<std::size_t> next;
        for (std::size_t j = out.cursor;
             j < out.done.size() && j <= out.wanted && next.size() < parallel_segments; ++j)
            if (!out.done[j] && !out.memory.count(j) && !out.failed.count(j)) next.push_back(j);
        if (next.empty()) {
            if (out.readers == 0 && Clock::now() - out.last_close >= grace_) break;
            out.changed.wait_for(lock, std::chrono::milliseconds(100));
            continue;
        }
        lock.unlock();
        // The second segment on a helper thread, joined before anything else happens here.
        std::vector<std::shared_ptr<const std::string>> made(next.size());
        std::thread helper;
        if (next.size() > 1) {
            try {
                helper = std::thread([&] {
                    enter_tvfs_thread("tvfs-segment");
                    made[1] = produce(next[1]);
                });
            } catch (const std::system_error&) {
                next.resize(1);  // no thread to be had: one at a time
                made.resize(1);
            }
        }
        made[0] = produce(next[0]);
        if (helper.joinable()) helper.join();
        for (std::size_t i = 0; i < next.size(); ++i) {
            std::size_t k = next[i];
            const auto& data = made[i];
            bool stored = data && store_segment(out, k, *data);
            lock.lock();
            if (!data) out.failed.insert(k);
            else if (stored)
                out.done[k] = 1;
            if (data) {
                out.memory[k] = data;
                while (out.memory.size() > memory_segments) {
                    // Keep only what the disk does not hold, plus the newest few.
                    auto oldest = out.memory.begin();
                    if (oldest->first == k) ++oldest;
                    out.memory.erase(oldest);
                }
            }
            if (out.cursor == k) out.cursor = k + 1;
            out.changed.notify_all();
            lock.unlock();
        }
        lock.lock();
    }
    out.worker_running = false;
    out.memory.clear();
    out.changed.notify_all();
}

bool Outputs::store_segment(Output& out, std::size_t k, const std::string& data) {
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
        else
            written += static_cast<std::size_t>(n);
    }
    int error = errno;
    fd = Fd();
    if (ok && ::rename(temp.c_str(), final_path.c_str()) == 0) {
        cache_.add(data.size());
        return true;
    }
    ::unlink(temp.c_str());
    log_info("cache {}: {} (segment served from memory, not cached)",
             fs::path(out.dir).parent_path().string(), std::strerror(error));
    return false;
}

void Outputs::make_room(std::uint64_t bytes) {
    std::lock_guard lock(mutex_);
    auto evicted = cache_.make_room(bytes, [&](const std::string& key) {
        auto found = outputs_.find(key);
        if (found == outputs_.end()) return true;
        if (found->second.use_count() > 1) return false;  // an open file (or stop_all) holds it
        std::lock_guard out_lock(found->second->mutex);
        return found->second->readers == 0 && !found->second->worker_running;
    });
    for (const auto& key : evicted) {
        auto found = outputs_.find(key);
        if (found == outputs_.end()) continue;
        if (found->second->worker.joinable()) found->second->worker.join();  // it has exited (checked above)
        outputs_.erase(found);
    }
}

void Outputs::stop_all() {
    std::map<std::string, std::shared_ptr<Output>> outputs;
    {
        std::lock_guard lock(mutex_);
        stopped_ = true;
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

}  // namespace ktricks::tvfs
