// The FUSE operations (libfuse 3, high-level API): each one resolves a path through the catalog and
// hands the work to the outputs. Read-only; every error is logged and returned as -errno.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "ktricks/core/error.hpp"
#include "ktricks/core/service.hpp"
#include "tvfs/mount_state.hpp"

namespace ktricks::tvfs {
namespace {

Filesystem& self() { return *static_cast<Filesystem*>(fuse_get_context()->private_data); }

// One open file: a source descriptor (pass-through), an output (a remux's MP4 in the cache, being
// streamed or complete; a transcode's segments), or a subtitle sidecar.
struct Handle {
    Fd fd;
    std::shared_ptr<Output> output;
    std::shared_ptr<const std::string> text;  // a subtitle sidecar
};

// libfuse calls the operations from C: an exception must not cross it.
template <typename Function>
int guarded(const char* operation, const char* path, Function function) {
    try {
        return function();
    } catch (const std::exception& error) {
        log_info("{} {}: {}", operation, printable(path), error.what());
        return -EIO;
    }
}

void fill_stat(Filesystem& fs, const Catalog::Resolved& r, struct stat* st) {
    std::memset(st, 0, sizeof(*st));
    struct stat source {};
    ::stat((fs.source + r.source_rel).c_str(), &source);
    st->st_mtim = source.st_mtim;
    st->st_ctim = source.st_ctim;
    st->st_atim = source.st_atim;
    st->st_uid = source.st_uid;
    st->st_gid = source.st_gid;
    if (r.directory) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
        return;
    }
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size =
        r.sidecar ? static_cast<off_t>(fs.outputs.sidecar(*fs.outputs.get(r.source_rel, *r.entry))->size())
                  : static_cast<off_t>(r.entry->layout.size);
    st->st_blocks = (st->st_size + 511) / 512;
}

int op_getattr(const char* path, struct stat* st, fuse_file_info*) {
    return guarded("getattr", path, [&] {
        auto r = self().catalog.resolve(path);
        if (!r) return -ENOENT;
        fill_stat(self(), *r, st);
        return 0;
    });
}

int op_readdir(const char* path, void* buffer, fuse_fill_dir_t filler, off_t offset, fuse_file_info*,
               fuse_readdir_flags flags) {
    return guarded("readdir", path, [&] {
        auto& fs = self();
        auto r = fs.catalog.resolve(path);
        if (!r || !r->directory) return -ENOENT;
        auto dir = std::string(path) == "/" ? std::string() : std::string(path);
        auto items = fs.catalog.listing(dir);
        // Entries carry their offsets (1 ".", 2 "..", then the listing's order): libfuse passes an
        // entry's attributes to the kernel only in this mode. With READDIRPLUS (the kernel asks for
        // it on a first listing, as `ls -l` makes) an entry given with its attributes needs no
        // lookup of its own. Only what is known now is given: a directory, or a file whose layout
        // is in the probe cache; the others (layouts still being made in the background, sidecars)
        // are looked up one by one as before. A full buffer ends the call (filler returns 1).
        bool plus = flags & FUSE_READDIR_PLUS;
        off_t next = 0;
        auto add = [&](const char* name, const struct stat* st) {
            ++next;
            if (next <= offset) return true;
            return filler(buffer, name, st, next, st ? FUSE_FILL_DIR_PLUS : fuse_fill_dir_flags{}) == 0;
        };
        if (!add(".", nullptr) || !add("..", nullptr)) return 0;
        for (const auto& [name, item] : *items) {
            struct stat st {};
            bool known = false;
            if (plus && !item.sidecar && next + 1 > offset) {
                Catalog::Resolved resolved;
                resolved.directory = item.directory;
                resolved.source_rel = dir + "/" + item.source_name;
                if (!item.directory) resolved.entry = fs.probes.ready(resolved.source_rel);
                known = item.directory || (resolved.entry && resolved.entry->decision.action != Action::skip);
                if (known) fill_stat(fs, resolved, &st);
            }
            if (!add(name.c_str(), known ? &st : nullptr)) break;
        }
        return 0;
    });
}

// The remux's MP4 or a transcode's segments, both read through the output; a remux that could not
// be started is -EIO.
int open_output(Filesystem& fs, const Catalog::Resolved& r, Handle& handle) {
    handle.output = fs.outputs.get(r.source_rel, *r.entry);
    fs.outputs.open(*handle.output);
    if (r.entry->decision.action != Action::remux) return 0;
    bool started;
    {
        std::lock_guard lock(handle.output->remux_mutex);
        started = handle.output->remux_ready;
    }
    if (started) return 0;
    fs.outputs.release(*handle.output);
    return -EIO;
}

int op_open(const char* path, fuse_file_info* fi) {
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
    return guarded("open", path, [&] {
        auto& fs = self();
        auto r = fs.catalog.resolve(path);
        if (!r || r->directory) return -ENOENT;
        auto handle = std::make_unique<Handle>();
        if (r->sidecar) {
            handle->text = fs.outputs.sidecar(*fs.outputs.get(r->source_rel, *r->entry));
        } else if (r->entry->decision.action == Action::pass_through) {
            handle->fd = Fd(::open((fs.source + r->source_rel).c_str(), O_RDONLY | O_CLOEXEC));
            if (!handle->fd) return -errno;
        } else if (int error = open_output(fs, *r, *handle); error != 0) {
            return error;
        }
        fi->fh = reinterpret_cast<std::uint64_t>(handle.release());
        return 0;
    });
}

int op_read(const char*, char* buffer, size_t size, off_t offset, fuse_file_info* fi) {
    auto* handle = reinterpret_cast<Handle*>(fi->fh);
    if (handle->text) {
        if (offset < 0 || static_cast<std::size_t>(offset) >= handle->text->size()) return 0;
        auto n = std::min(size, handle->text->size() - static_cast<std::size_t>(offset));
        std::memcpy(buffer, handle->text->data() + offset, n);
        return static_cast<int>(n);
    }
    if (handle->fd) {
        auto n = ::pread(handle->fd.get(), buffer, size, offset);
        return n < 0 ? -errno : static_cast<int>(n);
    }
    return guarded("read", handle->output->source.c_str(), [&] {
        return self().outputs.read(*handle->output, buffer, size, static_cast<std::uint64_t>(offset));
    });
}

int op_release(const char*, fuse_file_info* fi) {
    std::unique_ptr<Handle> handle(reinterpret_cast<Handle*>(fi->fh));
    if (handle->output) self().outputs.release(*handle->output);
    return 0;
}

void* op_init(fuse_conn_info*, fuse_config* config) {
    // Short kernel caches: the source watcher invalidates them anyway, the timeouts bound any race.
    config->entry_timeout = 1;
    config->attr_timeout = 1;
    config->negative_timeout = 1;
    return fuse_get_context()->private_data;
}

}  // namespace

fuse_operations filesystem_operations() {
    fuse_operations ops{};
    ops.getattr = op_getattr;
    ops.readdir = op_readdir;
    ops.open = op_open;
    ops.read = op_read;
    ops.release = op_release;
    ops.init = op_init;
    return ops;
}

}  // namespace ktricks::tvfs
