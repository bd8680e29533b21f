// --allow rules: SocketAddress grammar with a port range and "*" for any host of the family.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <fmt/format.h>

#include <charconv>
#include <cstring>

#include "ktricks/core/error.hpp"
#include "ktricks/jail.hpp"

namespace ktricks::jail {
namespace {

[[noreturn]] void bad(std::string_view text, std::string_view why) {
    throw InputError(fmt::format("--allow \"{}\": {}", printable(text), why));
}

std::uint16_t parse_port(std::string_view text, std::string_view digits) {
    unsigned value = 0;
    auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (digits.empty() || error != std::errc() || end != digits.data() + digits.size() || value > 65535)
        bad(text, fmt::format("\"{}\" is not a port (0-65535)", printable(digits)));
    return static_cast<std::uint16_t>(value);
}

bool same_host(const SocketAddress& a, const SocketAddress& b) {
    if (a.family() != b.family()) return false;
    if (a.family() == AF_INET)
        return reinterpret_cast<const sockaddr_in*>(a.sockaddr_ptr())->sin_addr.s_addr ==
               reinterpret_cast<const sockaddr_in*>(b.sockaddr_ptr())->sin_addr.s_addr;
    auto* x = reinterpret_cast<const sockaddr_in6*>(a.sockaddr_ptr());
    auto* y = reinterpret_cast<const sockaddr_in6*>(b.sockaddr_ptr());
    return std::memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(in6_addr)) == 0 &&
           x->sin6_scope_id == y->sin6_scope_id;
}

}  // namespace

AllowRule AllowRule::parse(std::string_view text) {
    if (text.starts_with("unix:"))
        bad(text, "the broker hands out inet listeners only (tcp, tcp6, udp, udp6)");
    auto scheme_end = text.find("://");
    if (scheme_end == std::string_view::npos)
        bad(text, "expected SCHEME://HOST:PORT[-PORT], e.g. tcp://0.0.0.0:8000-8100");
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon < scheme_end + 3) bad(text, "missing :PORT or :PORT-PORT");
    std::string_view ports = text.substr(colon + 1);
    std::string_view head = text.substr(0, colon);  // SCHEME://HOST
    std::string_view host = head.substr(scheme_end + 3);
    std::string_view scheme = text.substr(0, scheme_end);

    AllowRule rule;
    auto dash = ports.find('-');
    rule.first_port_ = parse_port(text, ports.substr(0, dash));
    rule.last_port_ =
        dash == std::string_view::npos ? rule.first_port_ : parse_port(text, ports.substr(dash + 1));
    if (rule.last_port_ < rule.first_port_) bad(text, "the port range ends before it starts");

    if (host == "*") {
        if (scheme == "tcp" || scheme == "tcp4")
            rule.transport_ = SocketAddress::Transport::tcp, rule.family_ = AF_INET;
        else if (scheme == "udp" || scheme == "udp4")
            rule.transport_ = SocketAddress::Transport::udp, rule.family_ = AF_INET;
        else if (scheme == "tcp6")
            rule.transport_ = SocketAddress::Transport::tcp, rule.family_ = AF_INET6;
        else if (scheme == "udp6")
            rule.transport_ = SocketAddress::Transport::udp, rule.family_ = AF_INET6;
        else
            bad(text,
                fmt::format("unknown scheme \"{}\" (expected tcp, tcp6, udp or udp6)", printable(scheme)));
        return rule;
    }
    // The host part is checked by the one address grammar, with a stand-in port.
    SocketAddress address = [&] {
        try {
            return SocketAddress::parse(fmt::format("{}:0", head));
        } catch (const InputError& error) {
            bad(text, error.what());
        }
    }();
    rule.transport_ = address.transport();
    rule.family_ = address.family();
    rule.host_ = address;
    return rule;
}

bool AllowRule::allows(const SocketAddress& address) const noexcept {
    if (address.transport() != transport_ || address.family() != family_) return false;
    if (address.port() < first_port_ || address.port() > last_port_) return false;
    return !host_ || same_host(*host_, address);
}

std::string AllowRule::to_string() const {
    std::string ports = first_port_ == last_port_ ? fmt::format("{}", first_port_)
                                                  : fmt::format("{}-{}", first_port_, last_port_);
    if (host_) {
        std::string text = host_->to_string();  // ...:0
        return fmt::format("{}:{}", text.substr(0, text.rfind(':')), ports);
    }
    std::string scheme = transport_ == SocketAddress::Transport::udp ? "udp" : "tcp";
    if (family_ == AF_INET6) scheme += "6";
    return fmt::format("{}://*:{}", scheme, ports);
}

}  // namespace ktricks::jail
