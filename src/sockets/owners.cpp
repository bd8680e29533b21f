// Socket inode -> owning processes. Every open socket is a file whose /proc/PID/fd/N link reads
// "socket:[INODE]", and sock_diag reports the same inode, so one pass over /proc joins the two.
// This pass dominates `ss -p` on a busy host; the cost is one readlink per descriptor, so each is
// made relative to an open /proc/PID/fd (no path walk from /), directories are read with large
// getdents64 calls, and /proc/PID/comm is read only for processes that own a socket.
//
// Where the kernel allows it, a BPF task_file iterator (bpf/socket_owners.bpf.c) replaces the walk:
// the kernel visits every open file once, keeps the socket files and writes (inode, pid, fd, comm)
// records that a few large read()s bring back; no readlink, no /proc/PID/comm.
#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <system_error>
#include <unordered_set>

#include "ktricks/core/fd.hpp"
#include "ktricks/sockets.hpp"
#ifdef KTRICKS_SOCKETS_BPF
#include "sockets/owners_bpf.h"
#endif

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

// ss lists a socket's processes newest-found first (its hash chains push at the head), and both
// ways here find them in ss's order (pids ascending, then fds ascending): reverse each list.
void to_ss_order(std::unordered_map<std::uint32_t, std::vector<ProcessRef>>& owners) {
    for (auto& [inode, processes] : owners) std::reverse(processes.begin(), processes.end());
}

}  // namespace

std::unordered_map<std::uint32_t, std::vector<ProcessRef>> map_socket_owners_bpf() {
#ifndef KTRICKS_SOCKETS_BPF
    throw std::system_error(
        ENOTSUP, std::generic_category(),
        "BPF socket owners: this build has no BPF program (no clang or bpftool at build time)");
#else
    // The light skeleton's CO-RE relocations need the kernel's own BTF; without it the load would
    // fail with a less telling EINVAL.
    if (::access("/sys/kernel/btf/vmlinux", R_OK) != 0)
        throw std::system_error(
            errno, std::generic_category(),
            "BPF socket owners: no kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)");
    ktricks_owners_bpf loaded{nullptr, -1};
    if (int error = ktricks_owners_bpf_load(&loaded); error < 0) {
        const char* why =
            -error == EPERM || -error == EACCES
                ? "BPF socket owners: loading the task_file iterator was refused (needs root, or "
                  "CAP_BPF and CAP_PERFMON)"
                : "BPF socket owners: loading the task_file iterator failed (needs Linux >= 5.17: "
                  "task_file iterators, in-kernel CO-RE)";
        throw std::system_error(-error, std::generic_category(), why);
    }
    struct Unload {
        ktricks_owners_bpf* loaded;
        ~Unload() { ktricks_owners_bpf_close(loaded); }
    } unload{&loaded};
    int iterator_fd = ktricks_owners_bpf_open_iterator(&loaded);
    if (iterator_fd < 0)
        throw std::system_error(-iterator_fd, std::generic_category(),
                                "BPF socket owners: bpf(BPF_ITER_CREATE)");
    Fd iterator(iterator_fd);
    std::unordered_map<std::uint32_t, std::vector<ProcessRef>> owners;
    owners.reserve(1u << 14);  // no rehash for the first 16k sockets
    // The kernel fills at most its seq_file buffer (8 pages) per read(): about 1,100 records.
    std::vector<char> buffer(256 * 1024);
    std::size_t kept = 0;
    while (true) {
        ssize_t got = ::read(iterator.get(), buffer.data() + kept, buffer.size() - kept);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0)
            throw std::system_error(errno, std::generic_category(), "BPF socket owners: read(iterator)");
        if (got == 0) break;
        std::size_t have = kept + static_cast<std::size_t>(got), offset = 0;
        for (; offset + sizeof(ktricks_owner_record) <= have; offset += sizeof(ktricks_owner_record)) {
            ktricks_owner_record record;
            std::memcpy(&record, buffer.data() + offset, sizeof(record));
            owners[record.inode].push_back(
                {static_cast<pid_t>(record.pid), static_cast<int>(record.fd),
                 std::string(record.comm, ::strnlen(record.comm, sizeof(record.comm)))});
        }
        kept = have - offset;
        std::memmove(buffer.data(), buffer.data() + offset, kept);
    }
    // The program saw pids as the initial pid namespace numbers them; in a child namespace they are
    // not ours (and the iterator sees only our namespace's tasks anyway): not an answer ss would give.
    if (ktricks_owners_bpf_reader_tgid(&loaded) != static_cast<unsigned>(::getpid()))
        throw std::system_error(
            ENOTSUP, std::generic_category(),
            "BPF socket owners: not in the initial pid namespace (the kernel reports its pids)");
    to_ss_order(owners);
    return owners;
#endif
}

SocketOwners find_socket_owners(bool try_bpf) {
    SocketOwners result;
    if (try_bpf) {
        try {
            result.owners = map_socket_owners_bpf();
            result.bpf = true;
            return result;
        } catch (const std::system_error& error) {
            result.why_not_bpf = error.what();
        }
    } else {
        result.why_not_bpf = "BPF not tried (--proc-walk or KTRICKS_SOCKETS_PROC_WALK=1)";
    }
    result.owners = map_socket_owners();
    return result;
}

std::unordered_map<std::uint32_t, std::vector<ProcessRef>> map_socket_owners(
    const std::vector<std::uint32_t>& wanted) {
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
            if (!parse_number(std::string_view(link + 8, static_cast<std::size_t>(length) - 9), inode))
                return;
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
    to_ss_order(owners);
    return owners;
}

}  // namespace ktricks::sockets
