// SourceWatch: inotify on every directory of the source. A change drops what the catalog and the
// probe cache know of the file and what the kernel caches of its names in the mount (entries and
// attributes: without that a stat would keep the old size until the 1 s timeouts run out).
#include <sys/inotify.h>

#include <cstring>
#include <filesystem>
#include <map>

#include "ktricks/core/error.hpp"
#include "ktricks/core/service.hpp"
#include "tvfs/mount_state.hpp"

namespace ktricks::tvfs {

namespace fs = std::filesystem;

struct SourceWatch::State {
    EventLoop& loop;
    Mount::State& mount;
    std::function<void()> on_change;
    Fd inotify;
    EventLoop::SourceId source = 0;
    std::map<int, std::string> dirs;  // watch descriptor -> directory relative to the source ("", "/sub")

    void add_tree(const std::string& rel) {
        auto path = mount.fs->source + rel;
        int wd = ::inotify_add_watch(inotify.get(), path.c_str(),
                                     IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE |
                                         IN_ATTRIB | IN_DELETE_SELF | IN_ONLYDIR);
        if (wd < 0) {
            log_info("inotify_add_watch {}: {}", printable(path), std::strerror(errno));
            return;
        }
        dirs[wd] = rel;
        std::error_code error;
        for (const auto& dirent : fs::directory_iterator(path, error)) {
            std::error_code type_error;
            if (dirent.is_directory(type_error)) add_tree(rel + "/" + dirent.path().filename().string());
        }
    }

    // One event; true if it changed what the mount shows.
    bool handle(const inotify_event& event) {
        auto found = dirs.find(event.wd);
        if (found == dirs.end()) return false;
        if (event.mask & IN_IGNORED) {
            dirs.erase(found);
            return false;
        }
        std::string dir = found->second;
        std::string name = event.len ? event.name : "";
        if (name.empty() || name.starts_with(".")) return false;
        if ((event.mask & IN_ISDIR) && (event.mask & (IN_CREATE | IN_MOVED_TO))) add_tree(dir + "/" + name);
        auto& fs = *mount.fs;
        auto shown = fs.catalog.names_of(dir, name);
        fs.probes.forget(dir + "/" + name);
        fs.catalog.forget(dir);
        fs.catalog.forget(dir + "/" + name);
        shown.push_back(name);
        for (const auto& each : shown) mount.invalidate(dir + "/" + each);
        mount.invalidate(dir.empty() ? "/" : dir);
        return true;
    }

    void readable() {
        bool changed = false;
        alignas(inotify_event) char buffer[16384];
        ssize_t n;
        while ((n = ::read(inotify.get(), buffer, sizeof(buffer))) > 0) {
            for (char* p = buffer; p < buffer + n;) {
                auto* event = reinterpret_cast<inotify_event*>(p);
                p += sizeof(inotify_event) + event->len;
                changed |= handle(*event);
            }
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) throw_errno("read", "inotify");
        if (!changed) return;
        mount.fs->probes.save();
        if (on_change) on_change();
    }
};

SourceWatch::SourceWatch(EventLoop& loop, Mount& mount, std::function<void()> on_change)
    : state_(std::make_unique<State>(State{loop, *mount.state_, std::move(on_change), Fd(), 0, {}})) {}

SourceWatch::~SourceWatch() { stop(); }

void SourceWatch::start() {
    auto& state = *state_;
    if (state.inotify) return;
    state.inotify = Fd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!state.inotify) throw_errno("inotify_init1");
    state.add_tree("");
    state.source =
        state.loop.add_fd(state.inotify.get(), EPOLLIN, [&state](std::uint32_t) { state.readable(); });
}

void SourceWatch::stop() {
    auto& state = *state_;
    if (!state.inotify) return;
    state.loop.remove(state.source);
    state.source = 0;
    state.inotify = Fd();
    state.dirs.clear();
}

}  // namespace ktricks::tvfs
