// What a Mount holds, shared with the source watcher (private to tvfs).
#pragma once

#define FUSE_USE_VERSION 31
#include <fuse.h>
#include <fuse_lowlevel.h>

#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/fd.hpp"
#include "tvfs/filesystem.hpp"

namespace ktricks::tvfs {

// The FUSE operations on a Filesystem (fuse_new's private_data).
fuse_operations filesystem_operations();

struct Mount::State {
    std::string mountpoint;
    std::unique_ptr<Filesystem> fs;
    fuse* session = nullptr;
    bool mounted = false;
    // Serving.
    EventLoop* loop = nullptr;
    std::function<void(std::exception_ptr)> on_end;
    Fd stop;   // eventfd, never read: readable once stop() was called
    Fd ended;  // eventfd: a serving thread saw the session end (unmounted, or an error)
    EventLoop::SourceId ended_source = 0, trim_source = 0;
    std::vector<std::thread> threads;
    std::mutex error_mutex;    // guards error
    std::exception_ptr error;  // the first error that ended serving

    // One serving thread: requests until stop, the end of the session, or an error (recorded).
    void serve();
    // Drops the kernel's cached entry and attributes of PATH in the mount ("/dir/name").
    void invalidate(const std::string& path) { fuse_invalidate_path(session, path.c_str()); }
};

}  // namespace ktricks::tvfs
