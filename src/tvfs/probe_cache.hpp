// The probe cache: what probing a source file found (streams, decision, output layout), kept in
// memory and in one JSON file per profile, valid while the file's size and mtime match (private to
// tvfs). A listing of 200 files costs 200 probes once, then nothing.
//
// Probing has two steps. The decision (avformat_find_stream_info, then decide(): what the file is
// and what its name in the mount is) is all a listing needs. The layout (the output's exact size:
// a remux dry run over every packet, a transcode's segment budgets) is only needed at stat, and can
// cost far more. decide_all() makes a directory's decisions in parallel on a pool of one thread per
// CPU, returns, and leaves the layouts to that pool in the background: readdir never waits for a
// dry run, and each stat that follows finds its layout ready or waits only for its own file.
#pragma once

#include <sys/stat.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tvfs/cache_json.hpp"

namespace ktricks::tvfs {

class ProbeCache {
public:
    // A remux's faststart head, made by the probe's dry run of the source file PATH (absolute), for
    // the output cache (Outputs::store_head). ENTRY has the file's size and mtime.
    using HeadSink =
        std::function<void(const std::string& path, const Entry& entry, const std::string& head)>;

    // Loads `file` if it exists; a damaged file is logged and ignored (it is only a cache).
    ProbeCache(std::string source_root, const Profile& profile, std::string file, HeadSink head_sink = {});
    ~ProbeCache();  // stop()
    ProbeCache(const ProbeCache&) = delete;
    ProbeCache& operator=(const ProbeCache&) = delete;

    // The entry of a source file ("/a/b.mkv", relative to the source root), layout included: from
    // the cache if size and mtime match, else probed now (one probe per file, however many threads
    // ask at once). A file that cannot be probed gets an entry that skips it; nullopt only if it is
    // gone.
    std::optional<Entry> lookup(const std::string& rel);
    // As lookup(), but the layout may still be missing (its media and decision are there).
    std::optional<Entry> decision(const std::string& rel);
    // decision() of every file in RELS, in parallel (the calling thread and the pool); then queues
    // the missing layouts on the pool without waiting for them. One save() once they are all made.
    std::vector<std::optional<Entry>> decide_all(const std::vector<std::string>& rels);
    // The complete entry if it is in the cache now, without probing (nullopt otherwise).
    std::optional<Entry> ready(const std::string& rel);
    void forget(const std::string& rel);
    // Writes the file (to a temporary name, then renamed) if anything changed since the last save.
    void save();
    // Drops the queued background work and joins the pool (a decide_all() still finishes, on its
    // caller's thread). Further decide_all() calls work on the caller's thread alone.
    void stop();

private:
    struct Batch;
    Entry decide_now(const std::string& path, const struct ::stat& st) const;
    void add_layout(const std::string& path, Entry& entry) const;
    // lookup() or decision(); PROBED (if given) is set when this call probed the file itself.
    std::optional<Entry> probe(const std::string& rel, bool need_layout, bool* probed = nullptr);
    void post(std::function<void()> task, bool urgent);
    void work();

    std::string source_root_;
    const Profile& profile_;
    std::string file_;
    HeadSink head_sink_;
    // Lock order: filesystem.hpp.
    std::mutex mutex_;                      // guards entries_, decided_, probing_ and dirty_
    std::map<std::string, Entry> entries_;  // complete entries (saved)
    std::map<std::string, Entry> decided_;  // a decision whose layout is not made yet (not saved)
    // One lock per file being probed: held for the whole probe, taken before mutex_.
    std::map<std::string, std::shared_ptr<std::mutex>> probing_;
    bool dirty_ = false;
    // Guards the file: FUSE threads and the source watcher all save, one write at a time (two
    // would write the same temporary file at once). Taken before mutex_.
    std::mutex save_mutex_;

    // The pool: started by the first decide_all(). A task runs with no lock of the pool held.
    std::mutex pool_mutex_;  // guards everything below
    std::condition_variable pool_wake_;
    std::deque<std::function<void()>> urgent_;      // decisions a listing waits for
    std::deque<std::function<void()>> background_;  // layouts nobody waits for yet
    std::size_t layouts_pending_ = 0;               // queued or running layouts; 0 -> save()
    bool stopping_ = false;
    std::vector<std::thread> workers_;
};

// The CPUs this process may run on (sched_getaffinity), at least 1: the pool's size.
unsigned usable_cpus();

}  // namespace ktricks::tvfs
