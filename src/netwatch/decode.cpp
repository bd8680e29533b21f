#include "netwatch/decode.hpp"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/genetlink.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/nl80211.h>
#include <linux/rtnetlink.h>
#include "ktricks/netlink.hpp"

#include <fmt/format.h>

#include <cstring>

namespace ktricks::netwatch {
namespace {

using netlink::Attributes;

// Attribute helpers over the layer's bounds-checked table.
std::string text(const Attributes& attributes, std::uint16_t type) {
    return std::string(attributes.string(type).value_or(std::string_view()));
}
std::string raw(const Attributes& attributes, std::uint16_t type) {
    auto bytes = attributes.bytes(type);
    return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}
std::string mac_of(const Attributes& attributes, std::uint16_t type) {
    auto bytes = attributes.bytes(type);
    return bytes.empty() ? std::string() : format_mac(bytes.data(), bytes.size());
}

std::string address_text(int family, const nlattr* attr) {
    if (!attr) return {};
    std::size_t need = family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
    if (need == 0 || mnl_attr_get_payload_len(attr) < need) return {};
    char text[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(family, mnl_attr_get_payload(attr), text, sizeof(text));
    return text;
}

Change decode_link(const nlmsghdr* message) {
    Change change;
    auto header = netlink::read_header<ifinfomsg>(*message);
    if (!header) return change;
    Attributes attributes(*message, sizeof(ifinfomsg), IFLA_MAX);
    auto* info = &*header;
    change.kind = Change::Kind::link;
    change.removed = message->nlmsg_type == RTM_DELLINK;
    Link& link = change.link;
    link.index = info->ifi_index;
    link.flags = info->ifi_flags;
    link.carrier = info->ifi_flags & IFF_LOWER_UP;
    link.name = text(attributes, IFLA_IFNAME);
    link.operstate = attributes.u8(IFLA_OPERSTATE).value_or(IF_OPER_UNKNOWN);
    link.mac = mac_of(attributes, IFLA_ADDRESS);
    if (auto* linkinfo = attributes.get(IFLA_LINKINFO))
        link.kind = text(Attributes(linkinfo, IFLA_INFO_MAX), IFLA_INFO_KIND);
    // A wireless extension event (RTM_NEWLINK carrying only IFLA_WIRELESS) is not a link change.
    if (attributes.has(IFLA_WIRELESS) && link.name.empty()) change.kind = Change::Kind::none;
    return change;
}

Change decode_address(const nlmsghdr* message) {
    Change change;
    auto header = netlink::read_header<ifaddrmsg>(*message);
    if (!header) return change;
    Attributes attributes(*message, sizeof(ifaddrmsg), IFA_MAX);
    auto* info = &*header;
    if (info->ifa_family != AF_INET && info->ifa_family != AF_INET6) return change;
    Address& address = change.address;
    address.index = static_cast<int>(info->ifa_index);
    address.family = info->ifa_family;
    address.prefixlen = info->ifa_prefixlen;
    address.scope = info->ifa_scope;
    address.flags = attributes.u32(IFA_FLAGS).value_or(info->ifa_flags);
    // IFA_LOCAL is the interface's own address on point-to-point links, where IFA_ADDRESS is the peer.
    address.address = address_text(
        address.family, attributes.has(IFA_LOCAL) ? attributes.get(IFA_LOCAL) : attributes.get(IFA_ADDRESS));
    if (address.address.empty()) return change;
    change.kind = Change::Kind::address;
    change.removed = message->nlmsg_type == RTM_DELADDR;
    return change;
}

Change decode_route(const nlmsghdr* message) {
    Change change;
    auto header = netlink::read_header<rtmsg>(*message);
    if (!header) return change;
    Attributes attributes(*message, sizeof(rtmsg), RTA_MAX);
    auto* info = &*header;
    if (info->rtm_family != AF_INET && info->rtm_family != AF_INET6) return change;
    // Cached clones (RTM_F_CLONED) and the kernel's local/broadcast table are bookkeeping, not
    // routes a user configured or asks about.
    if (info->rtm_flags & RTM_F_CLONED) return change;
    Route& route = change.route;
    route.family = info->rtm_family;
    route.table = attributes.u32(RTA_TABLE).value_or(info->rtm_table);
    if (route.table == RT_TABLE_LOCAL) return change;
    route.dst_len = info->rtm_dst_len;
    route.dst = address_text(route.family, attributes.get(RTA_DST));
    route.gateway = address_text(route.family, attributes.get(RTA_GATEWAY));
    route.prefsrc = address_text(route.family, attributes.get(RTA_PREFSRC));
    route.oif = static_cast<int>(attributes.u32(RTA_OIF).value_or(0));
    route.priority = attributes.u32(RTA_PRIORITY).value_or(0);
    route.type = info->rtm_type;
    route.protocol = info->rtm_protocol;
    route.scope = info->rtm_scope;
    if (route.type != RTN_UNICAST && route.type != RTN_BLACKHOLE && route.type != RTN_UNREACHABLE &&
        route.type != RTN_PROHIBIT)
        return change;
    change.kind = Change::Kind::route;
    change.removed = message->nlmsg_type == RTM_DELROUTE;
    return change;
}

// The SSID element (id 0) of a beacon/probe-response information element list.
std::string ssid_from_ies(const std::string& ies) {
    std::size_t at = 0;
    while (at + 2 <= ies.size()) {
        auto id = static_cast<unsigned char>(ies[at]);
        std::size_t length = static_cast<unsigned char>(ies[at + 1]);
        if (at + 2 + length > ies.size()) break;
        if (id == 0) return ies.substr(at + 2, length);
        at += 2 + length;
    }
    return {};
}

}  // namespace

std::string format_mac(const void* bytes, std::size_t length) {
    std::string text;
    auto* data = static_cast<const unsigned char*>(bytes);
    for (std::size_t i = 0; i < length; ++i) text += fmt::format("{}{:02x}", i ? ":" : "", data[i]);
    return text;
}

Change decode_rtnl(const nlmsghdr* message) {
    if (message->nlmsg_len < NLMSG_HDRLEN) return {};
    switch (message->nlmsg_type) {
        case RTM_NEWLINK:
        case RTM_DELLINK: return decode_link(message);
        case RTM_NEWADDR:
        case RTM_DELADDR: return decode_address(message);
        case RTM_NEWROUTE:
        case RTM_DELROUTE: return decode_route(message);
        default: return {};
    }
}

std::optional<Nl80211Message> decode_nl80211(const nlmsghdr* message) {
    auto header = netlink::read_header<genlmsghdr>(*message);
    if (!header) return std::nullopt;
    Attributes attributes(*message, sizeof(genlmsghdr), Attributes::limit);
    Nl80211Message decoded;
    decoded.command = header->cmd;
    decoded.ifindex = static_cast<int>(attributes.u32(NL80211_ATTR_IFINDEX).value_or(0));
    if (attributes.bytes(NL80211_ATTR_MAC).size() == 6) decoded.mac = mac_of(attributes, NL80211_ATTR_MAC);
    decoded.ssid = raw(attributes, NL80211_ATTR_SSID);
    decoded.freq = static_cast<int>(attributes.u32(NL80211_ATTR_WIPHY_FREQ).value_or(0));
    if (auto type = attributes.u32(NL80211_ATTR_IFTYPE)) decoded.iftype = static_cast<int>(*type);
    if (auto status = attributes.u16(NL80211_ATTR_STATUS_CODE)) decoded.status = *status;
    if (auto reason = attributes.u16(NL80211_ATTR_REASON_CODE)) decoded.reason = *reason;
    decoded.by_ap = attributes.has(NL80211_ATTR_DISCONNECTED_BY_AP);
    if (auto* bss = attributes.get(NL80211_ATTR_BSS)) {
        Attributes nested(bss, NL80211_BSS_MAX);
        auto status = nested.u32(NL80211_BSS_STATUS);
        decoded.bss_associated = status && (*status == NL80211_BSS_STATUS_ASSOCIATED ||
                                            *status == NL80211_BSS_STATUS_AUTHENTICATED);
        if (nested.bytes(NL80211_BSS_BSSID).size() == 6)
            decoded.bss_bssid = mac_of(nested, NL80211_BSS_BSSID);
        decoded.bss_ssid = ssid_from_ies(raw(nested, NL80211_BSS_INFORMATION_ELEMENTS));
        decoded.bss_freq = static_cast<int>(nested.u32(NL80211_BSS_FREQUENCY).value_or(0));
        if (auto mbm = nested.u32(NL80211_BSS_SIGNAL_MBM))
            decoded.bss_signal = static_cast<std::int32_t>(*mbm) / 100;
    }
    return decoded;
}

}  // namespace ktricks::netwatch
