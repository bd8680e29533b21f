#include "tvfs/catalog.hpp"

#include <fmt/format.h>

extern "C" {
#include <libavutil/crc.h>
}

#include <algorithm>
#include <filesystem>

namespace ktricks::tvfs {

namespace fs = std::filesystem;

std::string fit_name(const std::string& name, std::size_t keep) {
    if (name.size() <= NAME_MAX) return name;
    keep = std::min(keep, name.size());
    // CRC-32 (IEEE, as zlib's crc32()) of the whole name: a fixed function, so a shortened name is
    // the same across restarts, builds and machines (a TV's bookmarks and resume points keep
    // working), unlike std::hash, whose values the standard leaves to the library version.
    auto crc = av_crc(av_crc_get_table(AV_CRC_32_IEEE_LE), 0xffffffffu,
                      reinterpret_cast<const std::uint8_t*>(name.data()), name.size()) ^
               0xffffffffu;
    auto tag = fmt::format("~{:08x}", crc);
    std::size_t cut = NAME_MAX - keep - tag.size();
    while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80)
        --cut;  // not inside a UTF-8 sequence
    return name.substr(0, cut) + tag + name.substr(name.size() - keep);
}

Listing name_items(const std::vector<SourceItem>& items) {
    Listing result;
    std::vector<const SourceItem*> converted;
    for (const auto& item : items) {
        if (item.directory) result[item.name] = CatalogItem{item.name, true};
        else if (item.decision.action == Action::pass_through)
            result[item.name] = CatalogItem{item.name, false};
        else if (item.decision.action != Action::skip)
            converted.push_back(&item);
    }
    // Pass-through names (and directories) win; a converted name that collides keeps its source name in front.
    for (const auto* item : converted) {
        const auto& extension = item->decision.extension;
        auto shown = fit_name(output_name(item->name, item->decision), extension.size());
        if (result.count(shown)) shown = fit_name(item->name + extension, extension.size());
        result[shown] = CatalogItem{item->name, false};
        // The sidecar shares the output's stem (DLNA servers pair them by it); only a name within
        // a byte of NAME_MAX gets its own hash suffix. Never replaces another name.
        if (item->decision.sidecar_subtitle >= 0) {
            auto srt = fit_name(sidecar_name(shown), 4);
            if (!result.count(srt)) result[srt] = CatalogItem{item->name, false, true};
        }
    }
    return result;
}

Catalog::Catalog(std::string source_root, Lookup lookup, std::function<void()> scanned, Decide decide)
    : source_root_(std::move(source_root)),
      lookup_(std::move(lookup)),
      scanned_(std::move(scanned)),
      decide_(std::move(decide)) {
    if (!decide_)
        decide_ = [this](const std::vector<std::string>& rels) {
            std::vector<std::optional<Entry>> entries;
            for (const auto& rel : rels) entries.push_back(lookup_(rel));
            return entries;
        };
}

std::shared_ptr<const Listing> Catalog::listing(const std::string& dir) {
    {
        std::lock_guard lock(mutex_);
        if (auto found = listings_.find(dir); found != listings_.end()) return found->second;
    }
    std::vector<SourceItem> items;
    std::vector<std::string> files;
    std::error_code error;
    for (const auto& dirent : fs::directory_iterator(source_root_ + dir, error)) {
        auto name = dirent.path().filename().string();
        if (name.starts_with(".")) continue;
        std::error_code type_error;
        if (dirent.is_directory(type_error)) items.push_back(SourceItem{name, true, {}});
        else if (dirent.is_regular_file(type_error))
            files.push_back(name);
    }
    // Sorted: the order `ls` stats them in, which the background layouts follow.
    std::sort(files.begin(), files.end());
    std::vector<std::string> rels;
    for (const auto& name : files) rels.push_back(dir + "/" + name);
    auto entries = decide_(rels);
    for (std::size_t i = 0; i < files.size() && i < entries.size(); ++i)
        if (entries[i]) items.push_back(SourceItem{files[i], false, entries[i]->decision});
    auto result = std::make_shared<const Listing>(name_items(items));
    if (scanned_) scanned_();
    std::lock_guard lock(mutex_);
    listings_[dir] = result;
    return result;
}

std::optional<Catalog::Resolved> Catalog::resolve(const std::string& path) {
    if (path == "/") return Resolved{true, "", std::nullopt};
    auto slash = path.rfind('/');
    auto dir = path.substr(0, slash);
    auto items = listing(dir);
    auto found = items->find(path.substr(slash + 1));
    if (found == items->end()) return std::nullopt;
    Resolved resolved;
    resolved.directory = found->second.directory;
    resolved.sidecar = found->second.sidecar;
    resolved.source_rel = dir + "/" + found->second.source_name;
    if (!resolved.directory) {
        resolved.entry = lookup_(resolved.source_rel);
        if (!resolved.entry || resolved.entry->decision.action == Action::skip) return std::nullopt;
    }
    return resolved;
}

std::vector<std::string> Catalog::names_of(const std::string& dir, const std::string& source_name) {
    std::vector<std::string> names;
    std::lock_guard lock(mutex_);
    if (auto found = listings_.find(dir); found != listings_.end())
        for (const auto& [shown, item] : *found->second)
            if (item.source_name == source_name) names.push_back(shown);
    return names;
}

void Catalog::forget(const std::string& dir) {
    std::lock_guard lock(mutex_);
    listings_.erase(dir);
}

}  // namespace ktricks::tvfs
