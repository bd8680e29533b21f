// procwatch: every fork, exec, exit (with status), uid/gid/sid change, comm change, ptrace attach
// and core dump on the machine, pushed by the kernel's proc connector (NETLINK_CONNECTOR,
// CN_IDX_PROC) the moment it happens: no polling of /proc, nothing missed between polls.
//
// The kernel sends pids and ids only. Command lines and user names are read from /proc when the
// event arrives; a short-lived process may be gone by then (exit events always are), so those
// fields are "unreadable" rather than wrong: Enrichment::readable says which. Commands seen at
// exec are remembered, so an exit still names the command it ended.
//
// If the kernel produces events faster than we read them, the socket overruns (ENOBUFS) and the
// lost events are gone; that is reported (Callbacks::on_lost), never hidden. Needs CAP_NET_ADMIN in the
// initial user and pid namespaces.
#pragma once

#include <sys/types.h>

#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"

namespace ktricks::procwatch {

enum class EventType { fork, exec, uid, gid, sid, ptrace, comm, coredump, exit };
const char* to_string(EventType type) noexcept;
// "fork", "exec", ... ; nullopt if unknown.
std::optional<EventType> parse_event_type(std::string_view name);

struct ProcessEvent {
    EventType type = EventType::fork;
    std::uint64_t timestamp_ns = 0;  // CLOCK_MONOTONIC, as the kernel stamped it
    std::uint32_t cpu = 0;
    pid_t pid = 0, tgid = 0;                       // the process (fork: the child)
    pid_t parent_pid = 0, parent_tgid = 0;         // fork, exit, coredump
    std::uint32_t uid = 0, euid = 0;               // uid event; gid event uses them for rgid/egid
    pid_t tracer_pid = 0, tracer_tgid = 0;         // ptrace (0: detached)
    std::uint32_t exit_code = 0, exit_signal = 0;  // exit: exit_code is the wait status
    std::string comm;                              // comm event: the new name
    bool thread() const noexcept { return pid != tgid; }
    // From the wait status of an exit: "exited with status N" / "killed by signal N".
    int exit_status() const noexcept { return static_cast<int>((exit_code >> 8) & 0xff); }
    int killed_by() const noexcept { return static_cast<int>(exit_code & 0x7f); }
};

// Decodes one proc connector message; nullopt for anything else (acks, short or foreign
// messages). Reads nothing beyond message.nlmsg_len.
std::optional<ProcessEvent> decode(const nlmsghdr& message);

struct Enrichment {
    bool readable = false;             // false: the process was gone (or hidden) when we looked
    std::vector<std::string> command;  // argv from /proc/PID/cmdline (or remembered from exec)
    std::string comm;                  // /proc/PID/comm
    std::optional<std::uint32_t> uid;  // real uid from /proc/PID/status
    std::string user;                  // its name, if it has one
};

struct Options {
    std::vector<EventType> events;     // empty: all
    std::string comm_glob;             // fnmatch on comm (or the remembered one); empty: all
    std::optional<std::uint32_t> uid;  // real uid; events whose uid cannot be read do not match
    bool threads = false;              // also thread creation/exit (pid != tgid)
    std::size_t receive_buffer = 8 << 20;
};

// The event as `ktricks procwatch --json` prints it and as --exec scripts see it (environment()):
// {"ts","source":"procwatch","event","pid","tid"?,"ppid"?,"exit_code"|"signal"?,...,"comm","command",
//  "uid"?,"user"?,"readable"}
Event to_event(const ProcessEvent& event, const Enrichment& enrichment);

// What the watcher tells its caller, on the caller's loop.
struct Callbacks {
    std::function<void(const ProcessEvent&, const Enrichment&)> on_event;  // each matching event
    std::function<void()> on_lost;  // the kernel dropped events (receive buffer overrun)
    // Events of these pids, and of every process they fork, are skipped (e.g. our own --exec
    // scripts: their events would feed back into --exec).
    std::function<bool(pid_t)> ignore;
};

// The watcher on the caller's EventLoop: no thread, no polling, no signal handling.
class Watcher {
public:
    Watcher(EventLoop& loop, Options options, Callbacks callbacks);
    ~Watcher();
    Watcher(const Watcher&) = delete;
    Watcher& operator=(const Watcher&) = delete;
    // Subscribes to the proc connector. Throws std::system_error if it is not available (EPERM
    // without CAP_NET_ADMIN, or a kernel without CONFIG_PROC_EVENTS).
    void start();
    // Unsubscribes: no event is delivered after it.
    void stop() noexcept;

private:
    class Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace ktricks::procwatch
