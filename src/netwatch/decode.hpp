// Decoders of the kernel's netlink messages into netwatch's objects. Pure functions of bytes, so
// they are fuzzed: a message from the kernel is outside input like any other (truncated or
// unknown attributes must never crash the watcher).
#pragma once

#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "netwatch/state.hpp"

namespace ktricks::netwatch {

// RTM_NEWLINK/DELLINK, RTM_NEWADDR/DELADDR, RTM_NEWROUTE/DELROUTE (IPv4/IPv6, unicast routes of
// every table except local) into a Change; Kind::none for anything else or anything malformed.
Change decode_rtnl(const nlmsghdr* message);

// An nl80211 message (NL80211_CMD_*): the fields netwatch uses.
struct Nl80211Message {
    int command = 0;
    int ifindex = 0;
    std::string mac;            // NL80211_ATTR_MAC (the BSSID in CONNECT/ROAM)
    std::string ssid;           // NL80211_ATTR_SSID (GET_INTERFACE answers)
    int freq = 0;               // NL80211_ATTR_WIPHY_FREQ
    int iftype = -1;            // NL80211_ATTR_IFTYPE
    std::optional<int> status;  // NL80211_ATTR_STATUS_CODE (CONNECT; 0 = success)
    std::optional<int> reason;  // NL80211_ATTR_REASON_CODE (DISCONNECT; IEEE 802.11 reason code)
    bool by_ap = false;         // NL80211_ATTR_DISCONNECTED_BY_AP (DISCONNECT)
    // From a GET_SCAN dump entry (NL80211_ATTR_BSS): the BSS we are associated with.
    bool bss_associated = false;
    std::string bss_bssid, bss_ssid;
    int bss_freq = 0;
    std::optional<int> bss_signal;  // dBm
};
// nullopt for malformed messages.
std::optional<Nl80211Message> decode_nl80211(const nlmsghdr* message);

std::string format_mac(const void* bytes, std::size_t length);

}  // namespace ktricks::netwatch
