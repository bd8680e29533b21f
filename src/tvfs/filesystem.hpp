// The state of one mounted tvfs, shared by the FUSE operations (private to tvfs). Each part is one
// job: the catalog names files, the probe cache remembers what probing found, the output cache
// bounds the disk, the outputs make remuxes and segments.
//
// Lock order. A thread holding a lock takes only locks further down its chain, never one above:
//   Output::remux_mutex -> Outputs::mutex_ -> OutputCache::mutex_ -> Output::mutex
//       (a remux being started makes room in the cache; eviction asks each output whether it is
//       being read; the remux's streaming thread then takes Output::mutex, or remux_mutex, alone)
//   ProbeCache::probing_[file] -> ProbeCache::mutex_
//       (a probe runs under its file's lock; the map is locked only to read or store an entry)
//   ProbeCache::probing_[file] -> OutputCache::mutex_
//       (the probe of a remux stores its faststart head in the output cache: Outputs::store_head,
//       which takes no other lock; nothing under OutputCache::mutex_ takes a probe lock)
//   ProbeCache::save_mutex_ -> ProbeCache::mutex_   (a save copies the entries, then writes the file)
//   ProbeCache::pool_mutex_ alone: released before a pool task runs (a task then takes the locks
//       above as any thread does); ProbeCache::Batch::mutex alone (a listing's decisions counted).
//   Catalog::mutex_ alone: released before the source is read or a file is probed.
//   Output::sidecar_mutex alone: held while a subtitle sidecar is made from the source.
//   Mount::State::error_mutex alone (mount_state.hpp).
// Apart from that one edge into OutputCache::mutex_ (the bottom of its chain but for Output::mutex,
// which takes nothing), no function holds a lock of one chain while taking a lock of another.
#pragma once

#include <chrono>
#include <string>

#include "ktricks/tvfs.hpp"
#include "tvfs/cache.hpp"
#include "tvfs/catalog.hpp"
#include "tvfs/probe_cache.hpp"
#include "tvfs/segments.hpp"

namespace ktricks::tvfs {

struct Filesystem {
    // OPTIONS with absolute paths; SOURCE the canonical source root.
    Filesystem(const MountOptions& given, std::string source_root, std::string cache_root)
        : options(given),
          profile(load_profile(given.profile)),
          source(std::move(source_root)),
          cache_dir(std::move(cache_root)),
          cache(cache_dir + "/out", given.cache_size),
          probes(source, profile, probe_file(cache_dir, profile),
                 [this](const std::string& path, const Entry& entry, const std::string& head) {
                     outputs.store_head(path, entry, head);
                 }),
          catalog(
              source, [this](const std::string& rel) { return probes.lookup(rel); },
              [this] { probes.save(); },
              [this](const std::vector<std::string>& rels) { return probes.decide_all(rels); }),
          outputs(source, profile, std::chrono::milliseconds(static_cast<long>(given.grace_seconds * 1000)),
                  cache) {}

    // One probe cache per profile: a decision depends on the profile's limits.
    static std::string probe_file(const std::string& cache_dir, const Profile& profile) {
        return cache_dir + "/probe-" +
               std::to_string(std::hash<std::string>{}(profile.name + profile.describe())) + ".json";
    }

    const MountOptions options;
    const Profile profile;
    const std::string source;
    const std::string cache_dir;
    OutputCache cache;
    ProbeCache probes;
    Catalog catalog;
    Outputs outputs;  // last: its workers use the others until it is destroyed
};

}  // namespace ktricks::tvfs
