// --dispatcher-dir: NetworkManager-dispatcher compatible scripts, run unchanged.
//
// Like NetworkManager-dispatcher: every executable regular file of DIR that is owned by root, not
// writable by group or others and not setuid runs (others are skipped with a warning), in
// alphabetical order, one script at a time, with $1 = interface and $2 = action.
//   link-up -> up, link-down -> down, addr-add/addr-remove -> dhcp4-change / dhcp6-change
//   (by family), online/offline -> connectivity-change ($1 empty, CONNECTIVITY_STATE FULL/NONE).
// Environment: NM_DISPATCHER_ACTION, DEVICE_IFACE, DEVICE_IP_IFACE, CONNECTION_ID (the SSID on a
// connected wifi interface, else the interface name), IP4_NUM_ADDRESSES, IP4_ADDRESS_<N>
// ("ADDR/PREFIX GATEWAY"), IP4_GATEWAY, IP4_NUM_ROUTES, IP4_ROUTE_<N> ("DST/LEN NEXTHOP METRIC"),
// the same for IP6_*, CONNECTIVITY_STATE; plus netwatch's own KTRICKS_* variables.
// Not provided (NetworkManager concepts netwatch does not have): CONNECTION_UUID,
// CONNECTION_FILENAME, DHCP4_*/DHCP6_* options, IP4_DOMAINS/NAMESERVERS, VPN_*.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "ktricks/netwatch.hpp"
#include "ktricks/core/runner.hpp"
#include "netwatch/state.hpp"

namespace ktricks::netwatch {

class Dispatcher {
public:
    // Throws std::system_error if DIR cannot be read.
    explicit Dispatcher(std::string directory);
    // With `dry_run`, the scripts are not run: `would_run` gets "would run SCRIPT IFACE ACTION" instead.
    void handle(const NetEvent& event, const State& state, std::chrono::steady_clock::time_point when, Runner& runner,
                bool dry_run, const std::function<void(const std::string&)>& would_run,
                std::chrono::milliseconds timeout);

    // The NetworkManager action for an event, "" if none.
    static std::string action_for(const NetEvent& event);
    // The NetworkManager variables for an event on `state`.
    static std::vector<std::string> environment(const NetEvent& event, const State& state, const std::string& action);

private:
    std::vector<std::string> scripts() const;
    std::string directory_;
};

}  // namespace ktricks::netwatch
