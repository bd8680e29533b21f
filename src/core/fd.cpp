#include "ktricks/core/fd.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "ktricks/core/error.hpp"

namespace ktricks {

void Fd::reset(int fd) noexcept {
    // close() must not be retried on EINTR on Linux: the descriptor is released either way.
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

Fd Fd::duplicate() const {
    int copy = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) throw_errno("fcntl(F_DUPFD_CLOEXEC)", "fd " + std::to_string(fd_));
    return Fd(copy);
}

void set_nonblocking(int fd, bool on) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0) throw_errno("fcntl(F_GETFL)", "fd " + std::to_string(fd));
    int wanted = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    if (wanted != flags && ::fcntl(fd, F_SETFL, wanted) < 0)
        throw_errno("fcntl(F_SETFL)", "fd " + std::to_string(fd));
}

void set_cloexec(int fd, bool on) {
    int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0) throw_errno("fcntl(F_GETFD)", "fd " + std::to_string(fd));
    int wanted = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    if (wanted != flags && ::fcntl(fd, F_SETFD, wanted) < 0)
        throw_errno("fcntl(F_SETFD)", "fd " + std::to_string(fd));
}

bool is_cloexec(int fd) {
    int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0) throw_errno("fcntl(F_GETFD)", "fd " + std::to_string(fd));
    return flags & FD_CLOEXEC;
}

int count_open_fds() {
    DIR* dir = ::opendir("/proc/self/fd");
    if (!dir) throw_errno("opendir", "/proc/self/fd");
    int count = 0;
    while (dirent* entry = ::readdir(dir))
        if (entry->d_name[0] != '.') ++count;
    ::closedir(dir);
    return count - 1;  // the directory stream's own descriptor
}

}  // namespace ktricks
