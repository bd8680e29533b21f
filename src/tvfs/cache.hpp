// The output cache: one directory per output under ROOT (its segments, or its MP4), its size kept
// under a limit by evicting the least recently used directories (private to tvfs).
//
// Directories found at start are older than any used since (their mtime orders them among
// themselves); half-written files (".part", a crash mid-write) are removed then. What may not be
// evicted (an output being read or made) is the caller's to say, per eviction.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace ktricks::tvfs {

class OutputCache {
public:
    // Creates ROOT if needed and counts what it holds.
    OutputCache(std::string root, std::uint64_t limit);

    std::string directory(const std::string& key) const { return root_ + "/" + key; }
    std::uint64_t limit() const noexcept { return limit_; }
    std::uint64_t used() const;

    // KEY was just used: it becomes the last to be evicted.
    void touch(const std::string& key);
    // BYTES were written into the cache (by a rename into place).
    void add(std::uint64_t bytes);

    // Evicts least recently used directories for which `evictable(key)` is true until BYTES more fit
    // under the limit, or nothing evictable is left (then the cache stays over its limit until
    // outputs close). Returns the evicted keys, oldest first. `evictable` runs under this cache's
    // lock (lock order: filesystem.hpp).
    std::vector<std::string> make_room(std::uint64_t bytes,
                                       const std::function<bool(const std::string& key)>& evictable);

private:
    std::string root_;
    std::uint64_t limit_;
    // Lock order: filesystem.hpp.
    mutable std::mutex mutex_;  // guards used_, last_use_ and clock_, and the removal of directories
    std::uint64_t used_ = 0;
    std::map<std::string, std::int64_t> last_use_;  // key -> use time; larger is more recent
    std::int64_t clock_ = 0;
};

}  // namespace ktricks::tvfs
