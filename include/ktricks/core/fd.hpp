// Fd: sole owner of a file descriptor. Move-only; closes on destruction.
#pragma once

#include <utility>

namespace ktricks {

class Fd {
public:
    Fd() noexcept = default;
    explicit Fd(int fd) noexcept : fd_(fd) {}
    Fd(Fd&& other) noexcept : fd_(other.release()) {}
    Fd& operator=(Fd&& other) noexcept {
        if (this != &other) reset(other.release());
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }

    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    // Gives up ownership without closing.
    [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
    // Closes the current descriptor (errors from close are ignored: the fd is gone either way).
    void reset(int fd = -1) noexcept;

    // fcntl(F_DUPFD_CLOEXEC): a second descriptor for the same open file description.
    Fd duplicate() const;

private:
    int fd_ = -1;
};

// Small helpers every trick needs; each throws std::system_error naming the call.
void set_nonblocking(int fd, bool on = true);
void set_cloexec(int fd, bool on = true);
bool is_cloexec(int fd);
// Number of open descriptors of this process (entries of /proc/self/fd), for leak checks.
int count_open_fds();

}  // namespace ktricks
