// netwatch: run scripts on network events (link, address, route, wifi) without polling.
//
// The kernel announces every change of its network state on rtnetlink multicast groups (links,
// IPv4/IPv6 addresses and routes) and on the nl80211 "mlme" group (wifi connect, disconnect, roam).
// netwatch subscribes first, then dumps the current state into a cache, so nothing can happen
// unseen between the two; the dump is replayed as events flagged `initial`. Every later message
// is applied to the cache and turned into events by comparing before and after.
//
// Netlink multicast is lossy by design: when the socket's receive buffer overflows the kernel
// drops messages and the next recv fails with ENOBUFS. netwatch then dumps again and emits the
// difference between the cache and the fresh dump, flagged `resync`, so a state change is never
// lost silently (at worst it is reported late, with intermediate flaps collapsed).
//
// The kernel sends no RTM_DELROUTE for IPv4 routes it flushes because their link went down or
// their last address went away (fib_sync_down_dev / fib_sync_down_addr); netwatch removes those
// routes from its cache itself and reports them as `route-remove` flagged `derived`.
//
// Scripts run as children watched through pidfds on the same event loop: the netlink reader never
// waits for a script. Per rule and interface, runs are serialized in event order; different
// interfaces (and different rules) run in parallel. A script past its timeout is killed (SIGTERM,
// then SIGKILL one second later) and reported.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/runner.hpp"

namespace ktricks::netwatch {

// One network event. `fields` hold the details (operstate, carrier, family, addr, prefixlen,
// dst, gateway, table, ssid, bssid, freq, signal, ...); scripts see each as KTRICKS_<FIELD>.
struct NetEvent {
    std::string type;   // "link-up", "addr-add", "wifi-connect", ... (see event_types())
    std::string iface;  // interface name ("" if unknown)
    int ifindex = 0;
    std::string netns;  // namespace name with --all-netns ("" = our own): /run/netns NAME or "pid:N"
    std::uint64_t netns_inode = 0;  // --all-netns: the namespace's nsfs inode (0 for our own)
    bool initial = false;           // describes state found at start-up
    bool resync = false;            // found by re-dumping after an overrun (ENOBUFS)
    bool derived = false;           // inferred: the kernel removed it without telling (IPv4 routes)
    nlohmann::ordered_json fields = nlohmann::ordered_json::object();

    // Field as text ("" if absent).
    std::string field(std::string_view key) const;
    // {"ts":...,"source":"netwatch","event":TYPE,"iface":...,"ifindex":...,...fields,"initial":true}
    Event to_event() const;
    // to_event().environment() (KTRICKS_EVENT, KTRICKS_IFACE, KTRICKS_IFINDEX, KTRICKS_<FIELD>...)
    // with KTRICKS_NETNS, KTRICKS_INITIAL, KTRICKS_RESYNC and KTRICKS_DERIVED always set (0 or 1).
    std::vector<std::string> environment() const;
};

// The event names netwatch emits, in documentation order.
const std::vector<std::string>& event_types();

// A rule: when an event of one of `events` matching every filter happens, run `command`.
struct Rule {
    std::string name;                 // for reports ("rule 2" or the TOML key)
    std::vector<std::string> events;  // event types; "*" = all
    // Filters "KEY=GLOB", "KEY!=GLOB" on iface, ssid, bssid, family (inet|inet6), addr (CIDR),
    // netns. An absent field is the empty text: `ssid!=home` matches a wired event and a wifi
    // event with another SSID (events on a connected wifi interface carry its ssid and bssid).
    struct Filter {
        std::string key;
        std::string pattern;
        bool negate = false;
    };
    std::vector<Filter> filters;
    std::string command;                    // run with /bin/sh -c
    std::chrono::milliseconds debounce{0};  // run once the (rule, iface) stream was quiet this long
    std::optional<std::chrono::milliseconds> timeout;  // unset: WatchOptions::exec_timeout
    bool in_netns = false;  // run the script inside the event's named namespace (nsenter)
    std::string where;      // "FILE:LINE" or "--on #N", for messages

    bool matches(const NetEvent& event) const;
};

// `--on EVENT[,FILTER...]` with its `--exec CMD`. Throws InputError naming the text.
Rule parse_inline_rule(std::string_view on, std::string_view command, int number);

// A rules file:
//   [[rule]]
//   on = "wifi-connect"            # or ["link-up", "addr-add"]
//   iface = "wl*"                  # filters: iface ssid bssid family addr netns, "!..." negates
//   ssid = "ktricks-home"
//   run = "mount /mnt/nas"
//   debounce_ms = 2000
//   timeout = 30                   # seconds
// Throws DataError "FILE:LINE: problem" (one line) for syntax errors, unknown keys and bad values.
std::vector<Rule> parse_rules(std::string_view text, const std::string& source_name);
std::vector<Rule> load_rules_file(const std::string& path);

struct WatchOptions {
    std::vector<Rule> rules;
    bool dry_run = false;  // report which scripts would run (on_dry_run) instead of running them
    bool initial = true;   // emit `initial` events for the state found at start-up
    bool wifi = true;      // also watch nl80211 (silently skipped if the kernel has none)
    // Also every other network namespace: named in /run/netns, or held by processes (found at
    // start-up and as they appear; docs/netwatch.md "Namespaces"). One socket inside each.
    bool all_netns = false;
    // NetworkManager-dispatcher scripts (docs/netwatch.md): these dispatcher.d folders, a later
    // one masking an earlier one's script of the same name; each must exist.
    std::vector<std::string> dispatcher_dirs;
    // Also NetworkManager's own folders first, /usr/lib/NetworkManager/dispatcher.d then
    // /etc/NetworkManager/dispatcher.d (absent ones are skipped, as NetworkManager does).
    bool nm_dirs = false;
    std::string record_file;  // append the raw netlink stream (with timestamps) here
    std::string replay_file;  // read events from a recording instead of the kernel
    int receive_buffer = 0;   // SO_RCVBUF for the rtnetlink socket; 0 = a generous default
    std::chrono::milliseconds exec_timeout{
        60000};                        // rules without a timeout of their own, dispatcher scripts
    std::size_t exec_concurrency = 8;  // scripts at once (0: no limit)
    int script_stdout = -1;            // the scripts' stdout (-1: ours)
    // How long a disconnect that may be the first half of a roam (see docs/netwatch.md, "Roaming")
    // is held back: a connect to the same SSID within it makes one wifi-roam. 0 = never hold.
    std::chrono::milliseconds roam_window{2000};
};

// What the watcher tells its caller; all called on the caller's loop, each may be empty.
struct Callbacks {
    std::function<void(const NetEvent&)> on_event;        // every event, before the rules run
    std::function<void(const JobReport&)> on_script_end;  // every script's end
    std::function<void(const std::string&)> on_dry_run;   // "would run rule 1 (link-up eth0): CMD"
};

// The watcher on the caller's EventLoop. It never installs signal handlers, writes to stdout or
// talks to a service manager: events, script ends and dry-run lines go to the callbacks.
class Watcher {
public:
    Watcher(EventLoop& loop, WatchOptions options, Callbacks callbacks);
    ~Watcher();
    Watcher(const Watcher&) = delete;
    Watcher& operator=(const Watcher&) = delete;

    // Subscribes, dumps the current state (its events, flagged initial, are delivered before start
    // returns) and puts its sockets on the loop. With replay_file, feeds the whole recording
    // through instead. Throws std::system_error if the netlink sockets cannot be opened, DataError
    // for a bad recording.
    void start();
    // Takes its sources off the loop and kills running scripts (their process groups).
    void stop() noexcept;
    // No script running or waiting and no debounced rule pending (a replay is over when idle).
    bool idle() const noexcept;
    bool wifi() const noexcept;                   // nl80211 is watched
    std::vector<std::string> namespaces() const;  // watched: "" = our own, unnamed; NAME; "pid:N"
    // The cache as text, per namespace (for comparing with `ip` output, and for bug reports).
    std::string describe_state() const;

private:
    class Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace ktricks::netwatch
