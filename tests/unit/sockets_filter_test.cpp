// The filter language: parsing, error positions, and bytecode that the kernel's machine runs to the
// same decision as the user-space evaluator.
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <sys/socket.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "ktricks/core/error.hpp"
#include "ktricks/sockets.hpp"

namespace ktricks::sockets {
namespace {

SocketInfo tcp(const char* local, int local_port, const char* peer, int peer_port, std::uint8_t state = established) {
    SocketInfo s;
    s.netid = Netid::tcp;
    s.state = state;
    s.local.family = s.peer.family = AF_INET;
    ::inet_pton(AF_INET, local, s.local.address.data());
    ::inet_pton(AF_INET, peer, s.peer.address.data());
    s.local.port = static_cast<std::uint16_t>(local_port);
    s.peer.port = static_cast<std::uint16_t>(peer_port);
    return s;
}

// A transcription of the kernel's inet_diag_bc_run (net/ipv4/inet_diag.c) for IPv4 sockets.
bool kernel_run(const std::vector<std::byte>& code, const SocketInfo& s) {
    const auto* bc = reinterpret_cast<const unsigned char*>(code.data());
    int len = static_cast<int>(code.size());
    while (len > 0) {
        inet_diag_bc_op op;
        std::memcpy(&op, bc, sizeof(op));
        bool yes = true;
        switch (op.code) {
            case INET_DIAG_BC_NOP: break;
            case INET_DIAG_BC_JMP: yes = false; break;
            case INET_DIAG_BC_S_GE:
            case INET_DIAG_BC_S_LE:
            case INET_DIAG_BC_D_GE:
            case INET_DIAG_BC_D_LE: {
                inet_diag_bc_op value;
                std::memcpy(&value, bc + sizeof(op), sizeof(value));
                bool source = op.code == INET_DIAG_BC_S_GE || op.code == INET_DIAG_BC_S_LE;
                int port = source ? s.local.port : s.peer.port;
                bool ge = op.code == INET_DIAG_BC_S_GE || op.code == INET_DIAG_BC_D_GE;
                yes = ge ? port >= value.no : port <= value.no;
                break;
            }
            case INET_DIAG_BC_S_COND:
            case INET_DIAG_BC_D_COND: {
                inet_diag_hostcond cond;
                std::memcpy(&cond, bc + sizeof(op), sizeof(cond));
                const Endpoint& end = op.code == INET_DIAG_BC_S_COND ? s.local : s.peer;
                if (cond.port != -1 && cond.port != end.port) {
                    yes = false;
                    break;
                }
                if (cond.family == AF_UNSPEC || cond.prefix_len == 0) break;
                if (cond.family != end.family) {
                    yes = false;
                    break;
                }
                const auto* want = bc + sizeof(op) + sizeof(cond);
                int bits = cond.prefix_len;
                for (int i = 0; i < bits && yes; ++i)
                    yes = ((want[i / 8] >> (7 - i % 8)) & 1) == ((end.address[static_cast<std::size_t>(i / 8)] >> (7 - i % 8)) & 1);
                break;
            }
            default: ADD_FAILURE() << "unexpected op " << int(op.code); return false;
        }
        int step = yes ? op.yes : op.no;
        EXPECT_GE(step, 4);
        EXPECT_EQ(step % 4, 0);
        len -= step;
        bc += step;
    }
    EXPECT_TRUE(len == 0 || len == -4) << "a jump must land on the end (accept) or end + 4 (reject)";
    return len == 0;
}

TEST(SocketsFilter, PortEqualityMatchesSourceOrDestination) {
    auto filter = Filter::parse("sport = :443");
    EXPECT_TRUE(filter.matches(tcp("10.0.0.1", 443, "10.0.0.2", 5000)));
    EXPECT_FALSE(filter.matches(tcp("10.0.0.1", 5000, "10.0.0.2", 443)));
    EXPECT_TRUE(Filter::parse("dport == 443").matches(tcp("10.0.0.1", 5000, "10.0.0.2", 443)));
}

TEST(SocketsFilter, StateClausesSetTheStateMask) {
    EXPECT_EQ(Filter::parse("state established").states(), 1u << established);
    EXPECT_EQ(Filter::parse("state listening state established").states(), (1u << listen) | (1u << established));
    EXPECT_EQ(Filter::parse("exclude listening").states(), all_states & ~(1u << listen));
    EXPECT_FALSE(Filter::parse("state established").has_conditions());
}

TEST(SocketsFilter, ErrorsNameTheTokenAndItsPosition) {
    try {
        Filter::parse("sport = :80 and dst 10.0.0.300");
        FAIL();
    } catch (const InputError& error) {
        EXPECT_NE(std::string(error.what()).find("bad address \"10.0.0.300\" at character 21"), std::string::npos)
            << error.what();
    }
    EXPECT_THROW(Filter::parse("state nosuch"), InputError);
    EXPECT_THROW(Filter::parse("( sport = :1"), InputError);
    EXPECT_THROW(Filter::parse("sport = :65536"), InputError);
    EXPECT_THROW(Filter::parse("dst 10.0.0.0/33"), InputError);
    EXPECT_THROW(Filter::parse("src > 10.0.0.1"), InputError);
    EXPECT_THROW(Filter::parse("sport"), InputError);
}

TEST(SocketsFilter, AddressPrefixesAndPortsInAddresses) {
    auto filter = Filter::parse("dst 10.0.0.0/8");
    EXPECT_TRUE(filter.matches(tcp("192.168.1.1", 1, "10.9.8.7", 2)));
    EXPECT_FALSE(filter.matches(tcp("192.168.1.1", 1, "11.0.0.1", 2)));
    EXPECT_TRUE(Filter::parse("src 127.0.0.1:80").matches(tcp("127.0.0.1", 80, "1.1.1.1", 2)));
    EXPECT_FALSE(Filter::parse("src 127.0.0.1:80").matches(tcp("127.0.0.1", 81, "1.1.1.1", 2)));
    EXPECT_TRUE(Filter::parse("src *:80").matches(tcp("127.0.0.9", 80, "1.1.1.1", 2)));
}

TEST(SocketsFilter, BooleanOperatorsCombine) {
    auto s = tcp("10.0.0.1", 22, "10.0.0.2", 4000);
    EXPECT_TRUE(Filter::parse("sport = :22 and dport = :4000").matches(s));
    EXPECT_TRUE(Filter::parse("sport = :22 dport = :4000").matches(s));  // juxtaposition is and
    EXPECT_FALSE(Filter::parse("sport = :22 and not dport = :4000").matches(s));
    EXPECT_TRUE(Filter::parse("sport = :80 or sport = :22").matches(s));
    EXPECT_TRUE(Filter::parse("! ( sport = :80 || dport = :80 )").matches(s));
    EXPECT_TRUE(Filter::parse("sport >= :22 and sport <= :22 and sport > :21 and sport < :23").matches(s));
    EXPECT_FALSE(Filter::parse("sport > :65535").matches(s));
}

TEST(SocketsFilter, BytecodeDecidesLikeTheEvaluatorOnRandomSockets) {
    const char* expressions[] = {
        "sport = :22",
        "dport != :443",
        "sport >= :1000 and sport <= :2000",
        "sport > :1024 or dport < :1024",
        "not ( sport = :22 or dport = :22 ) and dst 10.0.0.0/8",
        "( sport = :1 or sport = :2 or sport = :3 ) and not ( dst 10.1.0.0/16 or src 10.2.0.0/16:5 )",
        "src 10.0.0.0/9 or dst 10.128.0.0/9 or sport = :7",
        "not not not sport = :9",
        "dst *:80 or src 10.0.0.1",
    };
    std::mt19937 random(42);
    auto pick = [&](int n) { return static_cast<int>(random() % static_cast<unsigned>(n)); };
    for (const char* text : expressions) {
        auto filter = Filter::parse(text);
        auto code = filter.bytecode();
        ASSERT_FALSE(code.empty());
        for (int i = 0; i < 2000; ++i) {
            std::string local = fmt::format("10.{}.{}.{}", pick(4) * 64, pick(3), pick(3));
            std::string peer = fmt::format("10.{}.0.{}", pick(256), pick(3));
            static const int ports[] = {1, 2, 3, 5, 7, 9, 22, 80, 443, 1000, 1024, 1500, 2000, 2001, 65535};
            auto s = tcp(local.c_str(), ports[pick(15)], peer.c_str(), ports[pick(15)]);
            ASSERT_EQ(kernel_run(code, s), filter.matches(s)) << text << " on " << local << ":" << s.local.port << " -> "
                                                              << peer << ":" << s.peer.port;
        }
    }
}

TEST(SocketsFilter, UnixSocketsNeverMatchAddressConditions) {
    SocketInfo unix_socket;
    unix_socket.netid = Netid::u_str;
    EXPECT_FALSE(Filter::parse("sport = :0").matches(unix_socket));
}

}  // namespace
}  // namespace ktricks::sockets
