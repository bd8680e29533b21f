// Fuzzes the readers of other programs' files that feed dispatcher scripts: systemd-networkd and
// dhclient leases, dhcpcd's raw BOOTP lease, resolv.conf and systemd-resolved's link state. They
// never throw and every value they return is one line (it becomes an environment variable).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "netwatch/leases.hpp"

namespace {
void check(const ktricks::netwatch::DhcpOptions& options) {
    for (const auto& [name, value] : options)
        if (name.empty() || value.find('\n') != std::string::npos) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace ktricks::netwatch;
    std::string_view text(reinterpret_cast<const char*>(data), size);
    check(parse_networkd_lease(text));
    check(parse_dhclient_leases(text, "eth0", 4, 1700000000));
    check(parse_dhclient_leases(text, "eth0", 6, 1700000000));
    check(parse_bootp_lease(text));
    (void)parse_resolv_conf(text);
    (void)parse_resolved_link(text);
    return 0;
}
