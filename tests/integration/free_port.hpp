// free_port(): a loopback port for a server the test is about to start.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>

#include "ktricks/core/fd.hpp"

namespace ktricks::test {

// A loopback port that TCP and UDP could both bind a moment ago, chosen below the kernel's ephemeral
// range (net.ipv4.ip_local_port_range). A port from that range can be taken between this check and
// the server's bind by any client's connect() on the machine; seen in CI, where a jailed server's
// bind got EADDRINUSE. Probed without SO_REUSEADDR, so a port with TIME_WAIT leftovers is skipped
// too. The search starts at a random port so that two test binaries rarely pick the same one.
inline std::uint16_t free_port() {
    int ephemeral_low = 32768, ephemeral_high = 60999;
    if (std::FILE* range = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "re")) {
        if (std::fscanf(range, "%d %d", &ephemeral_low, &ephemeral_high) != 2) ephemeral_low = 32768;
        std::fclose(range);
    }
    const int first = 10000;
    const int last = std::max(first + 1000, ephemeral_low) - 1;
    const int span = last - first + 1;
    static std::mt19937 random{std::random_device{}()};
    const int start = std::uniform_int_distribution<int>(0, span - 1)(random);
    for (int i = 0; i < span; ++i) {
        const int port = first + (start + i) % span;
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(static_cast<std::uint16_t>(port));
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        const auto* raw = reinterpret_cast<const sockaddr*>(&address);
        Fd tcp(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        Fd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        if (::bind(tcp.get(), raw, sizeof address) == 0 && ::bind(udp.get(), raw, sizeof address) == 0)
            return static_cast<std::uint16_t>(port);
    }
    return 0;
}

}  // namespace ktricks::test
