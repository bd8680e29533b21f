// What NetworkManager knows about a connection and netwatch reads from the files of the programs
// that do the job here: DHCP leases and resolver settings, for the DHCP4_*/DHCP6_* and
// IP4_NAMESERVERS/IP4_DOMAINS variables of dispatcher scripts.
//
// DHCP clients read, first match wins (per family):
//   systemd-networkd  /run/systemd/netif/leases/IFINDEX          (key=value; IPv4 only)
//   dhcpcd            /var/lib/dhcpcd/IFACE.lease                (the server's raw BOOTP reply; IPv4)
//   dhclient (ISC)    /var/lib/dhcp/dhclient.IFACE.leases, /var/lib/dhcp/dhclient.leases,
//                     /var/lib/dhcp/dhclient6.IFACE.leases, /var/lib/dhcp/dhclient6.leases
//                     (the last unexpired `lease {` / `lease6 {` block of the interface)
// Option names are NetworkManager's (`ntp_servers`, `domain_name_servers`, `dhcp6_ntp_servers`:
// dhclient's names with '-' and '.' turned into '_'), lists are space-separated, and, as
// NetworkManager's own DHCP client reports them, `requested_NAME=1` for every IPv4 option it asks
// for by default.
// Resolver: systemd-resolved's per-link state (/run/systemd/resolve/netif/IFINDEX: SERVERS=,
// DOMAINS=), else the global servers of /etc/resolv.conf (/run/systemd/resolve/resolv.conf when
// /etc/resolv.conf names only resolved's local listener 127.0.0.53).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace ktricks::netwatch {

using DhcpOptions = std::map<std::string, std::string>;  // NetworkManager's option name -> value

struct Resolver {
    std::vector<std::string> servers4, servers6, domains;
    bool per_link = false;  // from systemd-resolved's state of this link (else the global resolv.conf)
};

// Parsers of the files above; they never throw: what they do not understand they skip.
DhcpOptions parse_networkd_lease(std::string_view text);
// `family` 4 reads `lease {` blocks, 6 `lease6 {` blocks; `now` (seconds since the epoch) drops
// expired ones.
DhcpOptions parse_dhclient_leases(std::string_view text, std::string_view iface, int family, long long now);
DhcpOptions parse_bootp_lease(std::string_view bytes);
Resolver parse_resolv_conf(std::string_view text);
Resolver parse_resolved_link(std::string_view text);

// Where the files are; tests point `root` at a scratch folder ("" = the real /).
struct HostFiles {
    std::string root;
    DhcpOptions dhcp(const std::string& iface, int ifindex, int family) const;
    Resolver resolver(int ifindex) const;
};

}  // namespace ktricks::netwatch
