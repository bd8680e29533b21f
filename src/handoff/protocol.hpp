// The wire formats of handoff, parsed from outside bytes: NOTIFY_SOCKET datagrams (systemd's
// sd_notify protocol), the control socket's requests and answers, the LISTEN_* environment a
// generation receives, and the uWSGI zerg greeting. Pure functions, fuzzed.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ktricks/handoff.hpp"

namespace ktricks::handoff::detail {

// One sd_notify datagram: newline-separated KEY=VALUE assignments. Unknown keys are ignored (the
// protocol grows); a malformed line is skipped, never fatal.
struct NotifyMessage {
    bool ready = false;
    bool reloading = false;
    bool stopping = false;
    bool fdstore = false;
    bool fdstore_remove = false;
    std::optional<std::string> status;
    std::optional<std::string> fdname;
    std::optional<pid_t> main_pid;
};
NotifyMessage parse_notify(std::string_view datagram);

// A valid fd name for LISTEN_FDNAMES / FDNAME=: 1-255 printable ASCII bytes, no ':' (systemd's rule).
bool valid_fd_name(std::string_view name) noexcept;

// The control socket speaks one line each way: "reload\n" or "status\n"; the answer is one JSON
// object and "\n". Throws InputError for anything else.
enum class ControlRequest { reload, status };
ControlRequest parse_control_request(std::string_view line);
// The answer to "reload", as ktricks reload reads it. Throws InputError if it is not one.
ReloadResult parse_reload_answer(std::string_view line);
std::string reload_answer(const ReloadResult& result);

// LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES as sd_listen_fds_with_names reads them: the names of
// fds 3.., or nothing if LISTEN_PID is not `self` or the values are malformed (then the variables
// were not meant for us). Missing names are "unknown", like systemd's.
std::optional<std::vector<std::string>> parse_listen_environment(const char* listen_fds,
                                                                 const char* listen_pid,
                                                                 const char* listen_fdnames, pid_t self);

// The status code of the HTTP response a readiness probe read ("HTTP/1.1 200 OK" -> 200), or 0 if
// `response` does not start with an HTTP/1.x status line.
int parse_http_status(std::string_view response) noexcept;

// The uWSGI zerg greeting: "uwsgi-zerg" followed by the descriptor count as a native int.
inline constexpr std::string_view zerg_magic = "uwsgi-zerg";
std::string zerg_greeting(int fd_count);
// The count a greeting announces, or nullopt if it is not one.
std::optional<int> parse_zerg_greeting(std::string_view bytes);

// The messages on a generation's handoff channel (SOCK_SEQPACKET, one record each).
inline constexpr std::string_view hello_message = "hello";      // generation -> serve: I can hand over
inline constexpr std::string_view upgrade_message = "upgrade";  // serve -> generation, + successor fd
inline constexpr char connection_tag = 'C';                     // predecessor -> successor, + conn fd

}  // namespace ktricks::handoff::detail
