// Child: a process started with exactly the environment and descriptors asked for, watched through
// a pidfd (so there is no race with pid reuse and it plugs into EventLoop::add_child).
//
// Descriptor layout follows systemd's LISTEN_FDS protocol: `pass_fds` land at 3, 4, 5, ... in the
// child. With `close_other_fds` every other descriptor above 2 is closed in the child, whatever its
// close-on-exec flag; without it, descriptors the caller inherited without FD_CLOEXEC (a user's
// `3>file`) pass through, and ktricks' own descriptors, all close-on-exec, do not.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ktricks/core/fd.hpp"

namespace ktricks {

struct ExitStatus {
    bool signaled = false;
    int code = 0;  // exit code, or the signal number if signaled

    // The shell convention: the exit code, or 128 + signal number.
    int shell_status() const noexcept { return signaled ? 128 + code : code; }
    std::string to_string() const;  // "exited with status 3", "killed by signal 9 (Killed)"
};

// A step of SpawnOptions::setup_in_child that failed: the errno and "call object", copied into the
// spawn's failure report and thrown by Child::spawn as std::system_error(error, what).
struct ChildSetupError {
    int error = 0;
    char what[240] = {};
    // Records the failure (errno and a message truncated to fit); returns false for `if (!...) return`.
    bool fail(int error_number, const char* call, const char* object = "") noexcept;
};

struct SpawnOptions {
    std::vector<std::string> argv;       // argv[0] is looked up in PATH unless it contains '/'
    std::string executable;              // if set, run this file instead of looking argv[0] up
    std::vector<std::string> set_env;    // "KEY=VALUE" added to (or replacing in) our environment
    std::vector<std::string> unset_env;  // keys removed from the environment
    // If set, only our variables whose name it accepts are inherited (then set_env is added): a
    // clean environment for code that must not see ours.
    std::function<bool(std::string_view name)> inherit_env;
    std::vector<int> pass_fds;  // become fds 3.. in the child, close-on-exec cleared
    bool close_other_fds = true;
    // Sets LISTEN_PID to the child's own pid (known only after fork) and LISTEN_FDS to the count of
    // pass_fds; LISTEN_FDNAMES is the caller's business (set_env).
    bool listen_fds_env = false;
    // With listen_fds_env: LISTEN_FDS counts only the first N of pass_fds (-1: all of them). The
    // rest still land right after them (fd 3+N...) but are not announced as listeners.
    int listen_fds_count = -1;
    std::vector<int> keep_fds;                          // kept at their own numbers (close-on-exec cleared)
    int stdin_fd = -1, stdout_fd = -1, stderr_fd = -1;  // replace 0/1/2 when >= 0
    bool new_process_group = false;
    // Signal the child gets when we die (PR_SET_PDEATHSIG), e.g. SIGKILL so that a command that must
    // not outlive its supervisor (it would run without the lock the supervisor held) never does.
    // 0: none. The kernel sends it when the thread that spawned the child exits.
    int parent_death_signal = 0;
    std::optional<std::string> working_directory;
    // CLONE_NEW* flags: the child starts in new namespaces (clone instead of fork). With
    // CLONE_NEWPID it is pid 1 of the new pid namespace, and LISTEN_PID says so.
    int clone_flags = 0;
    // Runs in the child before its descriptors are rearranged and before chdir/exec (after the signal
    // reset, process group and parent-death signal). It sees the parent's descriptors. Between fork
    // and exec only async-signal-safe calls are safe if the parent has other threads. On failure it
    // fills in the ChildSetupError (error != 0) and the spawn fails with it.
    std::function<void(ChildSetupError&)> setup_in_child;
};

class Child {
public:
    // Starts the process. Throws std::system_error naming the program if it cannot be executed
    // ("exec nosuchprog: No such file or directory"); the failed child is reaped before that.
    static Child spawn(const SpawnOptions& options);

    Child(Child&&) noexcept;
    Child& operator=(Child&&) noexcept;
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    // A child that was not waited for is killed (SIGKILL) and reaped: a forgotten Child never
    // outlives its owner. Call detach() to let it run on.
    ~Child();

    pid_t pid() const noexcept { return pid_; }
    int pidfd() const noexcept { return pidfd_.get(); }
    bool running() const noexcept { return !status_; }

    // Sends a signal through the pidfd (never hits a recycled pid). Returns false if already exited.
    bool signal(int signal_number);
    // Blocks until the child exits, or until `timeout` passes (then returns nullopt).
    std::optional<ExitStatus> wait(std::optional<std::chrono::milliseconds> timeout = std::nullopt);
    // Reaps the child if it has exited; never blocks.
    std::optional<ExitStatus> try_wait();
    void detach() noexcept;

private:
    Child() = default;
    void kill_and_reap() noexcept;
    pid_t pid_ = -1;
    Fd pidfd_;
    std::optional<ExitStatus> status_;
};

// Full path of an executable, searching PATH like execvp; throws SpawnError (ENOENT/EACCES)
// "exec NAME: ...", the same error Child::spawn gives.
std::string find_program(const std::string& name);

// pidfd_open(2) (Linux 5.3+).
Fd open_pidfd(pid_t pid);

}  // namespace ktricks
