// --dispatcher-dir / --nm-dirs: NetworkManager-dispatcher scripts, run as NetworkManager's
// dispatcher runs them (src/nm-dispatcher/nm-dispatcher.c, read for behaviour, not copied).
//
// Finding scripts, per action: every folder's entries (for pre-up / pre-down its pre-up.d /
// pre-down.d subfolder) merged by file name, a later folder's entry masking an earlier one's (so
// /etc/NetworkManager/dispatcher.d masks /usr/lib/NetworkManager/dispatcher.d); then skipped:
// names starting with '.', ending in '~', .rpmsave, .rpmorig, .rpmnew, .swp, or whose last
// ".dpkg-" has no '.' after it (.dpkg-old, .dpkg-new, .dpkg-dist, ...); symlinks to /dev/null (a
// mask); what is not a regular file or is empty (silently); and, with a warning, files not owned by
// root, writable by group or others, setuid, or not executable by their owner. The rest run in
// the order of their file names, as `SCRIPT IFACE ACTION` from "/", one at a time over all events
// in event order; a symlink into a `no-wait.d` folder runs at once, in parallel.
//
// Actions: link-up -> pre-up then up; link-down -> pre-down then down; a global (not link-local)
// address added or removed on an up interface -> dhcp4-change / dhcp6-change; the first online
// interface / the last one going offline -> connectivity-change (CONNECTIVITY_STATE FULL / NONE,
// $1 empty). Loopback interfaces get nothing, as NetworkManager leaves lo alone; addresses found
// at start-up give no dhcp*-change (their interface's initial `up` covers them).
//
// Environment (exactly, nothing of netwatch's own): PATH, NM_DISPATCHER_ACTION, and for device
// actions CONNECTION_UUID, CONNECTION_ID, CONNECTION_FILENAME, CONNECTION_EXTERNAL=1, DEVICE_IFACE,
// DEVICE_IP_IFACE; for up and dhcp*-change (NetworkManager's "device activated") also IP4_* and
// IP6_* (addresses, gateway, routes, nameservers, domains) and DHCP4_* / DHCP6_* (leases.hpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "ktricks/core/runner.hpp"
#include "ktricks/netwatch.hpp"
#include "netwatch/leases.hpp"
#include "netwatch/state.hpp"

namespace ktricks::netwatch {

// NetworkManager's check_filename: false for backup and package-manager leftovers.
bool dispatcher_name_allowed(std::string_view name);

// CONNECTION_UUID for an interface: stable for (machine, namespace, interface name); see
// netwatch.md ("CONNECTION_UUID").
std::string connection_uuid(std::string_view machine_id, std::string_view netns, std::string_view iface);

class Dispatcher {
public:
    struct Script {
        std::string path;
        bool wait = true;  // false: a link into no-wait.d
    };

    // `directories`: dispatcher.d folders, later ones masking earlier ones. With `missing_ok`
    // (NetworkManager's own folders) an absent folder is skipped, else it throws std::system_error.
    Dispatcher(std::vector<std::string> directories, bool missing_ok, HostFiles files = {});

    // With `dry_run`, the scripts are not run: `would_run` gets "would run SCRIPT IFACE ACTION" instead.
    void handle(const NetEvent& event, const State& state, std::chrono::steady_clock::time_point when,
                Runner& runner, bool dry_run, const std::function<void(const std::string&)>& would_run,
                std::chrono::milliseconds timeout);

    // A DHCP client rewrote a lease file: dhcp4-change / dhcp6-change for every up interface whose
    // options changed (dhclient writes its lease after it configured the address, so the
    // address's own dhcp4-change may come before the lease can be read); `up` instead for the
    // first lease of an interface that came up without one (NetworkManager's `up` has the lease).
    void leases_changed(const State& state, std::chrono::steady_clock::time_point when, Runner& runner,
                        bool dry_run, const std::function<void(const std::string&)>& would_run,
                        std::chrono::milliseconds timeout);
    // The lease-file folders of leases.hpp that exist, for watching them.
    std::vector<std::string> lease_directories() const;

    // The NetworkManager actions for an event, in order ("pre-up", "up"); empty if none.
    std::vector<std::string> actions_for(const NetEvent& event, const State& state);
    // The environment of an action (without PATH, which the Runner passes on).
    std::vector<std::string> environment(const NetEvent& event, const State& state,
                                         const std::string& action) const;
    // The scripts an action runs, in order.
    std::vector<Script> scripts(const std::string& action) const;

    // /usr/lib/NetworkManager/dispatcher.d, /etc/NetworkManager/dispatcher.d
    static std::vector<std::string> networkmanager_directories();

private:
    std::vector<std::string> directories_;
    HostFiles files_;
    std::string machine_id_;
    std::map<std::string, bool> connected_;              // per namespace: the last connectivity-change sent
    std::uint64_t no_wait_serial_ = 0;                   // a queue of its own for each no-wait run
    std::map<std::pair<int, int>, DhcpOptions> leases_;  // (ifindex, 4|6): the options last seen
    void run(const NetEvent& event, const State& state, const std::string& action,
             std::chrono::steady_clock::time_point when, Runner& runner, bool dry_run,
             const std::function<void(const std::string&)>& would_run, std::chrono::milliseconds timeout);
};

}  // namespace ktricks::netwatch
