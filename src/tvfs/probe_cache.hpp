// The probe cache: what probing a source file found (streams, decision, output layout), kept in
// memory and in one JSON file per profile, valid while the file's size and mtime match (private to
// tvfs). A listing of 200 files costs 200 probes once, then nothing.
#pragma once

#include <sys/stat.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

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

    // The entry of a source file ("/a/b.mkv", relative to the source root): from the cache if size
    // and mtime match, else probed now (one probe per file, however many threads ask at once). A
    // file that cannot be probed gets an entry that skips it; nullopt only if it is gone.
    std::optional<Entry> lookup(const std::string& rel);
    void forget(const std::string& rel);
    // Writes the file (to a temporary name, then renamed) if anything changed since the last save.
    void save();

private:
    Entry probe_now(const std::string& path, const struct ::stat& st) const;

    std::string source_root_;
    const Profile& profile_;
    std::string file_;
    HeadSink head_sink_;
    // Lock order: filesystem.hpp.
    std::mutex mutex_;  // guards entries_, probing_ and dirty_
    std::map<std::string, Entry> entries_;
    // One lock per file being probed: held for the whole probe, taken before mutex_.
    std::map<std::string, std::shared_ptr<std::mutex>> probing_;
    bool dirty_ = false;
    // Guards the file: FUSE threads and the source watcher all save, one write at a time (two
    // would write the same temporary file at once). Taken before mutex_.
    std::mutex save_mutex_;
};

}  // namespace ktricks::tvfs
