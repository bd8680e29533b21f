// netwatch's pure logic: the rules grammar, filter matching, and the state cache's events.
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <algorithm>

#include "ktricks/core/error.hpp"
#include "ktricks/netwatch.hpp"
#include "netwatch/dispatcher.hpp"
#include "netwatch/state.hpp"

namespace ktricks::netwatch {
namespace {

std::string error_of(const std::function<void()>& work) {
    try {
        work();
    } catch (const InputError& error) {
        return error.what();
    }
    return "(no error)";
}

NetEvent event(std::string type, std::string iface, nlohmann::ordered_json fields = nlohmann::ordered_json::object()) {
    NetEvent e;
    e.type = std::move(type);
    e.iface = std::move(iface);
    e.fields = std::move(fields);
    return e;
}

TEST(NetwatchRules, InlineRuleParsesEventsFiltersAndOptions) {
    auto rule = parse_inline_rule("link-up|link-down,iface=eth*,debounce_ms=500,timeout=7", "echo hi", 1);
    EXPECT_EQ(rule.events, (std::vector<std::string>{"link-up", "link-down"}));
    ASSERT_EQ(rule.filters.size(), 1u);
    EXPECT_EQ(rule.filters[0].key, "iface");
    EXPECT_EQ(rule.debounce, std::chrono::milliseconds(500));
    EXPECT_EQ(rule.timeout, std::chrono::seconds(7));
    EXPECT_TRUE(rule.matches(event("link-down", "eth0")));
    EXPECT_FALSE(rule.matches(event("link-down", "wlan0")));
    EXPECT_FALSE(rule.matches(event("addr-add", "eth0")));
}

TEST(NetwatchRules, InlineRuleErrorsNameTheTextAndTheProblem) {
    EXPECT_NE(error_of([] { parse_inline_rule("link-upp", "x", 1); }).find("unknown event \"link-upp\""), std::string::npos);
    EXPECT_NE(error_of([] { parse_inline_rule("link-up,colour=red", "x", 1); }).find("unknown filter \"colour\""),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_inline_rule("addr-add,family=ipx", "x", 1); }).find("expected inet or inet6"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_inline_rule("addr-add,addr=10.0.0.0/33", "x", 1); }).find("CIDR"), std::string::npos);
    EXPECT_NE(error_of([] { parse_inline_rule("link-up", "", 1); }).find("empty --exec"), std::string::npos);
}

TEST(NetwatchRules, SsidNotMatchesOtherNetworksAndWiredEvents) {
    auto rule = parse_inline_rule("*,ssid!=home*", "x", 1);
    EXPECT_FALSE(rule.matches(event("wifi-connect", "wlan0", {{"ssid", "home-5g"}})));
    EXPECT_TRUE(rule.matches(event("wifi-connect", "wlan0", {{"ssid", "cafe"}})));
    EXPECT_TRUE(rule.matches(event("online", "eth0")));
    auto positive = parse_inline_rule("*,ssid=home*", "x", 1);
    EXPECT_TRUE(positive.matches(event("online", "wlan0", {{"ssid", "home"}})));
    EXPECT_FALSE(positive.matches(event("online", "eth0")));
}

TEST(NetwatchRules, AddrFilterIsACidrOnAddressOrGateway) {
    auto rule = parse_inline_rule("*,addr=192.168.1.0/24", "x", 1);
    EXPECT_TRUE(rule.matches(event("addr-add", "eth0", {{"addr", "192.168.1.77"}})));
    EXPECT_FALSE(rule.matches(event("addr-add", "eth0", {{"addr", "192.168.2.77"}})));
    EXPECT_TRUE(rule.matches(event("default-route-change", "eth0", {{"gateway", "192.168.1.1"}})));
    auto six = parse_inline_rule("*,addr=fd00::/8", "x", 1);
    EXPECT_TRUE(six.matches(event("addr-add", "eth0", {{"addr", "fd12::1"}})));
    EXPECT_FALSE(six.matches(event("addr-add", "eth0", {{"addr", "192.168.1.1"}})));
}

TEST(NetwatchRules, BssidMatchesWithoutRegardToCase) {
    auto rule = parse_inline_rule("wifi-connect,bssid=02:AA:*", "x", 1);
    EXPECT_TRUE(rule.matches(event("wifi-connect", "wlan0", {{"bssid", "02:aa:00:00:00:01"}})));
}

TEST(NetwatchRules, RulesFileReadsEveryKey) {
    auto rules = parse_rules(R"(
[[rule]]
name = "nas"
on = "wifi-connect"
ssid = "home"
iface = "wl*"
run = "mount /mnt/nas"
debounce_ms = 2000
timeout = 30

[[rule]]
on = ["offline", "default-route-change"]
family = "inet"
ssid = "!work"
run = "logger lost"
)",
                             "rules.toml");
    ASSERT_EQ(rules.size(), 2u);
    EXPECT_EQ(rules[0].name, "nas");
    EXPECT_EQ(rules[0].debounce, std::chrono::milliseconds(2000));
    EXPECT_EQ(rules[0].timeout, std::chrono::seconds(30));
    EXPECT_EQ(rules[0].where, "rules.toml:2");
    EXPECT_EQ(rules[1].events.size(), 2u);
    EXPECT_TRUE(rules[1].filters[1].negate);
    EXPECT_EQ(rules[1].filters[1].pattern, "work");
}

TEST(NetwatchRules, RulesFileErrorsNameFileAndLine) {
    EXPECT_EQ(error_of([] { parse_rules("[[rule]]\non = \"link-up\"\nrun = \"x\"\ncolour = \"red\"\n", "r.toml"); })
                  .substr(0, 31),
              "r.toml:4: unknown key \"colour\" ");
    EXPECT_EQ(error_of([] { parse_rules("[[rule]]\non = \"link-up\"\n", "r.toml"); }),
              "r.toml:1: rule has no \"run\" (the command to run)");
    EXPECT_NE(error_of([] { parse_rules("[[rule]]\non = \n", "r.toml"); }).find("r.toml:2: "), std::string::npos);
    EXPECT_NE(error_of([] { parse_rules("[[rule]]\non=\"link-up\"\nrun=\"x\"\ntimeout=\"soon\"\n", "r.toml"); })
                  .find("r.toml:4: \"timeout\" must be a number"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_rules("[other]\n", "r.toml"); }).find("r.toml:1: unknown table"), std::string::npos);
}

TEST(NetwatchEvent, EnvironmentCarriesEveryField) {
    auto e = event("addr-add", "eth0", {{"addr", "10.0.0.1"}, {"prefixlen", 24}});
    e.ifindex = 4;
    e.initial = true;
    auto env = e.environment();
    for (const char* expected : {"KTRICKS_EVENT=addr-add", "KTRICKS_IFACE=eth0", "KTRICKS_IFINDEX=4", "KTRICKS_INITIAL=1",
                                 "KTRICKS_ADDR=10.0.0.1", "KTRICKS_PREFIXLEN=24"})
        EXPECT_NE(std::find(env.begin(), env.end(), expected), env.end()) << expected;
    auto json = e.to_event().json();
    EXPECT_EQ(json["event"], "addr-add");
    EXPECT_EQ(json["initial"], true);
}

// --- the state cache ---------------------------------------------------------------------------

Change link(int index, std::string name, bool up, bool carrier) {
    Change c;
    c.kind = Change::Kind::link;
    c.link.index = index;
    c.link.name = std::move(name);
    c.link.flags = (up ? IFF_UP : 0) | (carrier ? IFF_LOWER_UP : 0);
    c.link.carrier = carrier;
    c.link.operstate = up && carrier ? IF_OPER_UP : IF_OPER_DOWN;
    return c;
}

Change address(int index, int family, std::string text, int prefix, unsigned flags = 0, bool removed = false) {
    Change c;
    c.kind = Change::Kind::address;
    c.removed = removed;
    c.address = {index, family, std::move(text), prefix, RT_SCOPE_UNIVERSE, flags};
    return c;
}

Change route(int oif, std::string dst, int len, std::string gateway, bool removed = false) {
    Change c;
    c.kind = Change::Kind::route;
    c.removed = removed;
    c.route.family = AF_INET;
    c.route.table = RT_TABLE_MAIN;
    c.route.dst = std::move(dst);
    c.route.dst_len = len;
    c.route.gateway = std::move(gateway);
    c.route.oif = oif;
    c.route.type = RTN_UNICAST;
    return c;
}

std::vector<std::string> types(const std::vector<NetEvent>& events) {
    std::vector<std::string> names;
    for (const auto& e : events) names.push_back(e.type + (e.derived ? "*" : ""));
    return names;
}

std::vector<std::string> apply(State& state, const Change& change) {
    std::vector<NetEvent> events;
    state.apply(change, events);
    return types(events);
}

TEST(NetwatchState, LinkUpNeedsAdminUpAndCarrier) {
    State state;
    EXPECT_EQ(apply(state, link(2, "eth0", false, false)), (std::vector<std::string>{"link-add"}));
    EXPECT_TRUE(apply(state, link(2, "eth0", true, false)).empty());
    EXPECT_EQ(apply(state, link(2, "eth0", true, true)), (std::vector<std::string>{"link-up"}));
    EXPECT_TRUE(apply(state, link(2, "eth0", true, true)).empty()) << "a repeated message is not an event";
    EXPECT_EQ(apply(state, link(2, "eth0", true, false)), (std::vector<std::string>{"link-down"}));
}

TEST(NetwatchState, TentativeIpv6AddressIsAnnouncedOnlyOnceDadIsDone) {
    State state;
    apply(state, link(2, "eth0", true, true));
    EXPECT_TRUE(apply(state, address(2, AF_INET6, "fd00::5", 64, IFA_F_TENTATIVE)).empty());
    EXPECT_EQ(apply(state, address(2, AF_INET6, "fd00::5", 64)), (std::vector<std::string>{"addr-add"}));
}

TEST(NetwatchState, OnlineNeedsCarrierGlobalAddressAndDefaultRoute) {
    State state;
    apply(state, link(2, "eth0", true, true));
    apply(state, address(2, AF_INET, "10.0.0.2", 24));
    EXPECT_EQ(apply(state, route(2, "", 0, "10.0.0.1")),
              (std::vector<std::string>{"route-add", "default-route-change", "online"}));
    EXPECT_EQ(apply(state, link(2, "eth0", true, false)), (std::vector<std::string>{"link-down", "offline"}));
}

TEST(NetwatchState, AdminDownDerivesTheIpv4RoutesTheKernelFlushedSilently) {
    State state;
    apply(state, link(2, "eth0", true, true));
    apply(state, address(2, AF_INET, "10.0.0.2", 24));
    apply(state, route(2, "10.0.0.0", 24, ""));
    apply(state, route(2, "", 0, "10.0.0.1"));
    auto events = apply(state, link(2, "eth0", false, false));
    EXPECT_EQ(events, (std::vector<std::string>{"link-down", "route-remove*", "route-remove*", "default-route-change",
                                                "offline"}));
    EXPECT_TRUE(state.routes.empty());
}

TEST(NetwatchState, RemovingTheLastIpv4AddressDerivesItsRoutesRemoval) {
    State state;
    apply(state, link(2, "eth0", true, true));
    apply(state, address(2, AF_INET, "10.0.0.2", 24));
    apply(state, route(2, "", 0, "10.0.0.1"));
    auto events = apply(state, address(2, AF_INET, "10.0.0.2", 24, 0, true));
    EXPECT_EQ(events, (std::vector<std::string>{"addr-remove", "route-remove*", "default-route-change", "offline"}));
}

TEST(NetwatchState, ResyncEmitsOnlyTheDifferences) {
    State state;
    apply(state, link(2, "eth0", true, true));
    apply(state, address(2, AF_INET, "10.0.0.2", 24));
    State fresh;
    std::vector<NetEvent> ignored;
    fresh.apply(link(2, "eth0", true, true), ignored);
    fresh.apply(address(2, AF_INET, "10.0.0.3", 24), ignored);
    std::vector<NetEvent> events;
    state.resync(fresh, events, {.initial = false, .resync = true});
    EXPECT_EQ(types(events), (std::vector<std::string>{"addr-remove", "addr-add"}));
    EXPECT_TRUE(std::all_of(events.begin(), events.end(), [](const NetEvent& e) { return e.resync; }));
    EXPECT_EQ(state.describe(), fresh.describe());
}

TEST(NetwatchState, WifiConnectRoamAndDisconnect) {
    State state;
    apply(state, link(3, "wlan0", true, true));
    Change connect;
    connect.kind = Change::Kind::wifi_connect;
    connect.wifi = {3, "home", "02:00:00:00:00:00", 2412, -40};
    std::vector<NetEvent> events;
    state.apply(connect, events);
    ASSERT_EQ(types(events), (std::vector<std::string>{"wifi-connect"}));
    EXPECT_EQ(events[0].field("ssid"), "home");
    EXPECT_EQ(events[0].field("signal"), "-40");
    Change roam = connect;
    roam.wifi.bssid = "02:00:00:00:01:00";
    EXPECT_EQ(apply(state, roam), (std::vector<std::string>{"wifi-roam"}));
    // Later events of the interface carry the network they happen on.
    events.clear();
    state.apply(address(3, AF_INET, "10.1.0.2", 24), events);
    EXPECT_EQ(events.at(0).field("ssid"), "home");
    Change gone;
    gone.kind = Change::Kind::wifi_disconnect;
    gone.wifi.index = 3;
    events.clear();
    state.apply(gone, events);
    ASSERT_EQ(types(events), (std::vector<std::string>{"wifi-disconnect"}));
    EXPECT_EQ(events[0].field("bssid"), "02:00:00:00:01:00");
}

TEST(NetwatchDispatcher, ActionsAndVariablesFollowNetworkManager) {
    State state;
    std::vector<NetEvent> ignored;
    state.apply(link(2, "eth0", true, true), ignored);
    state.apply(address(2, AF_INET, "10.0.0.2", 24), ignored);
    state.apply(route(2, "", 0, "10.0.0.1"), ignored);
    auto up = event("link-up", "eth0");
    up.ifindex = 2;
    EXPECT_EQ(Dispatcher::action_for(up), "up");
    EXPECT_EQ(Dispatcher::action_for(event("addr-add", "eth0", {{"family", "inet6"}})), "dhcp6-change");
    EXPECT_EQ(Dispatcher::action_for(event("offline", "eth0")), "connectivity-change");
    auto env = Dispatcher::environment(up, state, "up");
    for (const char* expected : {"DEVICE_IFACE=eth0", "CONNECTION_ID=eth0", "IP4_NUM_ADDRESSES=1",
                                 "IP4_ADDRESS_0=10.0.0.2/24 10.0.0.1", "IP4_GATEWAY=10.0.0.1"})
        EXPECT_NE(std::find(env.begin(), env.end(), expected), env.end()) << expected;
}

}  // namespace
}  // namespace ktricks::netwatch
