// Wifi events for real: Debian's kernel with mac80211_hwsim under qemu, hostapd and wpa_supplicant
// inside, netwatch reporting over the serial console (see netwatch_wifi_vm.sh for the scenario).
#include <gtest/gtest.h>

#include <filesystem>

#include "process_helpers.hpp"

namespace ktricks::test {
namespace {

// Also the roam between two access points of one SSID: one wifi-roam each way, with both BSSIDs.
TEST(NetwatchWifi, ConnectRoamAndDisconnectInAVirtualMachineCarrySsidAndBssid) {
    auto script = std::filesystem::path(KTRICKS_TESTS_DIR) / "netwatch_wifi_vm.sh";
    auto cache = std::filesystem::path(KTRICKS_BINARY).parent_path() / "netwatch-vm";
    if (::access("/usr/bin/qemu-system-x86_64", X_OK) != 0)
        GTEST_SKIP() << "qemu-system-x86_64 is not installed";
    // Preparing the guest and booting it under TCG takes 50-90 s depending on how busy the machine
    // is; the script bounds qemu itself to 200 s.
    auto result = run({script.string(), KTRICKS_BINARY, cache.string()}, {}, std::chrono::seconds(280));
    if (result.status == 77) GTEST_SKIP() << result.out;
    EXPECT_EQ(result.status, 0) << result.out << result.err;
}

}  // namespace
}  // namespace ktricks::test
