#include "sockets/decode.hpp"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/packet_diag.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <linux/unix_diag.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "ktricks/netlink.hpp"

namespace ktricks::sockets::detail {

namespace {
void read_memory(const netlink::Attributes& attributes, std::uint16_t type, SocketInfo& out) {
    auto raw = attributes.bytes(type);
    if (!attributes.has(type)) return;
    std::array<std::uint32_t, 9> values{};
    std::memcpy(values.data(), raw.data(), std::min(raw.size(), sizeof(values)));
    out.memory = values;
}
}  // namespace

bool decode_inet(const nlmsghdr& message, std::uint8_t protocol, SocketInfo& out) {
    auto diag = netlink::read_header<inet_diag_msg>(message);
    if (!diag) return false;
    netlink::Attributes attributes(message, sizeof(inet_diag_msg), INET_DIAG_MAX);
    if (protocol == 0) protocol = attributes.u8(INET_DIAG_PROTOCOL).value_or(IPPROTO_TCP);
    out.protocol = protocol;
    out.netid = protocol == IPPROTO_TCP ? Netid::tcp : protocol == IPPROTO_UDP ? Netid::udp : Netid::raw;
    out.state = diag->idiag_state;
    out.recv_q = diag->idiag_rqueue;
    out.send_q = diag->idiag_wqueue;
    out.uid = diag->idiag_uid;
    out.inode = diag->idiag_inode;
    out.ifindex = diag->id.idiag_if;
    out.cookie = diag->id.idiag_cookie[0] | (std::uint64_t(diag->id.idiag_cookie[1]) << 32);
    out.timer = diag->idiag_timer;
    out.retransmits = diag->idiag_retrans;
    out.expires_ms = diag->idiag_expires;
    int family = diag->idiag_family == AF_INET6 ? AF_INET6 : AF_INET;
    std::size_t size = family == AF_INET ? 4 : 16;
    out.local.family = out.peer.family = family;
    std::memcpy(out.local.address.data(), diag->id.idiag_src, size);
    std::memcpy(out.peer.address.data(), diag->id.idiag_dst, size);
    out.local.port = ntohs(diag->id.idiag_sport);
    out.peer.port = ntohs(diag->id.idiag_dport);
    std::size_t present = 0;
    if (auto info = attributes.read_struct<tcp_info>(INET_DIAG_INFO, &present);
        info && protocol == IPPROTO_TCP) {
        TcpDetails tcp;
        tcp.kernel_size = present;
        tcp.snd_wscale = info->tcpi_snd_wscale;
        tcp.rcv_wscale = info->tcpi_rcv_wscale;
        tcp.rto = info->tcpi_rto;
        tcp.ato = info->tcpi_ato;
        tcp.snd_mss = info->tcpi_snd_mss;
        tcp.rcv_mss = info->tcpi_rcv_mss;
        tcp.pmtu = info->tcpi_pmtu;
        tcp.advmss = info->tcpi_advmss;
        tcp.rtt = info->tcpi_rtt;
        tcp.rttvar = info->tcpi_rttvar;
        tcp.min_rtt = info->tcpi_min_rtt;
        tcp.snd_cwnd = info->tcpi_snd_cwnd;
        tcp.snd_ssthresh = info->tcpi_snd_ssthresh;
        tcp.retrans = info->tcpi_retrans;
        tcp.total_retrans = info->tcpi_total_retrans;
        tcp.lost = info->tcpi_lost;
        tcp.unacked = info->tcpi_unacked;
        tcp.rcv_space = info->tcpi_rcv_space;
        tcp.last_data_sent = info->tcpi_last_data_sent;
        tcp.last_data_recv = info->tcpi_last_data_recv;
        tcp.last_ack_recv = info->tcpi_last_ack_recv;
        tcp.bytes_sent = info->tcpi_bytes_sent;
        tcp.bytes_acked = info->tcpi_bytes_acked;
        tcp.bytes_received = info->tcpi_bytes_received;
        tcp.delivery_rate = info->tcpi_delivery_rate;
        tcp.pacing_rate = info->tcpi_pacing_rate;
        tcp.segs_out = info->tcpi_segs_out;
        tcp.segs_in = info->tcpi_segs_in;
        out.tcp = std::make_shared<TcpDetails>(tcp);
    }
    if (auto congestion = attributes.string(INET_DIAG_CONG)) out.congestion = *congestion;
    read_memory(attributes, INET_DIAG_SKMEMINFO, out);
    out.mark = attributes.u32(INET_DIAG_MARK).value_or(0);
    out.cgroup_id = attributes.u64(INET_DIAG_CGROUP_ID).value_or(0);
    out.v6only = attributes.u8(INET_DIAG_SKV6ONLY).value_or(0) != 0;
    out.v6only_reported = family == AF_INET6 && attributes.has(INET_DIAG_SKV6ONLY);
    out.shutdown = attributes.u8(INET_DIAG_SHUTDOWN);
    return true;
}

bool decode_unix(const nlmsghdr& message, SocketInfo& out) {
    auto diag = netlink::read_header<unix_diag_msg>(message);
    if (!diag) return false;
    netlink::Attributes attributes(message, sizeof(unix_diag_msg), UNIX_DIAG_MAX);
    out.netid = diag->udiag_type == SOCK_DGRAM       ? Netid::u_dgr
                : diag->udiag_type == SOCK_SEQPACKET ? Netid::u_seq
                                                     : Netid::u_str;
    out.state = diag->udiag_state;
    out.inode = diag->udiag_ino;
    out.cookie = diag->udiag_cookie[0] | (std::uint64_t(diag->udiag_cookie[1]) << 32);
    out.local.port = 0;
    if (auto raw = attributes.bytes(UNIX_DIAG_NAME); !raw.empty()) {
        // An abstract name starts with NUL and may contain more NULs; ss shows each as '@'.
        std::string name(reinterpret_cast<const char*>(raw.data()), raw.size());
        if (name[0] == '\0') std::replace(name.begin(), name.end(), '\0', '@');
        else if (auto nul = name.find('\0'); nul != std::string::npos)
            name.resize(nul);
        out.local.name = std::move(name);
    }
    out.peer_inode = attributes.u32(UNIX_DIAG_PEER).value_or(0);
    if (auto rqlen = attributes.read_struct<unix_diag_rqlen>(UNIX_DIAG_RQLEN)) {
        out.recv_q = rqlen->udiag_rqueue;
        out.send_q = rqlen->udiag_wqueue;
    }
    out.uid = attributes.u32(UNIX_DIAG_UID).value_or(0);
    read_memory(attributes, UNIX_DIAG_MEMINFO, out);
    out.shutdown = attributes.u8(UNIX_DIAG_SHUTDOWN);
    if (auto vfs = attributes.read_struct<unix_diag_vfs>(UNIX_DIAG_VFS))
        out.vfs = std::make_pair(vfs->udiag_vfs_ino, vfs->udiag_vfs_dev);
    if (attributes.has(UNIX_DIAG_ICONS)) {
        auto raw = attributes.bytes(UNIX_DIAG_ICONS);
        out.pending.emplace(raw.size() / sizeof(std::uint32_t));  // a listener with none: empty
        if (!out.pending->empty())
            std::memcpy(out.pending->data(), raw.data(), out.pending->size() * sizeof(std::uint32_t));
    }
    return true;
}

bool decode_packet(const nlmsghdr& message, SocketInfo& out) {
    auto diag = netlink::read_header<packet_diag_msg>(message);
    if (!diag) return false;
    netlink::Attributes attributes(message, sizeof(packet_diag_msg), PACKET_DIAG_MAX);
    out.netid = diag->pdiag_type == SOCK_DGRAM ? Netid::p_dgr : Netid::p_raw;
    out.state = closed;
    out.inode = diag->pdiag_ino;
    out.cookie = diag->pdiag_cookie[0] | (std::uint64_t(diag->pdiag_cookie[1]) << 32);
    out.local.port = diag->pdiag_num;  // the ethertype, in host order (packet_diag_fill: ntohs(po->num))
    if (auto info = attributes.read_struct<packet_diag_info>(PACKET_DIAG_INFO)) out.ifindex = info->pdi_index;
    out.uid = attributes.u32(PACKET_DIAG_UID).value_or(0);
    read_memory(attributes, PACKET_DIAG_MEMINFO, out);
    if (out.memory) out.recv_q = (*out.memory)[0];  // ss's Recv-Q for packet sockets: rmem_alloc
    return true;
}

}  // namespace ktricks::sockets::detail
