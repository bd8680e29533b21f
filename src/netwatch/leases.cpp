#include "netwatch/leases.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iterator>
#include <sstream>

namespace ktricks::netwatch {
namespace {

std::string read_text(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) return {};
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

std::vector<std::string_view> lines_of(std::string_view text) {
    std::vector<std::string_view> lines;
    while (!text.empty()) {
        auto end = text.find('\n');
        lines.push_back(text.substr(0, end));
        if (end == std::string_view::npos) break;
        text.remove_prefix(end + 1);
    }
    return lines;
}

std::string_view trim(std::string_view text) {
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
    return text;
}

std::vector<std::string> words(std::string_view text) {
    std::vector<std::string> list;
    std::istringstream in{std::string(text)};
    for (std::string word; in >> word;) list.push_back(word);
    return list;
}

std::string join(const std::vector<std::string>& list) {
    std::string text;
    for (const auto& item : list) text += (text.empty() ? "" : " ") + item;
    return text;
}

// The IPv4 options NetworkManager's own DHCP client asks for (nm-dhcp-options.c, `include`),
// reported to scripts as requested_NAME=1.
constexpr const char* requested_by_default[] = {"subnet_mask",
                                                "time_offset",
                                                "domain_name_servers",
                                                "host_name",
                                                "domain_name",
                                                "interface_mtu",
                                                "broadcast_address",
                                                "rfc3442_classless_static_routes",
                                                "routers",
                                                "static_routes",
                                                "nis_domain",
                                                "nis_servers",
                                                "ntp_servers",
                                                "domain_search",
                                                "ms_classless_static_routes",
                                                "wpad",
                                                "root_path"};

void add_requested(DhcpOptions& options) {
    if (options.empty()) return;
    for (const char* name : requested_by_default) options.emplace(std::string("requested_") + name, "1");
}

// dhclient's "expire 4 2026/12/03 23:30:00;" (UTC) or "expire never;".
bool expired(std::string_view when, long long now) {
    auto parts = words(when);  // "expire", weekday, date, time
    if (parts.size() < 4) return false;
    std::tm tm{};
    if (std::sscanf((parts[2] + " " + parts[3]).c_str(), "%d/%d/%d %d:%d:%d", &tm.tm_year, &tm.tm_mon,
                    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return static_cast<long long>(::timegm(&tm)) < now;
}

}  // namespace

DhcpOptions parse_networkd_lease(std::string_view text) {
    static const std::pair<const char*, const char*> names[] = {
        {"ADDRESS", "ip_address"},       {"NETMASK", "subnet_mask"},
        {"ROUTER", "routers"},           {"SERVER_ADDRESS", "dhcp_server_identifier"},
        {"NEXT_SERVER", "next_server"},  {"BROADCAST", "broadcast_address"},
        {"DNS", "domain_name_servers"},  {"NTP", "ntp_servers"},
        {"DOMAINNAME", "domain_name"},   {"DOMAIN_SEARCH_LIST", "domain_search"},
        {"HOSTNAME", "host_name"},       {"ROOT_PATH", "root_path"},
        {"LIFETIME", "dhcp_lease_time"}, {"T1", "dhcp_renewal_time"},
        {"T2", "dhcp_rebinding_time"},   {"MTU", "interface_mtu"}};
    DhcpOptions options;
    for (auto line : lines_of(text)) {
        line = trim(line);
        auto equals = line.find('=');
        if (line.empty() || line[0] == '#' || equals == std::string_view::npos) continue;
        auto key = line.substr(0, equals);
        auto value = join(words(line.substr(equals + 1)));
        if (value.empty()) continue;
        for (auto [file_key, name] : names)
            if (key == file_key) options[name] = value;
    }
    add_requested(options);
    return options;
}

DhcpOptions parse_dhclient_leases(std::string_view text, std::string_view iface, int family, long long now) {
    const std::string opening = family == 6 ? "lease6" : "lease";
    DhcpOptions found, current;
    bool inside = false, ours = false, stale = false;
    int depth = 0;
    for (auto raw : lines_of(text)) {
        auto line = trim(raw);
        if (!inside) {
            auto parts = words(line);
            if (parts.size() >= 2 && parts[0] == opening && parts[1] == "{") {
                inside = true, ours = stale = false, depth = 1;
                current.clear();
            }
            continue;
        }
        depth += static_cast<int>(std::count(line.begin(), line.end(), '{'));
        depth -= static_cast<int>(std::count(line.begin(), line.end(), '}'));
        if (depth <= 0) {
            inside = false;
            if (ours && !stale) found = current;  // later blocks are newer
            continue;
        }
        if (depth != 1 || line.empty() || line.back() != ';') continue;  // only the lease's own statements
        line.remove_suffix(1);
        auto parts = words(line);
        if (parts.empty()) continue;
        auto rest = [&](std::size_t from) {
            std::string value;
            for (std::size_t i = from; i < parts.size(); ++i) value += (value.empty() ? "" : " ") + parts[i];
            // dhclient separates list items with commas and quotes strings.
            std::replace(value.begin(), value.end(), ',', ' ');
            value.erase(std::remove(value.begin(), value.end(), '"'), value.end());
            return join(words(value));
        };
        if (parts[0] == "interface" && parts.size() >= 2) {
            ours = rest(1) == iface;
        } else if (parts[0] == "fixed-address" && parts.size() >= 2) {
            current["ip_address"] = rest(1);
        } else if (parts[0] == "expire" || parts[0] == "valid-lifetime-end") {
            stale = expired(line, now);
        } else if (parts[0] == "option" && parts.size() >= 3) {
            std::string name = parts[1];
            std::replace(name.begin(), name.end(), '-', '_');
            std::replace(name.begin(), name.end(), '.', '_');
            current[name] = rest(2);
        }
    }
    if (family == 4) add_requested(found);
    return found;
}

DhcpOptions parse_bootp_lease(std::string_view bytes) {
    // RFC 2131: yiaddr at offset 16, options after the magic cookie at 236.
    DhcpOptions options;
    if (bytes.size() < 240 || bytes.substr(236, 4) != std::string_view("\x63\x82\x53\x63", 4)) return options;
    auto ipv4 = [](std::string_view raw) {
        char text[INET_ADDRSTRLEN] = "";
        ::inet_ntop(AF_INET, raw.data(), text, sizeof text);
        return std::string(text);
    };
    auto ipv4_list = [&](std::string_view raw) {
        std::vector<std::string> list;
        for (std::size_t i = 0; i + 4 <= raw.size(); i += 4) list.push_back(ipv4(raw.substr(i, 4)));
        return join(list);
    };
    auto u32 = [](std::string_view raw) {
        std::uint32_t value = 0;
        for (unsigned char byte : raw.substr(0, 4)) value = value << 8 | byte;
        return fmt::format("{}", value);
    };
    auto text_of = [](std::string_view raw) {
        std::string text;
        for (unsigned char c : raw)
            if (c >= 0x20 && c < 0x7f) text += static_cast<char>(c);
        return text;
    };
    options["ip_address"] = ipv4(bytes.substr(16, 4));
    std::size_t at = 240;
    while (at < bytes.size()) {
        auto code = static_cast<unsigned char>(bytes[at]);
        if (code == 0) {
            ++at;
            continue;
        }
        if (code == 255 || at + 1 >= bytes.size()) break;
        std::size_t length = static_cast<unsigned char>(bytes[at + 1]);
        if (at + 2 + length > bytes.size()) break;
        auto value = bytes.substr(at + 2, length);
        at += 2 + length;
        switch (code) {
            case 1:
                if (length == 4) options["subnet_mask"] = ipv4(value);
                break;
            case 3: options["routers"] = ipv4_list(value); break;
            case 6: options["domain_name_servers"] = ipv4_list(value); break;
            case 12: options["host_name"] = text_of(value); break;
            case 15: options["domain_name"] = text_of(value); break;
            case 26:
                if (length == 2)
                    options["interface_mtu"] = fmt::format("{}", (static_cast<unsigned char>(value[0]) << 8) |
                                                                     static_cast<unsigned char>(value[1]));
                break;
            case 28:
                if (length == 4) options["broadcast_address"] = ipv4(value);
                break;
            case 42: options["ntp_servers"] = ipv4_list(value); break;
            case 51:
                if (length == 4) options["dhcp_lease_time"] = u32(value);
                break;
            case 54:
                if (length == 4) options["dhcp_server_identifier"] = ipv4(value);
                break;
            case 58:
                if (length == 4) options["dhcp_renewal_time"] = u32(value);
                break;
            case 59:
                if (length == 4) options["dhcp_rebinding_time"] = u32(value);
                break;
            default: break;
        }
    }
    for (auto it = options.begin(); it != options.end();)
        it = it->second.empty() ? options.erase(it) : std::next(it);
    add_requested(options);
    return options;
}

Resolver parse_resolv_conf(std::string_view text) {
    Resolver resolver;
    for (auto line : lines_of(text)) {
        auto parts = words(line);
        if (parts.size() < 2 || parts[0][0] == '#' || parts[0][0] == ';') continue;
        if (parts[0] == "nameserver") {
            (parts[1].find(':') == std::string::npos ? resolver.servers4 : resolver.servers6)
                .push_back(parts[1]);
        } else if (parts[0] == "search" || parts[0] == "domain") {
            resolver.domains.assign(parts.begin() + 1, parts.end());  // the last one wins, as in libc
        }
    }
    return resolver;
}

Resolver parse_resolved_link(std::string_view text) {
    Resolver resolver;
    for (auto line : lines_of(text)) {
        line = trim(line);
        if (line.rfind("SERVERS=", 0) == 0) {
            for (auto server : words(line.substr(8))) {
                // "ADDRESS[:PORT][%IFINDEX][#NAME]"; IPv6 with a port is "[ADDR]:PORT".
                server = server.substr(0, server.find_first_of("%#"));
                if (!server.empty() && server[0] == '[') server = server.substr(1, server.find(']') - 1);
                else if (std::count(server.begin(), server.end(), ':') == 1)
                    server = server.substr(0, server.find(':'));
                if (server.empty()) continue;
                (server.find(':') == std::string::npos ? resolver.servers4 : resolver.servers6)
                    .push_back(server);
            }
        } else if (line.rfind("DOMAINS=", 0) == 0) {
            for (auto domain : words(line.substr(8)))
                if (domain[0] != '~') resolver.domains.push_back(domain);  // "~x": routing only
        }
    }
    return resolver;
}

DhcpOptions HostFiles::dhcp(const std::string& iface, int ifindex, int family) const {
    if (family == 4) {
        if (auto options =
                parse_networkd_lease(read_text(fmt::format("{}/run/systemd/netif/leases/{}", root, ifindex)));
            !options.empty())
            return options;
        if (auto options =
                parse_bootp_lease(read_text(fmt::format("{}/var/lib/dhcpcd/{}.lease", root, iface)));
            !options.empty())
            return options;
    }
    const char* base = family == 6 ? "dhclient6" : "dhclient";
    for (const auto& path : {fmt::format("{}/var/lib/dhcp/{}.{}.leases", root, base, iface),
                             fmt::format("{}/var/lib/dhcp/{}.leases", root, base)}) {
        auto options =
            parse_dhclient_leases(read_text(path), iface, family, static_cast<long long>(std::time(nullptr)));
        if (!options.empty()) return options;
    }
    return {};
}

Resolver HostFiles::resolver(int ifindex) const {
    auto link = parse_resolved_link(read_text(fmt::format("{}/run/systemd/resolve/netif/{}", root, ifindex)));
    if (!link.servers4.empty() || !link.servers6.empty() || !link.domains.empty()) {
        link.per_link = true;
        return link;
    }
    auto global = parse_resolv_conf(read_text(root + "/etc/resolv.conf"));
    if (global.servers6.empty() && global.servers4.size() == 1 && global.servers4[0] == "127.0.0.53")
        global = parse_resolv_conf(read_text(root + "/run/systemd/resolve/resolv.conf"));
    return global;
}

}  // namespace ktricks::netwatch
