// Reading /proc/PID: what `ps` would say about a process that we found through the kernel.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ktricks {

// The pids in /proc (processes, not threads), ascending. Empty if /proc cannot be read; a process
// may exit right after it is listed.
std::vector<pid_t> process_ids();
// argv of a process from /proc/PID/cmdline; nullopt if it is gone or unreadable, an empty vector
// for kernel threads and zombies.
std::optional<std::vector<std::string>> process_command_line(pid_t pid);
// One line of /proc/PID/status by its key ("Uid" -> "0\t0\t0\t0", the text after "Uid:" with
// leading blanks removed); nullopt if the process is gone or the line is absent.
std::optional<std::string> process_status_field(pid_t pid, std::string_view key);
// One line of /proc/net/unix: a unix socket of our network namespace
// ("Num RefCount Protocol Flags Type St Inode Path", numbers in hex but the inode).
struct UnixSocketEntry {
    unsigned long flags = 0;  // 0x10000 (__SO_ACCEPTCON): a listener
    unsigned type = 0;        // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
    unsigned state = 0;
    unsigned long inode = 0;
    std::string path;  // "@name" for an abstract name, "" if unbound
};
// The table's text parsed (the header line and malformed lines are skipped).
std::vector<UnixSocketEntry> parse_proc_net_unix(std::string_view text);
// /proc/net/unix, read and parsed; empty if it cannot be read.
std::vector<UnixSocketEntry> read_proc_net_unix();
// argv joined by spaces, with arguments containing spaces or quotes single-quoted like a shell, and
// control bytes shown as \xNN (see printable).
std::string shell_join(const std::vector<std::string>& argv);

}  // namespace ktricks
