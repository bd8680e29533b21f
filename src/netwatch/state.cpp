#include "netwatch/state.hpp"

#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <fmt/format.h>

#include <climits>
#include <set>

namespace ktricks::netwatch {

std::string family_name(int family) {
    switch (family) {
        case AF_INET: return "inet";
        case AF_INET6: return "inet6";
        default: return fmt::format("{}", family);
    }
}

std::string operstate_name(int operstate) {
    static const char* const names[] = {"unknown", "notpresent", "down", "lowerlayerdown",
                                        "testing", "dormant",    "up"};
    if (operstate >= 0 && operstate < 7) return names[operstate];
    return fmt::format("{}", operstate);
}

bool Link::usable() const noexcept {
    // IF_OPER_UNKNOWN is what drivers without operstate support (lo, tun, some dummies) report
    // while running, so only the explicit "down" states count against the link.
    bool oper_ok = operstate == IF_OPER_UP || operstate == IF_OPER_UNKNOWN;
    return (flags & IFF_UP) && carrier && oper_ok;
}

bool Route::is_default() const noexcept {
    return dst_len == 0 && table == RT_TABLE_MAIN && type == RTN_UNICAST;
}

std::string State::name_of(int index) const {
    auto it = links.find(index);
    return it == links.end() ? std::string() : it->second.name;
}

const Route* State::default_route(int family) const {
    const Route* best = nullptr;
    auto it = routes.lower_bound({family, RT_TABLE_MAIN, std::string(), 0, 0, INT_MIN, std::string()});
    for (; it != routes.end(); ++it) {
        const Route& route = it->second;
        if (route.family != family || route.table != RT_TABLE_MAIN || !route.dst.empty() ||
            route.dst_len != 0)
            break;
        if (!route.is_default()) continue;
        if (!best || route.priority < best->priority) best = &route;
    }
    return best;
}

bool State::online(int index) const {
    auto link = links.find(index);
    if (link == links.end() || !link->second.usable() || (link->second.flags & IFF_LOOPBACK)) return false;
    bool address = false;
    for (auto it = addresses.lower_bound({index, INT_MIN, std::string(), INT_MIN});
         it != addresses.end() && it->second.index == index; ++it)
        if (it->second.scope == RT_SCOPE_UNIVERSE) address = true;
    if (!address) return false;
    for (int family : {AF_INET, AF_INET6}) {
        auto it = routes.lower_bound({family, RT_TABLE_MAIN, std::string(), 0, 0, INT_MIN, std::string()});
        for (; it != routes.end(); ++it) {
            const Route& route = it->second;
            if (route.family != family || route.table != RT_TABLE_MAIN || !route.dst.empty()) break;
            if (route.is_default() && route.oif == index) return true;
        }
    }
    return false;
}

NetEvent State::make(std::string type, int index, EventFlags flags) const {
    NetEvent event;
    event.type = std::move(type);
    event.ifindex = index;
    event.iface = name_of(index);
    event.netns = netns;
    event.netns_inode = netns_inode;
    event.initial = flags.initial;
    event.resync = flags.resync;
    // Every event of a connected wifi interface carries its network, so `ssid=home` works on
    // online/addr-add/... rules too.
    if (auto it = wifi.find(index); it != wifi.end()) {
        event.fields["ssid"] = it->second.ssid;
        event.fields["bssid"] = it->second.bssid;
    }
    return event;
}

static void describe_link(NetEvent& event, const Link& link) {
    event.iface = link.name;
    event.fields["operstate"] = operstate_name(link.operstate);
    event.fields["carrier"] = link.carrier ? 1 : 0;
    event.fields["admin"] = (link.flags & IFF_UP) ? "up" : "down";
    if (!link.mac.empty()) event.fields["mac"] = link.mac;
    if (!link.kind.empty()) event.fields["kind"] = link.kind;
}

void State::link_change(const Link* before, const Link* after, std::vector<NetEvent>& events,
                        EventFlags flags) {
    const Link& current = after ? *after : *before;
    auto emit = [&](const char* type) {
        NetEvent event = make(type, current.index, flags);
        describe_link(event, current);
        events.push_back(std::move(event));
    };
    if (!before) emit("link-add");
    bool was_up = before && before->usable();
    bool is_up = after && after->usable();
    if (is_up && !was_up) emit("link-up");
    if (was_up && !is_up) emit("link-down");
    if (before && after && before->name != after->name) {
        NetEvent event = make("link-rename", current.index, flags);
        describe_link(event, current);
        event.fields["old_iface"] = before->name;
        events.push_back(std::move(event));
    }
    if (!after) emit("link-remove");
}

void State::address_change(const Address* before, const Address* after, std::vector<NetEvent>& events,
                           EventFlags flags) {
    const Address& current = after ? *after : *before;
    if (before && after) return;  // lifetime/flag refreshes are not events
    NetEvent event = make(after ? "addr-add" : "addr-remove", current.index, flags);
    event.fields["family"] = family_name(current.family);
    event.fields["addr"] = current.address;
    event.fields["prefixlen"] = current.prefixlen;
    event.fields["scope"] = current.scope == RT_SCOPE_UNIVERSE ? "global"
                            : current.scope == RT_SCOPE_LINK   ? "link"
                            : current.scope == RT_SCOPE_HOST   ? "host"
                                                               : fmt::format("{}", current.scope);
    events.push_back(std::move(event));
}

void State::route_change(const Route* before, const Route* after, std::vector<NetEvent>& events,
                         EventFlags flags, bool derived) {
    if (before && after) return;  // same key: a metric or flag update
    const Route& current = after ? *after : *before;
    NetEvent event = make(after ? "route-add" : "route-remove", current.oif, flags);
    event.derived = derived;
    event.fields["family"] = family_name(current.family);
    event.fields["dst"] =
        current.dst.empty() ? "default" : fmt::format("{}/{}", current.dst, current.dst_len);
    if (!current.gateway.empty()) event.fields["gateway"] = current.gateway;
    if (!current.prefsrc.empty()) event.fields["prefsrc"] = current.prefsrc;
    event.fields["table"] = current.table;
    event.fields["metric"] = current.priority;
    events.push_back(std::move(event));
}

void State::flush_ipv4_routes(int index, const std::string* prefsrc, std::vector<NetEvent>& events,
                              EventFlags flags) {
    for (auto it = routes.begin(); it != routes.end();) {
        const Route& route = it->second;
        bool gone = route.family == AF_INET && (prefsrc ? route.prefsrc == *prefsrc : route.oif == index);
        if (!gone) {
            ++it;
            continue;
        }
        Route removed = route;
        it = routes.erase(it);
        route_change(&removed, nullptr, events, flags, true);
    }
}

State::Derived State::snapshot() const {
    Derived derived;
    if (auto* route = default_route(AF_INET)) derived.default4 = *route;
    if (auto* route = default_route(AF_INET6)) derived.default6 = *route;
    for (const auto& [index, link] : links) derived.online[index] = online(index);
    return derived;
}

void State::derived_events(const Derived& before, std::vector<NetEvent>& events, EventFlags flags) {
    Derived after = snapshot();
    auto compare = [&](int family, const std::optional<Route>& old, const std::optional<Route>& now) {
        auto same = [](const std::optional<Route>& a, const std::optional<Route>& b) {
            if (!a || !b) return !a && !b;
            return a->gateway == b->gateway && a->oif == b->oif;
        };
        if (same(old, now)) return;
        NetEvent event = make("default-route-change", now ? now->oif : old->oif, flags);
        event.fields["family"] = family_name(family);
        event.fields["gateway"] = now ? now->gateway : "";
        event.fields["present"] = now ? 1 : 0;
        if (old) {
            event.fields["old_gateway"] = old->gateway;
            event.fields["old_iface"] = name_of(old->oif);
        }
        events.push_back(std::move(event));
    };
    compare(AF_INET, before.default4, after.default4);
    compare(AF_INET6, before.default6, after.default6);
    std::set<int> indices;
    for (const auto& [index, on] : before.online) indices.insert(index);
    for (const auto& [index, on] : after.online) indices.insert(index);
    for (int index : indices) {
        auto was = before.online.find(index);
        auto is = after.online.find(index);
        bool was_online = was != before.online.end() && was->second;
        bool is_online = is != after.online.end() && is->second;
        if (was_online == is_online) continue;
        events.push_back(make(is_online ? "online" : "offline", index, flags));
    }
}

void State::apply(const Change& change, std::vector<NetEvent>& events, EventFlags flags) {
    Derived before = snapshot();
    switch (change.kind) {
        case Change::Kind::link: {
            auto it = links.find(change.link.index);
            std::optional<Link> old;
            if (it != links.end()) old = it->second;
            if (change.removed) {
                if (!old) return;
                flush_ipv4_routes(old->index, nullptr, events, flags);
                for (auto a = addresses.begin(); a != addresses.end();)
                    a = a->second.index == old->index ? addresses.erase(a) : std::next(a);
                wifi.erase(old->index);
                // offline (and default-route) events before link-remove, while the name is known
                derived_events(before, events, flags);
                links.erase(it);
                link_change(&*old, nullptr, events, flags);
                return;
            }
            if (old && *old == change.link) return;
            links[change.link.index] = change.link;
            link_change(old ? &*old : nullptr, &change.link, events, flags);
            // The kernel flushes IPv4 routes of a link that goes administratively down (NETDEV_DOWN)
            // without RTM_DELROUTE; carrier loss alone only marks them linkdown.
            if (old && (old->flags & IFF_UP) && !(change.link.flags & IFF_UP))
                flush_ipv4_routes(change.link.index, nullptr, events, flags);
            break;
        }
        case Change::Kind::address: {
            auto key = change.address.key();
            auto it = addresses.find(key);
            bool tentative = change.address.family == AF_INET6 &&
                             (change.address.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED));
            if (change.removed || tentative) {
                if (it == addresses.end()) return;
                Address old = it->second;
                addresses.erase(it);
                address_change(&old, nullptr, events, flags);
                if (old.family == AF_INET && change.removed) {
                    // fib_del_ifaddr: routes using the address as preferred source go silently, and
                    // when the link's last IPv4 address goes, every IPv4 route through it does.
                    flush_ipv4_routes(old.index, &old.address, events, flags);
                    bool any_left = false;
                    for (const auto& [k, a] : addresses)
                        if (a.index == old.index && a.family == AF_INET) any_left = true;
                    if (!any_left) flush_ipv4_routes(old.index, nullptr, events, flags);
                }
                break;
            }
            std::optional<Address> old;
            if (it != addresses.end()) old = it->second;
            addresses[key] = change.address;
            address_change(old ? &*old : nullptr, &change.address, events, flags);
            break;
        }
        case Change::Kind::route: {
            auto key = change.route.key();
            auto it = routes.find(key);
            if (change.removed) {
                if (it == routes.end()) return;
                Route old = it->second;
                routes.erase(it);
                route_change(&old, nullptr, events, flags);
                break;
            }
            std::optional<Route> old;
            if (it != routes.end()) old = it->second;
            routes[key] = change.route;
            route_change(old ? &*old : nullptr, &change.route, events, flags);
            break;
        }
        case Change::Kind::wifi_connect:
        case Change::Kind::wifi_roam: {
            int index = change.wifi.index;
            bool roam = change.kind == Change::Kind::wifi_roam;
            auto it = wifi.find(index);
            if (it != wifi.end() && it->second == change.wifi) return;
            std::optional<Wifi> old;
            if (it != wifi.end()) old = it->second;
            wifi[index] = change.wifi;
            NetEvent event = make(
                roam || (old && old->ssid == change.wifi.ssid) ? "wifi-roam" : "wifi-connect", index, flags);
            event.fields["ssid"] = change.wifi.ssid;
            event.fields["bssid"] = change.wifi.bssid;
            if (change.wifi.freq) event.fields["freq"] = change.wifi.freq;
            if (change.wifi.signal) event.fields["signal"] = *change.wifi.signal;
            if (old) event.fields["old_bssid"] = old->bssid;
            events.push_back(std::move(event));
            break;
        }
        case Change::Kind::wifi_disconnect: {
            auto it = wifi.find(change.wifi.index);
            if (it == wifi.end()) return;
            Wifi old = it->second;
            wifi.erase(it);
            NetEvent event = make("wifi-disconnect", old.index, flags);
            event.fields["ssid"] = old.ssid;
            event.fields["bssid"] = old.bssid;
            if (old.freq) event.fields["freq"] = old.freq;
            events.push_back(std::move(event));
            break;
        }
        case Change::Kind::none: return;
    }
    derived_events(before, events, flags);
}

void State::resync(const State& fresh, std::vector<NetEvent>& events, EventFlags flags) {
    Derived before = snapshot();
    // Links first (so later events can name new interfaces), removals of links last.
    for (const auto& [index, link] : fresh.links) {
        auto it = links.find(index);
        std::optional<Link> old;
        if (it != links.end()) old = it->second;
        links[index] = link;
        if (!old || !(*old == link)) link_change(old ? &*old : nullptr, &link, events, flags);
    }
    for (auto it = addresses.begin(); it != addresses.end();) {
        if (fresh.addresses.count(it->first)) {
            ++it;
            continue;
        }
        Address old = it->second;
        it = addresses.erase(it);
        address_change(&old, nullptr, events, flags);
    }
    for (const auto& [key, address] : fresh.addresses)
        if (!addresses.count(key)) {
            addresses[key] = address;
            address_change(nullptr, &address, events, flags);
        } else {
            addresses[key] = address;
        }
    for (auto it = routes.begin(); it != routes.end();) {
        if (fresh.routes.count(it->first)) {
            ++it;
            continue;
        }
        Route old = it->second;
        it = routes.erase(it);
        route_change(&old, nullptr, events, flags);
    }
    for (const auto& [key, route] : fresh.routes)
        if (!routes.count(key)) {
            routes[key] = route;
            route_change(nullptr, &route, events, flags);
        } else {
            routes[key] = route;
        }
    for (auto it = wifi.begin(); it != wifi.end();) {
        if (fresh.wifi.count(it->first)) {
            ++it;
            continue;
        }
        Change gone;
        gone.kind = Change::Kind::wifi_disconnect;
        gone.wifi = it->second;
        ++it;
        apply(gone, events, flags);
    }
    for (const auto& [index, w] : fresh.wifi) {
        Change connect;
        connect.kind = Change::Kind::wifi_connect;
        connect.wifi = w;
        apply(connect, events, flags);
    }
    // offline/default-route events for links about to go, while their names are still known
    std::vector<Link> gone_links;
    for (const auto& [index, link] : links)
        if (!fresh.links.count(index)) gone_links.push_back(link);
    derived_events(before, events, flags);
    for (const auto& link : gone_links) {
        links.erase(link.index);
        link_change(&link, nullptr, events, flags);
    }
}

std::string State::describe() const {
    std::string text;
    for (const auto& [index, link] : links)
        text += fmt::format("link {} {} up={}\n", index, link.name, link.usable());
    for (const auto& [key, a] : addresses)
        text += fmt::format("addr {} {}/{}\n", a.index, a.address, a.prefixlen);
    for (const auto& [key, r] : routes)
        text += fmt::format("route {} {} {}/{} via {} dev {} metric {}\n", family_name(r.family), r.table,
                            r.dst.empty() ? "default" : r.dst, r.dst_len, r.gateway, r.oif, r.priority);
    for (const auto& [index, w] : wifi) text += fmt::format("wifi {} {} {}\n", index, w.ssid, w.bssid);
    return text;
}

}  // namespace ktricks::netwatch
