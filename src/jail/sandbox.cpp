// The sandbox: what the child does between clone and exec.
//
// Everything the child needs (paths, map texts, the seccomp BPF program) is prepared here, in the
// parent, so the child only makes system calls: no allocation between clone and exec, which keeps
// it safe even if the caller has threads.
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <seccomp.h>

#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "ktricks/core/error.hpp"
#include "ktricks/jail.hpp"

namespace ktricks::jail {

constexpr std::size_t max_binds = 64;

struct Sandbox::State {
    SandboxOptions options;
    int clone_flags = 0;
    bool user_namespace = false;
    std::string uid_map, gid_map;       // "UID UID 1\n" when in a user namespace
    std::vector<sock_filter> seccomp;   // empty: no filter
    sockaddr_un broker_address{};
    socklen_t broker_length = 0;
};

SandboxOptions::Bind SandboxOptions::parse_bind(std::string_view text) {
    if (text.empty()) throw InputError("--bind \"\": expected SRC or SRC:DST");
    if (first_control_byte(text) >= 0) throw InputError(fmt::format("--bind \"{}\": contains a control byte", printable(text)));
    auto colon = text.find(':');
    Bind bind{std::string(text.substr(0, colon)), std::string(colon == std::string_view::npos ? text : text.substr(colon + 1))};
    if (bind.source.empty() || bind.target.empty()) throw InputError(fmt::format("--bind \"{}\": empty SRC or DST", text));
    if (bind.target[0] != '/') throw InputError(fmt::format("--bind \"{}\": DST must be an absolute path", text));
    return bind;
}

namespace {

// deny socket(2) for every family but AF_UNIX (socketpair(2) is a different call and stays), and
// io_uring_setup(2), since io_uring can create sockets without calling socket() (IORING_OP_SOCKET).
std::vector<sock_filter> compile_deny_socket() {
    std::unique_ptr<void, void (*)(scmp_filter_ctx)> context(seccomp_init(SCMP_ACT_ALLOW), seccomp_release);
    if (!context) throw std::runtime_error("seccomp_init failed");
    auto check = [](int result, const char* what) {
        if (result < 0) throw_error(-result, what);
    };
    // Spelled out: SCMP_A0() leaves datum_b to the compiler, which clang's -Wextra rejects.
    scmp_arg_cmp not_unix{0, SCMP_CMP_NE, AF_UNIX, 0};
    check(seccomp_rule_add(context.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1, not_unix),
          "seccomp_rule_add(socket)");
    check(seccomp_rule_add(context.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(io_uring_setup), 0), "seccomp_rule_add(io_uring_setup)");
    // We build the program and load it ourselves (seccomp_load would allocate in the child).
    Fd memory(::memfd_create("seccomp-bpf", MFD_CLOEXEC));
    if (!memory) throw_errno("memfd_create", "seccomp-bpf");
    check(seccomp_export_bpf(context.get(), memory.get()), "seccomp_export_bpf");
    off_t size = ::lseek(memory.get(), 0, SEEK_END);
    if (size <= 0 || size % sizeof(sock_filter) != 0) throw std::runtime_error("seccomp_export_bpf wrote no program");
    std::vector<sock_filter> program(static_cast<std::size_t>(size) / sizeof(sock_filter));
    if (::pread(memory.get(), program.data(), static_cast<std::size_t>(size), 0) != size) throw_errno("pread", "seccomp-bpf");
    return program;
}

bool kernel_has_mount_setattr() {
    return !(::mount_setattr(-1, "", 0, nullptr, 0) < 0 && errno == ENOSYS);
}

// The child's steps. Each returns false after recording what failed.
bool write_text(ChildSetupError& error, const char* path, const std::string& text) {
    int fd = ::open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return error.fail(errno, "open", path);
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    int saved = errno;
    ::close(fd);
    return ok || error.fail(saved, "write", path);
}

bool set_readonly(ChildSetupError& error, const char* path, bool readonly) {
    mount_attr attr{};
    (readonly ? attr.attr_set : attr.attr_clr) = MOUNT_ATTR_RDONLY;
    if (::mount_setattr(AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof(attr)) < 0)
        return error.fail(errno, readonly ? "mount_setattr(MOUNT_ATTR_RDONLY)" : "mount_setattr(clear MOUNT_ATTR_RDONLY)", path);
    return true;
}

// mkdir -p without allocation; failures show up in the mount that follows.
void make_directories(const char* path) {
    char buffer[4096];
    std::size_t length = ::strnlen(path, sizeof(buffer) - 1);
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

bool setup(const Sandbox::State& state, int broker_fd, ChildSetupError& error) {
    const SandboxOptions& options = state.options;
    if (state.user_namespace) {
        // Without "deny", an unprivileged gid_map write is refused (CVE-2014-8989).
        if (!write_text(error, "/proc/self/setgroups", "deny")) return false;
        if (!write_text(error, "/proc/self/uid_map", state.uid_map)) return false;
        if (!write_text(error, "/proc/self/gid_map", state.gid_map)) return false;
    }
    // Our mounts must not propagate back to the host's mount namespace.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) return error.fail(errno, "mount(MS_PRIVATE)", "/");
    // Binds are cut from the host view first (open_tree): a tmpfs on /tmp must not hide a source
    // below /tmp, and the read-only pass must not reach them.
    int trees[max_binds];
    for (std::size_t i = 0; i < options.binds.size(); ++i) {
        trees[i] = static_cast<int>(::open_tree(AT_FDCWD, options.binds[i].source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE));
        if (trees[i] < 0) return error.fail(errno, "open_tree", options.binds[i].source.c_str());
    }
    if (options.readonly) {
        if (!set_readonly(error, "/", true)) return false;
        if (::mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0) return error.fail(errno, "mount(tmpfs)", "/tmp");
    }
    for (std::size_t i = 0; i < options.binds.size(); ++i) {
        const char* target = options.binds[i].target.c_str();
        make_directories(target);  // a target below the new /tmp exists only in the host view
        if (::move_mount(trees[i], "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) return error.fail(errno, "move_mount", target);
        ::close(trees[i]);
    }
    // A procfs shows the pid namespace it was mounted from, a sysfs the network namespace: the host's
    // would show host processes and host interfaces (/sys/class/net).
    if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) < 0) return error.fail(errno, "mount(proc)", "/proc");
    if (::mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, nullptr) < 0)
        return error.fail(errno, "mount(sysfs)", "/sys");
    if (::sethostname(options.hostname.data(), options.hostname.size()) < 0) return error.fail(errno, "sethostname", options.hostname.c_str());
    if (options.loopback && !loopback_up(error)) return false;
    if (broker_fd >= 0) {
        const char* path = state.broker_address.sun_path;
        ::unlink(path);
        if (::bind(broker_fd, reinterpret_cast<const sockaddr*>(&state.broker_address), state.broker_length) < 0)
            return error.fail(errno, "bind broker socket", path);
        if (::listen(broker_fd, 64) < 0) return error.fail(errno, "listen", path);
        if (::chmod(path, 0600) < 0) return error.fail(errno, "chmod", path);
        if (options.uid && ::chown(path, *options.uid, options.gid.value_or(static_cast<gid_t>(-1))) < 0)
            return error.fail(errno, "chown", path);
    }
    if (options.no_new_privs && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return error.fail(errno, "prctl(PR_SET_NO_NEW_PRIVS)");
    if (!state.seccomp.empty()) {
        // Loaded while we still have CAP_SYS_ADMIN, so it works with --no-new-privs=false too.
        sock_fprog program{static_cast<unsigned short>(state.seccomp.size()), const_cast<sock_filter*>(state.seccomp.data())};
        if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) < 0) return error.fail(errno, "prctl(PR_SET_SECCOMP)");
    }
    if (options.uid) {
        gid_t gid = options.gid.value_or(static_cast<gid_t>(*options.uid));
        if (!state.user_namespace && ::setgroups(0, nullptr) < 0) return error.fail(errno, "setgroups");
        if (::setresgid(gid, gid, gid) < 0) return error.fail(errno, "setresgid");
        if (::setresuid(*options.uid, *options.uid, *options.uid) < 0) return error.fail(errno, "setresuid");
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
    if (euid != 0) {
        // Unprivileged: a user namespace gives us the capabilities to build the others, over
        // them only. Only our own uid is mapped, so the command runs as us.
        state->user_namespace = true;
        state->clone_flags |= CLONE_NEWUSER;
        state->uid_map = fmt::format("{0} {0} 1\n", euid);
        state->gid_map = fmt::format("{0} {0} 1\n", ::getegid());
        if (options.uid && *options.uid != euid)
            throw InputError(fmt::format("--user {}: without root only your own uid ({}) exists in the jail", *options.uid, euid));
    }
    if (options.hostname.empty() || options.hostname.size() > 64) throw InputError("jail hostname must be 1-64 bytes");
    if (options.binds.size() > max_binds) throw InputError(fmt::format("at most {} --bind options", max_binds));
    for (const auto& bind : options.binds) {
        std::error_code error;
        if (!std::filesystem::exists(bind.source, error)) throw InputError(fmt::format("--bind {}: no such file or directory", bind.source));
        if (!std::filesystem::exists(bind.target, error))
            throw InputError(fmt::format("--bind {}:{}: the target must already exist", bind.source, bind.target));
    }
    if (options.readonly && !kernel_has_mount_setattr())
        throw_error(ENOSYS, "mount_setattr", "(--readonly needs Linux 5.12 or newer)");
    if (options.seccomp_deny_socket) state->seccomp = compile_deny_socket();
    if (options.broker_path) {
        const std::string& path = *options.broker_path;
        if (path.empty() || path[0] != '/') throw InputError(fmt::format("--broker {}: must be an absolute path", path));
        if (path.size() >= sizeof(state->broker_address.sun_path))
            throw InputError(fmt::format("--broker {}: longer than a unix socket path may be ({} bytes)", path,
                                         sizeof(state->broker_address.sun_path) - 1));
        state->broker_address.sun_family = AF_UNIX;
        std::memcpy(state->broker_address.sun_path, path.data(), path.size());
        state->broker_length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    }
    return Sandbox(std::move(state));
}

void Sandbox::apply(SpawnOptions& spawn, int broker_fd) const {
    spawn.clone_flags |= state_->clone_flags;
    if (state_->options.broker_path) spawn.set_env.push_back("KTRICKS_BROKER=" + *state_->options.broker_path);
    const State* state = state_.get();
    auto previous = spawn.setup_in_child;
    spawn.setup_in_child = [state, broker_fd, previous](ChildSetupError& error) {
        if (previous) {
            previous(error);
            if (error.error) return;
        }
        setup(*state, broker_fd, error);
    };
}

}  // namespace ktricks::jail
