#include "handoff/proc_sockets.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ktricks/core/socket_address.hpp"

namespace ktricks::handoff::detail {
namespace {

std::vector<std::string_view> fields_of(std::string_view line) {
    std::vector<std::string_view> fields;
    std::size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && line[i] == ' ') ++i;
        std::size_t start = i;
        while (i < line.size() && line[i] != ' ') ++i;
        if (i > start) fields.push_back(line.substr(start, i - start));
    }
    return fields;
}

template <typename T>
bool hex(std::string_view text, T& value) {
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
    return error == std::errc() && end == text.data() + text.size();
}

// "0100007F:1F90": the address as the kernel's %08X of the in-memory (network order) words, so the
// words go back into memory as they are; the port is in host order.
std::optional<std::string> inet_address(std::string_view text, ProcSocket::Kind kind, bool ipv6) {
    auto colon = text.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    std::string_view address = text.substr(0, colon);
    unsigned port = 0;
    if (!hex(text.substr(colon + 1), port) || port > 65535) return std::nullopt;
    sockaddr_storage storage{};
    socklen_t length = 0;
    if (!ipv6) {
        std::uint32_t word = 0;
        if (address.size() != 8 || !hex(address, word)) return std::nullopt;
        auto* in = reinterpret_cast<sockaddr_in*>(&storage);
        in->sin_family = AF_INET;
        in->sin_port = htons(static_cast<std::uint16_t>(port));
        std::memcpy(&in->sin_addr, &word, 4);
        length = sizeof(sockaddr_in);
    } else {
        if (address.size() != 32) return std::nullopt;
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(static_cast<std::uint16_t>(port));
        for (int i = 0; i < 4; ++i) {
            std::uint32_t word = 0;
            if (!hex(address.substr(static_cast<std::size_t>(i) * 8, 8), word)) return std::nullopt;
            std::memcpy(reinterpret_cast<char*>(&in6->sin6_addr) + i * 4, &word, 4);
        }
        length = sizeof(sockaddr_in6);
    }
    try {
        return SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&storage), length,
                                            kind == ProcSocket::Kind::udp ? SOCK_DGRAM : SOCK_STREAM)
            .to_string();
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

// The lines of a /proc/net table after its header.
std::vector<std::string_view> data_lines(std::string_view table) {
    std::vector<std::string_view> lines;
    bool header = true;
    while (!table.empty()) {
        auto newline = table.find('\n');
        if (!std::exchange(header, false)) lines.push_back(table.substr(0, newline));
        table = newline == std::string_view::npos ? std::string_view() : table.substr(newline + 1);
    }
    return lines;
}

}  // namespace

std::string read_all(const std::string& path) {
    std::ifstream file(path);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
}

std::vector<ProcSocket> parse_proc_net_inet(std::string_view table, ProcSocket::Kind kind, bool ipv6) {
    std::vector<ProcSocket> sockets;
    for (std::string_view line : data_lines(table)) {
        auto fields = fields_of(line);
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        if (fields.size() < 10) continue;
        ProcSocket socket;
        socket.kind = kind;
        auto local = inet_address(fields[1], kind, ipv6);
        auto remote = inet_address(fields[2], kind, ipv6);
        int state = 0;
        unsigned long inode = 0;
        if (!local || !remote || !hex(fields[3], state)) continue;
        auto [end, error] = std::from_chars(fields[9].data(), fields[9].data() + fields[9].size(), inode);
        if (error != std::errc()) continue;
        socket.local = *local;
        socket.state = state;
        socket.inode = inode;
        // udp: 07 (TCP_CLOSE) is an unconnected, bound socket: the "listener" of a datagram service.
        socket.listening = kind == ProcSocket::Kind::tcp ? state == 0x0A : state == 0x07;
        if (!socket.listening) socket.remote = *remote;
        sockets.push_back(std::move(socket));
    }
    return sockets;
}

std::vector<ProcSocket> unix_stream_sockets(const std::vector<UnixSocketEntry>& entries) {
    std::vector<ProcSocket> sockets;
    for (const auto& entry : entries) {
        if (entry.type != SOCK_STREAM) continue;
        ProcSocket socket;
        socket.kind = ProcSocket::Kind::unix_stream;
        socket.inode = entry.inode;
        socket.state = static_cast<int>(entry.state);
        socket.listening = entry.flags & 0x10000;  // __SO_ACCEPTCON
        if (!entry.path.empty()) socket.local = "unix:" + entry.path;
        sockets.push_back(std::move(socket));
    }
    return sockets;
}

std::map<unsigned long, int> socket_inodes(pid_t pid) {
    std::map<unsigned long, int> inodes;
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", pid), error)) {
        char target[64];
        ssize_t length = ::readlink(entry.path().c_str(), target, sizeof(target) - 1);
        if (length <= 0) continue;
        std::string_view link(target, static_cast<std::size_t>(length));
        if (!link.starts_with("socket:[") || !link.ends_with("]")) continue;
        unsigned long inode = 0;
        auto digits = link.substr(8, link.size() - 9);
        if (std::from_chars(digits.data(), digits.data() + digits.size(), inode).ec != std::errc()) continue;
        int fd = 0;
        auto name = entry.path().filename().string();
        if (std::from_chars(name.data(), name.data() + name.size(), fd).ec != std::errc()) continue;
        inodes.emplace(inode, fd);
    }
    if (error) throw std::system_error(error, fmt::format("open /proc/{}/fd", pid));
    return inodes;
}

std::vector<ProcSocket> proc_sockets(pid_t pid) {
    std::vector<ProcSocket> all;
    auto add = [&](std::vector<ProcSocket> more) { all.insert(all.end(), more.begin(), more.end()); };
    std::string base = fmt::format("/proc/{}/net/", pid);
    add(parse_proc_net_inet(read_all(base + "tcp"), ProcSocket::Kind::tcp, false));
    add(parse_proc_net_inet(read_all(base + "tcp6"), ProcSocket::Kind::tcp, true));
    add(parse_proc_net_inet(read_all(base + "udp"), ProcSocket::Kind::udp, false));
    add(parse_proc_net_inet(read_all(base + "udp6"), ProcSocket::Kind::udp, true));
    add(unix_stream_sockets(parse_proc_net_unix(read_all(base + "unix"))));
    return all;
}

bool belongs_to(const ProcSocket& connection, const ProcSocket& listener) {
    if (connection.kind != listener.kind || connection.listening) return false;
    if (connection.local == listener.local) return true;
    if (connection.kind == ProcSocket::Kind::unix_stream) return false;
    // A wildcard listener (0.0.0.0 / [::]) hands out connections with concrete local addresses.
    auto port_of = [](const std::string& address) { return address.substr(address.rfind(':')); };
    bool wildcard = listener.local.find("://0.0.0.0:") != std::string::npos ||
                    listener.local.find("://[::]:") != std::string::npos;
    return wildcard && port_of(connection.local) == port_of(listener.local);
}

std::vector<HeldConnection> held_connections(pid_t pid, int pidfd, const std::vector<ProcSocket>& listeners) {
    std::vector<HeldConnection> held;
    for (const auto& entry : socket_inodes(pid)) {
        // (not a structured binding: clang 14 cannot capture one in the lambda)
        const unsigned long inode = entry.first;
        const int fd = entry.second;
        if (std::any_of(listeners.begin(), listeners.end(), [&](const auto& l) { return l.inode == inode; }))
            continue;
        Fd copy(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, 0)));
        if (!copy) continue;  // closed meanwhile
        int listening = 0;
        socklen_t length = sizeof(listening);
        if (::getsockopt(copy.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0 && listening)
            continue;
        ProcSocket socket;
        try {
            auto local = SocketAddress::of_socket(copy.get());
            socket.local = local.to_string();
            socket.kind = local.transport() == SocketAddress::Transport::udp ? ProcSocket::Kind::udp
                          : local.transport() == SocketAddress::Transport::unix_stream
                              ? ProcSocket::Kind::unix_stream
                              : ProcSocket::Kind::tcp;
        } catch (const std::exception&) {
            continue;  // not an address family we listen on
        }
        if (!std::any_of(listeners.begin(), listeners.end(),
                         [&](const auto& l) { return belongs_to(socket, l); }))
            continue;
        sockaddr_storage peer{};
        socklen_t peer_length = sizeof(peer);
        std::string remote = socket.local;
        if (::getpeername(copy.get(), reinterpret_cast<sockaddr*>(&peer), &peer_length) == 0 &&
            peer_length > sizeof(sa_family_t)) {
            try {
                remote =
                    SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&peer), peer_length, SOCK_STREAM)
                        .to_string();
            } catch (const std::exception&) {}
        }
        held.push_back({std::move(copy), socket.local, std::move(remote)});
    }
    return held;
}

}  // namespace ktricks::handoff::detail
