// Helpers for integration tests that run the real `ktricks` binary as real processes.
//
// Everything here is bounded and self-cleaning, so a failed assertion never leaves a process or a
// file behind and never hangs the suite:
//   - Process starts a program in its own process group; its destructor SIGKILLs the whole group
//     (a killed `ktricks once` leaves its command orphaned in that group) and reaps the leader.
//   - Every wait takes a timeout; Process::wait returns nullopt instead of blocking forever.
//   - stdout and stderr go to memfds (nothing to delete), stdin is /dev/null or a pipe we hold.
//   - TempDir removes its tree on destruction.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ktricks/core/child.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/core/proc.hpp"

namespace ktricks::test {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// How long any single process of a test may take before the test calls it hung.
inline constexpr std::chrono::milliseconds process_timeout = 10s;

// A fresh directory under /tmp (mode 0755, so other uids can look in), removed with its contents.
class TempDir {
public:
    TempDir() {
        std::string pattern = "/tmp/ktricks-it-XXXXXX";
        if (!::mkdtemp(pattern.data())) throw_errno("mkdtemp", pattern);
        path_ = pattern;
        ::chmod(path_.c_str(), 0755);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    const std::filesystem::path& path() const noexcept { return path_; }
    std::string operator/(std::string_view name) const { return (path_ / name).string(); }

private:
    std::filesystem::path path_;
};

inline std::string read_file(const std::filesystem::path& path) {
    std::ifstream file(path, std::ios::binary);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
}

inline void write_file(const std::filesystem::path& path, std::string_view text, mode_t mode = 0644) {
    {
        std::ofstream file(path, std::ios::binary | std::ios::trunc);
        file << text;
    }
    ::chmod(path.c_str(), mode);
}

inline std::vector<std::string> lines_of(std::string_view text) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start < text.size()) {
        auto end = text.find('\n', start);
        if (end == std::string_view::npos) end = text.size();
        lines.emplace_back(text.substr(start, end - start));
        start = end + 1;
    }
    return lines;
}

// Polls `condition` every `interval` until it holds or `timeout` passes; returns its last value.
inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = process_timeout,
                       std::chrono::microseconds interval = 1ms) {
    auto deadline = Clock::now() + timeout;
    while (true) {
        if (condition()) return true;
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(interval);
    }
}

// True once `pid` has exited (gone, or a zombie not yet reaped by its parent).
inline bool process_gone(pid_t pid) {
    std::string stat = read_file(fmt::format("/proc/{}/stat", pid));
    return stat.empty() || stat.find(") Z") != std::string::npos;
}

// Waits up to `timeout` for `pid` to exit.
inline bool eventually_gone(pid_t pid, std::chrono::milliseconds timeout = 3s) {
    return eventually([pid] { return process_gone(pid); }, timeout);
}

// An anonymous in-memory file the child writes into and we read back from offset 0.
inline Fd make_capture(const char* label) {
    Fd fd(::memfd_create(label, MFD_CLOEXEC));
    if (!fd) throw_errno("memfd_create", label);
    return fd;
}

inline std::string read_capture(int fd) {
    std::string text;
    char buffer[4096];
    off_t offset = 0;
    while (true) {
        ssize_t got = ::pread(fd, buffer, sizeof(buffer), offset);
        if (got <= 0) break;
        text.append(buffer, static_cast<std::size_t>(got));
        offset += got;
    }
    return text;
}

struct ProcessOptions {
    std::vector<std::string> env;  // "KEY=VALUE" added to the environment
    std::optional<std::string> cwd;
    bool stdin_pipe = false;  // stdin is a pipe we hold (close_stdin() ends it); else /dev/null

    ProcessOptions& in(std::string directory) {
        cwd = std::move(directory);
        return *this;
    }
    ProcessOptions& with_piped_stdin() {
        stdin_pipe = true;
        return *this;
    }
};

inline ProcessOptions piped_stdin() { return ProcessOptions().with_piped_stdin(); }
inline ProcessOptions in_dir(std::string directory) { return ProcessOptions().in(std::move(directory)); }

// A started program: own process group, captured stdout/stderr, killed with its group on destruction.
class Process {
public:
    static Process start(std::vector<std::string> argv, ProcessOptions options = {}) {
        Process process;
        process.argv_ = argv;
        process.out_ = make_capture("stdout");
        process.err_ = make_capture("stderr");
        Fd stdin_read;
        if (options.stdin_pipe) {
            int pipe_fds[2];
            if (::pipe2(pipe_fds, O_CLOEXEC) < 0) throw_errno("pipe2");
            stdin_read = Fd(pipe_fds[0]);
            process.stdin_write_ = Fd(pipe_fds[1]);
        } else {
            stdin_read = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
            if (!stdin_read) throw_errno("open", "/dev/null");
        }
        SpawnOptions spawn;
        spawn.argv = std::move(argv);
        spawn.set_env = std::move(options.env);
        spawn.working_directory = std::move(options.cwd);
        spawn.stdin_fd = stdin_read.get();
        spawn.stdout_fd = process.out_.get();
        spawn.stderr_fd = process.err_.get();
        spawn.new_process_group = true;
        spawn.close_other_fds = true;  // the test runner's own descriptors stay out of it
        process.child_.emplace(Child::spawn(spawn));
        return process;
    }

    // A moved-from Process owns nothing (and must never signal "group -1").
    Process(Process&& other) noexcept
        : argv_(std::move(other.argv_)),
          child_(std::move(other.child_)),
          out_(std::move(other.out_)),
          err_(std::move(other.err_)),
          stdin_write_(std::move(other.stdin_write_)) {
        other.child_.reset();
    }
    Process& operator=(Process&&) = delete;
    ~Process() { kill_group(); }

    pid_t pid() const noexcept { return child_ ? child_->pid() : -1; }
    std::string out() const { return read_capture(out_.get()); }
    std::string err() const { return read_capture(err_.get()); }
    // "argv: ...\nstdout: ...\nstderr: ..." for assertion messages.
    std::string describe() const {
        std::string command;
        for (const auto& arg : argv_) command += (command.empty() ? "" : " ") + arg;
        return fmt::format("command: {}\nstdout: {}\nstderr: {}", command, out(), err());
    }

    // The shell status (exit code, or 128 + signal), or nullopt if it did not end within `timeout`.
    std::optional<int> wait(std::chrono::milliseconds timeout = process_timeout) {
        if (!child_) return std::nullopt;
        auto status = child_->wait(timeout);
        if (!status) return std::nullopt;
        return status->shell_status();
    }
    bool running() { return child_ && !child_->try_wait(); }
    // Signals this process only (not its group).
    void signal(int signal_number) {
        if (child_) child_->signal(signal_number);
    }
    void close_stdin() noexcept { stdin_write_.reset(); }
    // The write end of a piped stdin (with_piped_stdin), -1 otherwise.
    int stdin_fd() const noexcept { return stdin_write_.get(); }

    // SIGKILL to every process in the group, then reap the leader. Safe to call twice.
    void kill_group() noexcept {
        if (!child_) return;
        if (child_->pid() > 1) ::kill(-child_->pid(), SIGKILL);
        child_.reset();  // Child's destructor kills and reaps the leader if it still runs
    }

private:
    Process() = default;
    std::vector<std::string> argv_;
    std::optional<Child> child_;
    Fd out_, err_, stdin_write_;
};

// Starts, waits (bounded) and keeps the outputs: for commands that are expected to end by themselves.
struct Result {
    std::optional<int> status;  // nullopt: timed out (and was killed)
    std::string out, err;
    std::string describe;
};

inline Result run(std::vector<std::string> argv, ProcessOptions options = {},
                  std::chrono::milliseconds timeout = process_timeout) {
    Process process = Process::start(std::move(argv), std::move(options));
    Result result;
    result.status = process.wait(timeout);
    process.kill_group();
    result.out = process.out();
    result.err = process.err();
    result.describe = process.describe();
    return result;
}

// A unix socket of our network namespace, as core's /proc/net/unix parser reads it.
struct UnixSocket : UnixSocketEntry {
    bool listening() const noexcept { return flags & 0x10000; }  // __SO_ACCEPTCON
};

// The sockets bound to `socket_name` ("@ktricks/once/..."): the listener and the accepted
// connections, which carry the listener's address.
inline std::vector<UnixSocket> unix_sockets_named(const std::string& socket_name) {
    std::vector<UnixSocket> found;
    for (auto& entry : read_proc_net_unix())
        if (entry.path == socket_name) found.push_back({std::move(entry)});
    return found;
}

inline bool is_listening(const std::string& socket_name) {
    for (const auto& socket : unix_sockets_named(socket_name))
        if (socket.listening()) return true;
    return false;
}

}  // namespace ktricks::test
