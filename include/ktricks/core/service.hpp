// Being a good daemon under a service manager: readiness and status over systemd's notify protocol,
// and log lines that journald files at the right priority.
//
// notify protocol (sd_notify(3)): if $NOTIFY_SOCKET names a unix datagram socket (a path, or
// "@name" for an abstract one), each call sends one datagram of newline-separated KEY=VALUE
// assignments: "READY=1", "STATUS=watching 3 interfaces", "STOPPING=1". Without $NOTIFY_SOCKET
// the calls do nothing, so daemons call them unconditionally.
//
// journald: a service's stderr is a stream to journald, announced by $JOURNAL_STREAM=DEV:INODE
// (systemd.exec(5)). A line that starts with "<N>" is filed at syslog priority N and the prefix is
// stripped. We add the prefix only when stderr really is that stream, so a terminal never sees it.
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

namespace ktricks {

// Sends STATE to $NOTIFY_SOCKET. Returns false when there is no manager to tell; throws
// std::system_error when $NOTIFY_SOCKET is set but the message cannot be delivered.
bool notify_service_manager(std::string_view state);
// Sends STATE to the notify socket NAME ("/path" or "@abstract"), for a caller that took
// $NOTIFY_SOCKET out of its environment (so its children do not inherit it). Throws
// std::system_error (EINVAL for a malformed name).
void notify_socket_send(std::string_view name, std::string_view state);
inline bool notify_ready(std::string_view status = {}) {
    return notify_service_manager(status.empty() ? std::string("READY=1")
                                                 : fmt::format("READY=1\nSTATUS={}", status));
}
inline bool notify_status(std::string_view status) {
    return notify_service_manager(fmt::format("STATUS={}", status));
}
inline bool notify_stopping() { return notify_service_manager("STOPPING=1"); }

enum class LogLevel { error = 3, warning = 4, notice = 5, info = 6, debug = 7 };

// "ktricks netwatch": what starts every log line (set once by the CLI; default "ktricks").
void set_log_program(std::string name);
// True when stderr is the journald stream of $JOURNAL_STREAM (then lines carry "<N>").
bool stderr_is_journal() noexcept;
// One line on stderr, written with a single write(2) so lines from several threads never mix.
// Control bytes in TEXT are escaped (it may carry outside input).
void log_line(LogLevel level, std::string_view text) noexcept;

template <typename... Args>
void log_error(fmt::format_string<Args...> format, Args&&... args) {
    log_line(LogLevel::error, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void log_warning(fmt::format_string<Args...> format, Args&&... args) {
    log_line(LogLevel::warning, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void log_info(fmt::format_string<Args...> format, Args&&... args) {
    log_line(LogLevel::info, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace ktricks
