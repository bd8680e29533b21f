// Socket inode -> owning processes. Every open socket is a file whose /proc/PID/fd/N link reads
// "socket:[INODE]", and sock_diag reports the same inode, so one pass over /proc joins the two.
// This pass dominates `ss -p` on a busy host; the cost is one readlink per descriptor, so each is
// made relative to an open /proc/PID/fd (no path walk from /), directories are read with large
// getdents64 calls, and /proc/PID/comm is read only for processes that own a socket.
#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <unordered_set>

#include "ktricks/core/fd.hpp"
#include "ktricks/sockets.hpp"

namespace ktricks::sockets {
namespace {

struct linux_dirent64 {
    ino64_t d_ino;
    off64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

// Calls visit(name) for each entry of an open directory (not "." or "..").
template <typename Visit>
void for_each_entry(int directory, std::vector<char>& buffer, Visit&& visit) {
    while (true) {
        long got = ::syscall(SYS_getdents64, directory, buffer.data(), buffer.size());
        if (got <= 0) return;
        for (long offset = 0; offset < got;) {
            auto* entry = reinterpret_cast<linux_dirent64*>(buffer.data() + offset);
            offset += entry->d_reclen;
            if (entry->d_name[0] == '.') continue;
            visit(entry->d_name);
        }
    }
}

template <typename T>
bool parse_number(std::string_view text, T& value) {
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    return error == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::unordered_map<std::uint32_t, std::vector<ProcessRef>> map_socket_owners(const std::vector<std::uint32_t>& wanted) {
    std::unordered_map<std::uint32_t, std::vector<ProcessRef>> owners;
    std::unordered_set<std::uint32_t> wanted_set(wanted.begin(), wanted.end());
    Fd proc(::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!proc) return owners;
    std::vector<char> pids_buffer(64 * 1024), fds_buffer(256 * 1024);
    std::vector<pid_t> owning_pids;
    char path[64], link[64];
    for_each_entry(proc.get(), pids_buffer, [&](const char* name) {
        pid_t pid = 0;
        if (!parse_number(std::string_view(name), pid)) return;
        std::snprintf(path, sizeof(path), "%d/fd", pid);
        // A process may exit, or hide its fds from us (EACCES): both are normal, skip it.
        Fd fds(::openat(proc.get(), path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!fds) return;
        bool owns = false;
        for_each_entry(fds.get(), fds_buffer, [&](const char* fd_name) {
            ssize_t length = ::readlinkat(fds.get(), fd_name, link, sizeof(link));
            if (length < 10 || std::memcmp(link, "socket:[", 8) != 0) return;
            std::uint32_t inode = 0;
            if (!parse_number(std::string_view(link + 8, static_cast<std::size_t>(length) - 9), inode)) return;
            if (!wanted_set.empty() && !wanted_set.count(inode)) return;
            int fd = -1;
            (void)parse_number(std::string_view(fd_name), fd);
            owners[inode].push_back({pid, fd, {}});
            owns = true;
        });
        if (owns) owning_pids.push_back(pid);
    });
    std::unordered_map<pid_t, std::string> commands;
    for (pid_t pid : owning_pids) {
        std::snprintf(path, sizeof(path), "%d/comm", pid);
        Fd comm(::openat(proc.get(), path, O_RDONLY | O_CLOEXEC));
        char text[64] = {};
        ssize_t length = comm ? ::read(comm.get(), text, sizeof(text) - 1) : -1;
        if (length > 0 && text[length - 1] == '\n') --length;
        commands[pid] = length > 0 ? std::string(text, static_cast<std::size_t>(length)) : std::string("?");
    }
    for (auto& [inode, processes] : owners)
        for (auto& process : processes) process.command = commands[process.pid];
    return owners;
}

}  // namespace ktricks::sockets
