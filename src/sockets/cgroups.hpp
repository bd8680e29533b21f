// cgroup v2 ids and paths (private to sockets): sock_diag reports the id of the cgroup a socket's
// creator ran in (INET_DIAG_CGROUP_ID); on cgroupfs (kernfs) that id is the inode number of the
// cgroup's directory, so one walk of the cgroup2 mount names them all.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace ktricks::sockets::detail {

// Where cgroup2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid layout); empty
// if it is not.
std::string cgroup2_mount();

// ss's get_cgroup2_id: PATH as a file system path first, then relative to the cgroup2 mount.
std::optional<std::uint64_t> cgroup_id_of(std::string_view path);

// id -> path relative to the mount ("/system.slice/nginx.service"), from one walk made on first use.
class CgroupPaths {
public:
    // "" for an id no cgroup has (the cgroup went away); "/" for the root.
    const std::string& path(std::uint64_t id);

private:
    bool walked_ = false;
    std::unordered_map<std::uint64_t, std::string> paths_;
};

}  // namespace ktricks::sockets::detail
