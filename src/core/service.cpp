#include "ktricks/core/service.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"

namespace ktricks {

bool notify_service_manager(std::string_view state) {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (path == nullptr || *path == '\0') return false;
    notify_socket_send(path, state);
    return true;
}

void notify_socket_send(std::string_view name, std::string_view state) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (name.size() >= sizeof address.sun_path || (name[0] != '/' && name[0] != '@'))
        throw_error(EINVAL, "NOTIFY_SOCKET", printable(name));
    std::memcpy(address.sun_path, name.data(), name.size());
    // "@name" is the abstract namespace: a leading NUL, and the length counts only the name.
    if (name[0] == '@') address.sun_path[0] = '\0';
    auto length =
        static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + (name[0] == '/' ? 1 : 0));

    Fd socket_fd{::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
    if (!socket_fd) throw_errno("socket AF_UNIX for NOTIFY_SOCKET");
    ssize_t sent;
    do
        sent = ::sendto(socket_fd.get(), state.data(), state.size(), MSG_NOSIGNAL,
                        reinterpret_cast<const sockaddr*>(&address), length);
    while (sent < 0 && errno == EINTR);
    if (sent < 0) throw_errno("sendto NOTIFY_SOCKET", printable(name));
}

namespace {
std::mutex program_mutex;
std::string program_name = "ktricks";
}  // namespace

void set_log_program(std::string name) {
    std::lock_guard lock(program_mutex);
    program_name = std::move(name);
}

bool stderr_is_journal() noexcept {
    const char* stream = std::getenv("JOURNAL_STREAM");
    if (stream == nullptr) return false;
    unsigned long long device = 0, inode = 0;
    if (std::sscanf(stream, "%llu:%llu", &device, &inode) != 2) return false;
    struct stat status {};
    if (::fstat(STDERR_FILENO, &status) != 0) return false;
    return status.st_dev == device && status.st_ino == inode;
}

void log_line(LogLevel level, std::string_view text) noexcept {
    try {
        std::string line;
        if (stderr_is_journal()) line = fmt::format("<{}>", static_cast<int>(level));
        {
            std::lock_guard lock(program_mutex);
            line += program_name;
        }
        line += ": ";
        if (level == LogLevel::warning) line += "warning: ";
        line += printable(text);
        line += '\n';
        // Best effort: a log line must never take the daemon down (EPIPE, a full disk).
        for (std::string_view rest = line; !rest.empty();) {
            ssize_t written = ::write(STDERR_FILENO, rest.data(), rest.size());
            if (written < 0 && errno == EINTR) continue;
            if (written <= 0) break;
            rest.remove_prefix(static_cast<size_t>(written));
        }
    } catch (...) {}
}

}  // namespace ktricks
