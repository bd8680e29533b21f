// Helpers shared by the unit tests (integration tests have process_helpers.hpp).
//
// Each one cleans up after itself: TempDir removes its tree, Pipe closes both ends, SignalMaskGuard
// puts back the thread's signal mask, whatever the test did in between.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "ktricks/core/child.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"

namespace ktricks::test_support {

// A private directory under the temp directory (its canonical path), removed with everything in it
// when the test ends.
class TempDir {
public:
    TempDir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "ktricks-test-XXXXXX").string();
        if (!::mkdtemp(pattern.data())) throw_errno("mkdtemp", pattern);
        path_ = std::filesystem::canonical(pattern);
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }

    // Creates (or replaces) the file `name` in the directory; returns its path.
    std::string write_file(const std::string& name, const std::string& content,
                           std::filesystem::perms perms) const {
        auto file = path_ / name;
        std::ofstream(file) << content;
        std::filesystem::permissions(file, perms);
        return file.string();
    }

private:
    std::filesystem::path path_;
};

// Both ends of a pipe, close-on-exec (plus any other pipe2 `flags`, e.g. O_NONBLOCK).
struct Pipe {
    explicit Pipe(int flags = O_CLOEXEC) {
        int fds[2];
        if (::pipe2(fds, flags) < 0) throw_errno("pipe2");
        read_end.reset(fds[0]);
        write_end.reset(fds[1]);
    }
    void write_byte() const {
        char c = 'x';
        if (::write(write_end.get(), &c, 1) != 1) throw_errno("write");
    }
    Fd read_end, write_end;
};

// The write ends of `pipes`, in order: descriptors to pass on.
inline std::vector<int> write_ends(const std::vector<Pipe>& pipes) {
    std::vector<int> fds;
    for (const auto& pipe : pipes) fds.push_back(pipe.write_end.get());
    return fds;
}

// Whether `fd` turns readable (or hung up) within `limit`.
inline bool readable_within(int fd, std::chrono::milliseconds limit) {
    pollfd poll_fd{fd, POLLIN, 0};
    return ::poll(&poll_fd, 1, static_cast<int>(limit.count())) == 1;
}

// Whether two descriptors, or a path and a descriptor, refer to the same file (device and inode).
inline bool same_file(int a, int b) {
    struct stat sa {
    }, sb{};
    return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}
inline bool same_file(const std::string& path, int fd) {
    struct stat sa {
    }, sb{};
    return ::stat(path.c_str(), &sa) == 0 && ::fstat(fd, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

// The descriptor numbers listed in a /proc/PID/fd directory.
inline std::set<int> fds_listed_in(const std::filesystem::path& proc_fd_dir) {
    std::set<int> fds;
    for (const auto& entry : std::filesystem::directory_iterator(proc_fd_dir))
        fds.insert(std::stoi(entry.path().filename().string()));
    return fds;
}

// SpawnOptions that run `argv` and otherwise keep the defaults.
inline SpawnOptions command(std::vector<std::string> argv) {
    SpawnOptions options;
    options.argv = std::move(argv);
    return options;
}

// Restores this thread's signal mask when the test ends, whatever happened in it.
class SignalMaskGuard {
public:
    SignalMaskGuard() { pthread_sigmask(SIG_SETMASK, nullptr, &saved_); }
    ~SignalMaskGuard() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
    SignalMaskGuard(const SignalMaskGuard&) = delete;
    SignalMaskGuard& operator=(const SignalMaskGuard&) = delete;

private:
    sigset_t saved_;
};

// Adds `signal_number` to this thread's signal mask; returns pthread_sigmask's result (0 on success).
inline int block_signal(int signal_number) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signal_number);
    return pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

}  // namespace ktricks::test_support
