// Mount: mounting, the threads that serve FUSE requests, unmounting.
//
// Serving is libfuse's request loop taken apart (fuse_session_receive_buf + process_buf) rather
// than fuse_loop_mt(): that loop can only be ended by a signal handler interrupting its threads,
// and a library must leave signals to the program. Each thread waits on /dev/fuse (non-blocking,
// EPOLLEXCLUSIVE: one thread wakes per request) and on an eventfd that stop() makes readable.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>

extern "C" {
#include <libavutil/log.h>
}

#include "ktricks/core/error.hpp"
#include "ktricks/core/service.hpp"
#include "tvfs/mount_state.hpp"
#include "tvfs/threads.hpp"

namespace ktricks::tvfs {
namespace {

namespace fs = std::filesystem;

// As many as fuse_loop_mt() keeps by default: a read waiting for a segment, or an open waiting for
// a remux, holds its thread, and the others keep the mount answering.
constexpr int serving_threads = 10;

std::string absolute(const std::string& path) { return fs::absolute(path).lexically_normal().string(); }

std::string default_cache_dir() {
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    if (xdg) return fmt::format("{}/ktricks-tvfs", xdg);
    if (home && ::geteuid() != 0) return fmt::format("{}/.cache/ktricks-tvfs", home);
    return "/var/cache/ktricks-tvfs";
}

void require_directory(const std::string& path, std::string_view what) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        throw InputError(fmt::format("{} {} is not a directory", what, printable(path)));
}

struct FuseArgs {
    fuse_args args = FUSE_ARGS_INIT(0, nullptr);
    ~FuseArgs() { fuse_opt_free_args(&args); }
    void add(const std::string& arg) {
        if (fuse_opt_add_arg(&args, arg.c_str()) != 0) throw std::bad_alloc();
    }
};

Fd make_eventfd() {
    Fd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd) throw_errno("eventfd");
    return fd;
}

}  // namespace

void Mount::State::serve() {
    auto& state = *this;
    enter_tvfs_thread(nullptr);  // named by whoever started it
    auto* se = fuse_get_session(state.session);
    fuse_buf buffer{};
    try {
        Fd epoll(::epoll_create1(EPOLL_CLOEXEC));
        if (!epoll) throw_errno("epoll_create1");
        epoll_event device{EPOLLIN | EPOLLEXCLUSIVE, {}};
        device.data.fd = fuse_session_fd(se);
        epoll_event wake{EPOLLIN, {}};
        wake.data.fd = state.stop.get();
        if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, device.data.fd, &device) != 0)
            throw_errno("epoll_ctl", "/dev/fuse");
        if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, wake.data.fd, &wake) != 0)
            throw_errno("epoll_ctl", "eventfd");
        while (!fuse_session_exited(se)) {
            epoll_event ready[2];
            int n = ::epoll_wait(epoll.get(), ready, 2, -1);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw_errno("epoll_wait");
            bool stopping = false;
            for (int i = 0; i < n; ++i) stopping |= ready[i].data.fd == state.stop.get();
            if (stopping) break;
            // Another thread may have taken the request: EAGAIN. Unmounted: 0 (the session exits).
            int got = fuse_session_receive_buf(se, &buffer);
            if (got == -EAGAIN || got == -EINTR) continue;
            if (got < 0) throw_error(-got, "read", "/dev/fuse");
            if (got == 0) break;
            fuse_session_process_buf(se, &buffer);
        }
    } catch (...) {
        std::lock_guard lock(state.error_mutex);
        if (!state.error) state.error = std::current_exception();
    }
    std::free(buffer.mem);
    std::uint64_t one = 1;
    [[maybe_unused]] auto ignored = ::write(state.ended.get(), &one, sizeof(one));
}

Mount::Mount(const MountOptions& given) : state_(std::make_unique<State>()) {
    // Absolute paths: a program that daemonizes changes to "/".
    MountOptions options = given;
    options.source = absolute(given.source);
    options.mountpoint = absolute(given.mountpoint);
    if (options.mountpoint.size() > 1 && options.mountpoint.ends_with('/')) options.mountpoint.pop_back();
    if (!options.profile.empty() && options.profile.find('/') != std::string::npos)
        options.profile = fs::absolute(given.profile).string();
    require_directory(options.source, "source");
    require_directory(options.mountpoint, "mount point");
    if (::access("/dev/fuse", R_OK | W_OK) != 0) throw_errno("open", "/dev/fuse");
    av_log_set_level(AV_LOG_ERROR);
    auto cache_dir = options.cache_dir.empty() ? default_cache_dir() : absolute(options.cache_dir);
    state_->mountpoint = options.mountpoint;
    state_->fs = std::make_unique<Filesystem>(options, fs::canonical(options.source).string(), cache_dir);
    state_->stop = make_eventfd();
    state_->ended = make_eventfd();

    auto ops = filesystem_operations();
    FuseArgs args;
    args.add("ktricks-tvfs");
    args.add("-o");
    args.add("ro,fsname=tvfs,subtype=tvfs,default_permissions");
    for (const auto& option : options.fuse_options) {
        args.add("-o");
        args.add(option);
    }
    state_->session = fuse_new(&args.args, &ops, sizeof(ops), state_->fs.get());
    if (!state_->session) throw InputError("fuse_new: bad FUSE options (see the message above)");
    if (fuse_mount(state_->session, options.mountpoint.c_str()) != 0) {
        fuse_destroy(state_->session);
        throw std::runtime_error(fmt::format("fuse_mount {}: failed", options.mountpoint));
    }
    state_->mounted = true;
    // Serving threads read it non-blocking: several wait on it, one gets each request.
    int device = fuse_session_fd(fuse_get_session(state_->session));
    ::fcntl(device, F_SETFL, ::fcntl(device, F_GETFL) | O_NONBLOCK);
}

Mount::~Mount() {
    stop();
    state_->fs->outputs.stop_all();
    state_->fs->probes.stop();  // the layouts made so far are saved, the queued ones dropped
    state_->fs->probes.save();
    if (state_->mounted) fuse_unmount(state_->session);
    fuse_destroy(state_->session);
    log_info("unmounted");
}

void Mount::start(EventLoop& loop, std::function<void(std::exception_ptr)> on_end) {
    auto& state = *state_;
    if (!state.threads.empty()) return;
    if (fuse_start_cleanup_thread(state.session) != 0)
        throw std::runtime_error("fuse_start_cleanup_thread failed");
    state.loop = &loop;
    state.on_end = std::move(on_end);
    state.ended_source = loop.add_fd(state.ended.get(), EPOLLIN, [&state](std::uint32_t) {
        state.loop->remove(state.ended_source);
        state.ended_source = 0;
        std::exception_ptr error;
        {
            std::lock_guard lock(state.error_mutex);
            error = state.error;
        }
        if (state.on_end) state.on_end(error);
    });
    // Outputs that were open when the cache went over its limit become evictable once closed.
    state.trim_source = loop.add_timer(
        std::chrono::milliseconds(500), [&state] { state.fs->outputs.make_room(0); },
        std::chrono::milliseconds(500));
    for (int i = 0; i < serving_threads; ++i) state.threads.emplace_back([&state] { state.serve(); });
    log_info("{} mounted on {} (profile {})", state.fs->source, state.mountpoint, state.fs->profile.name);
}

void Mount::stop() {
    auto& state = *state_;
    if (state.threads.empty()) return;
    std::uint64_t one = 1;
    [[maybe_unused]] auto ignored = ::write(state.stop.get(), &one, sizeof(one));
    state.fs->outputs.stop_all();  // a read waiting for a segment returns, and its thread with it
    for (auto& thread : state.threads) thread.join();
    state.threads.clear();
    fuse_stop_cleanup_thread(state.session);
    state.loop->remove(state.ended_source);
    state.loop->remove(state.trim_source);
    state.ended_source = state.trim_source = 0;
}

const std::string& Mount::source() const noexcept { return state_->fs->source; }
const std::string& Mount::mountpoint() const noexcept { return state_->mountpoint; }
const Profile& Mount::profile() const noexcept { return state_->fs->profile; }

}  // namespace ktricks::tvfs
