// ktricks sockets: listing through sock_diag, ss's table, JSON, SOCK_DESTROY and destroy events.
#include "ktricks/sockets.hpp"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/packet_diag.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <set>

#include "ktricks/core/error.hpp"
#include "ktricks/netlink.hpp"
#include "sockets/cgroups.hpp"
#include "sockets/decode.hpp"
#include "sockets/proc_raw.hpp"

namespace ktricks::sockets {

const char* to_string(Netid netid) noexcept {
    switch (netid) {
        case Netid::tcp: return "tcp";
        case Netid::udp: return "udp";
        case Netid::raw: return "raw";
        case Netid::u_str: return "u_str";
        case Netid::u_dgr: return "u_dgr";
        case Netid::u_seq: return "u_seq";
        case Netid::p_raw: return "p_raw";
        case Netid::p_dgr: return "p_dgr";
    }
    return "?";
}

bool is_inet(Netid netid) noexcept {
    return netid == Netid::tcp || netid == Netid::udp || netid == Netid::raw;
}

const char* state_name(std::uint8_t state) noexcept {
    static const char* const names[] = {"UNKNOWN",    "ESTAB",     "SYN-SENT",    "SYN-RECV",   "FIN-WAIT-1",
                                        "FIN-WAIT-2", "TIME-WAIT", "UNCONN",      "CLOSE-WAIT", "LAST-ACK",
                                        "LISTEN",     "CLOSING",   "NEW-SYN-RECV"};
    return state < std::size(names) ? names[state] : "UNKNOWN";
}

namespace {

struct Kind {
    const char* name;
    int family;    // AF_INET, AF_INET6 (AF_UNSPEC: TCP of both), AF_UNIX, AF_PACKET
    int protocol;  // IPPROTO_* for inet
    const char* module;
};

// Asked for by name but impossible here: EX_UNAVAILABLE, naming the module to load or build.
[[noreturn]] void missing_module(const Kind& kind) {
    throw std::system_error(
        EPROTONOSUPPORT, std::generic_category(),
        fmt::format("list {} sockets: the kernel has no {} module", kind.name, kind.module));
}

// The kernel answers ENOENT when the diag handler for a family/protocol is neither built in nor
// loadable (sock_diag's request_module failed).
bool is_missing_module(const std::system_error& error) { return error.code().value() == ENOENT; }

// Raw sockets without raw_diag: the kernel refuses the dump with ENOENT (no handler), EINVAL or
// EOPNOTSUPP (older kernels' inet_diag); ss then reads /proc/net/raw{,6}, and so do we.
bool raw_dump_unavailable(const std::system_error& error) {
    int code = error.code().value();
    return code == ENOENT || code == EINVAL || code == EOPNOTSUPP;
}

// The filter's `state` clauses win over -a/-l, which win over ss's default (connected only).
std::uint32_t request_states(const Query& query) {
    if (query.filter && query.filter->states()) return query.filter->states();
    return query.states ? query.states : connected_states;
}

// /proc/net/raw{,6} of this thread's namespace, keeping the states the query asks for (the kernel's
// dump would have filtered them); the filter's conditions are decided by the caller, as for a dump.
void read_raw_from_proc(const Query& query, int family, Listing& listing) {
    std::size_t first = listing.sockets.size();
    detail::read_proc_net_raw(family, listing.sockets, listing.warnings);
    std::uint32_t states = request_states(query);
    auto begin = listing.sockets.begin() + static_cast<std::ptrdiff_t>(first);
    listing.sockets.erase(std::remove_if(begin, listing.sockets.end(),
                                         [&](const SocketInfo& socket) {
                                             return socket.state > 31 || !(states & (1u << socket.state));
                                         }),
                          listing.sockets.end());
}

// Appends every socket of one sock_diag dump that DECODE accepts. A dump the kernel restarts
// (NLM_F_DUMP_INTR) first drops what the interrupted pass appended, so no socket is listed twice.
template <typename Decode>
void dump_into(netlink::Socket& diag, netlink::Request& request, const std::string& what,
               std::vector<SocketInfo>& out, Decode decode) {
    std::size_t first = out.size();
    diag.dump(request,
              [&](const nlmsghdr& message) {
                  // Decoded in place: a SocketInfo is a few hundred bytes, moving each one showed.
                  if (!decode(message, out.emplace_back())) out.pop_back();
                  return true;
              },
              what, {.on_restart = [&] { out.resize(first); }});
}

std::uint8_t inet_extensions(const Query& query, int protocol) {
    std::uint8_t ext = 0;
    if (query.tcp_info && protocol == IPPROTO_TCP)
        ext |= (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_CONG - 1));
    if (query.memory) ext |= 1 << (INET_DIAG_SKMEMINFO - 1);
    return ext;
}

void put_bytecode(netlink::Request& request, const Query& query) {
    if (auto code = query.filter ? query.filter->bytecode() : std::vector<std::byte>{}; !code.empty()) {
        request.ensure_room(MNL_ATTR_HDRLEN + code.size());
        mnl_attr_put(request.header(), INET_DIAG_REQ_BYTECODE, code.size(), code.data());
    }
}

void dump_inet(netlink::Socket& diag, const Query& query, const Kind& kind, std::vector<SocketInfo>& out) {
    netlink::Request request(SOCK_DIAG_BY_FAMILY, 0, 64 * 1024);
    inet_diag_req_v2 header{};
    header.sdiag_family = static_cast<std::uint8_t>(kind.family);
    header.sdiag_protocol = static_cast<std::uint8_t>(kind.protocol);
    header.idiag_states = request_states(query);
    header.idiag_ext = inet_extensions(query, kind.protocol);
    if (kind.protocol == IPPROTO_RAW) header.pad = IPPROTO_RAW;  // sdiag_raw_protocol: every raw socket
    request.put_header(header);
    put_bytecode(request, query);
    auto protocol = static_cast<std::uint8_t>(kind.protocol);
    dump_into(diag, request, fmt::format("list {} sockets", kind.name), out,
              [&](const nlmsghdr& message, SocketInfo& info) {
                  return detail::decode_inet(message, protocol, info);
              });
}

// TCP of both families in one pass over the kernel's tables. A SOCK_DIAG_BY_FAMILY request names
// one family, so listing IPv4 and IPv6 (as ss does) walks every TCP hash table twice, and a walk of
// the established table visits all its buckets (262,144 here) however few sockets there are: about
// 5 ms of system time a walk on this machine, a third of `-tanp`'s kernel time at 18k sockets. The
// older TCPDIAG_GETSOCK request is served by the same kernel code with the family left open
// (inet_diag_dump_compat: AF_UNSPEC), so one walk returns both. Its rows come in table order, the
// families mixed; a stable partition gives ss's order (IPv4 first, each family in table order,
// exactly what the per-family dumps return). Returns false, with nothing appended, if the kernel
// refuses the request (a kernel without the compat path); the caller then dumps per family.
bool dump_tcp_both_families(netlink::Socket& diag, const Query& query, std::vector<SocketInfo>& out) {
    std::size_t first = out.size();
    netlink::Request request(TCPDIAG_GETSOCK, 0, 64 * 1024);
    inet_diag_req header{};
    header.idiag_family = AF_INET;  // ignored by the kernel for a dump (both families)
    header.idiag_states = request_states(query);
    header.idiag_ext = inet_extensions(query, IPPROTO_TCP);
    request.put_header(header);
    put_bytecode(request, query);
    try {
        dump_into(diag, request, "list tcp sockets", out, [&](const nlmsghdr& message, SocketInfo& info) {
            return detail::decode_inet(message, IPPROTO_TCP, info);
        });
    } catch (const std::system_error&) {
        out.resize(first);
        return false;
    }
    auto begin = out.begin() + static_cast<std::ptrdiff_t>(first);
    auto is_v4 = [](const SocketInfo& socket) { return socket.local.family == AF_INET; };
    if (!std::is_partitioned(begin, out.end(), is_v4)) std::stable_partition(begin, out.end(), is_v4);
    return true;
}

void dump_unix(netlink::Socket& diag, const Query& query, std::vector<SocketInfo>& out) {
    netlink::Request request(SOCK_DIAG_BY_FAMILY, 0);
    unix_diag_req header{};
    header.sdiag_family = AF_UNIX;
    header.udiag_states = request_states(query);
    header.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_UID |
                        (query.memory ? UDIAG_SHOW_MEMINFO : 0) |
                        (query.details ? UDIAG_SHOW_VFS | UDIAG_SHOW_ICONS : 0);
    request.put_header(header);
    dump_into(diag, request, "list unix sockets", out, detail::decode_unix);
}

void dump_packet(netlink::Socket& diag, const Query& query, std::vector<SocketInfo>& out) {
    if (!(request_states(query) & (1u << closed)))
        return;  // packet sockets have no state: ss shows them as UNCONN
    netlink::Request request(SOCK_DIAG_BY_FAMILY, 0);
    packet_diag_req header{};
    header.sdiag_family = AF_PACKET;
    header.pdiag_show = PACKET_SHOW_INFO | PACKET_SHOW_MEMINFO;  // meminfo: the Recv-Q
    request.put_header(header);
    dump_into(diag, request, "list packet sockets", out, [&](const nlmsghdr& message, SocketInfo& info) {
        if (!detail::decode_packet(message, info)) return false;
        if (!query.memory) info.memory.reset();
        return true;
    });
}

void list_here(const Query& query, Listing& listing) {
    // Address space, not memory: untouched pages cost nothing, and growing a vector of 100k
    // SocketInfo by doubling moved every row several times (page faults dominated -tan at 18k).
    listing.sockets.reserve(listing.sockets.size() + (1u << 16));
    bool any_kind = query.tcp || query.udp || query.unix_sockets || query.raw || query.packet;
    // An address condition with a family (unix:, inet:, or -x/-4/-6 in force) confines the
    // listing to that family, as in ss.
    int only = query.filter ? query.filter->family() : 0;
    bool ipv4 = only ? only == AF_INET : query.ipv4;
    bool ipv6 = only ? only == AF_INET6 : query.ipv6;
    auto diag = netlink::Socket::open(NETLINK_SOCK_DIAG);
    struct Job {
        Kind kind;
        bool wanted, explicit_;
    };
    std::vector<Job> jobs;
    auto add_inet = [&](const char* name, int protocol, const char* module, bool asked) {
        bool wanted = asked || !any_kind;
        if (ipv4 && ipv6 && protocol == IPPROTO_TCP) {  // AF_UNSPEC: both in one dump, if the kernel can
            jobs.push_back({{name, AF_UNSPEC, protocol, module}, wanted, asked});
            return;
        }
        if (ipv4) jobs.push_back({{name, AF_INET, protocol, module}, wanted, asked});
        if (ipv6) jobs.push_back({{name, AF_INET6, protocol, module}, wanted, asked});
    };
    // ss's order: packet, unix, raw, udp, tcp.
    bool families_narrowed = !(query.ipv4 && query.ipv6);
    bool other_families = only == 0 || only == AF_UNIX;
    jobs.push_back({{"packet", AF_PACKET, 0, "af_packet_diag (CONFIG_PACKET_DIAG)"},
                    only == 0 && (query.packet || (!any_kind && !families_narrowed)),
                    query.packet});
    jobs.push_back({{"unix", AF_UNIX, 0, "unix_diag (CONFIG_UNIX_DIAG)"},
                    other_families && (query.unix_sockets || (!any_kind && !families_narrowed)),
                    query.unix_sockets});
    if (only != AF_UNIX) {
        add_inet("raw", IPPROTO_RAW, "raw_diag (CONFIG_INET_RAW_DIAG)", query.raw);
        add_inet("udp", IPPROTO_UDP, "udp_diag (CONFIG_INET_UDP_DIAG)", query.udp);
        add_inet("tcp", IPPROTO_TCP, "tcp_diag (CONFIG_INET_TCP_DIAG)", query.tcp);
    }
    std::map<std::string, bool> warned;
    for (auto& job : jobs) {
        if (!job.wanted) continue;
        std::size_t first = listing.sockets.size();
        try {
            if (job.kind.family == AF_UNIX) {
                dump_unix(diag, query, listing.sockets);
            } else if (job.kind.family == AF_PACKET) {
                dump_packet(diag, query, listing.sockets);
            } else if (job.kind.family == AF_UNSPEC) {
                if (!dump_tcp_both_families(diag, query, listing.sockets)) {
                    Kind one = job.kind;
                    for (int family : {AF_INET, AF_INET6}) {
                        one.family = family;
                        dump_inet(diag, query, one, listing.sockets);
                    }
                }
            } else if (job.kind.protocol == IPPROTO_RAW && listing.raw_source == "/proc/net/raw") {
                read_raw_from_proc(query, job.kind.family, listing);
            } else {
                dump_inet(diag, query, job.kind, listing.sockets);
                if (job.kind.protocol == IPPROTO_RAW) listing.raw_source = "sock_diag";
            }
        } catch (const std::system_error& error) {
            if (job.kind.protocol == IPPROTO_RAW && raw_dump_unavailable(error)) {
                listing.sockets.resize(first);
                listing.raw_source = "/proc/net/raw";
                read_raw_from_proc(query, job.kind.family, listing);
            } else {
                if (!is_missing_module(error)) throw;
                if (job.explicit_) missing_module(job.kind);
                if (!warned[job.kind.name])
                    listing.warnings.push_back(
                        fmt::format("{} sockets not listed: the kernel has no {} module", job.kind.name,
                                    job.kind.module));
                warned[job.kind.name] = true;
            }
        }
        // ss decides again in user space what the kernel's bytecode let through (and alone for
        // unix sockets): both must say yes.
        if (query.filter && query.filter->has_conditions()) {
            auto begin = listing.sockets.begin() + static_cast<std::ptrdiff_t>(first);
            listing.sockets.erase(
                std::remove_if(begin, listing.sockets.end(),
                               [&](const SocketInfo& socket) { return !query.filter->matches(socket); }),
                listing.sockets.end());
        }
    }
}

void attach_cgroups(Listing& listing) {
    detail::CgroupPaths paths;
    for (auto& socket : listing.sockets)
        if (socket.cgroup_id) socket.cgroup = paths.path(socket.cgroup_id);
}

void attach_owners(Listing& listing, std::future<SocketOwners>& owners) {
    SocketOwners found_owners = owners.get();
    listing.owners_method = found_owners.bpf ? "bpf" : "proc";
    listing.owners_why_not_bpf = std::move(found_owners.why_not_bpf);
    auto& map = found_owners.owners;
    // An inode is one socket, listed once: its processes move, not copy (18k vectors of strings).
    for (auto& socket : listing.sockets)
        if (socket.inode)
            if (auto found = map.find(socket.inode); found != map.end())
                socket.processes = std::move(found->second);
}

}  // namespace

Listing list(const Query& query, const std::string& netns) {
    Listing listing;
    // Finding the owners (BPF iterator or /proc walk) and the dumps are independent: run them side by side.
    std::future<SocketOwners> owners;
    if (query.processes)
        owners = std::async(std::launch::async,
                            [try_bpf = query.processes_bpf] { return find_socket_owners(try_bpf); });
    if (netns.empty()) {
        list_here(query, listing);
    } else {
        Fd namespace_fd = netlink::open_netns(netns);
        netlink::NetnsGuard guard(namespace_fd.get(), netns);
        list_here(query, listing);
    }
    if (query.processes) attach_owners(listing, owners);
    if (query.cgroups) attach_cgroups(listing);
    return listing;
}

namespace {

struct UnnamedNamespace {
    std::string path;   // /proc/PID/ns/net
    std::string label;  // "pid:PID" and, when the pid's cgroup names one, "(unit)" or "(runtime/id)"
};

// The cgroup v2 path of a process ("0::/system.slice/nginx.service" in /proc/PID/cgroup).
std::string process_cgroup(const std::string& pid) {
    std::ifstream file("/proc/" + pid + "/cgroup");
    std::string line;
    while (std::getline(file, line))
        if (line.starts_with("0::")) return line.substr(3);
    return {};
}

// Network namespaces that only processes hold (containers, sandboxes): one per namespace inode,
// labelled with the lowest pid in it, skipping ours and those named in /run/netns.
std::vector<UnnamedNamespace> unnamed_namespaces(const std::vector<std::string>& named) {
    std::set<netlink::NetnsId> seen;
    if (auto ours = netlink::netns_id("/proc/self/ns/net")) seen.insert(*ours);
    for (const auto& name : named)
        if (auto id = netlink::netns_id("/run/netns/" + name)) seen.insert(*id);
    std::vector<UnnamedNamespace> out;
    for (const auto& space : netlink::process_namespaces()) {
        if (seen.count(space.id)) continue;
        std::string pid = std::to_string(space.pid);
        std::string label = "pid:" + pid;
        auto owner = cgroup_owner(process_cgroup(pid));
        if (!owner.container.empty())
            label += "(" + (owner.runtime.empty() ? "" : owner.runtime + "/") +
                     owner.container.substr(0, 12) + ")";
        else if (!owner.unit.empty())
            label += "(" + owner.unit + ")";
        out.push_back({"/proc/" + pid + "/ns/net", label});
    }
    return out;
}

}  // namespace

Listing list_all_namespaces(const Query& query) {
    Query without_processes = query;
    without_processes.processes = false;
    std::future<SocketOwners> owners;
    if (query.processes)
        owners = std::async(std::launch::async,
                            [try_bpf = query.processes_bpf] { return find_socket_owners(try_bpf); });
    Listing all = list(without_processes);
    auto add = [&](const std::string& where, const std::string& label) {
        Listing one;
        try {
            one = list(without_processes, where);
        } catch (const std::system_error& error) {
            all.warnings.push_back(fmt::format("network namespace {}: {}", label, error.what()));
            return;
        }
        for (auto& socket : one.sockets) {
            socket.netns = label;
            all.sockets.push_back(std::move(socket));
        }
        for (auto& warning : one.warnings) all.warnings.push_back(fmt::format("{}: {}", label, warning));
    };
    auto named = netlink::list_netns();
    for (const auto& name : named) add(name, name);
    for (const auto& space : unnamed_namespaces(named)) add(space.path, space.label);
    if (query.processes) attach_owners(all, owners);
    return all;
}

// --- destroy ------------------------------------------------------------------------------------

std::vector<SocketInfo> destroy(const std::vector<SocketInfo>& sockets, const std::string& netns) {
    std::optional<Fd> namespace_fd;
    std::optional<netlink::NetnsGuard> guard;
    if (!netns.empty()) {
        namespace_fd = netlink::open_netns(netns);
        guard.emplace(namespace_fd->get(), netns);
    }
    auto diag = netlink::Socket::open(NETLINK_SOCK_DIAG);
    guard.reset();
    std::vector<SocketInfo> destroyed;
    for (const auto& socket : sockets) {
        if (socket.netid != Netid::tcp && socket.netid != Netid::udp) continue;
        netlink::Request request(SOCK_DESTROY, 0);
        inet_diag_req_v2 header{};
        header.sdiag_family = static_cast<std::uint8_t>(socket.local.family);
        header.sdiag_protocol = socket.protocol;
        header.idiag_states = all_states;
        header.id.idiag_sport = htons(socket.local.port);
        header.id.idiag_dport = htons(socket.peer.port);
        std::memcpy(header.id.idiag_src, socket.local.address.data(), 16);
        std::memcpy(header.id.idiag_dst, socket.peer.address.data(), 16);
        header.id.idiag_if = socket.ifindex;
        header.id.idiag_cookie[0] = static_cast<std::uint32_t>(socket.cookie);
        header.id.idiag_cookie[1] = static_cast<std::uint32_t>(socket.cookie >> 32);
        request.put_header(header);
        try {
            diag.transact(request, {},
                          fmt::format("destroy {} socket {}", to_string(socket.netid), socket.inode));
            destroyed.push_back(socket);
        } catch (const std::system_error& error) {
            int code = error.code().value();
            if (code == ENOENT) continue;  // gone meanwhile
            if (code == EOPNOTSUPP)
                throw std::system_error(
                    error.code(),
                    fmt::format("{} (the kernel lacks CONFIG_INET_DIAG_DESTROY)", error.what()));
            throw;
        }
    }
    return destroyed;
}

// --- output -------------------------------------------------------------------------------------

namespace {

void append_ipv4(std::string& out, const std::uint8_t* a) {
    char text[16];
    char* p = text;
    for (int i = 0; i < 4; ++i) {
        if (i) *p++ = '.';
        p = std::to_chars(p, text + sizeof(text), a[i]).ptr;
    }
    out.append(text, p);
}

template <typename T>
void append_number(std::string& out, T value) {
    char text[24];
    out.append(text, std::to_chars(text, text + sizeof(text), value).ptr);
}

// `text` as printable() shows it, without a temporary string when there is nothing to escape.
void append_printable(std::string& out, std::string_view text) {
    if (first_control_byte(text) < 0) out.append(text);
    else
        out += printable(text);
}

class InterfaceNames {
public:
    const std::string& operator()(std::uint32_t index) {
        auto found = names_.find(index);
        if (found != names_.end()) return found->second;
        char name[IF_NAMESIZE] = {};
        std::string text = ::if_indextoname(index, name) ? name : std::to_string(index);
        return names_[index] = text;
    }

private:
    std::map<std::uint32_t, std::string> names_;
};

// ss's inet address token: v4 numeric, v6 in brackets, an any-address of a dual-stack (not
// v6only) socket as "*", then "%ifname" for a bound device; the ':' joining the port is part of it.
void append_address(std::string& out, const Endpoint& end, bool v6only, std::uint32_t ifindex,
                    InterfaceNames& ifname) {
    if (end.family == AF_INET) {
        append_ipv4(out, end.address.data());
    } else if (end.family == AF_INET6) {
        static constexpr std::array<std::uint8_t, 16> any{};
        if (!v6only && end.address == any) {
            out += '*';
        } else {
            char text[INET6_ADDRSTRLEN];
            ::inet_ntop(AF_INET6, end.address.data(), text, sizeof(text));
            out += '[';
            out += text;
            out += ']';
        }
    }
    if (ifindex && end.family) {
        out += '%';
        out += ifname(ifindex);
    }
    out += ':';
}

struct ServiceNames {
    std::map<std::pair<int, bool>, std::string> cache;
    const std::string& name(int port, bool udp) {
        auto key = std::make_pair(port, udp);
        auto found = cache.find(key);
        if (found != cache.end()) return found->second;
        servent entry{}, *result = nullptr;
        char buffer[1024];
        ::getservbyport_r(htons(static_cast<std::uint16_t>(port)), udp ? "udp" : "tcp", &entry, buffer,
                          sizeof(buffer), &result);
        return cache[key] = result ? result->s_name : std::to_string(port);
    }
};

// iproute2's ll_proto_n2a for the ethertypes a packet socket is likely to be bound to.
std::string ethertype_text(std::uint16_t type, bool numeric) {
    static const std::map<std::uint16_t, const char*> names = {
        {0x0001, "802_3"},    {0x0002, "ax25"},    {0x0004, "802_2"},   {0x0005, "snap"},    {0x000c, "can"},
        {0x0060, "loop"},     {0x0800, "ip"},      {0x0806, "arp"},     {0x8035, "rarp"},    {0x86dd, "ipv6"},
        {0x8100, "802.1Q"},   {0x88a8, "802.1ad"}, {0x8847, "mpls_uc"}, {0x8848, "mpls_mc"}, {0x6558, "teb"},
        {0x8863, "ppp_disc"}, {0x8864, "ppp_ses"}, {0x88cc, "LLDP"},    {0x88ca, "tipc"}};
    if (!numeric)
        if (auto found = names.find(type); found != names.end()) return found->second;
    return fmt::format("[{}]", type);
}

// ss's print_ms_timer: "1min", "9.500ms"... in its own rounding.
std::string timer_text(std::uint32_t timeout) {
    unsigned secs = timeout / 1000, minutes = secs / 60, msecs = timeout % 1000;
    secs %= 60;
    std::string out;
    if (minutes) {
        msecs = 0;
        out = fmt::format("{}min", minutes);
        if (minutes > 9) secs = 0;
    }
    if (secs) {
        if (secs > 9) msecs = 0;
        out += fmt::format("{}{}", secs, msecs ? "." : "sec");
    }
    if (msecs) out += fmt::format("{:03}ms", msecs);
    return out;
}

// ss's users:(("comm",pid=P,fd=F),...), appended.
void append_users(std::string& out, const std::vector<ProcessRef>& processes) {
    out += "users:(";
    for (std::size_t i = 0; i < processes.size(); ++i) {
        if (i) out += ',';
        out += "(\"";
        append_printable(out, processes[i].command);
        out += "\",pid=";
        append_number(out, processes[i].pid);
        out += ",fd=";
        append_number(out, processes[i].fd);
        out += ')';
    }
    out += ')';
}

std::string memory_text(const std::array<std::uint32_t, 9>& m) {
    return fmt::format("skmem:(r{},rb{},t{},tb{},f{},w{},o{},bl{},d{})", m[0], m[1], m[2], m[3], m[4], m[5],
                       m[6], m[7], m[8]);
}

std::string tcp_text(const SocketInfo& socket) {
    std::string out = socket.congestion;
    if (!socket.tcp) return out;
    const TcpDetails& t = *socket.tcp;
    auto ms = [](std::uint32_t us) { return fmt::format("{:g}", us / 1000.0); };
    out += fmt::format(" wscale:{},{} rto:{} rtt:{}/{} ato:{} mss:{} pmtu:{} rcvmss:{} advmss:{} cwnd:{}",
                       t.snd_wscale, t.rcv_wscale, ms(t.rto), ms(t.rtt), ms(t.rttvar), ms(t.ato), t.snd_mss,
                       t.pmtu, t.rcv_mss, t.advmss, t.snd_cwnd);
    if (t.snd_ssthresh < 0xffff) out += fmt::format(" ssthresh:{}", t.snd_ssthresh);
    out += fmt::format(" bytes_sent:{} bytes_acked:{} bytes_received:{} segs_out:{} segs_in:{}", t.bytes_sent,
                       t.bytes_acked, t.bytes_received, t.segs_out, t.segs_in);
    out +=
        fmt::format(" lastsnd:{} lastrcv:{} lastack:{}", t.last_data_sent, t.last_data_recv, t.last_ack_recv);
    if (t.pacing_rate && t.pacing_rate != ~0ull) out += fmt::format(" pacing_rate:{}bps", t.pacing_rate * 8);
    if (t.delivery_rate) out += fmt::format(" delivery_rate:{}bps", t.delivery_rate * 8);
    if (t.unacked) out += fmt::format(" unacked:{}", t.unacked);
    if (t.retrans || t.total_retrans) out += fmt::format(" retrans:{}/{}", t.retrans, t.total_retrans);
    if (t.lost) out += fmt::format(" lost:{}", t.lost);
    out += fmt::format(" rcv_space:{} minrtt:{}", t.rcv_space, ms(t.min_rtt));
    return out;
}

// The table's columns: Netns (--all-netns), Netid, State, Recv-Q, Send-Q, "Local Address:", Port,
// "Peer Address:", Port, Process, and the free-form rest (-i's second line).
enum {
    c_netns,
    c_netid,
    c_state,
    c_recv,
    c_send,
    c_laddr,
    c_lport,
    c_paddr,
    c_pport,
    c_process,
    c_ext,
    c_count
};

// The cells of every row live in one text buffer; a cell is where it ends there (it starts where
// the previous cell ended). 18k rows as strings were ~100k allocations and frees, most of -tanp's
// user time.
using RowEnds = std::array<std::uint32_t, c_count>;

class RowWriter {
public:
    RowWriter(std::string& text, const TableOptions& options) : text_(text), options_(options) {}

    void add(const SocketInfo& socket, RowEnds& ends) {
        std::string& out = text_;
        auto end_cell = [&](int c) { ends[c] = static_cast<std::uint32_t>(out.size()); };
        out += socket.netns.empty() ? std::string_view("-") : std::string_view(socket.netns);
        end_cell(c_netns);
        out += to_string(socket.netid);
        end_cell(c_netid);
        out += state_name(socket.state);
        end_cell(c_state);
        append_number(out, socket.recv_q);
        end_cell(c_recv);
        append_number(out, socket.send_q);
        end_cell(c_send);
        if (is_inet(socket.netid)) {
            append_address(out, socket.local, socket.v6only, socket.netid == Netid::raw ? 0 : socket.ifindex,
                           ifnames_);
            end_cell(c_laddr);
            append_port(out, socket, socket.local.port);
            end_cell(c_lport);
            append_address(out, socket.peer, socket.v6only, 0, ifnames_);
            end_cell(c_paddr);
            append_port(out, socket, socket.peer.port);
            end_cell(c_pport);
        } else if (socket.netid == Netid::p_raw || socket.netid == Netid::p_dgr) {
            // ss: the ethertype ("*" for ETH_P_ALL) and the interface, then an empty peer.
            out += socket.local.port == 0x0003 ? std::string("*")
                                               : ethertype_text(socket.local.port, options_.numeric);
            out += ':';
            end_cell(c_laddr);
            out += socket.ifindex ? std::string_view(ifnames_(socket.ifindex)) : std::string_view("*");
            end_cell(c_lport);
            out += '*';
            end_cell(c_paddr);
            end_cell(c_pport);
        } else {
            // ss joins a unix name and its inode with a space; the peer's name is never shown.
            if (socket.local.name.empty()) out += '*';
            else
                append_printable(out, socket.local.name);
            out += ' ';
            end_cell(c_laddr);
            append_number(out, socket.inode);
            end_cell(c_lport);
            out += "* ";
            end_cell(c_paddr);
            append_number(out, socket.peer_inode);
            end_cell(c_pport);
        }
        add_process(socket);
        end_cell(c_process);
        if (socket.tcp || !socket.congestion.empty()) {
            out += "\n\t ";
            out += tcp_text(socket);
        }
        end_cell(c_ext);
    }

private:
    void append_port(std::string& out, const SocketInfo& socket, std::uint16_t port) {
        if (port == 0) out += '*';
        else if (options_.numeric || (socket.netid != Netid::raw && detail::is_ephemeral(port)))
            append_number(out, port);
        else if (socket.netid == Netid::raw)
            out += protocol_name(port);
        else
            out += services_.name(port, socket.netid == Netid::udp);
    }

    // ss's shutdown arrows: "<->" open both ways, "--> " no more receiving, "<--" no more sending.
    static void append_shutdown(std::string& out, const SocketInfo& socket) {
        if (!socket.shutdown) return;
        out += ' ';
        out += *socket.shutdown & 1 ? '-' : '<';
        out += '-';
        out += *socket.shutdown & 2 ? '-' : '>';
    }

    // ss (6.1) prints timers, -e, skmem and the cgroup into the Process column after the users, and
    // pads that one column to its widest cell: so do we (a script splitting on the column sees ss's).
    void add_process(const SocketInfo& socket) {
        std::string& out = text_;
        auto to = std::back_inserter(out);
        if (!socket.processes.empty()) {
            out += ' ';
            append_users(out, socket.processes);
        }
        if (options_.timers && socket.timer && is_inet(socket.netid)) {
            static const char* const names[] = {"off", "on", "keepalive", "timewait", "persist", "unknown"};
            fmt::format_to(to, " timer:({},{},{})", names[std::min<int>(socket.timer, 5)],
                           timer_text(socket.expires_ms), socket.retransmits);
        }
        bool unix_socket =
            socket.netid == Netid::u_str || socket.netid == Netid::u_dgr || socket.netid == Netid::u_seq;
        // ss 6.1's order: inet and packet sockets print sock_details_print (uid, ino, sk, fwmark,
        // cgroup), inet then v6only and the shutdown arrows, before skmem; unix sockets print skmem
        // first, then the arrows, the bound path's ino:/dev: and a listener's peers:.
        if (options_.extended && !unix_socket && !socket.from_proc) {
            if (socket.uid) fmt::format_to(to, " uid:{}", socket.uid);
            fmt::format_to(to, " ino:{} sk:{:x}", socket.inode, socket.cookie);
            if (socket.mark) fmt::format_to(to, " fwmark:0x{:x}", socket.mark);
            if (socket.cgroup_id) {
                out += " cgroup:";
                if (!socket.cgroup.empty()) append_printable(out, socket.cgroup);
                else
                    fmt::format_to(to, "unreachable:{:x}", socket.cgroup_id);  // ss's cg_id_to_path
            }
            if (socket.v6only_reported) fmt::format_to(to, " v6only:{}", socket.v6only ? 1 : 0);
            append_shutdown(out, socket);
        }
        if (socket.memory) {
            out += ' ';
            out += memory_text(*socket.memory);
        }
        if (options_.extended && unix_socket) {
            append_shutdown(out, socket);
            // ss prints the kernel's s_dev through glibc's major()/minor(), as is.
            if (socket.vfs)
                fmt::format_to(to, " ino:{} dev:{}/{}", socket.vfs->first, major(socket.vfs->second),
                               minor(socket.vfs->second));
            if (socket.pending) {
                out += " peers:";
                for (auto peer : *socket.pending) fmt::format_to(to, " {}", peer);
            }
        }
        if (options_.cgroups && !socket.cgroup.empty()) {
            out += " cgroup:";
            append_printable(out, socket.cgroup);
            auto owner = cgroup_owner(socket.cgroup);
            if (!owner.unit.empty()) {
                out += " unit:";
                append_printable(out, owner.unit);
            }
            if (!owner.container.empty()) {
                out += " container:";
                if (!owner.runtime.empty()) {
                    append_printable(out, owner.runtime);
                    out += '/';
                }
                out += owner.container.substr(0, 12);
            }
        }
    }

    std::string& text_;
    const TableOptions& options_;
    ServiceNames services_;
    std::map<std::uint16_t, std::string> protocols_;

    // ss's inet_proto_n2a for a raw socket's "port": its protocol's name in /etc/protocols,
    // "ipproto-N" for one without. Looked up once per protocol.
    const std::string& protocol_name(std::uint16_t protocol) {
        auto [at, added] = protocols_.try_emplace(protocol);
        if (added) {
            protoent entry{}, *found = nullptr;
            char buffer[1024];
            if (::getprotobynumber_r(protocol, &entry, buffer, sizeof(buffer), &found) == 0 && found)
                at->second = found->p_name;
            else
                at->second = fmt::format("ipproto-{}", protocol);
        }
        return at->second;
    }
    InterfaceNames ifnames_;
};

// Output in large writes from one buffer filled with memcpy/memset (fmt's buffer appends and the
// padding loops were a third of -tanp's user time at 18k rows).
class Writer {
public:
    explicit Writer(int fd) : fd_(fd), buffer_(capacity) {}
    ~Writer() { flush(); }
    // Room for `size` more bytes (a line), flushing first when the buffer cannot take them.
    char* reserve(std::size_t size) {
        if (used_ + size > buffer_.size()) {
            flush();
            if (size > buffer_.size()) buffer_.resize(size);
        }
        return buffer_.data() + used_;
    }
    void commit(std::size_t size) { used_ += size; }
    void flush() {
        const char* data = buffer_.data();
        std::size_t left = used_;
        while (left) {
            ssize_t wrote = ::write(fd_, data, left);
            if (wrote < 0) {
                if (errno == EINTR) continue;
                break;  // a closed pipe (| head) ends the output quietly
            }
            data += wrote;
            left -= static_cast<std::size_t>(wrote);
        }
        used_ = 0;
    }

private:
    static constexpr std::size_t capacity = 256 * 1024;
    int fd_;
    std::vector<char> buffer_;
    std::size_t used_ = 0;
};

// ss's layout when its output is not a terminal (what a script reads): each column is as wide as
// its widest cell (the title included), a column after the first starts with its delimiter (a
// space, or nothing for the ports and Process), "Local Address:" and "Peer Address:" are
// right-aligned and every other column left-aligned and padded, so trailing spaces are kept.
struct Column {
    bool enabled = true, right = false;
    std::string_view delimiter;
    std::size_t max = 0, width = 0;
};
}  // namespace

void write_table(const std::vector<SocketInfo>& sockets, const TableOptions& options, int fd) {
    std::string text;
    text.reserve(sockets.size() * 128);
    std::vector<RowEnds> ends(sockets.size());
    std::array<Column, c_count> columns{{{options.netns, false, "", 0, 0},
                                         {options.netid, false, "", 0, 0},
                                         {options.state, false, " ", 0, 0},
                                         {true, false, " ", 0, 0},
                                         {true, false, " ", 0, 0},
                                         {true, true, " ", 0, 0},
                                         {true, false, "", 0, 0},
                                         {true, true, " ", 0, 0},
                                         {true, false, "", 0, 0},
                                         {true, false, "", 0, 0},
                                         {true, false, "", 0, 0}}};
    if (options.netns) columns[c_netid].delimiter = " ";
    static const std::array<std::string_view, c_count> titles = {
        "Netns", "Netid",         "State", "Recv-Q",  "Send-Q", "Local Address:",
        "Port",  "Peer Address:", "Port",  "Process", ""};
    if (options.header)
        for (int c = 0; c < c_count; ++c) columns[c].max = titles[c].size();
    // ss prints the queues with %-6d: at least six characters, padded inside the cell.
    if (!sockets.empty())
        columns[c_recv].max = columns[c_send].max = std::max<std::size_t>(columns[c_recv].max, 6);
    RowWriter row_writer(text, options);
    for (std::size_t i = 0; i < sockets.size(); ++i) {
        row_writer.add(sockets[i], ends[i]);
        std::uint32_t begin = i ? ends[i - 1][c_count - 1] : 0;
        // ss measures a cell when it moves on to the next one (field_flush), and it never moves on
        // from the last row's Process cell: that cell (and the rest after it) does not widen its
        // column. With -e or -p, a last row wider than the others is printed unpadded, as in ss.
        int measured = i + 1 == sockets.size() ? c_process : c_count;
        for (int c = 0; c < c_count; ++c) {
            if (c < measured) columns[c].max = std::max<std::size_t>(columns[c].max, ends[i][c] - begin);
            begin = ends[i][c];
        }
    }
    bool first = true;
    for (auto& column : columns) {
        if (!column.enabled) continue;
        column.width = (!first && column.max) ? column.max + column.delimiter.size() : column.max;
        if (column.width) first = false;
    }
    // Every cell is padded to its column's width: a line is at most the widths and delimiters.
    std::size_t line = 1;
    for (const auto& column : columns)
        if (column.enabled) line += column.width + column.delimiter.size();
    Writer writer(fd);
    // One line: each cell's delimiter unless the line starts there, then its text aligned in its width.
    auto put_line = [&](auto&& cell_text) {
        char* start = writer.reserve(line);
        char* p = start;
        bool started = false;
        for (int c = 0; c < c_count; ++c) {
            const Column& column = columns[c];
            if (!column.enabled) continue;
            std::string_view shown = cell_text(c);
            std::size_t printed = 0;
            if (started) {
                std::memcpy(p, column.delimiter.data(), column.delimiter.size());
                p += column.delimiter.size();
                printed = column.delimiter.size();
            }
            started = true;
            if (column.right && column.width > shown.size() + printed) {
                std::size_t n = column.width - shown.size() - printed;
                std::memset(p, ' ', n);
                p += n;
                printed += n;
            }
            std::memcpy(p, shown.data(), shown.size());
            p += shown.size();
            printed += shown.size();
            if (column.width > printed) {
                std::memset(p, ' ', column.width - printed);
                p += column.width - printed;
            }
        }
        *p++ = '\n';
        writer.commit(static_cast<std::size_t>(p - start));
    };
    if (options.header) put_line([&](int c) { return titles[c]; });
    std::string_view all(text);
    for (std::size_t i = 0; i < sockets.size(); ++i) {
        const RowEnds& row = ends[i];
        std::uint32_t row_begin = i ? ends[i - 1][c_count - 1] : 0;
        put_line([&](int c) {
            std::uint32_t begin = c ? row[c - 1] : row_begin;
            return all.substr(begin, row[c] - begin);
        });
    }
}

namespace {
nlohmann::ordered_json endpoint_json(const SocketInfo& socket, const Endpoint& end, bool local) {
    nlohmann::ordered_json j;
    if (is_inet(socket.netid)) {
        char text[INET6_ADDRSTRLEN] = {};
        ::inet_ntop(end.family, end.address.data(), text, sizeof(text));
        j["address"] = text;
        j["port"] = end.port;
    } else if (socket.netid == Netid::p_raw || socket.netid == Netid::p_dgr) {
        if (local) {
            j["protocol"] = end.port;
            j["ifindex"] = socket.ifindex;
        }
    } else {
        if (local) j["path"] = printable(end.name);
        j["inode"] = local ? socket.inode : socket.peer_inode;
    }
    return j;
}
}  // namespace

namespace {
nlohmann::ordered_json socket_json(const SocketInfo& socket) {
    nlohmann::ordered_json j;
    if (!socket.netns.empty()) j["netns"] = socket.netns;
    j["netid"] = to_string(socket.netid);
    j["state"] = state_name(socket.state);
    j["recv_q"] = socket.recv_q;
    j["send_q"] = socket.send_q;
    j["local"] = endpoint_json(socket, socket.local, true);
    j["peer"] = endpoint_json(socket, socket.peer, false);
    j["inode"] = socket.inode;
    j["uid"] = socket.uid;
    j["cookie"] = socket.cookie;
    if (socket.ifindex && is_inet(socket.netid)) j["ifindex"] = socket.ifindex;
    if (!socket.processes.empty()) {
        auto& processes = j["processes"] = nlohmann::ordered_json::array();
        for (const auto& p : socket.processes)
            processes.push_back({{"pid", p.pid}, {"fd", p.fd}, {"command", printable(p.command)}});
    }
    if (socket.memory) {
        static const char* const names[] = {"rmem_alloc",  "rcvbuf", "wmem_alloc", "sndbuf", "fwd_alloc",
                                            "wmem_queued", "optmem", "backlog",    "drops"};
        auto& memory = j["skmem"] = nlohmann::ordered_json::object();
        for (int i = 0; i < 9; ++i) memory[names[i]] = (*socket.memory)[static_cast<std::size_t>(i)];
    }
    if (!socket.congestion.empty()) j["congestion"] = socket.congestion;
    if (socket.cgroup_id) j["cgroup_id"] = socket.cgroup_id;
    if (!socket.cgroup.empty()) {
        j["cgroup"] = printable(socket.cgroup);
        auto owner = cgroup_owner(socket.cgroup);
        if (!owner.unit.empty()) j["unit"] = owner.unit;
        if (!owner.container.empty()) j["container"] = {{"runtime", owner.runtime}, {"id", owner.container}};
    }
    if (socket.tcp) {
        const TcpDetails& t = *socket.tcp;
        j["tcp_info"] = {{"rto_us", t.rto},
                         {"ato_us", t.ato},
                         {"rtt_us", t.rtt},
                         {"rttvar_us", t.rttvar},
                         {"min_rtt_us", t.min_rtt},
                         {"snd_mss", t.snd_mss},
                         {"rcv_mss", t.rcv_mss},
                         {"pmtu", t.pmtu},
                         {"advmss", t.advmss},
                         {"cwnd", t.snd_cwnd},
                         {"ssthresh", t.snd_ssthresh},
                         {"snd_wscale", t.snd_wscale},
                         {"rcv_wscale", t.rcv_wscale},
                         {"bytes_sent", t.bytes_sent},
                         {"bytes_acked", t.bytes_acked},
                         {"bytes_received", t.bytes_received},
                         {"segs_out", t.segs_out},
                         {"segs_in", t.segs_in},
                         {"retrans", t.retrans},
                         {"total_retrans", t.total_retrans},
                         {"lost", t.lost},
                         {"unacked", t.unacked},
                         {"delivery_rate", t.delivery_rate},
                         {"pacing_rate", t.pacing_rate},
                         {"rcv_space", t.rcv_space},
                         {"last_data_sent_ms", t.last_data_sent},
                         {"last_data_recv_ms", t.last_data_recv},
                         {"last_ack_recv_ms", t.last_ack_recv},
                         {"kernel_size", t.kernel_size}};
    }
    return j;
}
}  // namespace

std::string to_json_line(const SocketInfo& socket) {
    return socket_json(socket).dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

Event to_event(const SocketInfo& socket) {
    Event event("sockets", "destroy");
    nlohmann::ordered_json fields = socket_json(socket);
    for (auto& [key, value] : fields.items()) event.set(key, std::move(value));
    return event;
}

Event lost_event() { return Event("sockets", "lost").set("reason", "ENOBUFS"); }

}  // namespace ktricks::sockets
