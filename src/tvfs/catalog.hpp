// The catalog: which names the mount shows in each directory and which source file each one is
// (private to tvfs). A converted file gets its output extension (clip.mkv -> clip.mp4); a
// pass-through file keeps its name and wins a collision, the converted one then keeps its source
// name in front (clip.mkv.mp4); one with text subtitles gets the sidecar clip.srt beside it. No
// name is longer than NAME_MAX: the kernel refuses to look one up.
#pragma once

#include <climits>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tvfs/cache_json.hpp"

namespace ktricks::tvfs {

struct CatalogItem {
    std::string source_name;
    bool directory = false;
    bool sidecar = false;  // the NAME.srt of a converted output (its subtitles as SubRip)
};
using Listing = std::map<std::string, CatalogItem>;  // name in the mount -> source

// One entry of a source directory, as the catalog names it.
struct SourceItem {
    std::string name;
    bool directory = false;
    Decision decision;  // files only; skip leaves the file out
};

// Pure: the names of one directory's entries in the mount.
Listing name_items(const std::vector<SourceItem>& items);
// NAME if it fits in NAME_MAX bytes, else its front (cut on a UTF-8 boundary), "~", a hash of the
// whole name and its last `keep` bytes (the extension): distinct long names stay distinct.
std::string fit_name(const std::string& name, std::size_t keep);
static_assert(NAME_MAX == 255, "fit_name assumes Linux's limit on one path component");

class Catalog {
public:
    // The probe entry of a source file ("/dir/name"); nullopt if it is gone.
    using Lookup = std::function<std::optional<Entry>(const std::string& rel)>;

    // The entries of several source files, their decisions at least (layouts may come later).
    using Decide = std::function<std::vector<std::optional<Entry>>(const std::vector<std::string>& rels)>;

    // `scanned` runs after a directory was read from the source (the probe cache saves then);
    // `decide` names a directory's files (by default lookup, one file after the other).
    Catalog(std::string source_root, Lookup lookup, std::function<void()> scanned = {}, Decide decide = {});

    // The names in mount directory DIR ("" for the root, "/sub"), read from the source once and
    // kept until forget(DIR).
    std::shared_ptr<const Listing> listing(const std::string& dir);

    struct Resolved {
        bool directory = false;
        std::string source_rel;      // "/dir/clip.mkv"
        std::optional<Entry> entry;  // files only
        bool sidecar = false;        // the subtitles of source_rel as SubRip text
    };
    // What PATH in the mount ("/dir/clip.mp4") is; nullopt if nothing (or a skipped file).
    std::optional<Resolved> resolve(const std::string& path);

    // The names DIR's listing shows for SOURCE_NAME (for invalidating the kernel's caches).
    std::vector<std::string> names_of(const std::string& dir, const std::string& source_name);
    void forget(const std::string& dir);

private:
    std::string source_root_;
    Lookup lookup_;
    std::function<void()> scanned_;
    Decide decide_;
    // Lock order: filesystem.hpp.
    std::mutex mutex_;  // guards listings_ (never held while reading the source or probing)
    std::map<std::string, std::shared_ptr<const Listing>> listings_;
};

}  // namespace ktricks::tvfs
