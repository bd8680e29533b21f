// sockets: `ss`, but faster and scriptable. Lists sockets through sock_diag (NETLINK_SOCK_DIAG):
// one dump per protocol and address family, filtered in the kernel by inet_diag bytecode, no
// /proc/net text to parse. Maps sockets to processes by socket inode (/proc/PID/fd), streams
// socket-destroy events, destroys sockets (SOCK_DESTROY).
#pragma once

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"

namespace ktricks::sockets {

enum class Netid : std::uint8_t { tcp, udp, raw, u_str, u_dgr, u_seq, p_raw, p_dgr };
const char* to_string(Netid netid) noexcept;
bool is_inet(Netid netid) noexcept;

// TCP states as the kernel numbers them (include/net/tcp_states.h); UDP and unix reuse them
// (ESTABLISHED = connected, CLOSE = unconnected, LISTEN).
enum State : std::uint8_t {
    established = 1,
    syn_sent,
    syn_recv,
    fin_wait1,
    fin_wait2,
    time_wait,
    closed,
    close_wait,
    last_ack,
    listen,
    closing,
    new_syn_recv,
};
inline constexpr std::uint32_t all_states = 0x1ffe;  // bits 1..12
// ss's names: ESTAB, SYN-SENT, ..., UNCONN for CLOSE, LISTEN.
const char* state_name(std::uint8_t state) noexcept;

struct Endpoint {
    int family = 0;  // AF_INET, AF_INET6; 0 for unix/packet
    std::array<std::uint8_t, 16> address{};
    std::uint16_t port = 0;  // host order; raw sockets: the protocol
    std::string name;        // unix: path or "@abstract"; packet: interface
};

struct ProcessRef {
    pid_t pid = 0;
    int fd = -1;
    std::string command;  // /proc/PID/comm
};

// What tcp_info says, for -i. Fields a kernel did not send read as 0 (tcp_info grows).
struct TcpDetails {
    std::uint8_t snd_wscale = 0, rcv_wscale = 0;
    std::uint32_t rto = 0, ato = 0, snd_mss = 0, rcv_mss = 0, pmtu = 0, advmss = 0;
    std::uint32_t rtt = 0, rttvar = 0, min_rtt = 0, snd_cwnd = 0, snd_ssthresh = 0;
    std::uint32_t retrans = 0, total_retrans = 0, lost = 0, unacked = 0, rcv_space = 0;
    std::uint32_t last_data_sent = 0, last_data_recv = 0, last_ack_recv = 0;
    std::uint64_t bytes_sent = 0, bytes_acked = 0, bytes_received = 0, delivery_rate = 0, pacing_rate = 0;
    std::uint32_t segs_out = 0, segs_in = 0;
    std::size_t kernel_size = 0;  // bytes of tcp_info this kernel sent
};

struct SocketInfo {
    Netid netid = Netid::tcp;
    std::uint8_t state = 0;
    std::uint8_t protocol = 0;  // IPPROTO_* for inet sockets
    std::uint32_t recv_q = 0, send_q = 0;
    Endpoint local, peer;
    std::uint32_t inode = 0, uid = 0, peer_inode = 0, ifindex = 0;
    std::uint64_t cookie = 0;
    std::shared_ptr<const TcpDetails> tcp;  // shared: keeps SocketInfo small for 100k-row listings
    std::string congestion;
    std::optional<std::array<std::uint32_t, 9>> memory;  // SK_MEMINFO_*: r rb t tb f w o bl d
    std::vector<ProcessRef> processes;
    std::string netns;            // with --all-netns: the namespace's name ("" = ours)
    std::uint32_t mark = 0;       // SO_MARK (INET_DIAG_MARK: the kernel sends it to CAP_NET_ADMIN only)
    std::uint64_t cgroup_id = 0;  // the cgroup v2 id of the socket's creator (INET_DIAG_CGROUP_ID)
    bool v6only = false;          // IPV6_V6ONLY (sent for listening and unconnected sockets)
    // The pending TCP timer (inet_diag_msg): 0 none, 1 retransmit, 2 keepalive, 3 time-wait,
    // 4 zero-window probe; its expiry in ms and the retransmits so far.
    std::uint8_t timer = 0, retransmits = 0;
    std::uint32_t expires_ms = 0;
    std::string cgroup;  // with Query::cgroups: cgroup_id's path ("/system.slice/nginx.service")
    // For -e, what ss -e prints beyond uid, ino and sk. The shutdown state (sk_shutdown: 1 no more
    // receiving, 2 no more sending; sent by inet_diag and unix_diag); whether the kernel reported
    // IPV6_V6ONLY (an IPv6 socket in LISTEN or CLOSE); with Query::details, a unix socket's bound
    // path's inode and device (UNIX_DIAG_VFS: inode, the kernel's s_dev) and a unix listener's
    // pending connections (UNIX_DIAG_ICONS, sent for listeners: their peers' inodes).
    std::optional<std::uint8_t> shutdown;
    bool v6only_reported = false;
    std::optional<std::pair<std::uint32_t, std::uint32_t>> vfs;
    std::optional<std::vector<std::uint32_t>> pending;
    // Read from /proc/net/raw{,6} (no raw_diag): only the fields /proc has; ss -e adds none.
    bool from_proc = false;
};

// What a cgroup v2 path says about who runs there: the deepest systemd service or scope
// ("nginx.service", "session-4.scope") and a container id (64 hex digits) with its runtime, from
// the systemd driver's "docker-ID.scope" / "libpod-ID.scope" / "cri-containerd-ID.scope" or the
// cgroupfs driver's "/docker/ID". Empty fields when the path names none.
struct CgroupOwner {
    std::string unit, runtime, container;
};
CgroupOwner cgroup_owner(std::string_view path);

// A filter expression in ss's grammar (iproute2 misc/ssfilter.y), compiled to inet_diag bytecode
// and also decided here, as ss does (the kernel's answer and ss's own must both say yes):
//   [state NAME | exclude NAME]... EXPR
//   EXPR := EXPR or EXPR | EXPR [and] EXPR | not EXPR | ( EXPR )   and/or: equal precedence, left to right
//         | sport|dport OP PORT       OP: = == eq != ne neq > gt < lt >= ge geq <= le leq (default =)
//         | src|dst [=] HOST          HOST: [unix:|inet:|inet6:]ADDR[/PREFIX][:PORT], [V6ADDR]:PORT, *:PORT
//         | dev [=|!=] NAME|INDEX | fwmark [=|!=] MARK[/MASK] | cgroup [=|!=] PATH | autobound
// PORT: a number, * or a service name (getservbyname). ADDR: 10.0.0.1, 10.0.0 (short form), [::1],
// a host name (resolved once, at parse time), all/any. For unix sockets ADDR is an fnmatch
// pattern (/run/*, @abstract*) and ports are inodes; an inet condition matches no unix socket.
// State names: established syn-sent syn-recv fin-wait-1 fin-wait-2 time-wait closed close-wait
// last-ack listening closing unconnected, and the groups all connected synchronized bucket big.
struct FilterContext {
    // ss's "preferred family": the last of -x (AF_UNIX), -4, -6, -0 given. With AF_UNIX, a bare
    // src/dst value is a unix path pattern; with AF_INET/AF_INET6 addresses must be of that family.
    int family = 0;
    // Which services tables resolve :name (ss: those of the kinds listed; both if none).
    bool tcp = true, udp = true;
    // Look host names up (NSS: /etc/hosts, DNS); false makes a name an error (fuzzing, no network).
    bool resolve_names = true;
};

class Filter {
public:
    // Throws InputError naming the offending token and its position:
    // filter "sport = :http5": bad port "http5" at character 8 (expected a number 0-65535 or a service name).
    static Filter parse(std::string_view text);
    static Filter parse(std::string_view text, const FilterContext& context);

    // States selected by `state`/`exclude` (bit 1 << state), or 0 if the text names none.
    std::uint32_t states() const noexcept { return states_; }
    bool has_conditions() const noexcept { return root_ != nullptr; }
    // The address family a condition confined the listing to, as ss does: unix:/inet:/inet6:
    // prefixes, or the context's family once an address condition was parsed with it. 0: none.
    int family() const noexcept { return family_; }
    // The expression as INET_DIAG_REQ_BYTECODE; empty if there are no conditions or a condition
    // the kernel cannot run (dev, unix paths): then the decision is made here only.
    std::vector<std::byte> bytecode() const;
    // ss's own decision (run_ssfilter) for one socket; for inet sockets the kernel's bytecode has
    // already decided too when the listing came from a filtered dump.
    bool matches(const SocketInfo& socket) const;

    struct Node;

private:
    std::uint32_t states_ = 0;
    int family_ = 0;
    std::shared_ptr<const Node> root_;
};

// One state name (as in `state NAME`) to its bit mask; nullopt if unknown.
std::optional<std::uint32_t> parse_state(std::string_view name);

struct Query {
    // Which kinds; none set means tcp, udp, unix, raw and packet (those the kernel can list).
    bool tcp = false, udp = false, unix_sockets = false, raw = false, packet = false;
    bool ipv4 = true, ipv6 = true;
    // Bit mask of states (1 << State). 0: connected ones only (ss's default); see listening_states.
    std::uint32_t states = 0;
    std::optional<Filter> filter;
    bool tcp_info = false;      // -i: tcp_info and the congestion algorithm
    bool memory = false;        // -m: skmem
    bool processes = false;     // -p: owning processes, by socket inode
    bool processes_bpf = true;  // -p: try the BPF iterator first (false: the /proc walk only)
    bool cgroups = false;       // --cgroup: SocketInfo::cgroup from cgroup_id (one walk of the cgroup2 mount)
    bool details = false;       // -e: unix sockets' vfs and pending connections (SocketInfo::vfs, pending)
};

// The states ss shows by default (all but LISTEN, CLOSE, TIME-WAIT, SYN-RECV), for -l, for -a.
inline constexpr std::uint32_t connected_states =
    all_states & ~((1u << listen) | (1u << closed) | (1u << time_wait) | (1u << syn_recv));
inline constexpr std::uint32_t listening_states = (1u << listen) | (1u << closed);

struct Listing {
    std::vector<SocketInfo> sockets;
    // Kinds that were asked for implicitly but cannot be listed here ("raw: the kernel has no
    // raw_diag module (CONFIG_INET_RAW_DIAG)"). Asked for explicitly, they throw instead.
    std::vector<std::string> warnings;
    // With Query::processes: how the owners were found ("bpf" or "proc") and, for "proc", why the
    // BPF iterator did not run (find_socket_owners).
    std::string owners_method, owners_why_not_bpf;
    // Where raw sockets came from: "" (not listed), "sock_diag", or "/proc/net/raw" when the kernel
    // has no raw_diag (as ss falls back).
    std::string raw_source;
};

// Lists sockets of the current network namespace, or of `netns` (a name in /run/netns or a
// path). Throws std::system_error (EX_UNAVAILABLE for a missing diag module asked for by name).
Listing list(const Query& query, const std::string& netns = {});
// Every namespace: ours (netns "") then each one in /run/netns (netns: its name), then those only
// processes hold, found through /proc/*/ns/net and deduplicated by inode (netns: "pid:PID" with the
// unit or container of that pid's cgroup, "pid:812(docker/0123456789ab)").
Listing list_all_namespaces(const Query& query);

// Socket inode -> processes holding it, from one pass over /proc/*/fd (one readlinkat per
// descriptor, relative to an open /proc/PID/fd, and /proc/PID/comm only for owners found).
// With `wanted` non-empty, only those inodes are recorded. Each socket's processes are in ss's
// order (the last found first: highest pid, then highest fd).
std::unordered_map<std::uint32_t, std::vector<ProcessRef>> map_socket_owners(
    const std::vector<std::uint32_t>& wanted = {});
// The same map from a BPF task_file iterator: the kernel emits one record per socket file of each
// process, read back in a few large reads. Same processes, fds, comm and order as the /proc walk.
// Throws std::system_error saying why it cannot run: no BPF program in this build, no kernel BTF,
// not permitted (root, or CAP_BPF and CAP_PERFMON), a kernel without task_file iterators or
// in-kernel CO-RE (Linux < 5.17), or a child pid namespace (the kernel reports host pids).
std::unordered_map<std::uint32_t, std::vector<ProcessRef>> map_socket_owners_bpf();

struct SocketOwners {
    std::unordered_map<std::uint32_t, std::vector<ProcessRef>> owners;
    bool bpf = false;         // which way ran: the BPF iterator, or the /proc walk
    std::string why_not_bpf;  // with the /proc walk: why the BPF iterator did not run
};
// map_socket_owners_bpf() when try_bpf and it can run, otherwise map_socket_owners().
SocketOwners find_socket_owners(bool try_bpf = true);

// -K: destroys each TCP/UDP socket in `sockets` (SOCK_DESTROY); returns those the kernel
// destroyed. Throws std::system_error if the kernel lacks CONFIG_INET_DIAG_DESTROY (EOPNOTSUPP) or
// we lack CAP_NET_ADMIN.
std::vector<SocketInfo> destroy(const std::vector<SocketInfo>& sockets, const std::string& netns = {});

struct TableOptions {
    bool numeric = true;    // -n: no service names
    bool netid = false;     // the Netid column (more than one kind listed)
    bool state = true;      // the State column (ss drops it when one state is asked for)
    bool timers = false;    // -o: timer:(NAME,EXPIRES,RETRANSMITS) for TCP sockets with one pending
    bool cgroups = false;   // --cgroup: cgroup:PATH, then unit:NAME and container:RUNTIME/ID when named
    bool extended = false;  // -e: as ss -e (inet: uid ino sk fwmark cgroup v6only shutdown; unix:
                            // shutdown, ino:/dev: of the path, peers: of pending connections)
    bool netns = false;     // --all-netns: the namespace column
    bool header = true;     // the column titles line
};
// ss's columns, aligned; written to `fd` in large chunks.
void write_table(const std::vector<SocketInfo>& sockets, const TableOptions& options, int fd);
// {"netid":"tcp","state":"ESTAB","recv_q":0,...}
std::string to_json_line(const SocketInfo& socket);

// --- watching -------------------------------------------------------------------------------------
// The kernel multicasts every TCP and UDP socket it destroys (SKNLGRP_INET_TCP_DESTROY and the UDP
// and IPv6 groups of sock_diag) to whoever subscribed: `ss -E`, `ktricks sockets --watch`. Unix,
// raw and packet sockets have no such groups.

struct WatchOptions {
    // Kinds (tcp, udp; neither: both), families (ipv4, ipv6), `states` (a destroyed socket arrives in
    // its last state, often CLOSE: 0 takes every state) and `filter`. Other fields are ignored.
    Query query;
    std::string netns;                      // a name in /run/netns or a path; "": ours
    std::size_t receive_buffer = 4u << 20;  // a burst of closes (a server restart) must fit
};

struct WatchCallbacks {
    std::function<void(const SocketInfo&)> on_socket;  // each destroyed socket that matches
    std::function<void()> on_lost;                     // the kernel dropped events (ENOBUFS)
};

// The destroy-event watcher on the caller's EventLoop: no thread, no polling, no signal handling,
// nothing written anywhere. Callbacks run on the thread that runs the loop.
class Watcher {
public:
    Watcher(EventLoop& loop, WatchOptions options, WatchCallbacks callbacks);
    ~Watcher();
    Watcher(const Watcher&) = delete;
    Watcher& operator=(const Watcher&) = delete;
    // Opens a sock_diag socket (in `netns`), subscribes and puts it on the loop: a socket destroyed
    // after start() returns is reported. Throws std::system_error (a missing namespace, EPERM).
    void start();
    // Takes the socket off the loop and closes it: no callback runs after it.
    void stop() noexcept;

private:
    class Impl;
    std::unique_ptr<Impl> impl_;
};

// A destroyed socket as `ktricks sockets --watch --json` prints it: {"ts","source":"sockets",
// "event":"destroy"} followed by the fields of to_json_line. `environment()` gives a script's view.
Event to_event(const SocketInfo& socket);
// {"ts","source":"sockets","event":"lost","reason":"ENOBUFS"}: what on_lost stands for.
Event lost_event();

}  // namespace ktricks::sockets
