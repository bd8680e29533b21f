#include "tvfs/probe_cache.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/stat.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>

#include "ktricks/core/error.hpp"
#include "ktricks/core/service.hpp"
#include "tvfs/av.hpp"
#include "tvfs/threads.hpp"

namespace ktricks::tvfs {

namespace fs = std::filesystem;

namespace {

bool needs_layout(Action action) {
    return action == Action::remux || action == Action::full_transcode || action == Action::audio_transcode;
}

bool same_file(const Entry& entry, const struct ::stat& st) {
    return entry.size == st.st_size &&
           entry.mtime_ns == st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

}  // namespace

unsigned usable_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
    return static_cast<unsigned>(std::max(1, CPU_COUNT(&set)));
}

// A decide_all() in progress: the caller and the pool's helpers take the next index until none is left.
struct ProbeCache::Batch {
    std::vector<std::string> rels;
    std::vector<std::optional<Entry>> results;
    std::atomic<std::size_t> next{0};
    std::mutex mutex;  // guards the rest (alone: nothing else is taken while it is held)
    std::condition_variable finished;
    std::size_t done = 0, probed = 0;
    std::set<std::thread::id> threads;  // those that probed at least one file
    double probe_seconds = 0;           // the probes' durations added up

    void run(ProbeCache& cache) {
        for (std::size_t i; (i = next.fetch_add(1)) < rels.size();) {
            bool fresh = false;
            auto start = std::chrono::steady_clock::now();
            try {
                results[i] = cache.probe(rels[i], false, &fresh);
            } catch (const std::exception& error) {  // out of memory: the file is left out, the batch ends
                log_info("probe {}: {}", printable(rels[i]), error.what());
            }
            std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
            std::lock_guard lock(mutex);
            if (fresh) {
                ++probed;
                probe_seconds += took.count();
                threads.insert(std::this_thread::get_id());
            }
            if (++done == rels.size()) finished.notify_all();
        }
    }
};

ProbeCache::ProbeCache(std::string source_root, const Profile& profile, std::string file, HeadSink head_sink)
    : source_root_(std::move(source_root)),
      profile_(profile),
      file_(std::move(file)),
      head_sink_(std::move(head_sink)) {
    std::ifstream in(file_);
    if (!in) return;
    try {
        auto json = nlohmann::json::parse(in);
        for (const auto& [rel, value] : json.items()) entries_[rel] = value.get<Entry>();
    } catch (const std::exception& error) {
        log_info("{}: ignoring the probe cache: {}", file_, error.what());
        entries_.clear();
    }
}

Entry ProbeCache::decide_now(const std::string& path, const struct ::stat& st) const {
    Entry entry;
    entry.size = st.st_size;
    entry.mtime_ns = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    try {
        entry.media = ktricks::tvfs::probe(path);
        entry.decision = decide(entry.media, profile_);
        auto action = entry.decision.action;
        if (action == Action::pass_through) entry.layout.size = static_cast<std::uint64_t>(st.st_size);
        entry.layout.action = action;
        if (action == Action::skip)
            log_info("{}: skipped: {}", printable(path),
                     entry.decision.reasons.empty() ? "" : entry.decision.reasons.front());
    } catch (const std::exception& error) {
        entry.decision = Decision{};
        entry.decision.reasons = {error.what()};
        entry.layout = Layout{};
        log_info("skipped (unreadable or corrupt): {}", error.what());
    }
    return entry;
}

void ProbeCache::add_layout(const std::string& path, Entry& entry) const {
    auto action = entry.decision.action;
    if (!needs_layout(action)) return;
    try {
        if (action == Action::remux) {
            auto plan = remux_plan(path, entry.decision);
            entry.layout.size = plan.size();
            if (head_sink_) head_sink_(path, entry, plan.head);  // under the file's probe lock only
        } else
            entry.layout = transcode_layout(path, entry.media, entry.decision, profile_);
        entry.layout.action = action;
    } catch (const std::exception& error) {
        entry.decision = Decision{};
        entry.decision.reasons = {error.what()};
        entry.layout = Layout{};
        log_info("skipped (unreadable or corrupt): {}", error.what());
    }
}

std::optional<Entry> ProbeCache::lookup(const std::string& rel) { return probe(rel, true); }

std::optional<Entry> ProbeCache::decision(const std::string& rel) { return probe(rel, false); }

std::optional<Entry> ProbeCache::probe(const std::string& rel, bool need_layout, bool* probed) {
    struct stat st {};
    auto path = source_root_ + rel;
    if (::stat(path.c_str(), &st) != 0) return std::nullopt;
    // A complete entry, or (for a decision) one without its layout yet; nullptr if neither.
    auto cached = [&]() -> const Entry* {
        if (auto found = entries_.find(rel); found != entries_.end() && same_file(found->second, st))
            return &found->second;
        if (auto found = decided_.find(rel); found != decided_.end() && same_file(found->second, st))
            return need_layout ? nullptr : &found->second;
        return nullptr;
    };
    std::shared_ptr<std::mutex> slot;
    {
        std::lock_guard lock(mutex_);
        if (const auto* entry = cached()) return *entry;
        auto& s = probing_[rel];
        if (!s) s = std::make_shared<std::mutex>();
        slot = s;
    }
    std::lock_guard probing(*slot);  // one probe per file even when many threads stat it at once
    std::optional<Entry> entry;
    {
        std::lock_guard lock(mutex_);
        if (const auto* found = cached()) return *found;
        // A decision made earlier saves probing again for the layout.
        if (auto found = decided_.find(rel); found != decided_.end() && same_file(found->second, st))
            entry = found->second;
    }
    if (!entry) {
        entry = decide_now(path, st);
        if (probed) *probed = true;
    }
    bool complete = !needs_layout(entry->decision.action);
    if (need_layout && !complete) {
        add_layout(path, *entry);
        complete = true;
    }
    std::lock_guard lock(mutex_);
    if (complete) {
        entries_[rel] = *entry;
        decided_.erase(rel);
        dirty_ = true;
    } else {
        decided_[rel] = *entry;
    }
    return entry;
}

std::vector<std::optional<Entry>> ProbeCache::decide_all(const std::vector<std::string>& rels) {
    auto batch = std::make_shared<Batch>();
    batch->rels = rels;
    batch->results.resize(rels.size());
    // One helper per CPU besides the caller, no more than there are files to share.
    std::size_t helpers = std::min<std::size_t>(usable_cpus(), rels.size() > 1 ? rels.size() - 1 : 0);
    for (std::size_t i = 0; i < helpers; ++i) post([this, batch] { batch->run(*this); }, true);
    auto start = std::chrono::steady_clock::now();
    batch->run(*this);
    {
        std::unique_lock lock(batch->mutex);
        batch->finished.wait(lock, [&] { return batch->done == rels.size(); });
        std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
        // One line per listing that probed: how much of the probing ran side by side.
        if (batch->probed > 0)
            log_info("probed {} of {} files in {:.3f} s on {} threads ({:.3f} s of probes)", batch->probed,
                     rels.size(), took.count(), batch->threads.size(), batch->probe_seconds);
    }
    // The layouts in the background, in listing order (the order `ls -l` stats them in). A file
    // that changed or went away since is left to whoever stats it next.
    for (std::size_t i = 0; i < rels.size(); ++i) {
        const auto& entry = batch->results[i];
        if (!entry || !needs_layout(entry->decision.action)) continue;
        post(
            [this, rel = rels[i], size = entry->size, mtime = entry->mtime_ns] {
                struct stat st {};
                if (::stat((source_root_ + rel).c_str(), &st) == 0 && st.st_size == size &&
                    st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec == mtime)
                    lookup(rel);
            },
            false);
    }
    return std::move(batch->results);
}

std::optional<Entry> ProbeCache::ready(const std::string& rel) {
    struct stat st {};
    if (::stat((source_root_ + rel).c_str(), &st) != 0) return std::nullopt;
    std::lock_guard lock(mutex_);
    if (auto found = entries_.find(rel); found != entries_.end() && same_file(found->second, st))
        return found->second;
    return std::nullopt;
}

void ProbeCache::post(std::function<void()> task, bool urgent) {
    std::lock_guard lock(pool_mutex_);
    if (stopping_) return;  // a decision is then made by the caller of decide_all() itself
    if (workers_.empty()) {
        for (unsigned i = 0; i < usable_cpus(); ++i)
            workers_.emplace_back([this] {
                enter_tvfs_thread("tvfs-probe");
                work();
            });
    }
    if (urgent) urgent_.push_back(std::move(task));
    else {
        background_.push_back(std::move(task));
        ++layouts_pending_;
    }
    pool_wake_.notify_one();
}

void ProbeCache::work() {
    std::unique_lock lock(pool_mutex_);
    while (true) {
        pool_wake_.wait(lock, [&] { return stopping_ || !urgent_.empty() || !background_.empty(); });
        if (stopping_) return;
        bool urgent = !urgent_.empty();
        auto& queue = urgent ? urgent_ : background_;
        auto task = std::move(queue.front());
        queue.pop_front();
        lock.unlock();
        try {
            task();
        } catch (const std::exception& error) {
            log_info("probe: {}", error.what());
        }
        bool drained = false;
        lock.lock();
        if (!urgent && layouts_pending_ > 0) drained = --layouts_pending_ == 0;  // 0 after stop()
        if (drained) {
            lock.unlock();
            save();  // once per batch of layouts, not once per file
            lock.lock();
        }
    }
}

void ProbeCache::stop() {
    std::vector<std::thread> workers;
    {
        std::lock_guard lock(pool_mutex_);
        stopping_ = true;
        urgent_.clear();
        background_.clear();
        layouts_pending_ = 0;
        workers.swap(workers_);
    }
    pool_wake_.notify_all();
    for (auto& worker : workers) worker.join();
}

ProbeCache::~ProbeCache() { stop(); }

void ProbeCache::forget(const std::string& rel) {
    std::lock_guard lock(mutex_);
    entries_.erase(rel);
    decided_.erase(rel);
    dirty_ = true;
}

void ProbeCache::save() {
    std::lock_guard saving(save_mutex_);
    nlohmann::json json = nlohmann::json::object();
    {
        std::lock_guard lock(mutex_);
        if (!dirty_) return;
        dirty_ = false;
        for (const auto& [rel, entry] : entries_) json[rel] = entry;
    }
    auto temp = file_ + ".part";
    std::error_code ignored;
    {
        std::ofstream out(temp, std::ios::trunc);
        out << json.dump();
        if (!out) {
            log_info("{}: cannot write the probe cache", temp);
            fs::remove(temp, ignored);
            return;
        }
    }
    fs::rename(temp, file_, ignored);
}

}  // namespace ktricks::tvfs
