#include "tvfs/cache.hpp"

#include <algorithm>
#include <climits>
#include <filesystem>

namespace ktricks::tvfs {

namespace fs = std::filesystem;

// A use in this run counts from 2^62: above any mtime in nanoseconds until the year 2116, so every
// directory found at start is older than every directory used since.
constexpr std::int64_t used_this_run = std::int64_t{1} << 62;

OutputCache::OutputCache(std::string root, std::uint64_t limit) : root_(std::move(root)), limit_(limit) {
    fs::create_directories(root_);
    std::error_code error;
    for (const auto& dir : fs::directory_iterator(root_, error)) {
        std::error_code inner;
        if (!dir.is_directory(inner)) continue;
        // Its last use: read before removing a ".part" file changes it.
        auto age = fs::last_write_time(dir.path(), inner);
        for (const auto& file : fs::directory_iterator(dir.path(), inner)) {
            if (file.path().extension() == ".part") fs::remove(file.path(), inner);
            else
                used_ += file.file_size(inner);
        }
        last_use_[dir.path().filename().string()] = static_cast<std::int64_t>(age.time_since_epoch().count());
    }
}

std::uint64_t OutputCache::used() const {
    std::lock_guard lock(mutex_);
    return used_;
}

void OutputCache::touch(const std::string& key) {
    std::lock_guard lock(mutex_);
    last_use_[key] = ++clock_ + used_this_run;
}

void OutputCache::add(std::uint64_t bytes) {
    std::lock_guard lock(mutex_);
    used_ += bytes;
}

std::vector<std::string> OutputCache::make_room(
    std::uint64_t bytes, const std::function<bool(const std::string& key)>& evictable) {
    std::vector<std::string> evicted;
    std::lock_guard lock(mutex_);
    while (used_ + bytes > limit_) {
        // The directory listing, not last_use_, is the truth: a directory made but never touched
        // (a remux that failed) still counts and still goes.
        std::string victim;
        std::int64_t oldest = INT64_MAX;
        std::error_code ignored;
        for (const auto& dir : fs::directory_iterator(root_, ignored)) {
            auto key = dir.path().filename().string();
            if (std::find(evicted.begin(), evicted.end(), key) != evicted.end() || !evictable(key)) continue;
            auto found = last_use_.find(key);
            auto use = found == last_use_.end() ? 0 : found->second;
            if (use < oldest) {
                oldest = use;
                victim = key;
            }
        }
        if (victim.empty()) break;
        std::uint64_t freed = 0;
        for (const auto& file : fs::directory_iterator(root_ + "/" + victim, ignored))
            freed += file.file_size(ignored);
        fs::remove_all(root_ + "/" + victim, ignored);
        used_ -= std::min(used_, freed);
        last_use_.erase(victim);
        evicted.push_back(victim);
    }
    return evicted;
}

}  // namespace ktricks::tvfs
