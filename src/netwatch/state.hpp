// The cached network state of one namespace and the events that changes to it produce.
//
// Every incoming object (decoded by rtnl.cpp / nl80211.cpp) goes through State::apply_*, which
// compares the cached object with the new one and returns the events; a full re-dump goes through
// State::resync, which diffs the whole cache against the dump with the same per-object rules.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "ktricks/netwatch.hpp"

namespace ktricks::netwatch {

struct Link {
    int index = 0;
    std::string name;
    unsigned flags = 0;    // IFF_*
    int operstate = 0;     // IF_OPER_*
    bool carrier = false;  // IFF_LOWER_UP
    std::string mac;
    std::string kind;  // IFLA_INFO_KIND: veth, bridge, ...
    // "up" for rules: administratively up, carrier, and the kernel's RFC 2863 state not down.
    bool usable() const noexcept;
    bool operator==(const Link&) const = default;
};

struct Address {
    int index = 0;
    int family = 0;       // AF_INET / AF_INET6
    std::string address;  // text form
    int prefixlen = 0;
    int scope = 0;       // RT_SCOPE_*
    unsigned flags = 0;  // IFA_F_*
    auto key() const { return std::tie(index, family, address, prefixlen); }
    bool operator==(const Address&) const = default;
};

struct Route {
    int family = 0;
    std::uint32_t table = 0;
    std::string dst;  // "" for the default route
    int dst_len = 0;
    std::string gateway;
    std::string prefsrc;
    int oif = 0;
    std::uint32_t priority = 0;
    int type = 0;  // RTN_*
    int protocol = 0;
    int scope = 0;
    auto key() const { return std::tie(family, table, dst, dst_len, priority, oif, gateway); }
    bool is_default() const noexcept;
    bool operator==(const Route&) const = default;
};

struct Wifi {
    int index = 0;
    std::string ssid;
    std::string bssid;
    int freq = 0;               // MHz, 0 if unknown
    std::optional<int> signal;  // dBm
    bool operator==(const Wifi&) const = default;
};

// One decoded netlink message: which object, and whether it is new (or changed) or gone.
struct Change {
    enum class Kind {
        link,
        address,
        route,
        wifi_connect,
        wifi_disconnect,
        wifi_roam,
        none
    } kind = Kind::none;
    bool removed = false;
    Link link;
    Address address;
    Route route;
    Wifi wifi;
};

struct EventFlags {
    bool initial = false;
    bool resync = false;
};

class State {
public:
    std::map<int, Link> links;
    std::map<std::tuple<int, int, std::string, int>, Address> addresses;
    std::map<std::tuple<int, std::uint32_t, std::string, int, std::uint32_t, int, std::string>, Route> routes;
    std::map<int, Wifi> wifi;

    // Applies one change; appends the resulting events (in the order a reader would expect them).
    void apply(const Change& change, std::vector<NetEvent>& events, EventFlags flags = {});
    // Replaces the cache with a fresh dump, emitting the differences (link, address, route, wifi,
    // then derived default-route and online changes).
    void resync(const State& fresh, std::vector<NetEvent>& events, EventFlags flags);

    std::string name_of(int index) const;
    bool online(int index) const;
    // The preferred default route of a family (lowest metric in the main table), if any.
    const Route* default_route(int family) const;
    // Canonical text of the cache, for comparing it with the kernel's (tests, --dump-state).
    std::string describe() const;

    std::string netns;              // name put on every event
    std::uint64_t netns_inode = 0;  // and its nsfs inode (--all-netns, namespaces other than ours)

private:
    NetEvent make(std::string type, int index, EventFlags flags) const;
    void link_change(const Link* before, const Link* after, std::vector<NetEvent>& events, EventFlags flags);
    void address_change(const Address* before, const Address* after, std::vector<NetEvent>& events,
                        EventFlags flags);
    void route_change(const Route* before, const Route* after, std::vector<NetEvent>& events,
                      EventFlags flags, bool derived = false);
    void flush_ipv4_routes(int index, const std::string* prefsrc, std::vector<NetEvent>& events,
                           EventFlags flags);
    // Default-route and online/offline events for what changed since the snapshot.
    struct Derived {
        std::optional<Route> default4, default6;
        std::map<int, bool> online;
    };
    Derived snapshot() const;
    void derived_events(const Derived& before, std::vector<NetEvent>& events, EventFlags flags);
};

std::string family_name(int family);
std::string operstate_name(int operstate);

}  // namespace ktricks::netwatch
