#include "sockets/cgroups.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "ktricks/sockets.hpp"

namespace ktricks::sockets {

namespace detail {

std::string cgroup2_mount() {
    std::ifstream mounts("/proc/self/mountinfo");
    std::string line;
    while (std::getline(mounts, line)) {
        auto dash = line.find(" - ");
        if (dash == std::string::npos || line.compare(dash + 3, 8, "cgroup2 ") != 0) continue;
        std::istringstream fields(line);
        std::string skip, mount_point;
        fields >> skip >> skip >> skip >> skip >> mount_point;
        return mount_point;
    }
    return {};
}

namespace {
std::optional<std::uint64_t> handle_id(const char* path) {
    struct {
        file_handle handle;
        std::uint64_t id;
    } handle{};
    handle.handle.handle_bytes = sizeof(std::uint64_t);
    int mount_id = 0;
    if (::name_to_handle_at(AT_FDCWD, path, &handle.handle, &mount_id, 0) != 0) return std::nullopt;
    if (handle.handle.handle_bytes != sizeof(std::uint64_t)) return std::nullopt;
    std::uint64_t id = 0;
    std::memcpy(&id, handle.handle.f_handle, sizeof(id));
    return id;
}
}  // namespace

std::optional<std::uint64_t> cgroup_id_of(std::string_view path) {
    // As given first: so /sys/fs/cgroup/unified/system.slice works, and "/" names the root
    // directory's handle, which no cgroup has (as in ss).
    if (auto id = handle_id(std::string(path).c_str())) return id;
    while (path.starts_with('/')) path.remove_prefix(1);
    if (path.empty()) return std::nullopt;
    std::string mount = cgroup2_mount();
    if (mount.empty()) return std::nullopt;
    return handle_id((mount + "/" + std::string(path)).c_str());
}

const std::string& CgroupPaths::path(std::uint64_t id) {
    if (!walked_) {
        walked_ = true;
        std::string mount = cgroup2_mount();
        std::error_code error;
        if (!mount.empty()) {
            struct stat root {};
            if (::stat(mount.c_str(), &root) == 0) paths_[root.st_ino] = "/";
            for (auto it = std::filesystem::recursive_directory_iterator(
                     mount, std::filesystem::directory_options::skip_permission_denied, error);
                 !error && it != std::filesystem::recursive_directory_iterator(); it.increment(error)) {
                if (!it->is_directory(error)) continue;
                struct stat status {};
                if (::stat(it->path().c_str(), &status) != 0) continue;
                paths_[status.st_ino] = "/" + std::filesystem::relative(it->path(), mount, error).string();
            }
        }
    }
    static const std::string none;
    auto found = paths_.find(id);
    return found == paths_.end() ? none : found->second;
}

}  // namespace detail

namespace {
bool is_hex_id(std::string_view text) {
    return text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}
}  // namespace

CgroupOwner cgroup_owner(std::string_view path) {
    CgroupOwner owner;
    // From the deepest component up: the first container id and the first service/scope win.
    std::vector<std::string_view> parts;
    for (std::size_t start = 0; start < path.size();) {
        auto slash = path.find('/', start);
        if (slash == std::string_view::npos) slash = path.size();
        if (slash > start) parts.push_back(path.substr(start, slash - start));
        start = slash + 1;
    }
    for (std::size_t i = parts.size(); i-- > 0;) {
        std::string_view part = parts[i];
        std::string_view stem = part;
        bool scope = stem.ends_with(".scope");
        if (scope) stem.remove_suffix(6);
        // systemd driver: docker-ID.scope, libpod-ID.scope, cri-containerd-ID.scope, crio-ID.scope.
        auto dash = stem.rfind('-');
        if (owner.container.empty() && scope && dash != std::string_view::npos &&
            is_hex_id(stem.substr(dash + 1))) {
            owner.runtime = std::string(stem.substr(0, dash));
            owner.container = std::string(stem.substr(dash + 1));
        }
        // cgroupfs driver: /docker/ID, /kubepods/.../ID.
        if (owner.container.empty() && is_hex_id(part)) {
            owner.container = std::string(part);
            if (i > 0 && !parts[i - 1].starts_with("pod")) owner.runtime = std::string(parts[i - 1]);
            continue;
        }
        if (owner.unit.empty() && (part.ends_with(".service") || part.ends_with(".scope")))
            owner.unit = std::string(part);
    }
    return owner;
}

}  // namespace ktricks::sockets
