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
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <future>
#include <map>

#include "ktricks/core/error.hpp"
#include "ktricks/netlink.hpp"
#include "sockets/decode.hpp"

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

bool is_inet(Netid netid) noexcept { return netid == Netid::tcp || netid == Netid::udp || netid == Netid::raw; }

const char* state_name(std::uint8_t state) noexcept {
    static const char* const names[] = {"UNKNOWN",   "ESTAB",      "SYN-SENT",   "SYN-RECV",  "FIN-WAIT-1",
                                        "FIN-WAIT-2", "TIME-WAIT", "UNCONN",     "CLOSE-WAIT", "LAST-ACK",
                                        "LISTEN",    "CLOSING",    "NEW-SYN-RECV"};
    return state < std::size(names) ? names[state] : "UNKNOWN";
}

namespace {

struct Kind {
    const char* name;
    int family;       // AF_INET, AF_INET6, AF_UNIX, AF_PACKET
    int protocol;     // IPPROTO_* for inet
    const char* module;
};

// Asked for by name but impossible here: EX_UNAVAILABLE, naming the module to load or build.
[[noreturn]] void missing_module(const Kind& kind) {
    throw std::system_error(EPROTONOSUPPORT, std::generic_category(),
                            fmt::format("list {} sockets: the kernel has no {} module", kind.name, kind.module));
}

// The kernel answers ENOENT when the diag handler for a family/protocol is neither built in nor
// loadable (sock_diag's request_module failed).
bool is_missing_module(const std::system_error& error) { return error.code().value() == ENOENT; }

// The filter's `state` clauses win over -a/-l, which win over ss's default (connected only).
std::uint32_t request_states(const Query& query) {
    if (query.filter && query.filter->states()) return query.filter->states();
    return query.states ? query.states : connected_states;
}

// Appends every socket of one sock_diag dump that DECODE accepts. A dump the kernel restarts
// (NLM_F_DUMP_INTR) first drops what the interrupted pass appended, so no socket is listed twice.
template <typename Decode>
void dump_into(netlink::Socket& diag, netlink::Request& request, const std::string& what, std::vector<SocketInfo>& out,
               Decode decode) {
    std::size_t first = out.size();
    diag.dump(
        request,
        [&](const nlmsghdr& message) {
            SocketInfo info;
            if (decode(message, info)) out.push_back(std::move(info));
            return true;
        },
        what, {.on_restart = [&] { out.resize(first); }});
}

void dump_inet(netlink::Socket& diag, const Query& query, const Kind& kind, std::vector<SocketInfo>& out) {
    netlink::Request request(SOCK_DIAG_BY_FAMILY, 0, 64 * 1024);
    inet_diag_req_v2 header{};
    header.sdiag_family = static_cast<std::uint8_t>(kind.family);
    header.sdiag_protocol = static_cast<std::uint8_t>(kind.protocol);
    header.idiag_states = request_states(query);
    if (query.tcp_info && kind.protocol == IPPROTO_TCP)
        header.idiag_ext |= (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_CONG - 1));
    if (query.memory) header.idiag_ext |= 1 << (INET_DIAG_SKMEMINFO - 1);
    if (kind.protocol == IPPROTO_RAW) header.pad = IPPROTO_RAW;  // sdiag_raw_protocol: every raw socket
    request.put_header(header);
    if (query.filter && query.filter->has_conditions()) {
        auto code = query.filter->bytecode();
        request.ensure_room(MNL_ATTR_HDRLEN + code.size());
        mnl_attr_put(request.header(), INET_DIAG_REQ_BYTECODE, code.size(), code.data());
    }
    auto protocol = static_cast<std::uint8_t>(kind.protocol);
    dump_into(diag, request, fmt::format("list {} sockets", kind.name), out,
              [&](const nlmsghdr& message, SocketInfo& info) { return detail::decode_inet(message, protocol, info); });
}

void dump_unix(netlink::Socket& diag, const Query& query, std::vector<SocketInfo>& out) {
    netlink::Request request(SOCK_DIAG_BY_FAMILY, 0);
    unix_diag_req header{};
    header.sdiag_family = AF_UNIX;
    header.udiag_states = request_states(query);
    header.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_UID |
                        (query.memory ? UDIAG_SHOW_MEMINFO : 0);
    request.put_header(header);
    dump_into(diag, request, "list unix sockets", out, detail::decode_unix);
}

void dump_packet(netlink::Socket& diag, const Query& query, std::vector<SocketInfo>& out) {
    if (!(request_states(query) & (1u << closed))) return;  // packet sockets have no state: ss shows them as UNCONN
    netlink::Request request(SOCK_DIAG_BY_FAMILY, 0);
    packet_diag_req header{};
    header.sdiag_family = AF_PACKET;
    header.pdiag_show = PACKET_SHOW_INFO | (query.memory ? PACKET_SHOW_MEMINFO : 0);
    request.put_header(header);
    dump_into(diag, request, "list packet sockets", out, detail::decode_packet);
}

void list_here(const Query& query, Listing& listing) {
    bool any_kind = query.tcp || query.udp || query.unix_sockets || query.raw || query.packet;
    bool inet_only = query.filter && query.filter->has_conditions();
    auto diag = netlink::Socket::open(NETLINK_SOCK_DIAG);
    struct Job {
        Kind kind;
        bool wanted, explicit_;
    };
    std::vector<Job> jobs;
    auto add_inet = [&](const char* name, int protocol, const char* module, bool asked) {
        bool wanted = asked || !any_kind;
        if (query.ipv4) jobs.push_back({{name, AF_INET, protocol, module}, wanted, asked});
        if (query.ipv6) jobs.push_back({{name, AF_INET6, protocol, module}, wanted, asked});
    };
    add_inet("tcp", IPPROTO_TCP, "tcp_diag (CONFIG_INET_TCP_DIAG)", query.tcp);
    add_inet("udp", IPPROTO_UDP, "udp_diag (CONFIG_INET_UDP_DIAG)", query.udp);
    add_inet("raw", IPPROTO_RAW, "raw_diag (CONFIG_INET_RAW_DIAG)", query.raw);
    bool families_narrowed = !(query.ipv4 && query.ipv6);
    jobs.push_back({{"unix", AF_UNIX, 0, "unix_diag (CONFIG_UNIX_DIAG)"},
                    query.unix_sockets || (!any_kind && !inet_only && !families_narrowed), query.unix_sockets});
    jobs.push_back({{"packet", AF_PACKET, 0, "af_packet_diag (CONFIG_PACKET_DIAG)"},
                    query.packet || (!any_kind && !inet_only && !families_narrowed), query.packet});
    std::map<std::string, bool> warned;
    for (auto& job : jobs) {
        if (!job.wanted) continue;
        try {
            if (job.kind.family == AF_UNIX) dump_unix(diag, query, listing.sockets);
            else if (job.kind.family == AF_PACKET) dump_packet(diag, query, listing.sockets);
            else dump_inet(diag, query, job.kind, listing.sockets);
        } catch (const std::system_error& error) {
            if (!is_missing_module(error)) throw;
            if (job.explicit_) missing_module(job.kind);
            if (!warned[job.kind.name])
                listing.warnings.push_back(
                    fmt::format("{} sockets not listed: the kernel has no {} module", job.kind.name, job.kind.module));
            warned[job.kind.name] = true;
        }
    }
}

void attach_owners(Listing& listing, std::future<std::unordered_map<std::uint32_t, std::vector<ProcessRef>>>& owners) {
    auto map = owners.get();
    for (auto& socket : listing.sockets)
        if (socket.inode)
            if (auto found = map.find(socket.inode); found != map.end()) socket.processes = found->second;
}

}  // namespace

Listing list(const Query& query, const std::string& netns) {
    Listing listing;
    // The /proc walk and the dumps are independent: run them side by side.
    std::future<std::unordered_map<std::uint32_t, std::vector<ProcessRef>>> owners;
    if (query.processes) owners = std::async(std::launch::async, [] { return map_socket_owners(); });
    if (netns.empty()) {
        list_here(query, listing);
    } else {
        Fd namespace_fd = netlink::open_netns(netns);
        netlink::NetnsGuard guard(namespace_fd.get(), netns);
        list_here(query, listing);
    }
    if (query.processes) attach_owners(listing, owners);
    return listing;
}

Listing list_all_namespaces(const Query& query) {
    Query without_processes = query;
    without_processes.processes = false;
    std::future<std::unordered_map<std::uint32_t, std::vector<ProcessRef>>> owners;
    if (query.processes) owners = std::async(std::launch::async, [] { return map_socket_owners(); });
    Listing all = list(without_processes);
    for (const auto& name : netlink::list_netns()) {
        Listing one;
        try {
            one = list(without_processes, name);
        } catch (const std::system_error& error) {
            all.warnings.push_back(fmt::format("network namespace {}: {}", name, error.what()));
            continue;
        }
        for (auto& socket : one.sockets) {
            socket.netns = name;
            all.sockets.push_back(std::move(socket));
        }
        for (auto& warning : one.warnings) all.warnings.push_back(fmt::format("{}: {}", name, warning));
    }
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
            diag.transact(request, {}, fmt::format("destroy {} socket {}", to_string(socket.netid), socket.inode));
            destroyed.push_back(socket);
        } catch (const std::system_error& error) {
            int code = error.code().value();
            if (code == ENOENT) continue;  // gone meanwhile
            if (code == EOPNOTSUPP)
                throw std::system_error(error.code(), fmt::format("{} (the kernel lacks CONFIG_INET_DIAG_DESTROY)", error.what()));
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

std::string address_text(const Endpoint& end, std::uint32_t ifindex, const std::function<std::string(std::uint32_t)>& ifname) {
    std::string out;
    if (end.family == AF_INET) {
        if (std::all_of(end.address.begin(), end.address.begin() + 4, [](auto b) { return b == 0; }))
            out = "0.0.0.0";
        else append_ipv4(out, end.address.data());
    } else if (end.family == AF_INET6) {
        char text[INET6_ADDRSTRLEN];
        ::inet_ntop(AF_INET6, end.address.data(), text, sizeof(text));
        out = fmt::format("[{}]", text);
    }
    if (ifindex && end.family) out += "%" + ifname(ifindex);
    return out;
}

struct ServiceNames {
    std::map<std::pair<int, bool>, std::string> cache;
    std::string name(int port, bool udp) {
        auto key = std::make_pair(port, udp);
        auto found = cache.find(key);
        if (found != cache.end()) return found->second;
        servent entry{}, *result = nullptr;
        char buffer[1024];
        ::getservbyport_r(htons(static_cast<std::uint16_t>(port)), udp ? "udp" : "tcp", &entry, buffer, sizeof(buffer),
                          &result);
        std::string text = result ? result->s_name : std::to_string(port);
        cache[key] = text;
        return text;
    }
};

struct Row {
    std::string local_address, local_port, peer_address, peer_port, process, details;
};

std::string users_text(const std::vector<ProcessRef>& processes) {
    if (processes.empty()) return {};
    std::string out = "users:(";
    for (std::size_t i = 0; i < processes.size(); ++i) {
        if (i) out += ',';
        out += fmt::format("(\"{}\",pid={},fd={})", printable(processes[i].command), processes[i].pid, processes[i].fd);
    }
    out += ')';
    return out;
}

std::string memory_text(const std::array<std::uint32_t, 9>& m) {
    return fmt::format("skmem:(r{},rb{},t{},tb{},f{},w{},o{},bl{},d{})", m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7],
                       m[8]);
}

std::string tcp_text(const SocketInfo& socket) {
    std::string out = socket.congestion;
    if (!socket.tcp) return out;
    const TcpDetails& t = *socket.tcp;
    auto ms = [](std::uint32_t us) { return fmt::format("{:g}", us / 1000.0); };
    out += fmt::format(" wscale:{},{} rto:{} rtt:{}/{} ato:{} mss:{} pmtu:{} rcvmss:{} advmss:{} cwnd:{}", t.snd_wscale,
                       t.rcv_wscale, ms(t.rto), ms(t.rtt), ms(t.rttvar), ms(t.ato), t.snd_mss, t.pmtu, t.rcv_mss,
                       t.advmss, t.snd_cwnd);
    if (t.snd_ssthresh < 0xffff) out += fmt::format(" ssthresh:{}", t.snd_ssthresh);
    out += fmt::format(" bytes_sent:{} bytes_acked:{} bytes_received:{} segs_out:{} segs_in:{}", t.bytes_sent,
                       t.bytes_acked, t.bytes_received, t.segs_out, t.segs_in);
    out += fmt::format(" lastsnd:{} lastrcv:{} lastack:{}", t.last_data_sent, t.last_data_recv, t.last_ack_recv);
    if (t.pacing_rate && t.pacing_rate != ~0ull) out += fmt::format(" pacing_rate:{}bps", t.pacing_rate * 8);
    if (t.delivery_rate) out += fmt::format(" delivery_rate:{}bps", t.delivery_rate * 8);
    if (t.unacked) out += fmt::format(" unacked:{}", t.unacked);
    if (t.retrans || t.total_retrans) out += fmt::format(" retrans:{}/{}", t.retrans, t.total_retrans);
    if (t.lost) out += fmt::format(" lost:{}", t.lost);
    out += fmt::format(" rcv_space:{} minrtt:{}", t.rcv_space, ms(t.min_rtt));
    return out;
}

class InterfaceNames {
public:
    std::string operator()(std::uint32_t index) {
        auto found = names_.find(index);
        if (found != names_.end()) return found->second;
        char name[IF_NAMESIZE] = {};
        std::string text = ::if_indextoname(index, name) ? name : std::to_string(index);
        names_[index] = text;
        return text;
    }

private:
    std::map<std::uint32_t, std::string> names_;
};

Row make_row(const SocketInfo& socket, const TableOptions& options, ServiceNames& services, InterfaceNames& ifnames) {
    Row row;
    std::function<std::string(std::uint32_t)> ifname = [&](std::uint32_t i) { return ifnames(i); };
    if (is_inet(socket.netid)) {
        row.local_address = address_text(socket.local, socket.netid == Netid::raw ? 0 : socket.ifindex, ifname);
        row.peer_address = address_text(socket.peer, 0, ifname);
        auto port = [&](std::uint16_t p) -> std::string {
            if (p == 0) return "*";
            if (options.numeric || socket.netid == Netid::raw) return std::to_string(p);
            return services.name(p, socket.netid == Netid::udp);
        };
        row.local_port = port(socket.local.port);
        row.peer_port = port(socket.peer.port);
    } else if (socket.netid == Netid::p_raw || socket.netid == Netid::p_dgr) {
        row.local_address = socket.local.port == 0x0003 ? "*" : fmt::format("0x{:04x}", socket.local.port);
        row.local_port = socket.ifindex ? ifnames(socket.ifindex) : "*";
        row.peer_address = "";
        row.peer_port = "*";
    } else {
        row.local_address = socket.local.name.empty() ? "*" : printable(socket.local.name);
        row.local_port = std::to_string(socket.inode);
        row.peer_address = "*";
        row.peer_port = std::to_string(socket.peer_inode);
    }
    row.process = users_text(socket.processes);
    if (options.extended)
        row.details += fmt::format(" uid:{} ino:{} sk:{:x}", socket.uid, socket.inode, socket.cookie);
    if (socket.memory) row.details += " " + memory_text(*socket.memory);
    if (socket.tcp || !socket.congestion.empty()) row.details += "\n\t " + tcp_text(socket);
    return row;
}

class Writer {
public:
    explicit Writer(int fd) : fd_(fd) {}
    ~Writer() { flush(); }
    fmt::memory_buffer& buffer() { return buffer_; }
    void maybe_flush() {
        if (buffer_.size() >= 64 * 1024) flush();
    }
    void flush() {
        const char* data = buffer_.data();
        std::size_t left = buffer_.size();
        while (left) {
            ssize_t wrote = ::write(fd_, data, left);
            if (wrote < 0) {
                if (errno == EINTR) continue;
                break;  // a closed pipe (| head) ends the output quietly
            }
            data += wrote;
            left -= static_cast<std::size_t>(wrote);
        }
        buffer_.clear();
    }

private:
    int fd_;
    fmt::memory_buffer buffer_;
};

}  // namespace

namespace {
// Column padding by hand: fmt's runtime widths parse a format spec per field, which shows at 100k rows.
void put(fmt::memory_buffer& out, std::string_view text, std::size_t width, bool right = false) {
    std::size_t pad = width > text.size() ? width - text.size() : 0;
    if (right) out.append(std::string_view("                                                                ").substr(0, std::min<std::size_t>(pad, 64)));
    if (right && pad > 64) for (std::size_t i = 64; i < pad; ++i) out.push_back(' ');
    out.append(text);
    if (!right) for (std::size_t i = 0; i < pad; ++i) out.push_back(' ');
}
}  // namespace

void write_table(const std::vector<SocketInfo>& sockets, const TableOptions& options, int fd) {
    ServiceNames services;
    InterfaceNames ifnames;
    std::vector<Row> rows;
    rows.reserve(sockets.size());
    std::size_t w_netns = 5, w_netid = 5, w_state = 5, w_recv = 6, w_send = 6;
    std::size_t w_laddr = 13, w_lport = 4, w_paddr = 12, w_pport = 4;
    for (const auto& socket : sockets) {
        rows.push_back(make_row(socket, options, services, ifnames));
        const Row& row = rows.back();
        w_netns = std::max(w_netns, socket.netns.size());
        w_state = std::max(w_state, std::strlen(state_name(socket.state)));
        w_recv = std::max(w_recv, fmt::format_int(socket.recv_q).size());
        w_send = std::max(w_send, fmt::format_int(socket.send_q).size());
        w_laddr = std::max(w_laddr, row.local_address.size());
        w_lport = std::max(w_lport, row.local_port.size());
        w_paddr = std::max(w_paddr, row.peer_address.size());
        w_pport = std::max(w_pport, row.peer_port.size());
    }
    Writer writer(fd);
    auto& out = writer.buffer();
    auto space = [&] { out.push_back(' '); };
    if (options.header) {
        if (options.netns) put(out, "Netns", w_netns), space();
        if (options.netid) put(out, "Netid", w_netid), space();
        put(out, "State", w_state), space();
        put(out, "Recv-Q", w_recv), space();
        put(out, "Send-Q", w_send), space();
        put(out, "Local Address", w_laddr, true), out.push_back(':'), put(out, "Port", w_lport), space();
        put(out, "Peer Address", w_paddr, true), out.push_back(':'), put(out, "Port", w_pport), space();
        out.append(std::string_view("Process\n"));
    }
    for (std::size_t i = 0; i < sockets.size(); ++i) {
        const SocketInfo& socket = sockets[i];
        const Row& row = rows[i];
        if (options.netns) put(out, socket.netns.empty() ? "-" : socket.netns, w_netns), space();
        if (options.netid) put(out, to_string(socket.netid), w_netid), space();
        put(out, state_name(socket.state), w_state), space();
        put(out, fmt::format_int(socket.recv_q).str(), w_recv), space();
        put(out, fmt::format_int(socket.send_q).str(), w_send), space();
        // ss joins address and port with ':' for inet sockets and a space for the rest (unix: path
        // and inode; packet: protocol and interface).
        char join = is_inet(socket.netid) ? ':' : ' ';
        put(out, row.local_address, w_laddr, true), out.push_back(join), put(out, row.local_port, w_lport), space();
        put(out, row.peer_address, w_paddr, true), out.push_back(join), put(out, row.peer_port, w_pport), space();
        out.append(row.process);
        out.append(row.details);
        out.push_back('\n');
        writer.maybe_flush();
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

std::string to_json_line(const SocketInfo& socket) {
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
        static const char* const names[] = {"rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf", "fwd_alloc",
                                            "wmem_queued", "optmem", "backlog", "drops"};
        auto& memory = j["skmem"] = nlohmann::ordered_json::object();
        for (int i = 0; i < 9; ++i) memory[names[i]] = (*socket.memory)[static_cast<std::size_t>(i)];
    }
    if (!socket.congestion.empty()) j["congestion"] = socket.congestion;
    if (socket.tcp) {
        const TcpDetails& t = *socket.tcp;
        j["tcp_info"] = {{"rto_us", t.rto},         {"ato_us", t.ato},         {"rtt_us", t.rtt},
                         {"rttvar_us", t.rttvar},   {"min_rtt_us", t.min_rtt}, {"snd_mss", t.snd_mss},
                         {"rcv_mss", t.rcv_mss},    {"pmtu", t.pmtu},          {"advmss", t.advmss},
                         {"cwnd", t.snd_cwnd},      {"ssthresh", t.snd_ssthresh},
                         {"snd_wscale", t.snd_wscale}, {"rcv_wscale", t.rcv_wscale},
                         {"bytes_sent", t.bytes_sent}, {"bytes_acked", t.bytes_acked},
                         {"bytes_received", t.bytes_received}, {"segs_out", t.segs_out}, {"segs_in", t.segs_in},
                         {"retrans", t.retrans},    {"total_retrans", t.total_retrans}, {"lost", t.lost},
                         {"unacked", t.unacked},    {"delivery_rate", t.delivery_rate},
                         {"pacing_rate", t.pacing_rate}, {"rcv_space", t.rcv_space},
                         {"last_data_sent_ms", t.last_data_sent}, {"last_data_recv_ms", t.last_data_recv},
                         {"last_ack_recv_ms", t.last_ack_recv}, {"kernel_size", t.kernel_size}};
    }
    return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

// --- watch --------------------------------------------------------------------------------------

void watch(const Query& query, const std::string& netns, const std::function<void(const SocketInfo&)>& on_socket,
           const std::function<void()>& on_lost, const std::function<bool()>& keep_going, int poll_ms) {
    std::optional<netlink::Socket> diag;
    if (netns.empty()) {
        diag = netlink::Socket::open(NETLINK_SOCK_DIAG);
    } else {
        Fd namespace_fd = netlink::open_netns(netns);
        diag = netlink::open_in_netns(namespace_fd.get(), netns, NETLINK_SOCK_DIAG);
    }
    bool any_kind = query.tcp || query.udp;
    bool tcp = query.tcp || !any_kind, udp = query.udp || !any_kind;
    // A burst of closes (a server restart) can outrun us; a larger buffer makes overruns rarer, and
    // the ones that still happen are reported.
    diag->set_receive_buffer(4 << 20);
    if (tcp && query.ipv4) diag->subscribe(SKNLGRP_INET_TCP_DESTROY, "inet-tcp-destroy");
    if (udp && query.ipv4) diag->subscribe(SKNLGRP_INET_UDP_DESTROY, "inet-udp-destroy");
    if (tcp && query.ipv6) diag->subscribe(SKNLGRP_INET6_TCP_DESTROY, "inet6-tcp-destroy");
    if (udp && query.ipv6) diag->subscribe(SKNLGRP_INET6_UDP_DESTROY, "inet6-udp-destroy");
    diag->set_nonblocking();
    while (keep_going()) {
        pollfd descriptor{diag->fd(), POLLIN, 0};
        int ready = ::poll(&descriptor, 1, poll_ms);
        if (ready < 0 && errno != EINTR) throw_errno("poll", "sock_diag destroy events");
        if (ready <= 0) continue;
        while (true) {
            auto received = diag->receive([&](const nlmsghdr& message) {
                if (message.nlmsg_type != SOCK_DIAG_BY_FAMILY) return true;
                SocketInfo info;
                if (!detail::decode_inet(message, 0, info)) return true;
                info.netns = netns;
                if (query.states && !(query.states & (1u << info.state))) return true;
                if (query.filter && !query.filter->matches(info)) return true;
                on_socket(info);
                return true;
            });
            if (received == netlink::Received::would_block) break;
            if (received == netlink::Received::overrun) on_lost();
        }
    }
}

}  // namespace ktricks::sockets
