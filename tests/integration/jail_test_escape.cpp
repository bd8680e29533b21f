// The escape suite's attacker: run inside a jail, it tries each way out an exploited server would
// try and prints one line per attempt, "NAME ERRNONAME" (or "NAME ok" if the attempt worked), so
// the test (tests/integration/jail_test.cpp, Escape*) can compare against the errno each default
// is documented to give (docs/jail.md).
//
//   jail_test_escape [HOST_PID]
//       HOST_PID: a pid outside the jail (the test's own), for ptrace and /proc/PID/ns.
#include <arpa/inet.h>
#include <fcntl.h>
#include <glob.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

const char* errno_name(int error) {
    switch (error) {
        case 0: return "ok";
        case EPERM: return "EPERM";
        case EACCES: return "EACCES";
        case ENOENT: return "ENOENT";
        case EROFS: return "EROFS";
        case ENOSYS: return "ENOSYS";
        case ESRCH: return "ESRCH";
        case EINVAL: return "EINVAL";
        case ENETUNREACH: return "ENETUNREACH";
        case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
        case ECONNREFUSED: return "ECONNREFUSED";
        case ETIMEDOUT: return "ETIMEDOUT";
        case EAFNOSUPPORT: return "EAFNOSUPPORT";
        case ENODEV: return "ENODEV";
        case ENOTBLK: return "ENOTBLK";
        case EBADF: return "EBADF";
        default: return strerrorname_np(error) ? strerrorname_np(error) : "?";
    }
}

void report(const char* name, long result) {
    std::printf("%s %s\n", name, errno_name(result < 0 ? errno : 0));
}

int connect_to(int family, const char* host, int port) {
    int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    sockaddr_storage address{};
    socklen_t length;
    if (family == AF_INET) {
        auto* in = reinterpret_cast<sockaddr_in*>(&address);
        in->sin_family = AF_INET;
        in->sin_port = htons(static_cast<uint16_t>(port));
        ::inet_pton(AF_INET, host, &in->sin_addr);
        length = sizeof(sockaddr_in);
    } else {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&address);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(static_cast<uint16_t>(port));
        ::inet_pton(AF_INET6, host, &in6->sin6_addr);
        length = sizeof(sockaddr_in6);
    }
    int result = ::connect(fd, reinterpret_cast<sockaddr*>(&address), length);
    int error = result == 0 ? 0 : errno;
    if (error == EINPROGRESS) {
        pollfd writable{fd, POLLOUT, 0};
        if (::poll(&writable, 1, 2000) == 1) {
            socklen_t size = sizeof(error);
            ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size);
        } else {
            error = ETIMEDOUT;
        }
    }
    ::close(fd);
    errno = error;
    return error ? -1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    pid_t outside = argc > 1 ? std::atoi(argv[1]) : 1;
    std::setvbuf(stdout, nullptr, _IOLBF, 0);

    // Devices: a block device node of our own making, and the host's disk by any name.
    report("mknod-block-device", ::mknod("/tmp/disk", S_IFBLK | 0600, makedev(8, 0)));
    report("mount-block-device", ::mount("/dev/sda", "/mnt", "ext4", MS_RDONLY, nullptr));
    report("open-dev-mem", ::open("/dev/mem", O_RDONLY | O_CLOEXEC));
    // Mounts: a second procfs elsewhere (to escape a masked /proc), the new mount API.
    report("mount-proc", ::mount("proc", "/tmp", "proc", 0, nullptr));
    report("fsopen", ::syscall(SYS_fsopen, "tmpfs", 0));
    report("open_tree", ::syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */));
    report("chroot", ::chroot("/tmp"));
    // Kernel modules: a module is refused before it is read.
    int module = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    report("finit_module", ::syscall(SYS_finit_module, module, "", 0));
    report("init_module", ::syscall(SYS_init_module, nullptr, 0, ""));
    report("kexec_load", ::syscall(SYS_kexec_load, 0, 0, nullptr, 0));
    // The host's files: /etc for a cron job or a passwd line, /usr for a trojaned binary.
    report("write-etc", ::open("/etc/ktricks-escape", O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    report("write-usr", ::open("/usr/bin/ktricks-escape", O_WRONLY | O_CREAT | O_CLOEXEC, 0755));
    report("write-etc-passwd", ::open("/etc/passwd", O_WRONLY | O_APPEND | O_CLOEXEC));
    // The network: raw and packet sockets, another namespace, a namespace of our own with a veth.
    report("socket-raw", ::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP));
    report("socket-packet", ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0));
    {
        // Every network namespace this process can name: its own processes', and the outside pid's.
        glob_t found{};
        ::glob("/proc/[0-9]*/ns/net", 0, nullptr, &found);
        std::string path = "/proc/" + std::to_string(outside) + "/ns/net";
        int worst = 0;  // any success is reported as "ok"
        bool any_failure = false;
        int first_error = 0;
        auto attempt = [&](const char* file) {
            int fd = ::open(file, O_RDONLY | O_CLOEXEC);
            int result = fd < 0 ? -1 : ::setns(fd, CLONE_NEWNET);
            int error = result < 0 ? errno : 0;
            if (fd >= 0) ::close(fd);
            if (!error) worst = 1;
            // setns' own answer wins over an open that failed already (/proc/1 is not ours to open).
            if (error && (!any_failure || fd >= 0)) first_error = error;
            if (error) any_failure = true;
        };
        for (std::size_t i = 0; i < found.gl_pathc; ++i) attempt(found.gl_pathv[i]);
        ::globfree(&found);
        std::printf("setns-visible %s\n", worst ? "ok" : errno_name(first_error));
        any_failure = false;
        attempt(path.c_str());
        std::printf("setns-outside-pid %s\n", worst ? "ok" : errno_name(first_error));
    }
    report("unshare-net", ::unshare(CLONE_NEWNET));
    report("unshare-user", ::unshare(CLONE_NEWUSER));
    // Other processes: the outside pid (not even visible) and our own pid 1.
    report("ptrace-outside", ::ptrace(PTRACE_ATTACH, outside, nullptr, nullptr));
    report("ptrace-pid1", ::ptrace(PTRACE_ATTACH, 1, nullptr, nullptr));
    report("process_vm_readv", ::syscall(SYS_process_vm_readv, 1, nullptr, 0, nullptr, 0, 0));
    // The kernel's attack surface.
    bpf_attr attr{};
    report("bpf", ::syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr)));
    report("keyctl", ::syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
    report("add_key", ::syscall(SYS_add_key, "user", "escape", "x", 1, KEY_SPEC_SESSION_KEYRING));
    perf_event_attr perf{};
    perf.size = sizeof(perf);
    perf.type = PERF_TYPE_SOFTWARE;
    perf.config = PERF_COUNT_SW_CPU_CLOCK;
    report("perf_event_open", ::syscall(SYS_perf_event_open, &perf, 0, -1, -1, 0));
    report("userfaultfd", ::syscall(SYS_userfaultfd, 0));
    report("open_by_handle_at", ::syscall(SYS_open_by_handle_at, AT_FDCWD, nullptr, 0));
    // Phoning home.
    report("connect-127.0.0.1", connect_to(AF_INET, "127.0.0.1", 22));
    report("connect-::1", connect_to(AF_INET6, "::1", 22));
    report("connect-1.1.1.1", connect_to(AF_INET, "1.1.1.1", 443));
    return 0;
}
