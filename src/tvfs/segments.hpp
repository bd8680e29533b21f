// Outputs: what a converted file's reads are served from (private to tvfs).
//   remux       one faststart MP4, streamed: its head (ftyp + moov, from the probe's dry run) is
//               written at the first open and readable at once, then one thread per output runs the
//               muxer and appends mdat's payload as it is written; a read waits only for its bytes
//   transcodes  fixed-size MPEG-TS segments made by one worker thread per output (two at a time, the
//               second on a helper thread it joins), shared by all its readers; the worker starts at
//               the segment a read far from it asks for (a seek), runs a few segments ahead of that
//               read and exits `grace` after the last close
// Segments are written to a temporary name and renamed: a full disk leaves no partial file, and the
// segment is then served from memory (the error is logged).
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ktricks/core/fd.hpp"
#include "tvfs/cache.hpp"
#include "tvfs/cache_json.hpp"

namespace ktricks::tvfs {

// One output file (of one source version under one profile).
struct Output {
    std::string source;  // absolute source path
    std::string dir;     // its directory in the output cache
    Entry entry;

    // Lock order: filesystem.hpp.
    std::mutex mutex;                 // guards every member below except those of the remux
    std::condition_variable changed;  // with `mutex`: a segment made or failed, a reader came or went
    int readers = 0;
    std::chrono::steady_clock::time_point last_close = std::chrono::steady_clock::now();
    // transcodes
    std::vector<char> done;                                            // segment k is in the cache
    std::map<std::size_t, std::shared_ptr<const std::string>> memory;  // recent and unstorable segments
    std::set<std::size_t> failed;
    std::size_t cursor = 0, wanted = 0;  // the worker makes [cursor, wanted]
    bool worker_running = false, stopping = false;
    std::thread worker;
    // remux
    std::shared_ptr<Fd> remux_file;     // the MP4: remux.mp4, or remux.mp4.part while it is streamed
    std::uint64_t remux_available = 0;  // bytes [0, this) of remux_file are written
    bool remux_failed = false;          // the streaming thread failed: reads past remux_available fail
    // guards remux_ready and remux_error; held while a remux is started (its head written and its
    // thread started), not while it streams
    std::mutex remux_mutex;
    bool remux_ready = false;  // remux_file is set (complete, or being streamed)
    std::string remux_error;
    // the NAME.srt sidecar, made once on its first stat or open
    std::mutex sidecar_mutex;  // guards sidecar; held while it is made (alone: takes no other lock)
    std::shared_ptr<const std::string> sidecar;

    ~Output() {
        if (worker.joinable()) worker.join();
    }
};

class Outputs {
public:
    Outputs(std::string source_root, const Profile& profile, std::chrono::milliseconds grace,
            OutputCache& cache);
    ~Outputs() { stop_all(); }

    // The output of source file REL (relative to the source root) in version ENTRY.
    std::shared_ptr<Output> get(const std::string& rel, const Entry& entry);

    // A reader opens OUT; for a remux the MP4 is started now if it is not in the cache (remux_error
    // says why it could not be).
    void open(Output& out);
    // Stores HEAD, the faststart head of the remux of source file PATH (absolute, under the source
    // root) in version ENTRY, in the output cache
    // (head.mp4, written to .part and renamed): its first open then need not run the dry run again.
    // Takes only OutputCache::mutex_ (filesystem.hpp). Failures are logged: the head is made again.
    void store_head(const std::string& path, const Entry& entry, const std::string& head);
    void release(Output& out);
    // Copies [offset, offset+size) of an output into BUFFER, waiting for its segments (or, for a
    // remux, for the bytes to be streamed); returns the bytes copied or -EIO if none can be.
    int read(Output& out, char* buffer, std::size_t size, std::uint64_t offset);

    // The SubRip text of OUT's subtitle sidecar (decision.sidecar_subtitle), made on first use.
    std::shared_ptr<const std::string> sidecar(Output& out);

    // Evicts from the cache until BYTES more fit, sparing outputs being read or made.
    void make_room(std::uint64_t bytes);
    // Stops every worker (reads waiting for a segment fail) and starts no more; joins them.
    void stop_all();

private:
    std::string key(const std::string& rel, const Entry& entry) const;
    void write_head(const std::string& dir, const std::string& head);
    void start_remux(Output& out);
    void stream(Output& out, RemuxPlan plan);
    int read_remux(Output& out, char* buffer, std::size_t size, std::uint64_t offset);
    bool copy_from_segment(Output& out, std::size_t k, std::uint64_t within, std::size_t take,
                           char* destination);
    void ensure_worker(Output& out);
    void work(Output& out);
    bool store_segment(Output& out, std::size_t k, const std::string& data);
    static std::string segment_path(const Output& out, std::size_t k);

    std::string source_root_;
    const Profile& profile_;
    std::chrono::milliseconds grace_;
    OutputCache& cache_;
    // Lock order: filesystem.hpp.
    std::mutex mutex_;                                        // guards outputs_ and stopped_
    std::map<std::string, std::shared_ptr<Output>> outputs_;  // cache key -> output
    bool stopped_ = false;
};

}  // namespace ktricks::tvfs
