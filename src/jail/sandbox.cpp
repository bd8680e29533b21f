// The sandbox: what the child does between clone and exec.
//
// Everything the child needs (paths, map texts, the seccomp BPF program) is prepared here, in the
// parent, so the child only makes system calls: no allocation between clone and exec, which keeps
// it safe even if the caller has threads.
//
// The steps, in order (setup()): private mount propagation; cut --bind sources and the minimal
// /dev's device nodes out of the host view; read-only root, private /tmp, minimal /dev; binds;
// /proc and /sys of the jail's namespaces; hostname, lo, broker socket; the user namespace;
// seccomp; no-new-privs; user and capabilities; the init. Started as root, the user namespace
// comes last: the other namespaces then belong to the host's root, so the jail's root (the host's
// nobody) holds no capability over its own network, mounts or processes, whatever --cap says.
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <seccomp.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "ktricks/core/child.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/jail.hpp"

namespace ktricks::jail {

constexpr std::size_t max_binds = 64;
constexpr uid_t nobody = 65534;

// The minimal /dev: these host nodes are bound in, nothing else.
constexpr std::array<const char*, 6> device_nodes{"/dev/null",   "/dev/zero",    "/dev/full",
                                                  "/dev/random", "/dev/urandom", "/dev/tty"};
// Their numbers (devices.txt), for when the host's node is not a device (a clobbered /dev/null is a
// regular file): then, with the right to, we make the node instead of binding the file in.
constexpr std::array<std::pair<unsigned, unsigned>, 6> device_numbers{
    {{1, 3}, {1, 5}, {1, 7}, {1, 8}, {1, 9}, {5, 0}}};

struct Sandbox::State {
    SandboxOptions options;
    int clone_flags = 0;
    // clone(CLONE_NEWUSER) first (not root: the only way to get the rights to build the rest) or
    // unshare(CLONE_NEWUSER) last (root: the other namespaces stay the host root's).
    bool user_namespace_first = false, user_namespace_last = false;
    uid_t inside_uid = 0;
    gid_t inside_gid = 0;
    uid_t owner_uid = 0;  // who owns the broker socket file, as seen from outside
    gid_t owner_gid = 0;
    std::string uid_map, gid_map;             // "INSIDE OUTSIDE 1\n"
    std::vector<sock_filter> seccomp;         // empty: no filter
    std::vector<sock_filter> seccomp_notify;  // the same with bind() sent to a user-notification listener
    std::uint64_t capabilities = 0;           // bit N: capability N is kept
    int last_capability = CAP_LAST_CAP;
    sockaddr_un broker_address{};
    socklen_t broker_length = 0;
};

SandboxOptions::Bind SandboxOptions::parse_bind(std::string_view text) {
    if (text.empty()) throw InputError("--bind \"\": expected SRC or SRC:DST");
    if (first_control_byte(text) >= 0)
        throw InputError(fmt::format("--bind \"{}\": contains a control byte", printable(text)));
    auto colon = text.find(':');
    Bind bind{std::string(text.substr(0, colon)),
              std::string(colon == std::string_view::npos ? text : text.substr(colon + 1))};
    if (bind.source.empty() || bind.target.empty())
        throw InputError(fmt::format("--bind \"{}\": empty SRC or DST", text));
    if (bind.target[0] != '/')
        throw InputError(fmt::format("--bind \"{}\": DST must be an absolute path", text));
    return bind;
}

namespace {

constexpr std::array<const char*, 41> capability_names{"chown",
                                                       "dac_override",
                                                       "dac_read_search",
                                                       "fowner",
                                                       "fsetid",
                                                       "kill",
                                                       "setgid",
                                                       "setuid",
                                                       "setpcap",
                                                       "linux_immutable",
                                                       "net_bind_service",
                                                       "net_broadcast",
                                                       "net_admin",
                                                       "net_raw",
                                                       "ipc_lock",
                                                       "ipc_owner",
                                                       "sys_module",
                                                       "sys_rawio",
                                                       "sys_chroot",
                                                       "sys_ptrace",
                                                       "sys_pacct",
                                                       "sys_admin",
                                                       "sys_boot",
                                                       "sys_nice",
                                                       "sys_resource",
                                                       "sys_time",
                                                       "sys_tty_config",
                                                       "mknod",
                                                       "lease",
                                                       "audit_write",
                                                       "audit_control",
                                                       "setfcap",
                                                       "mac_override",
                                                       "mac_admin",
                                                       "syslog",
                                                       "wake_alarm",
                                                       "block_suspend",
                                                       "audit_read",
                                                       "perfmon",
                                                       "bpf",
                                                       "checkpoint_restore"};

}  // namespace

int SandboxOptions::parse_capability(std::string_view text) {
    std::string name;
    for (char c : text) name.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    if (name.starts_with("cap_")) name.erase(0, 4);
    int number = -1;
    auto [end, error] = std::from_chars(name.data(), name.data() + name.size(), number);
    if (!name.empty() && error == std::errc() && end == name.data() + name.size()) {
        if (number >= 0 && number < static_cast<int>(capability_names.size())) return number;
    } else {
        for (std::size_t i = 0; i < capability_names.size(); ++i)
            if (name == capability_names[i]) return static_cast<int>(i);
    }
    throw InputError(fmt::format(
        "--cap \"{}\": not a capability (e.g. CAP_NET_BIND_SERVICE, see capabilities(7))", printable(text)));
}

const std::vector<std::string>& default_denied_syscalls() {
    // What a server has no business doing: changing the kernel (modules, kexec, swap, reboot,
    // clock, accounting), reshaping its jail (the mount family, namespaces, chroot), reaching into
    // other processes (ptrace, process_vm_*, pidfd_getfd, open_by_handle_at), and the kernel
    // interfaces with the longest record of local exploits (bpf, keyrings, perf, userfaultfd).
    static const std::vector<std::string> names{"init_module",
                                                "finit_module",
                                                "delete_module",
                                                "kexec_load",
                                                "kexec_file_load",
                                                "reboot",
                                                "swapon",
                                                "swapoff",
                                                "syslog",
                                                "acct",
                                                "settimeofday",
                                                "clock_settime",
                                                "clock_adjtime",
                                                "adjtimex",
                                                "iopl",
                                                "ioperm",
                                                "quotactl",
                                                "mount",
                                                "umount2",
                                                "pivot_root",
                                                "chroot",
                                                "fsopen",
                                                "fsconfig",
                                                "fsmount",
                                                "fspick",
                                                "move_mount",
                                                "open_tree",
                                                "mount_setattr",
                                                "unshare",
                                                "setns",
                                                "ptrace",
                                                "process_vm_readv",
                                                "process_vm_writev",
                                                "pidfd_getfd",
                                                "open_by_handle_at",
                                                "name_to_handle_at",
                                                "bpf",
                                                "keyctl",
                                                "add_key",
                                                "request_key",
                                                "perf_event_open",
                                                "userfaultfd",
                                                "lookup_dcookie",
                                                "nfsservctl",
                                                "uselib",
                                                "vhangup"};
    return names;
}

bool looks_like_init(std::string_view program) {
    auto slash = program.rfind('/');
    std::string_view name = slash == std::string_view::npos ? program : program.substr(slash + 1);
    for (std::string_view init : {"tini", "tini-static", "dumb-init", "catatonit", "init", "systemd",
                                  "s6-svscan", "runit", "runsvdir"})
        if (name == init) return true;
    return false;
}

namespace {

using SeccompContext = std::unique_ptr<void, void (*)(scmp_filter_ctx)>;

void check_seccomp(int result, const char* what) {
    if (result < 0) throw_error(-result, what);
}

// We build the program and load it ourselves (seccomp_load would allocate in the child).
std::vector<sock_filter> export_program(const SeccompContext& context) {
    Fd memory(::memfd_create("seccomp-bpf", MFD_CLOEXEC));
    if (!memory) throw_errno("memfd_create", "seccomp-bpf");
    check_seccomp(seccomp_export_bpf(context.get(), memory.get()), "seccomp_export_bpf");
    off_t size = ::lseek(memory.get(), 0, SEEK_END);
    if (size <= 0 || size % sizeof(sock_filter) != 0)
        throw std::runtime_error("seccomp_export_bpf wrote no program");
    std::vector<sock_filter> program(static_cast<std::size_t>(size) / sizeof(sock_filter));
    if (::pread(memory.get(), program.data(), static_cast<std::size_t>(size), 0) != size)
        throw_errno("pread", "seccomp-bpf");
    return program;
}

std::vector<sock_filter> compile_seccomp(const SandboxOptions& options, bool notify_bind) {
    SeccompContext context(seccomp_init(SCMP_ACT_ALLOW), seccomp_release);
    if (!context) throw std::runtime_error("seccomp_init failed");
    if (options.seccomp) {
        for (const auto& name : default_denied_syscalls()) {
            int number = seccomp_syscall_resolve_name(name.c_str());
            if (number == __NR_SCMP_ERROR) continue;  // unknown to this libseccomp: not on this kernel either
            check_seccomp(seccomp_rule_add(context.get(), SCMP_ACT_ERRNO(EPERM), number, 0),
                          "seccomp_rule_add");
        }
        // New namespaces: one rule per flag (the comparisons of one rule are ANDed).
        for (unsigned long flag : {CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWIPC,
                                   CLONE_NEWUTS, CLONE_NEWCGROUP}) {
            scmp_arg_cmp has_flag{0, SCMP_CMP_MASKED_EQ, flag, flag};
            check_seccomp(
                seccomp_rule_add(context.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1, has_flag),
                "seccomp_rule_add(clone)");
        }
        // clone3 passes its flags in memory, out of a filter's sight: ENOSYS makes libc use clone.
        check_seccomp(seccomp_rule_add(context.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0),
                      "seccomp_rule_add(clone3)");
    }
    if (options.seccomp_deny_socket) {
        // deny socket(2) for every family but AF_UNIX (socketpair(2) is a different call and stays), and
        // io_uring_setup(2), since io_uring can create sockets without calling socket() (IORING_OP_SOCKET).
        // Spelled out: SCMP_A0() leaves datum_b to the compiler, which clang's -Wextra rejects.
        scmp_arg_cmp not_unix{0, SCMP_CMP_NE, AF_UNIX, 0};
        check_seccomp(seccomp_rule_add(context.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1, not_unix),
                      "seccomp_rule_add(socket)");
        check_seccomp(seccomp_rule_add(context.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(io_uring_setup), 0),
                      "seccomp_rule_add(io_uring_setup)");
    }
    if (notify_bind)
        check_seccomp(seccomp_rule_add(context.get(), SCMP_ACT_NOTIFY, SCMP_SYS(bind), 0),
                      "seccomp_rule_add(bind)");
    return export_program(context);
}

bool kernel_has_mount_setattr() { return !(::mount_setattr(-1, "", 0, nullptr, 0) < 0 && errno == ENOSYS); }

// The child's steps. Each returns false after recording what failed.
bool write_text(ChildSetupError& error, int directory, const char* path, const std::string& text) {
    int fd = ::openat(directory, path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return error.fail(errno, "open", path);
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    int saved = errno;
    ::close(fd);
    return ok || error.fail(saved, "write", path);
}

bool set_readonly(ChildSetupError& error, const char* path, bool readonly, bool recursive = true) {
    mount_attr attr{};
    (readonly ? attr.attr_set : attr.attr_clr) = MOUNT_ATTR_RDONLY;
    if (::mount_setattr(AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, &attr, sizeof(attr)) < 0)
        return error.fail(
            errno, readonly ? "mount_setattr(MOUNT_ATTR_RDONLY)" : "mount_setattr(clear MOUNT_ATTR_RDONLY)",
            path);
    return true;
}

// mkdir -p without allocation (of the parent only with `parent_only`); failures show up in the
// mount that follows.
void make_directories(const char* path, bool parent_only = false) {
    char buffer[4096];
    std::size_t length = ::strnlen(path, sizeof(buffer) - 1);
    if (parent_only)
        while (length > 0 && path[length - 1] != '/') --length;
    std::memcpy(buffer, path, length);
    buffer[length] = '\0';
    for (std::size_t i = 1; i <= length; ++i) {
        if (buffer[i] != '/' && buffer[i] != '\0') continue;
        char saved = buffer[i];
        buffer[i] = '\0';
        ::mkdir(buffer, 0755);
        buffer[i] = saved;
    }
}

bool loopback_up(ChildSetupError& error) {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return error.fail(errno, "socket", "(to bring lo up)");
    ifreq request{};
    std::strcpy(request.ifr_name, "lo");
    request.ifr_flags = IFF_UP | IFF_RUNNING;
    bool ok = ::ioctl(fd, SIOCSIFFLAGS, &request) == 0;
    int saved = errno;
    ::close(fd);
    return ok || error.fail(saved, "ioctl(SIOCSIFFLAGS)", "lo");
}

// fork() without glibc's atfork handlers, which take locks a thread of the parent may have held.
pid_t raw_fork() { return static_cast<pid_t>(::syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, 0)); }

// A tmpfs /dev with the host's harmless nodes bound in (`trees`, cut from the host's /dev before),
// a private devpts and /dev/shm. The tmpfs itself is then read-only: nothing new appears in /dev.
bool minimal_dev(ChildSetupError& error, const int* trees) {
    if (::mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") < 0)
        return error.fail(errno, "mount(tmpfs)", "/dev");
    for (std::size_t i = 0; i < device_nodes.size(); ++i) {
        if (trees[i] < 0) continue;  // absent on the host (no /dev/tty in some containers)
        struct stat node {};
        if (::fstat(trees[i], &node) == 0 && !S_ISCHR(node.st_mode)) {
            ::close(trees[i]);
            auto [major_number, minor_number] = device_numbers[i];
            if (::mknod(device_nodes[i], S_IFCHR | 0666, makedev(major_number, minor_number)) < 0)
                return error.fail(errno, "mknod (the host's is not a device)", device_nodes[i]);
            ::chmod(device_nodes[i], 0666);  // past the umask
            continue;
        }
        int file = ::open(device_nodes[i], O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
        if (file < 0) return error.fail(errno, "create", device_nodes[i]);
        ::close(file);
        if (::move_mount(trees[i], "", AT_FDCWD, device_nodes[i], MOVE_MOUNT_F_EMPTY_PATH) < 0)
            return error.fail(errno, "move_mount", device_nodes[i]);
        ::close(trees[i]);
    }
    for (const char* directory : {"/dev/pts", "/dev/shm"})
        if (::mkdir(directory, 0755) < 0) return error.fail(errno, "mkdir", directory);
    const char* links[][2] = {{"pts/ptmx", "/dev/ptmx"},
                              {"/proc/self/fd", "/dev/fd"},
                              {"/proc/self/fd/0", "/dev/stdin"},
                              {"/proc/self/fd/1", "/dev/stdout"},
                              {"/proc/self/fd/2", "/dev/stderr"}};
    for (auto& link : links)
        if (::symlink(link[0], link[1]) < 0) return error.fail(errno, "symlink", link[1]);
    if (!set_readonly(error, "/dev", true, false)) return false;
    if (::mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620") < 0)
        return error.fail(errno, "mount(devpts)", "/dev/pts");
    if (::mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0)
        return error.fail(errno, "mount(tmpfs)", "/dev/shm");
    return true;
}

// unshare(CLONE_NEWUSER) and have its maps written by a helper that stays in the host's user
// namespace: only a writer with CAP_SETUID there may map our uid to another host uid.
bool enter_user_namespace(const Sandbox::State& state, ChildSetupError& error) {
    // Our own /proc/PID, opened while it is still the one the helper can write through.
    int self = ::open("/proc/self", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (self < 0) return error.fail(errno, "open", "/proc/self");
    int go[2];
    if (::pipe2(go, O_CLOEXEC) < 0) return error.fail(errno, "pipe2");
    pid_t helper = raw_fork();
    if (helper < 0) return error.fail(errno, "fork", "(user namespace helper)");
    if (helper == 0) {
        ::close(go[1]);
        char byte;
        if (::read(go[0], &byte, 1) != 1) ::_exit(EPIPE);
        for (auto [file, text] :
             {std::pair{"uid_map", &state.uid_map}, std::pair{"gid_map", &state.gid_map}}) {
            int fd = ::openat(self, file, O_WRONLY | O_CLOEXEC);
            if (fd < 0 || ::write(fd, text->data(), text->size()) != static_cast<ssize_t>(text->size()))
                ::_exit(errno ? errno : EIO);
            ::close(fd);
        }
        // We took pid 2 of the jail: hand it back, so that CMD is pid 2 under the init as it is
        // without this helper (best effort: the pid is cosmetic, LISTEN_PID is right either way).
        int last = ::open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
        if (last >= 0 && ::write(last, "1", 1) == 1) ::close(last);
        ::_exit(0);
    }
    ::close(go[0]);
    ::close(self);
    int failed = ::unshare(CLONE_NEWUSER) < 0 ? errno : 0;
    if (!failed) {
        ssize_t ignored = ::write(go[1], "x", 1);
        (void)ignored;
    }
    ::close(go[1]);
    int status = 0;
    while (::waitpid(helper, &status, 0) < 0 && errno == EINTR) {}
    if (failed) return error.fail(failed, "unshare(CLONE_NEWUSER)");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return error.fail(WIFEXITED(status) ? WEXITSTATUS(status) : EIO, "write",
                          "/proc/self/uid_map (from the host's user namespace)");
    return true;
}

struct CapabilityData {
    __u32 effective, permitted, inheritable;
};

// Bounding set first (that needs CAP_SETPCAP, which a uid change would take away), then the uid,
// then exactly the kept capabilities in every set, ambient included so that they survive exec for
// a non-root uid too.
bool drop_privileges(const Sandbox::State& state, bool can_setgroups, ChildSetupError& error) {
    const auto keep = state.capabilities;
    if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) return error.fail(errno, "prctl(PR_SET_KEEPCAPS)");
    for (int cap = 0; cap <= state.last_capability; ++cap)
        if (!(keep & (std::uint64_t{1} << cap)) && ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 &&
            errno != EINVAL)
            return error.fail(errno, "prctl(PR_CAPBSET_DROP)");
    bool change_user = state.options.uid || state.user_namespace_last;
    if (change_user) {
        if (can_setgroups && ::setgroups(0, nullptr) < 0) return error.fail(errno, "setgroups");
        if (::setresgid(state.inside_gid, state.inside_gid, state.inside_gid) < 0)
            return error.fail(errno, "setresgid");
        if (::setresuid(state.inside_uid, state.inside_uid, state.inside_uid) < 0)
            return error.fail(errno, "setresuid");
    }
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    CapabilityData data[2]{};
    for (int i = 0; i < 2; ++i) {
        auto bits = static_cast<__u32>(keep >> (32 * i));
        data[i] = {bits, bits, bits};
    }
    if (::syscall(SYS_capset, &header, data) < 0) return error.fail(errno, "capset");
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        return error.fail(errno, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
    for (int cap = 0; cap <= state.last_capability; ++cap)
        if ((keep & (std::uint64_t{1} << cap)) &&
            ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
            return error.fail(errno, "prctl(PR_CAP_AMBIENT_RAISE)");
    if (::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) return error.fail(errno, "prctl(PR_SET_KEEPCAPS)");
    return true;
}

void do_nothing(int) {}

// pid 1 of the jail when CMD is not an init: forwards the supervisor's signals to CMD, reaps every
// orphan, relays CMD's notifications (`relay_in` -> `relay_out`, or -1), and exits with CMD's status
// (128+N if a signal killed it). The kernel drops signals to a namespace's pid 1 that has no
// handler, hence the empty handlers (the signals stay blocked and are read from a signalfd).
// Never returns.
[[noreturn]] void run_init(pid_t command, int relay_in, int relay_out) {
    static constexpr int forwarded[] = {SIGTERM, SIGINT,  SIGHUP,   SIGQUIT,
                                        SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    for (int number : forwarded) sigaddset(&set, number);
    ::sigprocmask(SIG_BLOCK, &set, nullptr);
    struct sigaction action {};
    action.sa_handler = do_nothing;
    for (int number : forwarded) ::sigaction(number, &action, nullptr);
    // The descriptors (the spawn's report pipe above all) belong to CMD, not to us: keep only ours.
    unsigned low = 3;
    int keep[2] = {std::min(relay_in, relay_out), std::max(relay_in, relay_out)};
    for (int fd : keep) {
        if (fd < static_cast<int>(low)) continue;
        if (static_cast<unsigned>(fd) > low)
            ::syscall(SYS_close_range, low, static_cast<unsigned>(fd) - 1, 0U);
        low = static_cast<unsigned>(fd) + 1;
    }
    ::syscall(SYS_close_range, low, ~0U, 0U);
    int signals = ::signalfd(-1, &set, SFD_CLOEXEC);
    while (true) {
        pollfd ready[2] = {{signals, POLLIN, 0}, {relay_in, POLLIN, 0}};
        if (::poll(ready, relay_in >= 0 && relay_out >= 0 ? 2 : 1, -1) < 0) continue;
        if (ready[1].revents & POLLIN) {
            char message[4096];
            ssize_t got = ::recv(relay_in, message, sizeof(message), MSG_DONTWAIT);
            if (got > 0)
                ::send(relay_out, message, static_cast<std::size_t>(got), MSG_DONTWAIT | MSG_NOSIGNAL);
        }
        if (!(ready[0].revents & POLLIN)) continue;
        signalfd_siginfo info;
        if (::read(signals, &info, sizeof(info)) != sizeof(info)) continue;
        int number = static_cast<int>(info.ssi_signo);
        if (number != SIGCHLD) {
            ::kill(command, number);
            continue;
        }
        int status;
        pid_t pid;
        while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0)
            if (pid == command) ::_exit(WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status));
    }
}

bool send_fd(int socket, int fd) {
    char byte = 'n';
    iovec io{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr message{};
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    cmsghdr* header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(header), &fd, sizeof(int));
    return ::sendmsg(socket, &message, MSG_NOSIGNAL) == 1;
}

// The jail's lifeline to its supervisor. PR_SET_PDEATHSIG, set by Child::spawn before this setup,
// is cleared by the kernel when the credentials change (commit_creds: a new euid or more
// capabilities), which entering the user namespace and setresuid() above do. So it is set again
// here, after the last change; the jail's pid 1 (our init, or CMD) then dies with the supervisor,
// and with it, the kernel kills every process of the jail's PID namespace. A supervisor that died
// before this point sent no signal: its pidfd, readable once it is gone, tells us.
bool rearm_parent_death(int signal_number, int supervisor_pidfd, ChildSetupError& error) {
    if (signal_number == 0) return true;
    if (::prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0) < 0)
        return error.fail(errno, "prctl(PR_SET_PDEATHSIG)", "(again, after setuid)");
    pollfd gone{supervisor_pidfd, POLLIN, 0};
    if (supervisor_pidfd >= 0 && ::poll(&gone, 1, 0) == 1) ::_exit(128 + signal_number);
    return true;
}

bool setup(const Sandbox::State& state, int broker_fd, int notify_fd, int relay_fd, bool init,
           int death_signal, int supervisor_pidfd, ChildSetupError& error) {
    const SandboxOptions& options = state.options;
    if (state.user_namespace_first) {
        // Without "deny", an unprivileged gid_map write is refused (CVE-2014-8989).
        if (!write_text(error, AT_FDCWD, "/proc/self/setgroups", "deny")) return false;
        if (!write_text(error, AT_FDCWD, "/proc/self/uid_map", state.uid_map)) return false;
        if (!write_text(error, AT_FDCWD, "/proc/self/gid_map", state.gid_map)) return false;
    }
    // Our mounts must not propagate back to the host's mount namespace.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0)
        return error.fail(errno, "mount(MS_PRIVATE)", "/");
    // Binds and device nodes are cut from the host view first (open_tree): a tmpfs on /tmp or /dev
    // must not hide a source below it, and the read-only pass must not reach them.
    int trees[max_binds];
    for (std::size_t i = 0; i < options.binds.size(); ++i) {
        trees[i] = static_cast<int>(::open_tree(AT_FDCWD, options.binds[i].source.c_str(),
                                                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
        if (trees[i] < 0) return error.fail(errno, "open_tree", options.binds[i].source.c_str());
    }
    int devices[device_nodes.size()];
    for (std::size_t i = 0; i < device_nodes.size(); ++i)
        devices[i] = options.host_dev ? -1
                                      : static_cast<int>(::open_tree(AT_FDCWD, device_nodes[i],
                                                                     OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
    if (options.readonly) {
        if (!set_readonly(error, "/", true)) return false;
        if (::mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0)
            return error.fail(errno, "mount(tmpfs)", "/tmp");
    }
    if (!options.host_dev && !minimal_dev(error, devices)) return false;
    for (std::size_t i = 0; i < options.binds.size(); ++i) {
        const char* target = options.binds[i].target.c_str();
        // A target below the new /tmp exists only in the host view: make it, a directory or a file
        // as the source is (a mount must cover its own kind).
        struct stat source {};
        if (::fstat(trees[i], &source) == 0 && !S_ISDIR(source.st_mode)) {
            make_directories(target, true);
            int file = ::open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
            if (file >= 0) ::close(file);
        } else {
            make_directories(target);
        }
        if (::move_mount(trees[i], "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
            return error.fail(errno, "move_mount", target);
        ::close(trees[i]);
    }
    // A procfs shows the pid namespace it was mounted from, a sysfs the network namespace: the host's
    // would show host processes and host interfaces (/sys/class/net).
    if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) < 0)
        return error.fail(errno, "mount(proc)", "/proc");
    if (::mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, nullptr) < 0)
        return error.fail(errno, "mount(sysfs)", "/sys");
    if (::sethostname(options.hostname.data(), options.hostname.size()) < 0)
        return error.fail(errno, "sethostname", options.hostname.c_str());
    if (options.loopback && !loopback_up(error)) return false;
    if (broker_fd >= 0) {
        const char* path = state.broker_address.sun_path;
        ::unlink(path);
        if (::bind(broker_fd, reinterpret_cast<const sockaddr*>(&state.broker_address), state.broker_length) <
            0)
            return error.fail(errno, "bind broker socket", path);
        if (::listen(broker_fd, 64) < 0) return error.fail(errno, "listen", path);
        if (::chmod(path, 0600) < 0) return error.fail(errno, "chmod", path);
        if ((options.uid || state.user_namespace_last) && ::chown(path, state.owner_uid, state.owner_gid) < 0)
            return error.fail(errno, "chown", path);
    }
    // The relay's name exists before CMD does, so its first READY=1 cannot miss it. Bound before the
    // seccomp filter is loaded: with --intercept-bind, a bind() after it would wait for an answer
    // from the supervisor, which is still waiting for this child to exec.
    int relay_in = -1;
    if (init && relay_fd >= 0) {
        relay_in = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un name{};
        name.sun_family = AF_UNIX;
        std::size_t length = std::strlen(Sandbox::notify_name);
        std::memcpy(name.sun_path, Sandbox::notify_name, length);
        name.sun_path[0] = '\0';  // abstract: "@" is how the environment spells the leading NUL
        if (relay_in < 0 || ::bind(relay_in, reinterpret_cast<sockaddr*>(&name),
                                   static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length)) < 0)
            return error.fail(errno, "bind", Sandbox::notify_name);
    }
    if (state.user_namespace_last && !enter_user_namespace(state, error)) return false;
    if (options.no_new_privs && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return error.fail(errno, "prctl(PR_SET_NO_NEW_PRIVS)");
    // Loaded while we still have CAP_SYS_ADMIN, so it works with --no-new-privs=false too.
    const auto& filter = notify_fd >= 0 ? state.seccomp_notify : state.seccomp;
    if (!filter.empty()) {
        sock_fprog program{static_cast<unsigned short>(filter.size()),
                           const_cast<sock_filter*>(filter.data())};
        if (notify_fd >= 0) {
            int listener = static_cast<int>(
                ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &program));
            if (listener < 0) return error.fail(errno, "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER)");
            bool sent = send_fd(notify_fd, listener);
            int saved = errno;
            ::close(listener);
            if (!sent) return error.fail(saved, "sendmsg", "(seccomp listener to the supervisor)");
        } else if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) < 0) {
            return error.fail(errno, "prctl(PR_SET_SECCOMP)");
        }
    }
    if (!drop_privileges(state, !state.user_namespace_first, error)) return false;
    if (!rearm_parent_death(death_signal, supervisor_pidfd, error)) return false;
    if (init) {
        pid_t command = raw_fork();
        if (command < 0) return error.fail(errno, "fork", "(init)");
        if (command > 0) run_init(command, relay_in, relay_fd);
    }
    return true;
}

}  // namespace

Sandbox::Sandbox(std::unique_ptr<State> state) : state_(std::move(state)) {}
Sandbox::Sandbox(Sandbox&&) noexcept = default;
Sandbox& Sandbox::operator=(Sandbox&&) noexcept = default;
Sandbox::~Sandbox() = default;
const SandboxOptions& Sandbox::options() const noexcept { return state_->options; }

Sandbox Sandbox::prepare(const SandboxOptions& options) {
    auto state = std::make_unique<State>();
    state->options = options;
    state->clone_flags = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID;
    uid_t euid = ::geteuid();
    state->inside_uid = options.uid.value_or(0);
    state->inside_gid = options.gid.value_or(options.uid ? static_cast<gid_t>(*options.uid) : 0);
    state->owner_uid = state->inside_uid;
    state->owner_gid = state->inside_gid;
    if (euid != 0) {
        // Unprivileged: a user namespace gives us the capabilities to build the others, over
        // them only. Only our own uid is mapped, so the command runs as us.
        state->user_namespace_first = true;
        state->clone_flags |= CLONE_NEWUSER;
        state->uid_map = fmt::format("{0} {0} 1\n", euid);
        state->gid_map = fmt::format("{0} {0} 1\n", ::getegid());
        if (options.uid && *options.uid != euid)
            throw InputError(fmt::format("--user {}: without root only your own uid ({}) exists in the jail",
                                         *options.uid, euid));
        state->inside_uid = euid;
        state->inside_gid = ::getegid();
    } else if (options.user_namespace) {
        // Root inside is nobody outside; a named user is itself on both sides.
        state->user_namespace_last = true;
        state->owner_uid = state->inside_uid == 0 ? nobody : state->inside_uid;
        state->owner_gid = state->inside_gid == 0 ? nobody : state->inside_gid;
        state->uid_map = fmt::format("{} {} 1\n", state->inside_uid, state->owner_uid);
        state->gid_map = fmt::format("{} {} 1\n", state->inside_gid, state->owner_gid);
    }
    for (int cap : options.capabilities) state->capabilities |= std::uint64_t{1} << cap;
    if (std::ifstream last("/proc/sys/kernel/cap_last_cap"); !(last >> state->last_capability))
        state->last_capability = CAP_LAST_CAP;
    if (options.hostname.empty() || options.hostname.size() > 64)
        throw InputError("jail hostname must be 1-64 bytes");
    if (options.binds.size() > max_binds)
        throw InputError(fmt::format("at most {} --bind options", max_binds));
    for (const auto& bind : options.binds) {
        std::error_code error;
        if (!std::filesystem::exists(bind.source, error))
            throw InputError(fmt::format("--bind {}: no such file or directory", bind.source));
        if (!std::filesystem::exists(bind.target, error))
            throw InputError(
                fmt::format("--bind {}:{}: the target must already exist", bind.source, bind.target));
    }
    if ((options.readonly || !options.host_dev) && !kernel_has_mount_setattr())
        throw_error(ENOSYS, "mount_setattr",
                    "(a read-only root and the minimal /dev need Linux 5.12 or newer)");
    if (options.seccomp || options.seccomp_deny_socket) state->seccomp = compile_seccomp(options, false);
    state->seccomp_notify = compile_seccomp(options, true);
    if (options.broker_path) {
        const std::string& path = *options.broker_path;
        if (path.empty() || path[0] != '/')
            throw InputError(fmt::format("--broker {}: must be an absolute path", path));
        if (path.size() >= sizeof(state->broker_address.sun_path))
            throw InputError(fmt::format("--broker {}: longer than a unix socket path may be ({} bytes)",
                                         path, sizeof(state->broker_address.sun_path) - 1));
        state->broker_address.sun_family = AF_UNIX;
        std::memcpy(state->broker_address.sun_path, path.data(), path.size());
        state->broker_length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    }
    return Sandbox(std::move(state));
}

void Sandbox::apply(SpawnOptions& spawn, int broker_fd, int notify_fd, int notify_relay_fd) const {
    spawn.clone_flags |= state_->clone_flags;
    if (state_->options.broker_path)
        spawn.set_env.push_back("KTRICKS_BROKER=" + *state_->options.broker_path);
    const State* state = state_.get();
    bool init = state_->options.init && !spawn.argv.empty() && !looks_like_init(spawn.argv[0]);
    auto previous = spawn.setup_in_child;
    int relay_fd = init ? notify_relay_fd : -1;
    int death_signal = spawn.parent_death_signal;
    // Ours (the supervisor's) pidfd, for the child's late PR_SET_PDEATHSIG (rearm_parent_death);
    // it lives as long as the spawn options do, and is close-on-exec.
    std::shared_ptr<Fd> supervisor;
    if (death_signal) supervisor = std::make_shared<Fd>(open_pidfd(::getpid()));
    spawn.setup_in_child = [state, broker_fd, notify_fd, relay_fd, init, previous, death_signal,
                            supervisor](ChildSetupError& error) {
        if (previous) {
            previous(error);
            if (error.error) return;
        }
        int supervisor_pidfd = supervisor ? supervisor->get() : -1;
        setup(*state, broker_fd, notify_fd, relay_fd, init, death_signal, supervisor_pidfd, error);
    };
}

}  // namespace ktricks::jail
