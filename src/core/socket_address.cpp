#include "ktricks/core/socket_address.hpp"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <charconv>
#include <cstddef>
#include <cstring>

#include "ktricks/core/error.hpp"

namespace ktricks {
namespace {

constexpr std::size_t sun_path_size = sizeof(sockaddr_un::sun_path);

[[noreturn]] void bad(std::string_view text, std::string_view why) {
    throw InputError(fmt::format("address \"{}\": {}", printable(text), why));
}

std::uint16_t parse_port(std::string_view text, std::string_view port) {
    if (port.empty()) bad(text, "missing port after ':'");
    unsigned value = 0;
    auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (error == std::errc::result_out_of_range || (error == std::errc() && value > 65535))
        bad(text, fmt::format("port {} is out of range 0-65535", port));
    if (error != std::errc() || end != port.data() + port.size())
        bad(text, fmt::format("port \"{}\" is not a number", port));
    return static_cast<std::uint16_t>(value);
}

// "%eth0" or "%3": the scope id of a link-local IPv6 address.
std::uint32_t parse_scope(std::string_view text, std::string_view scope) {
    if (scope.empty()) bad(text, "empty IPv6 scope after '%'");
    std::uint32_t index = 0;
    auto [end, error] = std::from_chars(scope.data(), scope.data() + scope.size(), index);
    if (error == std::errc() && end == scope.data() + scope.size()) return index;
    if (scope.size() >= IF_NAMESIZE) bad(text, fmt::format("interface name \"{}\" is too long", scope));
    index = ::if_nametoindex(std::string(scope).c_str());
    if (index == 0) bad(text, fmt::format("no network interface named \"{}\"", scope));
    return index;
}

}  // namespace

SocketAddress SocketAddress::unix_path(std::string_view path) {
    std::string text = fmt::format("unix:{}", path);
    if (path.empty()) bad(text, "empty unix socket path");
    if (path.find('\0') != std::string_view::npos) bad(text, "unix socket path contains a NUL byte");
    if (path.size() >= sun_path_size)
        bad(text, fmt::format("unix socket path is {} bytes; the kernel allows at most {}", path.size(),
                              sun_path_size - 1));
    SocketAddress address;
    address.transport_ = Transport::unix_stream;
    auto* un = reinterpret_cast<sockaddr_un*>(&address.storage_);
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, path.data(), path.size());
    address.length_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    return address;
}

SocketAddress SocketAddress::unix_abstract(std::string_view name) {
    std::string text = fmt::format("unix:@{}", name);
    if (name.empty()) bad(text, "empty abstract socket name");
    if (name.find('\0') != std::string_view::npos) bad(text, "abstract socket name contains a NUL byte");
    // The leading NUL that marks an abstract name takes one byte of sun_path.
    if (name.size() > sun_path_size - 1)
        bad(text, fmt::format("abstract socket name is {} bytes; the kernel allows at most {}", name.size(),
                              sun_path_size - 1));
    SocketAddress address;
    address.transport_ = Transport::unix_stream;
    auto* un = reinterpret_cast<sockaddr_un*>(&address.storage_);
    un->sun_family = AF_UNIX;
    un->sun_path[0] = '\0';
    std::memcpy(un->sun_path + 1, name.data(), name.size());
    // Abstract names are not NUL-terminated: the length is the name.
    address.length_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
    return address;
}

SocketAddress SocketAddress::parse(std::string_view text) {
    if (text.empty()) bad(text, "empty address (expected e.g. tcp://127.0.0.1:8080 or unix:/run/x.sock)");
    if (text.find('\0') != std::string_view::npos) bad(text, "contains a NUL byte");
    if (int c = first_control_byte(text); c >= 0)
        bad(text, fmt::format("contains a control character (byte 0x{:02x})", c));

    if (text.starts_with("unix:")) {
        std::string_view rest = text.substr(5);
        if (rest.starts_with("//")) bad(text, "write unix:/path or unix:@name, not unix://");
        if (rest.starts_with("@")) {
            try {
                return unix_abstract(rest.substr(1));
            } catch (const InputError&) {
                if (rest.size() == 1) bad(text, "empty abstract socket name after '@'");
                throw;
            }
        }
        if (rest.empty()) bad(text, "empty unix socket path after 'unix:'");
        return unix_path(rest);
    }

    auto scheme_end = text.find("://");
    if (scheme_end == std::string_view::npos)
        bad(text, "missing scheme (expected tcp://, tcp6://, udp://, udp6://, unix:/path or unix:@name)");
    std::string_view scheme = text.substr(0, scheme_end);
    Transport transport;
    int required_family = AF_UNSPEC;
    if (scheme == "tcp") transport = Transport::tcp;
    else if (scheme == "tcp6")
        transport = Transport::tcp, required_family = AF_INET6;
    else if (scheme == "tcp4")
        transport = Transport::tcp, required_family = AF_INET;
    else if (scheme == "udp")
        transport = Transport::udp;
    else if (scheme == "udp6")
        transport = Transport::udp, required_family = AF_INET6;
    else if (scheme == "udp4")
        transport = Transport::udp, required_family = AF_INET;
    else
        bad(text, fmt::format("unknown scheme \"{}\" (expected tcp, tcp6, udp, udp6 or unix)", scheme));

    std::string_view rest = text.substr(scheme_end + 3);
    std::string_view host, port;
    bool bracketed = false;
    if (rest.starts_with('[')) {
        auto close = rest.find(']');
        if (close == std::string_view::npos) bad(text, "missing ']' after IPv6 address");
        host = rest.substr(1, close - 1);
        bracketed = true;
        std::string_view after = rest.substr(close + 1);
        if (!after.starts_with(':')) bad(text, "missing ':PORT' after ']'");
        port = after.substr(1);
    } else {
        auto colon = rest.rfind(':');
        if (colon == std::string_view::npos)
            bad(text, fmt::format("missing port (expected {}://HOST:PORT)", scheme));
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
        if (host.find(':') != std::string_view::npos)
            bad(text, "IPv6 addresses must be in brackets, e.g. tcp6://[::1]:8080");
        if (host.find('/') != std::string_view::npos || port.find('/') != std::string_view::npos)
            bad(text, "unexpected '/': an address has no path");
    }
    std::uint16_t port_number = parse_port(text, port);

    SocketAddress address;
    address.transport_ = transport;
    bool any = host.empty() || host == "*";
    if (bracketed) {
        if (required_family == AF_INET)
            bad(text, "an IPv6 address in brackets needs tcp6/udp6, not a 4 scheme");
        std::string_view literal = host;
        std::uint32_t scope = 0;
        if (auto percent = host.find('%'); percent != std::string_view::npos) {
            literal = host.substr(0, percent);
            scope = parse_scope(text, host.substr(percent + 1));
        }
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&address.storage_);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port_number);
        in6->sin6_scope_id = scope;
        if (!literal.empty() && ::inet_pton(AF_INET6, std::string(literal).c_str(), &in6->sin6_addr) != 1)
            bad(text, fmt::format("\"{}\" is not an IPv6 address", literal));
        address.length_ = sizeof(sockaddr_in6);
        return address;
    }
    if (required_family == AF_INET6) {
        if (!any) bad(text, "IPv6 addresses must be in brackets, e.g. tcp6://[::1]:8080");
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&address.storage_);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port_number);
        in6->sin6_addr = in6addr_any;
        address.length_ = sizeof(sockaddr_in6);
        return address;
    }
    auto* in = reinterpret_cast<sockaddr_in*>(&address.storage_);
    in->sin_family = AF_INET;
    in->sin_port = htons(port_number);
    if (any) {
        in->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (host == "localhost") {
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else {
        // inet_pton, unlike inet_aton, rejects "1.2.3" and "0x7f.1": only dotted quads are addresses.
        if (::inet_pton(AF_INET, std::string(host).c_str(), &in->sin_addr) != 1)
            bad(text, fmt::format("\"{}\" is not an IPv4 address (no DNS is done; use a literal)", host));
    }
    address.length_ = sizeof(sockaddr_in);
    return address;
}

SocketAddress SocketAddress::from_sockaddr(const sockaddr* raw, socklen_t length, int socket_type) {
    SocketAddress address;
    if (length > sizeof(address.storage_) || length < sizeof(sa_family_t))
        throw InputError(fmt::format("socket address of {} bytes is not valid", length));
    std::memcpy(&address.storage_, raw, length);
    address.length_ = length;
    switch (raw->sa_family) {
        case AF_INET:
        case AF_INET6:
            address.transport_ = socket_type == SOCK_DGRAM ? Transport::udp : Transport::tcp;
            break;
        case AF_UNIX: address.transport_ = Transport::unix_stream; break;
        default: throw InputError(fmt::format("socket address family {} is not supported", raw->sa_family));
    }
    return address;
}

SocketAddress SocketAddress::of_socket(int fd) {
    sockaddr_storage storage{};
    socklen_t length = sizeof(storage);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) < 0)
        throw_errno("getsockname", "fd " + std::to_string(fd));
    int type = 0;
    socklen_t type_length = sizeof(type);
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_length) < 0)
        throw_errno("getsockopt(SO_TYPE)", "fd " + std::to_string(fd));
    return from_sockaddr(reinterpret_cast<sockaddr*>(&storage), length, type);
}

bool SocketAddress::is_abstract() const noexcept {
    auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
    return storage_.ss_family == AF_UNIX && length_ > offsetof(sockaddr_un, sun_path) &&
           un->sun_path[0] == '\0';
}

std::uint16_t SocketAddress::port() const noexcept {
    if (storage_.ss_family == AF_INET)
        return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
    if (storage_.ss_family == AF_INET6)
        return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
    return 0;
}

std::string SocketAddress::to_string() const {
    const char* scheme = transport_ == Transport::udp ? "udp" : "tcp";
    char buffer[INET6_ADDRSTRLEN] = {};
    if (storage_.ss_family == AF_INET) {
        auto* in = reinterpret_cast<const sockaddr_in*>(&storage_);
        ::inet_ntop(AF_INET, &in->sin_addr, buffer, sizeof(buffer));
        return fmt::format("{}://{}:{}", scheme, buffer, ntohs(in->sin_port));
    }
    if (storage_.ss_family == AF_INET6) {
        auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
        ::inet_ntop(AF_INET6, &in6->sin6_addr, buffer, sizeof(buffer));
        std::string scope = in6->sin6_scope_id ? fmt::format("%{}", in6->sin6_scope_id) : "";
        return fmt::format("{}6://[{}{}]:{}", scheme, buffer, scope, ntohs(in6->sin6_port));
    }
    if (storage_.ss_family == AF_UNIX) {
        auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
        std::size_t path_length =
            length_ > offsetof(sockaddr_un, sun_path) ? length_ - offsetof(sockaddr_un, sun_path) : 0;
        if (path_length == 0) return "unix:";  // unnamed (socketpair, unbound client)
        if (un->sun_path[0] == '\0')
            return fmt::format("unix:@{}", std::string_view(un->sun_path + 1, path_length - 1));
        return fmt::format("unix:{}", std::string_view(un->sun_path, strnlen(un->sun_path, path_length)));
    }
    return fmt::format("family-{}", storage_.ss_family);
}

bool operator==(const SocketAddress& a, const SocketAddress& b) noexcept {
    return a.transport_ == b.transport_ && a.length_ == b.length_ &&
           std::memcmp(&a.storage_, &b.storage_, a.length_) == 0;
}

Fd bind_socket(const SocketAddress& address, const BindOptions& options) {
    int type = options.socket_type ? options.socket_type : address.socket_type();
    Fd socket(::socket(address.family(), type | SOCK_CLOEXEC, 0));
    if (!socket) throw_errno("socket", address.to_string());
    auto set_option = [&](int level, int name, int value, const char* what) {
        if (::setsockopt(socket.get(), level, name, &value, sizeof(value)) < 0)
            throw_errno(fmt::format("setsockopt({})", what), address.to_string());
    };
    if (address.family() != AF_UNIX) {
        if (options.reuse_address && type == SOCK_STREAM)
            set_option(SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
        if (options.reuse_port) set_option(SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
        if (address.family() == AF_INET6)
            set_option(IPPROTO_IPV6, IPV6_V6ONLY, options.v6_only ? 1 : 0, "IPV6_V6ONLY");
    }
    if (::bind(socket.get(), address.sockaddr_ptr(), address.length()) < 0)
        throw_errno("bind", address.to_string());
    if ((type == SOCK_STREAM || type == SOCK_SEQPACKET) && ::listen(socket.get(), options.backlog) < 0)
        throw_errno("listen", address.to_string());
    return socket;
}

}  // namespace ktricks
