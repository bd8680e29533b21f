#include "tvfs/probe_cache.hpp"

#include <sys/stat.h>

#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "ktricks/core/error.hpp"
#include "ktricks/core/service.hpp"
#include "tvfs/av.hpp"

namespace ktricks::tvfs {

namespace fs = std::filesystem;

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

Entry ProbeCache::probe_now(const std::string& path, const struct ::stat& st) const {
    Entry entry;
    entry.size = st.st_size;
    entry.mtime_ns = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    try {
        entry.media = probe(path);
        entry.decision = decide(entry.media, profile_);
        auto action = entry.decision.action;
        if (action == Action::pass_through) entry.layout.size = static_cast<std::uint64_t>(st.st_size);
        else if (action == Action::remux) {
            auto plan = remux_plan(path, entry.decision);
            entry.layout.size = plan.size();
            if (head_sink_) head_sink_(path, entry, plan.head);  // under the file's probe lock only
        } else if (action != Action::skip)
            entry.layout = transcode_layout(path, entry.media, entry.decision, profile_);
        entry.layout.action = action;
        if (action == Action::skip)
            log_info("{}: skipped: {}", printable(path),
                     entry.decision.reasons.empty() ? "" : entry.decision.reasons.front());
    } catch (const std::exception& error) {
        entry.decision = Decision{};
        entry.decision.reasons = {error.what()};
        log_info("skipped (unreadable or corrupt): {}", error.what());
    }
    return entry;
}

std::optional<Entry> ProbeCache::lookup(const std::string& rel) {
    struct stat st {};
    auto path = source_root_ + rel;
    if (::stat(path.c_str(), &st) != 0) return std::nullopt;
    std::int64_t mtime = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    auto cached = [&]() -> std::optional<Entry> {
        if (auto found = entries_.find(rel);
            found != entries_.end() && found->second.size == st.st_size && found->second.mtime_ns == mtime)
            return found->second;
        return std::nullopt;
    };
    std::shared_ptr<std::mutex> slot;
    {
        std::lock_guard lock(mutex_);
        if (auto entry = cached()) return entry;
        auto& s = probing_[rel];
        if (!s) s = std::make_shared<std::mutex>();
        slot = s;
    }
    std::lock_guard probing(*slot);  // one probe per file even when many threads stat it at once
    {
        std::lock_guard lock(mutex_);
        if (auto entry = cached()) return entry;
    }
    auto entry = probe_now(path, st);
    std::lock_guard lock(mutex_);
    entries_[rel] = entry;
    dirty_ = true;
    return entry;
}

void ProbeCache::forget(const std::string& rel) {
    std::lock_guard lock(mutex_);
    entries_.erase(rel);
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
