// SocketAddress: the one address grammar of every ktricks subcommand.
//
//   tcp://HOST:PORT     HOST is an IPv4 literal, "localhost", "*" or empty (any), or [IPv6]
//   tcp6://[ADDR]:PORT  IPv6; [ADDR%IFACE] carries a scope id; [::] or empty host means any
//   udp://HOST:PORT, udp6://[ADDR]:PORT   the same, datagram sockets
//   unix:/path/to/sock  a filesystem unix socket (stream)
//   unix:@name          an abstract unix socket (Linux): no file, freed when the last fd closes
//
// PORT is 0-65535 (0 lets the kernel choose). No DNS is done: addresses are literal.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "ktricks/core/fd.hpp"

namespace ktricks {

class SocketAddress {
public:
    enum class Transport { tcp, udp, unix_stream };

    // Throws InputError naming the text and what is wrong with it.
    static SocketAddress parse(std::string_view text);
    static SocketAddress unix_path(std::string_view path);
    static SocketAddress unix_abstract(std::string_view name);
    // From a kernel-filled address (getsockname, accept); type is SOCK_STREAM or SOCK_DGRAM.
    static SocketAddress from_sockaddr(const sockaddr* address, socklen_t length, int socket_type);
    // The address a socket is bound to.
    static SocketAddress of_socket(int fd);

    Transport transport() const noexcept { return transport_; }
    int family() const noexcept { return storage_.ss_family; }
    int socket_type() const noexcept { return transport_ == Transport::udp ? SOCK_DGRAM : SOCK_STREAM; }
    bool is_abstract() const noexcept;
    // Port of an inet address, 0 for unix.
    std::uint16_t port() const noexcept;

    const sockaddr* sockaddr_ptr() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
    socklen_t length() const noexcept { return length_; }

    // Canonical text that parse() accepts again: tcp://127.0.0.1:80, tcp6://[::1]:80, unix:@x.
    std::string to_string() const;

    friend bool operator==(const SocketAddress& a, const SocketAddress& b) noexcept;

private:
    SocketAddress() = default;
    sockaddr_storage storage_{};
    socklen_t length_ = 0;
    Transport transport_ = Transport::tcp;
};

struct BindOptions {
    int backlog = 4096;         // listen() backlog for stream sockets; the kernel caps it at somaxconn
    bool reuse_address = true;  // SO_REUSEADDR on TCP, so a restart need not wait out TIME_WAIT
    bool reuse_port = false;    // SO_REUSEPORT
    bool v6_only = true;        // IPV6_V6ONLY: tcp6://[::]:80 does not also take IPv4
    int socket_type = 0;        // override (e.g. SOCK_SEQPACKET for unix); 0 = the address's own
};

// socket() + bind() (+ listen() for stream sockets), close-on-exec. Errors name the address:
// "bind tcp://127.0.0.1:80: Address already in use".
Fd bind_socket(const SocketAddress& address, const BindOptions& options = {});

}  // namespace ktricks
