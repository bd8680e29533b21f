#include "ktricks/core/child.hpp"

#include <fcntl.h>
#include <limits.h>
#include <linux/close_range.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <string_view>

#include "ktricks/core/error.hpp"

extern char** environ;

namespace ktricks {
namespace {

[[noreturn]] void throw_spawn_error(int error_number, const std::string& program) {
    throw SpawnError(error_number, std::system_category(),
                     "exec " + (program.empty() ? std::string("''") : program));
}

// What the child reports on the close-on-exec pipe when a step before exec fails. Only an execve
// failure is the program's fault (SpawnError, 126/127); a missing working directory or a bad fd
// to pass must not be reported as "exec PROG: No such file or directory".
struct ChildFailure {
    enum class Step : int { exec, setpgid, prctl, chdir, dup, dup2, clear_cloexec, setup } step;
    int error;
    int fd;                                    // the descriptor involved, or -1
    char what[sizeof(ChildSetupError::what)];  // Step::setup: the failed call and object
};
static_assert(sizeof(ChildFailure) <= PIPE_BUF, "one write, read whole");

// Everything the child does between fork and exec must be async-signal-safe: no allocation, no
// locks. So all strings and arrays are prepared before fork, and the child only rearranges fds.
[[noreturn]] void child_fail(int report_fd, ChildFailure::Step step, int error, int fd = -1,
                             const char* what = "") {
    ChildFailure failure{step, error, fd, {}};
    for (std::size_t i = 0; i + 1 < sizeof(failure.what) && what[i]; ++i) failure.what[i] = what[i];
    ssize_t ignored = ::write(report_fd, &failure, sizeof(failure));
    (void)ignored;
    ::_exit(127);
}

[[noreturn]] void throw_child_failure(const ChildFailure& failure, const SpawnOptions& options) {
    using Step = ChildFailure::Step;
    const std::string& program = options.argv[0];
    switch (failure.step) {
        case Step::exec: throw_spawn_error(failure.error, program);
        case Step::setpgid: throw_error(failure.error, "setpgid", fmt::format("(for {})", program));
        case Step::prctl:
            throw_error(failure.error, "prctl(PR_SET_PDEATHSIG)", fmt::format("(for {})", program));
        case Step::chdir: throw_error(failure.error, "chdir", options.working_directory.value_or(""));
        case Step::dup:
            throw_error(failure.error, "fcntl(F_DUPFD_CLOEXEC)",
                        fmt::format("fd {} (for {})", failure.fd, program));
        case Step::dup2:
            throw_error(failure.error, "dup2", fmt::format("fd {} (for {})", failure.fd, program));
        case Step::clear_cloexec:
            throw_error(failure.error, "fcntl(F_SETFD)", fmt::format("fd {} (for {})", failure.fd, program));
        case Step::setup: {
            std::string what(failure.what, strnlen(failure.what, sizeof(failure.what)));
            throw std::system_error(failure.error, std::system_category(), what);
        }
    }
    throw_error(failure.error, "spawn", program);
}

// Ignored signals stay ignored across exec. glibc's sigaction() refuses the two real-time signals
// it reserves for itself (32 and 33), yet a parent can inherit them ignored and a non-glibc program
// would keep that; so talk to the kernel directly, with its own struct layout.
void reset_all_signal_dispositions() {
    struct {
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)();
        unsigned long mask;
    } default_action{SIG_DFL, 0, nullptr, 0};
    for (int sig = 1; sig <= 64; ++sig)  // SIGKILL and SIGSTOP answer EINVAL: they are never changed
        ::syscall(SYS_rt_sigaction, sig, &default_action, nullptr, sizeof(default_action.mask));
}

void format_decimal(char* out, long value) {  // out has room for 20 digits and a NUL
    char digits[24];
    int n = 0;
    do {
        digits[n++] = static_cast<char>('0' + value % 10);
        value /= 10;
    } while (value > 0);
    while (n > 0) *out++ = digits[--n];
    *out = '\0';
}

void close_range_or_loop(unsigned low, unsigned high) {
    if (::syscall(SYS_close_range, low, high, 0) == 0) return;
    // Linux < 5.9 has no close_range: close one by one up to the descriptor limit.
    long limit = ::sysconf(_SC_OPEN_MAX);
    unsigned top = std::min<unsigned long>(high, limit > 0 ? static_cast<unsigned long>(limit) : 1024);
    for (unsigned fd = low; fd <= top && fd >= low; ++fd) ::close(static_cast<int>(fd));
}

// Closes every descriptor >= first except those in keep[] (sorted).
void close_from(int first, const int* keep, std::size_t keep_count) {
    unsigned low = static_cast<unsigned>(first);
    for (std::size_t i = 0; i < keep_count; ++i) {
        if (keep[i] < first) continue;
        unsigned kept = static_cast<unsigned>(keep[i]);
        if (kept > low) close_range_or_loop(low, kept - 1);
        low = kept + 1;
    }
    close_range_or_loop(low, ~0U);
}

std::string_view env_key(std::string_view entry) { return entry.substr(0, entry.find('=')); }

}  // namespace

bool ChildSetupError::fail(int error_number, const char* call, const char* object) noexcept {
    error = error_number ? error_number : EIO;
    std::size_t n = 0;
    auto append = [&](const char* text) {
        for (; *text && n + 1 < sizeof(what); ++text) what[n++] = *text;
    };
    append(call);
    if (*object) {
        append(" ");
        append(object);
    }
    what[n] = '\0';
    return false;
}

std::string ExitStatus::to_string() const {
    if (signaled) return fmt::format("killed by signal {} ({})", code, ::strsignal(code));
    return fmt::format("exited with status {}", code);
}

Fd open_pidfd(pid_t pid) {
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) {
        if (errno == ENOSYS)
            throw_error(ENOSYS, "pidfd_open", fmt::format("pid {} (needs Linux 5.3 or newer)", pid));
        throw_errno("pidfd_open", fmt::format("pid {}", pid));
    }
    return Fd(fd);  // pidfds are always close-on-exec
}

std::string find_program(const std::string& name) {
    if (name.empty()) throw_spawn_error(ENOENT, name);
    // A regular file we may execute; `st` is the path's stat.
    auto executable = [](const std::string& path, const struct stat& st) {
        return S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
    };
    if (name.find('/') != std::string::npos) {
        struct stat st {};
        if (::stat(name.c_str(), &st) != 0) throw_spawn_error(errno, name);
        if (!executable(name, st)) throw_spawn_error(EACCES, name);
        return name;
    }
    const char* path_env = ::getenv("PATH");
    std::string_view path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
    bool found_unexecutable = false;
    while (true) {
        auto colon = path.find(':');
        std::string_view dir = path.substr(0, colon);
        std::string candidate = fmt::format("{}/{}", dir.empty() ? "." : dir, name);
        // One stat per PATH entry that lacks the program (the common case: it runs at every start).
        struct stat st {};
        if (::stat(candidate.c_str(), &st) == 0) {
            if (executable(candidate, st)) return candidate;
            found_unexecutable = true;
        }
        if (colon == std::string_view::npos) break;
        path.remove_prefix(colon + 1);
    }
    throw_spawn_error(found_unexecutable ? EACCES : ENOENT, name);
}

Child Child::spawn(const SpawnOptions& options) {
    if (options.argv.empty()) throw InputError("spawn: empty command");
    std::string program = options.executable;
    if (program.empty()) program = find_program(options.argv[0]);

    std::vector<const char*> argv;
    for (const auto& arg : options.argv) argv.push_back(arg.c_str());
    argv.push_back(nullptr);

    std::vector<std::string> env_strings;
    auto overridden = [&](std::string_view key) {
        if (std::find(options.unset_env.begin(), options.unset_env.end(), key) != options.unset_env.end())
            return true;
        for (const auto& entry : options.set_env)
            if (env_key(entry) == key) return true;
        if (options.listen_fds_env && (key == "LISTEN_PID" || key == "LISTEN_FDS")) return true;
        if (options.inherit_env && !options.inherit_env(key)) return true;
        return false;
    };
    for (char** entry = environ; *entry; ++entry)
        if (!overridden(env_key(*entry))) env_strings.emplace_back(*entry);
    for (const auto& entry : options.set_env) env_strings.push_back(entry);
    std::size_t listen_pid_index = 0;
    if (options.listen_fds_env) {
        if (options.listen_fds_count > static_cast<int>(options.pass_fds.size()))
            throw InputError(fmt::format("spawn: LISTEN_FDS={} but only {} fds are passed",
                                         options.listen_fds_count, options.pass_fds.size()));
        std::size_t announced = options.listen_fds_count >= 0
                                    ? static_cast<std::size_t>(options.listen_fds_count)
                                    : options.pass_fds.size();
        env_strings.push_back(fmt::format("LISTEN_FDS={}", announced));
        listen_pid_index = env_strings.size();
        env_strings.push_back("LISTEN_PID=" + std::string(24, '\0'));  // filled in by the child
    }
    std::vector<char*> envp;
    for (auto& entry : env_strings) envp.push_back(entry.data());
    envp.push_back(nullptr);
    char* listen_pid_digits =
        options.listen_fds_env ? envp[listen_pid_index] + std::strlen("LISTEN_PID=") : nullptr;

    const int pass_count = static_cast<int>(options.pass_fds.size());
    std::vector<int> keep = options.keep_fds;
    std::sort(keep.begin(), keep.end());
    for (int fd : keep)
        if (fd >= 3 && fd < 3 + pass_count)
            throw InputError(fmt::format("spawn: fd {} is both kept in place and a LISTEN_FDS target", fd));
    int highest = 2 + pass_count;
    for (int fd : options.pass_fds) highest = std::max(highest, fd);
    for (int fd : keep) highest = std::max(highest, fd);
    for (int fd : {options.stdin_fd, options.stdout_fd, options.stderr_fd}) highest = std::max(highest, fd);
    std::vector<int> staged(options.pass_fds.size());
    const char* working_directory = options.working_directory ? options.working_directory->c_str() : nullptr;

    int report[2];
    if (::pipe2(report, O_CLOEXEC) < 0) throw_errno("pipe2");
    Fd report_read(report[0]), report_write(report[1]);

    const pid_t parent = ::getpid();
    // What the child runs between clone and exec. It only makes system calls on what was prepared
    // above (no allocation, no locks), which is what lets the common case share our memory.
    auto in_child = [&]() -> int {
        const int out = report_write.get();
        // The parent may have blocked signals for its signalfd and ignored SIGPIPE; both would be
        // inherited across exec and silently change how the program behaves. Dispositions first,
        // mask second: until the mask is cleared no signal can run one of the parent's handlers.
        reset_all_signal_dispositions();
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);

        using Step = ChildFailure::Step;
        if (options.new_process_group && ::setpgid(0, 0) < 0) child_fail(out, Step::setpgid, errno);
        if (options.parent_death_signal) {
            if (::prctl(PR_SET_PDEATHSIG, options.parent_death_signal) < 0)
                child_fail(out, Step::prctl, errno);
            // The parent may have died before prctl took effect: then no signal will ever come.
            // (In a new pid namespace the parent is outside it and getppid() is always 0.)
            if (!(options.clone_flags & CLONE_NEWPID) && ::getppid() != parent)
                ::_exit(128 + options.parent_death_signal);
        }
        if (options.setup_in_child) {
            ChildSetupError setup;
            options.setup_in_child(setup);
            if (setup.error) child_fail(out, Step::setup, setup.error, -1, setup.what);
        }
        if (working_directory && ::chdir(working_directory) < 0) child_fail(out, Step::chdir, errno);

        // Move every fd we place out of the way first, so that placing fd 3 cannot clobber a
        // source that happens to be fd 3..n. The report pipe is moved above them too.
        int base = highest + 1;
        int moved_out = ::fcntl(out, F_DUPFD_CLOEXEC, base + pass_count + 3);
        if (moved_out < 0) child_fail(out, Step::dup, errno, out);
        const int std_sources[3] = {options.stdin_fd, options.stdout_fd, options.stderr_fd};
        int std_staged[3] = {-1, -1, -1};
        for (int i = 0; i < 3; ++i)
            if (std_sources[i] >= 0 && (std_staged[i] = ::fcntl(std_sources[i], F_DUPFD_CLOEXEC, base)) < 0)
                child_fail(moved_out, Step::dup, errno, std_sources[i]);
        for (int i = 0; i < pass_count; ++i)
            if ((staged[i] = ::fcntl(options.pass_fds[i], F_DUPFD_CLOEXEC, base)) < 0)
                child_fail(moved_out, Step::dup, errno, options.pass_fds[i]);
        for (int i = 0; i < 3; ++i)
            if (std_staged[i] >= 0 && ::dup2(std_staged[i], i) < 0)
                child_fail(moved_out, Step::dup2, errno, std_sources[i]);
        // dup2 clears FD_CLOEXEC on the copy: these are the descriptors the program inherits.
        for (int i = 0; i < pass_count; ++i)
            if (::dup2(staged[i], 3 + i) < 0) child_fail(moved_out, Step::dup2, errno, options.pass_fds[i]);
        for (int fd : keep) {
            int flags = ::fcntl(fd, F_GETFD);
            if (flags < 0 || ::fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) < 0)
                child_fail(moved_out, Step::clear_cloexec, errno, fd);
        }
        if (options.close_other_fds) {
            int keep_all[256];
            std::size_t count = 0;
            for (int fd : keep)
                if (count < 255) keep_all[count++] = fd;
            // moved_out is close-on-exec; keep it open until exec so a failure can still be reported.
            keep_all[count++] = moved_out;
            std::sort(keep_all, keep_all + count);
            close_from(3 + pass_count, keep_all, count);
        }
        if (listen_pid_digits) format_decimal(listen_pid_digits, ::getpid());
        ::execve(program.c_str(), const_cast<char* const*>(argv.data()), envp.data());
        child_fail(moved_out, Step::exec, errno);
    };

    pid_t pid;
    if (options.clone_flags || options.setup_in_child) {
        // A copy of our memory: new namespaces, and setup code we cannot vouch for. clone without a
        // new stack behaves like fork (the child gets a copy of our stack).
        pid = options.clone_flags ? static_cast<pid_t>(::syscall(SYS_clone, options.clone_flags | SIGCHLD,
                                                                 nullptr, nullptr, nullptr, 0))
                                  : ::fork();
        if (pid == 0) in_child();
        if (pid < 0) throw_errno(options.clone_flags ? "clone" : "fork", options.argv[0]);
    } else {
        // The common case, as posix_spawn does it: the child borrows our memory (CLONE_VM) on a
        // stack of its own and we sleep until it has exec'd or exited (CLONE_VFORK). No page table
        // is copied and no page is copied on write, which is most of what fork costs a large
        // process (about a millisecond here). All signals stay blocked across the clone so that
        // none can run one of our handlers on the shared memory before the child resets them.
        sigset_t all, previous;
        sigfillset(&all);
        ::pthread_sigmask(SIG_SETMASK, &all, &previous);
        constexpr std::size_t stack_size = 64 * 1024;
        void* stack = ::mmap(nullptr, stack_size, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) {
            int error = errno;
            ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
            throw_error(error, "mmap", "a stack for the child");
        }
        pid = ::clone([](void* body) { return (*static_cast<decltype(in_child)*>(body))(); },
                      static_cast<char*>(stack) + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &in_child);
        int error = errno;
        ::munmap(stack, stack_size);
        ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
        if (pid < 0) throw_error(error, "clone", options.argv[0]);
    }

    report_write.reset();
    ChildFailure failure{};
    ssize_t got;
    do {
        got = ::read(report_read.get(), &failure, sizeof(failure));
    } while (got < 0 && errno == EINTR);
    if (got == static_cast<ssize_t>(sizeof(failure))) {
        int ignored;
        while (::waitpid(pid, &ignored, 0) < 0 && errno == EINTR) {}
        throw_child_failure(failure, options);
    }

    Child child;
    child.pid_ = pid;
    child.pidfd_ = open_pidfd(pid);  // the child is ours and unreaped, so its pid cannot be reused yet
    return child;
}

Child::Child(Child&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::move(other.pidfd_)),
      status_(std::move(other.status_)) {}

Child& Child::operator=(Child&& other) noexcept {
    if (this != &other) {
        kill_and_reap();
        pid_ = std::exchange(other.pid_, -1);
        pidfd_ = std::move(other.pidfd_);
        status_ = std::move(other.status_);
    }
    return *this;
}

Child::~Child() { kill_and_reap(); }

void Child::kill_and_reap() noexcept {
    if (pid_ <= 0 || status_) return;
    try {
        signal(SIGKILL);
        wait();
    } catch (...) {
        // Already reaped elsewhere (ECHILD): nothing left to clean up.
    }
}

void Child::detach() noexcept {
    pid_ = -1;
    pidfd_.reset();
}

bool Child::signal(int signal_number) {
    if (pid_ <= 0 || status_) return false;
    // An exited but unreaped child (a zombie) still accepts signals without error, and nothing
    // receives them. Its pidfd turns readable at exit, which tells the two apart without reaping.
    pollfd exited{pidfd_.get(), POLLIN, 0};
    if (::poll(&exited, 1, 0) == 1 && (exited.revents & POLLIN)) return false;
    if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), signal_number, nullptr, 0) < 0) {
        if (errno == ESRCH) return false;
        throw_errno("pidfd_send_signal", fmt::format("pid {}", pid_));
    }
    return true;
}

static ExitStatus decode(int status) {
    if (WIFSIGNALED(status)) return {true, WTERMSIG(status)};
    return {false, WEXITSTATUS(status)};
}

std::optional<ExitStatus> Child::try_wait() {
    if (status_ || pid_ <= 0) return status_;
    int status = 0;
    pid_t got = ::waitpid(pid_, &status, WNOHANG);
    if (got < 0) throw_errno("waitpid", fmt::format("pid {}", pid_));
    if (got == 0) return std::nullopt;
    status_ = decode(status);
    return status_;
}

std::optional<ExitStatus> Child::wait(std::optional<std::chrono::milliseconds> timeout) {
    if (status_ || pid_ <= 0) return status_;
    if (timeout) {
        pollfd poll_fd{pidfd_.get(), POLLIN, 0};
        int ready;
        do {
            ready = ::poll(&poll_fd, 1, static_cast<int>(timeout->count()));
        } while (ready < 0 && errno == EINTR);
        if (ready < 0) throw_errno("poll", fmt::format("pidfd of pid {}", pid_));
        if (ready == 0) return std::nullopt;
    }
    int status = 0;
    pid_t got;
    do {
        got = ::waitpid(pid_, &status, 0);
    } while (got < 0 && errno == EINTR);
    if (got < 0) throw_errno("waitpid", fmt::format("pid {}", pid_));
    status_ = decode(status);
    return status_;
}

}  // namespace ktricks
