// /proc/net/raw{,6}: see proc_raw.hpp. Row layout (net/ipv4/raw.c raw_sock_seq_show, net/ipv6/raw.c
// via ip6_dgram_sock_seq_show):
//   sl: LOCAL:PORT REMOTE:PORT st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ref ptr drops
// An IPv4 address is one %08X of the __be32 as the host holds it, an IPv6 address four of its
// 32-bit words; the port of a raw socket is its protocol.
#include "sockets/proc_raw.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <optional>
#include <system_error>

#include "ktricks/core/fd.hpp"

namespace ktricks::sockets::detail {

namespace {

// Splits off the next blank-separated field; empty at the end of the line.
std::string_view next_field(std::string_view& line) {
    auto start = line.find_first_not_of(" \t");
    if (start == std::string_view::npos) {
        line = {};
        return {};
    }
    line.remove_prefix(start);
    auto end = line.find_first_of(" \t");
    auto field = line.substr(0, end);
    line.remove_prefix(end == std::string_view::npos ? line.size() : end);
    return field;
}

// The whole of TEXT as one unsigned number in BASE, of at most MAX; nullopt otherwise.
template <typename T>
std::optional<T> number(std::string_view text, int base) {
    T value{};
    if (text.empty()) return std::nullopt;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, base);
    if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

// "HEXADDR:HEXPORT" into ENDPOINT; the address has 8 hex digits per 32-bit word.
bool parse_endpoint(std::string_view text, int family, Endpoint& endpoint) {
    std::size_t words = family == AF_INET ? 1 : 4;
    auto colon = text.find(':');
    if (colon != words * 8) return false;
    auto port = number<std::uint16_t>(text.substr(colon + 1), 16);
    if (!port || text.size() - colon - 1 > 4) return false;
    endpoint.family = family;
    for (std::size_t i = 0; i < words; ++i) {
        auto word = number<std::uint32_t>(text.substr(i * 8, 8), 16);
        if (!word) return false;
        std::memcpy(endpoint.address.data() + i * 4, &*word, 4);  // as the kernel holds it
    }
    endpoint.port = *port;
    return true;
}

// "HEX:HEX" (tx_queue:rx_queue).
bool parse_pair(std::string_view text, std::uint32_t& first, std::uint32_t& second) {
    auto colon = text.find(':');
    if (colon == std::string_view::npos) return false;
    auto a = number<std::uint32_t>(text.substr(0, colon), 16);
    auto b = number<std::uint32_t>(text.substr(colon + 1), 16);
    if (!a || !b) return false;
    first = *a;
    second = *b;
    return true;
}

// One row; a description of the fault when it does not parse.
std::optional<std::string> parse_row(std::string_view line, int family, SocketInfo& out) {
    auto slot = next_field(line);
    if (slot.size() < 2 || slot.back() != ':' || !number<unsigned>(slot.substr(0, slot.size() - 1), 10))
        return "no \"N:\" slot number";
    out.netid = Netid::raw;
    out.from_proc = true;
    if (!parse_endpoint(next_field(line), family, out.local)) return "bad local address";
    if (!parse_endpoint(next_field(line), family, out.peer)) return "bad remote address";
    auto state = number<std::uint8_t>(next_field(line), 16);
    if (!state) return "bad state";
    out.state = *state;
    if (!parse_pair(next_field(line), out.send_q, out.recv_q)) return "bad tx_queue:rx_queue";
    std::uint32_t timer = 0, when = 0;
    if (!parse_pair(next_field(line), timer, when)) return "bad tr:tm->when";
    if (!number<std::uint32_t>(next_field(line), 16)) return "bad retrnsmt";
    auto uid = number<std::uint32_t>(next_field(line), 10);
    if (!uid) return "bad uid";
    out.uid = *uid;
    if (!number<std::uint32_t>(next_field(line), 10)) return "bad timeout";
    auto inode = number<std::uint32_t>(next_field(line), 10);
    if (!inode) return "bad inode";
    out.inode = *inode;
    out.protocol = static_cast<std::uint8_t>(out.local.port);
    return std::nullopt;  // ref, pointer and drops: nothing ss shows
}

}  // namespace

void parse_proc_net_raw(std::string_view text, int family, std::vector<SocketInfo>& out,
                        std::vector<std::string>& skipped) {
    const char* file = family == AF_INET ? "/proc/net/raw" : "/proc/net/raw6";
    std::size_t number = 0;
    while (!text.empty()) {
        auto end = text.find('\n');
        auto line = text.substr(0, end);
        text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
        if (++number == 1) continue;  // the header
        if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
        if (auto fault = parse_row(line, family, out.emplace_back())) {
            out.pop_back();
            skipped.push_back(fmt::format("{} line {}: {}: row skipped", file, number, *fault));
        }
    }
}

void read_proc_net_raw(int family, std::vector<SocketInfo>& out, std::vector<std::string>& skipped) {
    const char* path = family == AF_INET ? "/proc/thread-self/net/raw" : "/proc/thread-self/net/raw6";
    Fd fd(::open(path, O_RDONLY | O_CLOEXEC));
    if (!fd) throw std::system_error(errno, std::generic_category(), fmt::format("open {}", path));
    std::string text;
    char buffer[64 * 1024];
    for (;;) {
        ssize_t got = ::read(fd.get(), buffer, sizeof(buffer));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) throw std::system_error(errno, std::generic_category(), fmt::format("read {}", path));
        if (got == 0) break;
        text.append(buffer, static_cast<std::size_t>(got));
    }
    parse_proc_net_raw(text, family, out, skipped);
}

}  // namespace ktricks::sockets::detail
