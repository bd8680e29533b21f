// netwatch's pure logic: the rules grammar, filter matching, and the state cache's events.
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "ktricks/core/error.hpp"
#include "ktricks/netwatch.hpp"
#include "netwatch/dispatcher.hpp"
#include "netwatch/leases.hpp"
#include "netwatch/state.hpp"
#include "test_support.hpp"

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

NetEvent event(std::string type, std::string iface,
               nlohmann::ordered_json fields = nlohmann::ordered_json::object()) {
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
    EXPECT_NE(error_of([] { parse_inline_rule("link-upp", "x", 1); }).find("unknown event \"link-upp\""),
              std::string::npos);
    EXPECT_NE(
        error_of([] { parse_inline_rule("link-up,colour=red", "x", 1); }).find("unknown filter \"colour\""),
        std::string::npos);
    EXPECT_NE(
        error_of([] { parse_inline_rule("addr-add,family=ipx", "x", 1); }).find("expected inet or inet6"),
        std::string::npos);
    EXPECT_NE(error_of([] { parse_inline_rule("addr-add,addr=10.0.0.0/33", "x", 1); }).find("CIDR"),
              std::string::npos);
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
    EXPECT_EQ(error_of([] {
                  parse_rules("[[rule]]\non = \"link-up\"\nrun = \"x\"\ncolour = \"red\"\n", "r.toml");
              }).substr(0, 31),
              "r.toml:4: unknown key \"colour\" ");
    EXPECT_EQ(error_of([] { parse_rules("[[rule]]\non = \"link-up\"\n", "r.toml"); }),
              "r.toml:1: rule has no \"run\" (the command to run)");
    EXPECT_NE(error_of([] { parse_rules("[[rule]]\non = \n", "r.toml"); }).find("r.toml:2: "),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  parse_rules("[[rule]]\non=\"link-up\"\nrun=\"x\"\ntimeout=\"soon\"\n", "r.toml");
              }).find("r.toml:4: \"timeout\" must be a number"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_rules("[other]\n", "r.toml"); }).find("r.toml:1: unknown table"),
              std::string::npos);
}

TEST(NetwatchEvent, EnvironmentCarriesEveryField) {
    auto e = event("addr-add", "eth0", {{"addr", "10.0.0.1"}, {"prefixlen", 24}});
    e.ifindex = 4;
    e.initial = true;
    auto env = e.environment();
    for (const char* expected : {"KTRICKS_EVENT=addr-add", "KTRICKS_IFACE=eth0", "KTRICKS_IFINDEX=4",
                                 "KTRICKS_INITIAL=1", "KTRICKS_ADDR=10.0.0.1", "KTRICKS_PREFIXLEN=24"})
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

Change address(int index, int family, std::string text, int prefix, unsigned flags = 0,
               bool removed = false) {
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
    EXPECT_EQ(events, (std::vector<std::string>{"link-down", "route-remove*", "route-remove*",
                                                "default-route-change", "offline"}));
    EXPECT_TRUE(state.routes.empty());
}

TEST(NetwatchState, RemovingTheLastIpv4AddressDerivesItsRoutesRemoval) {
    State state;
    apply(state, link(2, "eth0", true, true));
    apply(state, address(2, AF_INET, "10.0.0.2", 24));
    apply(state, route(2, "", 0, "10.0.0.1"));
    auto events = apply(state, address(2, AF_INET, "10.0.0.2", 24, 0, true));
    EXPECT_EQ(events,
              (std::vector<std::string>{"addr-remove", "route-remove*", "default-route-change", "offline"}));
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

bool has(const std::vector<std::string>& env, const std::string& line) {
    return std::find(env.begin(), env.end(), line) != env.end();
}

bool has_key(const std::vector<std::string>& env, const std::string& key) {
    return std::any_of(env.begin(), env.end(),
                       [&](const std::string& line) { return line.rfind(key + "=", 0) == 0; });
}

std::vector<std::string> keys(const std::vector<std::string>& env) {
    std::vector<std::string> names;
    for (const auto& line : env) names.push_back(line.substr(0, line.find('=')));
    return names;
}

// A state with eth0 (index 2) up, 10.0.0.2/24, default route via 10.0.0.1.
State eth0_state() {
    State state;
    std::vector<NetEvent> ignored;
    state.apply(link(2, "eth0", true, true), ignored);
    state.apply(address(2, AF_INET, "10.0.0.2", 24), ignored);
    auto subnet = route(2, "10.0.0.0", 24, "");
    subnet.route.priority = 100;
    state.apply(subnet, ignored);
    state.apply(route(2, "", 0, "10.0.0.1"), ignored);
    return state;
}

NetEvent on(std::string type, int index, nlohmann::ordered_json fields = nlohmann::ordered_json::object()) {
    auto e = event(std::move(type), "eth0", std::move(fields));
    e.ifindex = index;
    return e;
}

TEST(NetwatchDispatcher, ActionsFollowNetworkManager) {
    auto state = eth0_state();
    Dispatcher dispatcher({}, true);
    EXPECT_EQ(dispatcher.actions_for(on("link-up", 2), state), (std::vector<std::string>{"pre-up", "up"}));
    EXPECT_EQ(dispatcher.actions_for(on("link-down", 2), state),
              (std::vector<std::string>{"pre-down", "down"}));
    EXPECT_EQ(dispatcher.actions_for(on("addr-add", 2, {{"family", "inet6"}, {"scope", "global"}}), state),
              std::vector<std::string>{"dhcp6-change"});
    EXPECT_EQ(dispatcher.actions_for(on("addr-remove", 2, {{"family", "inet"}, {"scope", "global"}}), state),
              std::vector<std::string>{"dhcp4-change"});
    // A link-local IPv6 address is no DHCPv6 event; neither is an address found at start-up.
    EXPECT_TRUE(
        dispatcher.actions_for(on("addr-add", 2, {{"family", "inet6"}, {"scope", "link"}}), state).empty());
    auto initial = on("addr-add", 2, {{"family", "inet"}, {"scope", "global"}});
    initial.initial = true;
    EXPECT_TRUE(dispatcher.actions_for(initial, state).empty());
    // Connectivity is global: one change when the first interface goes online, none for a second.
    EXPECT_EQ(dispatcher.actions_for(on("online", 2), state),
              std::vector<std::string>{"connectivity-change"});
    EXPECT_TRUE(dispatcher.actions_for(on("online", 2), state).empty());
}

TEST(NetwatchDispatcher, LoopbackGetsNoActions) {
    State state;
    std::vector<NetEvent> ignored;
    auto lo = link(1, "lo", true, true);
    lo.link.flags |= IFF_LOOPBACK;
    state.apply(lo, ignored);
    Dispatcher dispatcher({}, true);
    auto up = event("link-up", "lo");
    up.ifindex = 1;
    up.initial = true;
    EXPECT_TRUE(dispatcher.actions_for(up, state).empty());
}

TEST(NetwatchDispatcher, UpCarriesExactlyNetworkManagersVariables) {
    auto state = eth0_state();
    test_support::TempDir root;  // no leases, no resolver files
    Dispatcher dispatcher({}, true, HostFiles{root.path().string()});
    auto env = dispatcher.environment(on("link-up", 2), state, "up");
    for (const char* expected :
         {"NM_DISPATCHER_ACTION=up", "DEVICE_IFACE=eth0", "DEVICE_IP_IFACE=eth0", "CONNECTION_ID=eth0",
          "CONNECTION_EXTERNAL=1",
          "CONNECTION_FILENAME=/run/NetworkManager/system-connections/eth0.nmconnection",
          "IP4_NUM_ADDRESSES=1", "IP4_ADDRESS_0=10.0.0.2/24 10.0.0.1", "IP4_GATEWAY=10.0.0.1",
          "IP4_NUM_ROUTES=1", "IP4_ROUTE_0=10.0.0.0/24 0.0.0.0 100", "IP6_GATEWAY=0.0.0.0"})
        EXPECT_TRUE(has(env, expected)) << expected;
    EXPECT_TRUE(has_key(env, "CONNECTION_UUID"));
    // Nothing of netwatch's own, no IPv6 address or route counts without any.
    for (const auto& key : keys(env)) EXPECT_EQ(key.rfind("KTRICKS_", 0), std::string::npos) << key;
    EXPECT_FALSE(has_key(env, "IP6_NUM_ADDRESSES"));
    EXPECT_FALSE(has_key(env, "IP6_NUM_ROUTES"));
}

TEST(NetwatchDispatcher, WithoutDefaultRouteTheGatewayIsZero) {
    State state;
    std::vector<NetEvent> ignored;
    state.apply(link(2, "eth0", true, true), ignored);
    state.apply(address(2, AF_INET, "10.0.0.2", 24), ignored);
    Dispatcher dispatcher({}, true, HostFiles{"/nonexistent"});
    auto env = dispatcher.environment(on("link-up", 2), state, "up");
    EXPECT_TRUE(has(env, "IP4_GATEWAY=0.0.0.0"));
    EXPECT_TRUE(has(env, "IP4_ADDRESS_0=10.0.0.2/24 0.0.0.0"));
}

TEST(NetwatchDispatcher, DownAndConnectivityChangeCarryNoStaleData) {
    auto state = eth0_state();
    Dispatcher dispatcher({}, true, HostFiles{"/nonexistent"});
    auto down = dispatcher.environment(on("link-down", 2), state, "down");
    EXPECT_TRUE(has(down, "DEVICE_IFACE=eth0"));
    for (const auto& key : keys(down)) EXPECT_EQ(key.rfind("IP4_", 0), std::string::npos) << key;
    dispatcher.actions_for(on("online", 2), state);
    auto connectivity = dispatcher.environment(on("online", 2), state, "connectivity-change");
    std::sort(connectivity.begin(), connectivity.end());
    EXPECT_EQ(connectivity, (std::vector<std::string>{"CONNECTIVITY_STATE=FULL",
                                                      "NM_DISPATCHER_ACTION=connectivity-change"}));
}

TEST(NetwatchDispatcher, ConnectionUuidIsStablePerInterfaceAndWellFormed) {
    auto a = connection_uuid("0123456789abcdef", "", "eth0");
    EXPECT_EQ(a, connection_uuid("0123456789abcdef", "", "eth0"));
    EXPECT_NE(a, connection_uuid("0123456789abcdef", "", "eth1"));
    EXPECT_NE(a, connection_uuid("0123456789abcdef", "blue", "eth0"));
    EXPECT_NE(a, connection_uuid("fedcba9876543210", "", "eth0"));
    ASSERT_EQ(a.size(), 36u);
    EXPECT_EQ(a[14], '8');                                          // version 8
    EXPECT_NE(std::string("89ab").find(a[19]), std::string::npos);  // RFC 9562 variant
}

TEST(NetwatchDispatcher, NamesNetworkManagerSkips) {
    for (const char* skipped : {".hidden", "foo~", "foo.dpkg-old", "foo.dpkg-new", "foo.dpkg-dist", "foo.swp",
                                "foo.rpmnew", "foo.rpmsave", "foo.rpmorig"})
        EXPECT_FALSE(dispatcher_name_allowed(skipped)) << skipped;
    for (const char* kept : {"20-chrony-dhcp", "ntpsec", "foo.dpkg-old.sh", "foo.sh"})
        EXPECT_TRUE(dispatcher_name_allowed(kept)) << kept;
}

TEST(NetwatchDispatcher, EtcMasksUsrLibAndDevNullMasksAndEmptyFilesAreSkipped) {
    test_support::TempDir dir;
    namespace fs = std::filesystem;
    auto lib = dir.path() / "lib", etc = dir.path() / "etc";
    for (const auto& folder : {lib, etc, lib / "pre-up.d", lib / "no-wait.d"}) fs::create_directories(folder);
    auto exec = fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                fs::perms::others_read | fs::perms::others_exec;
    auto script = [&](const fs::path& path, const std::string& text) {
        std::ofstream(path) << text;
        fs::permissions(path, exec);
    };
    script(lib / "10-a", "#!/bin/sh\n");
    script(etc / "10-a", "#!/bin/sh\n# the admin's copy\n");
    script(lib / "20-masked", "#!/bin/sh\n");
    fs::create_symlink("/dev/null", etc / "20-masked");
    script(lib / "30-empty", "");
    script(lib / "40-b.dpkg-old", "#!/bin/sh\n");
    script(lib / "no-wait.d" / "50-quick", "#!/bin/sh\n");
    fs::create_symlink("no-wait.d/50-quick", lib / "50-quick");
    script(lib / "pre-up.d" / "05-pre", "#!/bin/sh\n");
    Dispatcher dispatcher({lib.string(), etc.string()}, true);
    auto up = dispatcher.scripts("up");
    ASSERT_EQ(up.size(), 2u);
    EXPECT_EQ(up[0].path, (etc / "10-a").string());
    EXPECT_TRUE(up[0].wait);
    EXPECT_EQ(up[1].path, (lib / "50-quick").string());
    EXPECT_FALSE(up[1].wait);
    auto pre_up = dispatcher.scripts("pre-up");
    ASSERT_EQ(pre_up.size(), 1u);
    EXPECT_EQ(pre_up[0].path, (lib / "pre-up.d" / "05-pre").string());
}

TEST(NetwatchLeases, NetworkdLeaseGivesNetworkManagersOptionNames) {
    auto options = parse_networkd_lease(
        "# This is private data. Do not parse.\nADDRESS=10.9.0.10\nNETMASK=255.255.255.0\n"
        "ROUTER=10.9.0.1\nSERVER_ADDRESS=10.9.0.1\nDNS=10.9.0.1 10.9.0.3\n"
        "NTP=10.9.0.2 10.9.0.4\nDOMAINNAME=example.test\nLIFETIME=3600\n");
    EXPECT_EQ(options["ip_address"], "10.9.0.10");
    EXPECT_EQ(options["ntp_servers"], "10.9.0.2 10.9.0.4");
    EXPECT_EQ(options["domain_name_servers"], "10.9.0.1 10.9.0.3");
    EXPECT_EQ(options["dhcp_server_identifier"], "10.9.0.1");
    EXPECT_EQ(options["dhcp_lease_time"], "3600");
    EXPECT_EQ(options["requested_ntp_servers"], "1");
}

TEST(NetwatchLeases, DhclientLeaseTakesTheLastUnexpiredBlockOfTheInterface) {
    std::string text =
        "lease {\n  interface \"eth0\";\n  fixed-address 10.9.0.5;\n  option ntp-servers 10.9.0.9;\n"
        "  expire 4 2030/01/01 00:00:00;\n}\n"
        "lease {\n  interface \"eth1\";\n  fixed-address 10.8.0.5;\n  expire 4 2030/01/01 00:00:00;\n}\n"
        "lease {\n  interface \"eth0\";\n  fixed-address 10.9.0.6;\n  option ntp-servers 10.9.0.2,10.9.0.4;\n"
        "  option domain-name \"example.test\";\n  renew 4 2029/01/01 00:00:00;\n  expire 4 2030/01/01 00:00:00;\n}\n"
        "lease {\n  interface \"eth0\";\n  fixed-address 10.9.0.7;\n  expire 4 2001/01/01 00:00:00;\n}\n";
    auto options = parse_dhclient_leases(text, "eth0", 4, 1700000000);
    EXPECT_EQ(options["ip_address"], "10.9.0.6");
    EXPECT_EQ(options["ntp_servers"], "10.9.0.2 10.9.0.4");
    EXPECT_EQ(options["domain_name"], "example.test");
    auto v6 = parse_dhclient_leases(
        "lease6 {\n  interface \"eth0\";\n  ia-na 1a:2b {\n    starts 1;\n  }\n"
        "  option dhcp6.name-servers 2001:db8::53;\n  option dhcp6.ntp-servers 2001:db8::123;\n}\n",
        "eth0", 6, 1700000000);
    EXPECT_EQ(v6["dhcp6_ntp_servers"], "2001:db8::123");
    EXPECT_EQ(v6["dhcp6_name_servers"], "2001:db8::53");
}

TEST(NetwatchLeases, DhcpcdLeaseIsTheServersBootpReply) {
    std::string packet(240, '\0');
    packet[16] = 10, packet[17] = 9, packet[18] = 0, packet[19] = 5;  // yiaddr
    packet.replace(236, 4, "\x63\x82\x53\x63");
    packet += std::string("\x2a\x08\x0a\x09\x00\x02\x0a\x09\x00\x04", 10);  // option 42: two NTP servers
    packet += std::string("\x33\x04\x00\x00\x0e\x10", 6);                   // option 51: 3600 s
    packet += '\xff';
    auto options = parse_bootp_lease(packet);
    EXPECT_EQ(options["ip_address"], "10.9.0.5");
    EXPECT_EQ(options["ntp_servers"], "10.9.0.2 10.9.0.4");
    EXPECT_EQ(options["dhcp_lease_time"], "3600");
    EXPECT_TRUE(parse_bootp_lease("short").empty());
}

TEST(NetwatchLeases, ResolverFromResolvedLinkStateOrResolvConf) {
    auto link = parse_resolved_link(
        "# This is private data. Do not parse.\nLLMNR=yes\n"
        "SERVERS=10.9.0.1 [2001:db8::1]:53 10.9.0.3%2#dns.test\nDOMAINS=example.test ~routing.test\n");
    EXPECT_EQ(link.servers4, (std::vector<std::string>{"10.9.0.1", "10.9.0.3"}));
    EXPECT_EQ(link.servers6, (std::vector<std::string>{"2001:db8::1"}));
    EXPECT_EQ(link.domains, (std::vector<std::string>{"example.test"}));
    auto conf =
        parse_resolv_conf("# comment\nnameserver 10.9.0.1\nnameserver 2001:db8::1\nsearch a.test b.test\n");
    EXPECT_EQ(conf.servers4, (std::vector<std::string>{"10.9.0.1"}));
    EXPECT_EQ(conf.servers6, (std::vector<std::string>{"2001:db8::1"}));
    EXPECT_EQ(conf.domains, (std::vector<std::string>{"a.test", "b.test"}));
}

TEST(NetwatchDispatcher, UpCarriesDhcpOptionsAndNameservers) {
    auto state = eth0_state();
    test_support::TempDir root;
    std::filesystem::create_directories(root.path() / "run/systemd/netif/leases");
    std::ofstream(root.path() / "run/systemd/netif/leases/2") << "ADDRESS=10.0.0.2\nNTP=10.0.0.123\n";
    std::filesystem::create_directories(root.path() / "etc");
    std::ofstream(root.path() / "etc/resolv.conf") << "nameserver 10.0.0.53\nsearch example.test\n";
    Dispatcher dispatcher({}, true, HostFiles{root.path().string()});
    auto env = dispatcher.environment(on("addr-add", 2), state, "dhcp4-change");
    for (const char* expected :
         {"DHCP4_NTP_SERVERS=10.0.0.123", "DHCP4_IP_ADDRESS=10.0.0.2", "DHCP4_REQUESTED_NTP_SERVERS=1",
          "IP4_NAMESERVERS=10.0.0.53", "IP4_DOMAINS=example.test"})
        EXPECT_TRUE(has(env, expected)) << expected;
}

}  // namespace
}  // namespace ktricks::netwatch
