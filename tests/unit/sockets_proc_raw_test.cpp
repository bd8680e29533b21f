// The /proc/net/raw{,6} parser (sockets -w without raw_diag) on rows copied from this kernel.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <gtest/gtest.h>

#include <cstring>

#include "../../src/sockets/proc_raw.hpp"

namespace ktricks::sockets {
namespace {

const char* const raw4 =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref "
    "pointer drops\n"
    "  87: 0100007F:0001 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 24038183 2 "
    "00000000bed72d60 0\n"
    " 115: 0100007F:0011 0100007F:0000 01 00000010:00000340 00:00000000 00000000  1000        0 24038180 2 "
    "00000000eb788c3a 0\n";

const char* const raw6 =
    "  sl  local_address                         remote_address                        st tx_queue rx_queue "
    "tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
    "  151: 00000000000000000000000001000000:00FD 00000000000000000000000001000000:0000 01 00000000:00000000 "
    "00:00000000 00000000     0        0 24038182 2 00000000c40c350f 0\n";

TEST(SocketsProcRaw, ParsesIpv4RowsInTheKernelsOrder) {
    std::vector<SocketInfo> rows;
    std::vector<std::string> skipped;
    detail::parse_proc_net_raw(raw4, AF_INET, rows, skipped);
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_TRUE(skipped.empty());
    in_addr loopback{};
    inet_pton(AF_INET, "127.0.0.1", &loopback);
    EXPECT_EQ(std::memcmp(rows[0].local.address.data(), &loopback, 4), 0);
    EXPECT_EQ(rows[0].local.port, 1);  // the protocol: ICMP
    EXPECT_EQ(rows[0].state, closed);
    EXPECT_EQ(rows[0].inode, 24038183u);
    EXPECT_EQ(rows[0].netid, Netid::raw);
    EXPECT_TRUE(rows[0].from_proc);
    EXPECT_EQ(rows[1].state, established);
    EXPECT_EQ(rows[1].recv_q, 0x340u);  // rx_queue
    EXPECT_EQ(rows[1].send_q, 0x10u);   // tx_queue
    EXPECT_EQ(rows[1].uid, 1000u);
    EXPECT_EQ(rows[1].local.port, 17);
    EXPECT_EQ(std::memcmp(rows[1].peer.address.data(), &loopback, 4), 0);
}

TEST(SocketsProcRaw, ParsesIpv6Addresses) {
    std::vector<SocketInfo> rows;
    std::vector<std::string> skipped;
    detail::parse_proc_net_raw(raw6, AF_INET6, rows, skipped);
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(std::memcmp(rows[0].local.address.data(), &in6addr_loopback, 16), 0);
    EXPECT_EQ(std::memcmp(rows[0].peer.address.data(), &in6addr_loopback, 16), 0);
    EXPECT_EQ(rows[0].local.family, AF_INET6);
    EXPECT_EQ(rows[0].local.port, 253);
}

TEST(SocketsProcRaw, MalformedRowsAreSkippedWithOneLineEach) {
    std::string text = std::string(raw4) + "  9: 0100007F:0001 zz\n" + "garbage\n" +
                       "  10: 0100007F:10001 00000000:0000 07 0:0 0:0 0 0 0 1\n\n";
    std::vector<SocketInfo> rows;
    std::vector<std::string> skipped;
    detail::parse_proc_net_raw(text, AF_INET, rows, skipped);
    EXPECT_EQ(rows.size(), 2u);
    ASSERT_EQ(skipped.size(), 3u);
    EXPECT_EQ(skipped[0], "/proc/net/raw line 4: bad remote address: row skipped");
    EXPECT_EQ(skipped[1], "/proc/net/raw line 5: no \"N:\" slot number: row skipped");
    EXPECT_EQ(skipped[2], "/proc/net/raw line 6: bad local address: row skipped");
    rows.clear();
    skipped.clear();
    detail::parse_proc_net_raw(raw4, AF_INET6, rows, skipped);  // v4 rows read as v6: all skipped
    EXPECT_TRUE(rows.empty());
    EXPECT_EQ(skipped.size(), 2u);
}

}  // namespace
}  // namespace ktricks::sockets
