// The sockets of another process, as /proc shows them: /proc/PID/fd names each socket by inode,
// and /proc/PID/net/{tcp,tcp6,udp,udp6,unix} (the tables of that process's network namespace)
// give each inode its address and state. No netlink needed.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ktricks/core/fd.hpp"
#include "ktricks/core/proc.hpp"

namespace ktricks::handoff::detail {

struct ProcSocket {
    enum class Kind { tcp, udp, unix_stream } kind = Kind::tcp;
    unsigned long inode = 0;
    std::string local;   // SocketAddress text: tcp://127.0.0.1:8080, unix:/run/x.sock, unix:@name
    std::string remote;  // for connections, else empty
    int state = 0;       // tcp: 0x0A listen, 0x01 established ...; unix: 1 unconnected, 3 connected
    bool listening = false;
};

// The whole text of a (small, /proc) file; "" if it cannot be read.
std::string read_all(const std::string& path);

// One tcp/udp table of /proc/net in its own format; bad lines are skipped.
std::vector<ProcSocket> parse_proc_net_inet(std::string_view table, ProcSocket::Kind kind, bool ipv6);
// The stream sockets among /proc/net/unix entries (core's parse_proc_net_unix reads the table).
std::vector<ProcSocket> unix_stream_sockets(const std::vector<UnixSocketEntry>& entries);

// inode -> fd number for every socket in /proc/PID/fd.
std::map<unsigned long, int> socket_inodes(pid_t pid);
// Every socket of the network namespace `pid` lives in.
std::vector<ProcSocket> proc_sockets(pid_t pid);

// Whether a connection's local address belongs to a listener's (a wildcard listener matches any
// local address with its port).
bool belongs_to(const ProcSocket& connection, const ProcSocket& listener);

// A connection another process holds on one of our listeners: our own duplicate of its socket
// (pidfd_getfd), its local address and its peer's.
struct HeldConnection {
    Fd fd;
    std::string local, remote;
};
// The connections process `pid` (pidfd `pidfd`) holds that belong to `listeners` (belongs_to).
// Each of its sockets is duplicated and asked directly (getsockname, SO_ACCEPTCONN): reading
// /proc/net/tcp instead would walk every TIME_WAIT entry of the namespace, hundreds of
// milliseconds under load. Sockets it closes meanwhile, or that pidfd_getfd refuses, are skipped.
std::vector<HeldConnection> held_connections(pid_t pid, int pidfd, const std::vector<ProcSocket>& listeners);

}  // namespace ktricks::handoff::detail
