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

SocketInfo tcp(const char* local, int local_port, const char* peer, int peer_port,
               std::uint8_t state = established) {
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
                    yes = ((want[i / 8] >> (7 - i % 8)) & 1) ==
                          ((end.address[static_cast<std::size_t>(i / 8)] >> (7 - i % 8)) & 1);
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
    EXPECT_EQ(Filter::parse("state listening state established").states(),
              (1u << listen) | (1u << established));
    EXPECT_EQ(Filter::parse("exclude listening").states(), all_states & ~(1u << listen));
    EXPECT_FALSE(Filter::parse("state established").has_conditions());
}

TEST(SocketsFilter, ErrorsNameTheTokenAndItsPosition) {
    try {
        Filter::parse("sport = :80 and dst 10.0.0.300");
        FAIL();
    } catch (const InputError& error) {
        EXPECT_NE(std::string(error.what()).find("bad address \"10.0.0.300\" at character 21"),
                  std::string::npos)
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
            ASSERT_EQ(kernel_run(code, s), filter.matches(s))
                << text << " on " << local << ":" << s.local.port << " -> " << peer << ":" << s.peer.port;
        }
    }
}

TEST(SocketsFilter, UnixSocketsNeverMatchAddressConditions) {
    SocketInfo unix_socket;
    unix_socket.netid = Netid::u_str;
    unix_socket.inode = 4242;  // ss compares a unix socket's "port" with its inode, never 0 in the kernel
    EXPECT_FALSE(Filter::parse("sport = :0").matches(unix_socket));
}

SocketInfo unix_socket(Netid netid, std::string name, std::uint32_t inode, std::uint32_t peer = 0) {
    SocketInfo s;
    s.netid = netid;
    s.state = established;
    s.local.name = std::move(name);
    s.inode = inode;
    s.peer_inode = peer;
    return s;
}

TEST(SocketsFilter, AndAndOrHaveEqualPrecedenceAndGroupLeftToRight) {
    // ss (misc/ssfilter.y): "a or b and c" is "(a or b) and c".
    auto filter = Filter::parse("sport = :22 or sport = :80 and dst 10.0.0.2");
    EXPECT_FALSE(filter.matches(tcp("10.0.0.1", 22, "10.0.0.9", 4000)));
    EXPECT_TRUE(filter.matches(tcp("10.0.0.1", 22, "10.0.0.2", 4000)));
    EXPECT_TRUE(filter.matches(tcp("10.0.0.1", 80, "10.0.0.2", 4000)));
    auto juxtaposed = Filter::parse("sport = :22 or sport = :80 dst 10.0.0.2");
    EXPECT_FALSE(juxtaposed.matches(tcp("10.0.0.1", 22, "10.0.0.9", 4000)));
    // not binds to one condition; parentheses regroup.
    auto regrouped = Filter::parse("sport = :22 or ( sport = :80 and dst 10.0.0.2 )");
    EXPECT_TRUE(regrouped.matches(tcp("10.0.0.1", 22, "10.0.0.9", 4000)));
    EXPECT_TRUE(Filter::parse("not sport = :80 or sport = :80").matches(tcp("10.0.0.1", 80, "10.0.0.9", 1)));
}

TEST(SocketsFilter, ServiceNamesComeFromGetservbyname) {
    EXPECT_TRUE(Filter::parse("sport = :ssh").matches(tcp("10.0.0.1", 22, "10.0.0.2", 4000)));
    EXPECT_TRUE(Filter::parse("dport = :https").matches(tcp("10.0.0.1", 4000, "10.0.0.2", 443)));
    EXPECT_TRUE(Filter::parse("dport = :http").matches(tcp("10.0.0.1", 4000, "10.0.0.2", 80)));
    EXPECT_TRUE(Filter::parse("sport = :mysql").matches(tcp("10.0.0.1", 3306, "10.0.0.2", 4000)));
    EXPECT_TRUE(Filter::parse("state established ( dport = :ssh or sport = :ssh )")
                    .matches(tcp("10.0.0.1", 22, "10.0.0.2", 4000)));
    EXPECT_TRUE(Filter::parse("src 10.0.0.1:ssh").matches(tcp("10.0.0.1", 22, "10.0.0.2", 4000)));
    try {
        Filter::parse("sport = :no-such-service");
        FAIL();
    } catch (const InputError& error) {
        EXPECT_NE(std::string(error.what()).find("bad port \"no-such-service\" at character 9"),
                  std::string::npos)
            << error.what();
    }
}

TEST(SocketsFilter, ShortPrefixesFillWithZeros) {
    EXPECT_TRUE(Filter::parse("dst 10.0.0/24").matches(tcp("10.0.0.1", 1, "10.0.0.77", 2)));
    EXPECT_FALSE(Filter::parse("dst 10.0.0/24").matches(tcp("10.0.0.1", 1, "10.0.1.77", 2)));
    EXPECT_TRUE(Filter::parse("dst 193.233.7/24").matches(tcp("10.0.0.1", 1, "193.233.7.9", 2)));
    // iproute2 fills from the left: 127.1 is 127.1.0.0 (inet_aton would say 127.0.0.1).
    EXPECT_TRUE(Filter::parse("src 127.1").matches(tcp("127.1.0.0", 1, "10.0.0.1", 2)));
    EXPECT_FALSE(Filter::parse("src 127.1").matches(tcp("127.0.0.1", 1, "10.0.0.1", 2)));
    EXPECT_THROW(Filter::parse("src 0x7f000001"), InputError);  // ss: one number per byte, no host name
}

TEST(SocketsFilter, HostNamesAreResolvedWhenParsed) {
    auto filter = Filter::parse("src localhost");
    EXPECT_TRUE(filter.matches(tcp("127.0.0.1", 1, "10.0.0.1", 2)));
    EXPECT_FALSE(filter.matches(tcp("10.0.0.1", 1, "127.0.0.1", 2)));
    EXPECT_THROW(Filter::parse("src no-such-host.invalid"), InputError);
}

TEST(SocketsFilter, V4ConditionsMatchV4MappedAddresses) {
    SocketInfo s = tcp("0.0.0.0", 80, "0.0.0.0", 1);
    s.local.family = s.peer.family = AF_INET6;
    ::inet_pton(AF_INET6, "::ffff:10.1.2.3", s.local.address.data());
    EXPECT_TRUE(Filter::parse("src 10.1.0.0/16").matches(s));
    EXPECT_FALSE(Filter::parse("src 10.2.0.0/16").matches(s));
    EXPECT_TRUE(Filter::parse("src [::ffff:10.1.2.3]").matches(s));
}

TEST(SocketsFilter, DeviceMarkAndAutoboundConditions) {
    auto s = tcp("10.0.0.1", 22, "10.0.0.2", 4000);
    s.ifindex = 1;
    s.mark = 0x1234;
    EXPECT_TRUE(Filter::parse("dev lo").matches(s));
    EXPECT_FALSE(Filter::parse("dev != lo").matches(s));
    EXPECT_TRUE(Filter::parse("dev 1").matches(s));
    EXPECT_TRUE(Filter::parse("fwmark 0x1234").matches(s));
    EXPECT_TRUE(Filter::parse("fwmark = 0x34/0xff").matches(s));
    EXPECT_FALSE(Filter::parse("fwmark 0x34").matches(s));
    EXPECT_TRUE(Filter::parse("fwmark != 0").matches(s));
    EXPECT_FALSE(Filter::parse("autobound").matches(s));  // 22 is outside ip_local_port_range
    EXPECT_TRUE(Filter::parse("dev lo").bytecode().empty()) << "ss sends no bytecode for dev: neither do we";
    EXPECT_FALSE(Filter::parse("fwmark 0x1").bytecode().empty());
    EXPECT_THROW(Filter::parse("dev no-such-device0"), InputError);
    EXPECT_THROW(Filter::parse("fwmark 0x1/zz"), InputError);
    EXPECT_THROW(Filter::parse("cgroup /no/such/cgroup/here"), InputError);
}

TEST(SocketsFilter, InetConditionsMatchNoUnixSocket) {
    auto named = unix_socket(Netid::u_str, "/run/app.sock", 5000, 5001);
    EXPECT_FALSE(Filter::parse("sport = :22").matches(named));
    EXPECT_FALSE(Filter::parse("src 10.0.0.1").matches(named));
    EXPECT_FALSE(Filter::parse("dport = :http").matches(named));
    // ss's unix "ports" are inodes: ordering conditions do compare them.
    EXPECT_TRUE(Filter::parse("sport > :4999").matches(named));
    EXPECT_TRUE(Filter::parse("dport = :5001").matches(named));
}

TEST(SocketsFilter, UnixPathAndAbstractPatternsWithUnixFamily) {
    FilterContext unix_context{.family = AF_UNIX};
    auto path = unix_socket(Netid::u_str, "/run/app.sock", 5000);
    auto abstract = unix_socket(Netid::u_dgr, "@ktricks-test", 5002);
    auto unnamed = unix_socket(Netid::u_seq, "", 5003);
    auto filter = Filter::parse("src /run/*", unix_context);
    EXPECT_EQ(filter.family(), AF_UNIX);
    EXPECT_TRUE(filter.matches(path));
    EXPECT_FALSE(filter.matches(abstract));
    EXPECT_TRUE(Filter::parse("src @ktricks*", unix_context).matches(abstract));
    EXPECT_TRUE(Filter::parse("src unix:@ktricks*").matches(abstract));
    EXPECT_EQ(Filter::parse("src unix:@ktricks*").family(), AF_UNIX);
    EXPECT_FALSE(Filter::parse("src unix:@ktricks*").matches(tcp("10.0.0.1", 1, "10.0.0.2", 2)));
    EXPECT_TRUE(Filter::parse("autobound", unix_context).matches(unnamed));
    EXPECT_TRUE(Filter::parse("autobound", unix_context).matches(unix_socket(Netid::u_str, "@0001f", 1)));
    EXPECT_FALSE(Filter::parse("autobound", unix_context).matches(abstract));
    // With -x, ss reads a port as a name pattern too: ":22" is no socket's name.
    EXPECT_FALSE(Filter::parse("sport = :22", unix_context).matches(path));
    EXPECT_EQ(Filter::parse("sport = :22").family(), 0);
    EXPECT_EQ(Filter::parse("src inet6:[::1]").family(), AF_INET6);
    // A prefixed value sets the family of those after it (ss's filter_af_set).
    EXPECT_EQ(Filter::parse("src inet6:[::1] or dport 80").family(), AF_INET6);
    EXPECT_THROW(Filter::parse("src inet:127.0.0.1 or src ::/0"), InputError);
}

TEST(SocketsFilter, StateClausesApplyInOrder) {
    EXPECT_EQ(Filter::parse("exclude listening state listening").states(), all_states);
    EXPECT_EQ(Filter::parse("state CLOSED").states(), 1u << closed);
    EXPECT_EQ(Filter::parse("state unconnected").states(), 1u << closed);
    EXPECT_EQ(Filter::parse("excl established").states(), all_states & ~(1u << established));
}

TEST(SocketsCgroupOwner, NamesTheUnitAndTheContainerOfACgroupPath) {
    const std::string id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    auto service = cgroup_owner("/system.slice/nginx.service");
    EXPECT_EQ(service.unit, "nginx.service");
    EXPECT_TRUE(service.container.empty());
    EXPECT_EQ(cgroup_owner("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service").unit,
              "foo.service");
    auto docker = cgroup_owner("/system.slice/docker-" + id + ".scope");
    EXPECT_EQ(docker.runtime, "docker");
    EXPECT_EQ(docker.container, id);
    EXPECT_EQ(docker.unit, "docker-" + id + ".scope");
    auto kubernetes = cgroup_owner(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-" + id +
        ".scope");
    EXPECT_EQ(kubernetes.runtime, "cri-containerd");
    EXPECT_EQ(kubernetes.container, id);
    auto cgroupfs = cgroup_owner("/docker/" + id);
    EXPECT_EQ(cgroupfs.runtime, "docker");
    EXPECT_EQ(cgroupfs.container, id);
    auto root = cgroup_owner("/");
    EXPECT_TRUE(root.unit.empty() && root.container.empty());
}

}  // namespace
}  // namespace ktricks::sockets
