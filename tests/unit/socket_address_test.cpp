// SocketAddress: the one address grammar (parse, canonical to_string) and bind_socket on loopback.
#include "ktricks/core/socket_address.hpp"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "test_support.hpp"

namespace ktricks {
namespace {

using namespace std::string_literals;
using namespace test_support;

// An abstract name no other test (or concurrent test binary) uses.
std::string unique_abstract_name(std::string_view what) {
    static std::atomic<int> counter{0};
    return "ktricks-test/" + std::to_string(::getpid()) + "/" + std::string(what) + "/" +
           std::to_string(counter++);
}

bool ipv6_loopback_available() {
    std::ifstream in("/proc/net/if_inet6");
    std::string line;
    while (std::getline(in, line))
        if (line.starts_with("00000000000000000000000000000001")) return true;
    return false;
}

// Parses `text`, expecting an InputError that quotes the input and contains `reason`.
void expect_parse_error(const std::string& text, const std::string& quoted_input, const std::string& reason) {
    SCOPED_TRACE("input: " + quoted_input);
    try {
        SocketAddress::parse(text);
        ADD_FAILURE() << "parse accepted " << quoted_input;
    } catch (const InputError& error) {
        std::string message = error.what();
        EXPECT_NE(message.find("address \"" + quoted_input + "\""), std::string::npos) << message;
        EXPECT_NE(message.find(reason), std::string::npos) << message;
        EXPECT_EQ(message.find('\n'), std::string::npos) << "message spans lines: " << message;
    }
}

const sockaddr_in& as_in(const SocketAddress& address) {
    return *reinterpret_cast<const sockaddr_in*>(address.sockaddr_ptr());
}
const sockaddr_in6& as_in6(const SocketAddress& address) {
    return *reinterpret_cast<const sockaddr_in6*>(address.sockaddr_ptr());
}
const sockaddr_un& as_un(const SocketAddress& address) {
    return *reinterpret_cast<const sockaddr_un*>(address.sockaddr_ptr());
}

// Binds `address` while something else holds it: bind_socket must fail with EADDRINUSE, and the
// message must be "bind TEXT: Address already in use".
void expect_address_in_use(const SocketAddress& address, const std::string& text) {
    try {
        bind_socket(address);
        ADD_FAILURE() << "second bind succeeded";
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), EADDRINUSE);
        EXPECT_EQ(std::string(error.what()), "bind " + text + ": Address already in use");
    }
}

int socket_option(int fd, int level, int name) {
    int value = 0;
    socklen_t length = sizeof(value);
    if (::getsockopt(fd, level, name, &value, &length) < 0)
        throw std::system_error(errno, std::system_category(), "getsockopt");
    return value;
}

// ---- parsing: every form ----

TEST(SocketAddressParse, TcpIpv4LiteralWithPort) {
    auto address = SocketAddress::parse("tcp://127.0.0.1:80");
    EXPECT_EQ(address.transport(), SocketAddress::Transport::tcp);
    EXPECT_EQ(address.family(), AF_INET);
    EXPECT_EQ(address.socket_type(), SOCK_STREAM);
    EXPECT_EQ(address.port(), 80);
    EXPECT_EQ(ntohl(as_in(address).sin_addr.s_addr), INADDR_LOOPBACK);
    EXPECT_EQ(address.length(), sizeof(sockaddr_in));
    EXPECT_FALSE(address.is_abstract());
}

TEST(SocketAddressParse, EmptyHostAndStarMeanAnyIpv4Address) {
    for (const char* text : {"tcp://:80", "tcp://*:80"}) {
        SCOPED_TRACE(text);
        auto address = SocketAddress::parse(text);
        EXPECT_EQ(address.family(), AF_INET);
        EXPECT_EQ(as_in(address).sin_addr.s_addr, htonl(INADDR_ANY));
        EXPECT_EQ(address.port(), 80);
        EXPECT_EQ(address.to_string(), "tcp://0.0.0.0:80");
    }
}

TEST(SocketAddressParse, LocalhostIsIpv4LoopbackWithoutDns) {
    auto address = SocketAddress::parse("tcp://localhost:0");
    EXPECT_EQ(address.family(), AF_INET);
    EXPECT_EQ(ntohl(as_in(address).sin_addr.s_addr), INADDR_LOOPBACK);
    EXPECT_EQ(address.port(), 0);
    EXPECT_EQ(address.to_string(), "tcp://127.0.0.1:0");
}

TEST(SocketAddressParse, HighestPortIs65535) {
    EXPECT_EQ(SocketAddress::parse("tcp://127.0.0.1:65535").port(), 65535);
}

TEST(SocketAddressParse, Tcp6BracketedLoopback) {
    auto address = SocketAddress::parse("tcp6://[::1]:443");
    EXPECT_EQ(address.transport(), SocketAddress::Transport::tcp);
    EXPECT_EQ(address.family(), AF_INET6);
    EXPECT_EQ(address.port(), 443);
    EXPECT_TRUE(IN6_IS_ADDR_LOOPBACK(&as_in6(address).sin6_addr));
    EXPECT_EQ(as_in6(address).sin6_scope_id, 0u);
    EXPECT_EQ(address.length(), sizeof(sockaddr_in6));
}

TEST(SocketAddressParse, Ipv6ScopeIdAfterPercent) {
    auto address = SocketAddress::parse("tcp6://[fe80::1%1]:1");
    EXPECT_EQ(address.family(), AF_INET6);
    EXPECT_EQ(as_in6(address).sin6_scope_id, 1u);
    EXPECT_EQ(address.port(), 1);
    EXPECT_EQ(address.to_string(), "tcp6://[fe80::1%1]:1");
}

TEST(SocketAddressParse, Ipv6ScopeMayNameAnInterface) {
    unsigned lo = ::if_nametoindex("lo");
    ASSERT_NE(lo, 0u) << "no loopback interface";
    auto address = SocketAddress::parse("tcp6://[fe80::1%lo]:1");
    EXPECT_EQ(as_in6(address).sin6_scope_id, lo);
    // The canonical form carries the index, which parse accepts again.
    EXPECT_EQ(address.to_string(), "tcp6://[fe80::1%" + std::to_string(lo) + "]:1");
}

TEST(SocketAddressParse, Tcp6EmptyHostAndBracketedZerosMeanAnyIpv6Address) {
    for (const char* text : {"tcp6://:80", "tcp6://[::]:80", "tcp6://*:80"}) {
        SCOPED_TRACE(text);
        auto address = SocketAddress::parse(text);
        EXPECT_EQ(address.family(), AF_INET6);
        EXPECT_TRUE(IN6_IS_ADDR_UNSPECIFIED(&as_in6(address).sin6_addr));
        EXPECT_EQ(address.port(), 80);
        EXPECT_EQ(address.to_string(), "tcp6://[::]:80");
    }
}

TEST(SocketAddressParse, TcpSchemeAcceptsABracketedIpv6Address) {
    auto address = SocketAddress::parse("tcp://[::1]:8080");
    EXPECT_EQ(address.family(), AF_INET6);
    EXPECT_EQ(address.to_string(), "tcp6://[::1]:8080");
}

TEST(SocketAddressParse, UdpIsADatagramAddress) {
    auto address = SocketAddress::parse("udp://127.0.0.1:53");
    EXPECT_EQ(address.transport(), SocketAddress::Transport::udp);
    EXPECT_EQ(address.socket_type(), SOCK_DGRAM);
    EXPECT_EQ(address.family(), AF_INET);
    EXPECT_EQ(address.port(), 53);
    EXPECT_EQ(address.to_string(), "udp://127.0.0.1:53");
}

TEST(SocketAddressParse, Udp6IsAnIpv6DatagramAddress) {
    auto address = SocketAddress::parse("udp6://[::1]:53");
    EXPECT_EQ(address.transport(), SocketAddress::Transport::udp);
    EXPECT_EQ(address.socket_type(), SOCK_DGRAM);
    EXPECT_EQ(address.family(), AF_INET6);
    EXPECT_EQ(address.to_string(), "udp6://[::1]:53");
}

TEST(SocketAddressParse, UnixPathIsAFilesystemStreamSocket) {
    auto address = SocketAddress::parse("unix:/run/x.sock");
    EXPECT_EQ(address.transport(), SocketAddress::Transport::unix_stream);
    EXPECT_EQ(address.family(), AF_UNIX);
    EXPECT_EQ(address.socket_type(), SOCK_STREAM);
    EXPECT_FALSE(address.is_abstract());
    EXPECT_EQ(address.port(), 0);
    EXPECT_STREQ(as_un(address).sun_path, "/run/x.sock");
    // The length counts the terminating NUL, as the kernel's own getsockname does.
    EXPECT_EQ(address.length(), offsetof(sockaddr_un, sun_path) + std::string("/run/x.sock").size() + 1);
}

TEST(SocketAddressParse, UnixAtNameIsAnAbstractSocketWithoutTerminatingNul) {
    auto address = SocketAddress::parse("unix:@ktricks/x");
    EXPECT_EQ(address.family(), AF_UNIX);
    EXPECT_TRUE(address.is_abstract());
    EXPECT_EQ(as_un(address).sun_path[0], '\0');
    EXPECT_EQ(std::string(as_un(address).sun_path + 1, 9), "ktricks/x");
    EXPECT_EQ(address.length(), offsetof(sockaddr_un, sun_path) + 1 + 9);
}

TEST(SocketAddressParse, LongestUnixPathIs107Bytes) {
    std::string path = "/" + std::string(106, 'p');
    auto address = SocketAddress::parse("unix:" + path);
    EXPECT_EQ(address.to_string(), "unix:" + path);
}

TEST(SocketAddressParse, LongestAbstractNameIs107Bytes) {
    std::string name(107, 'a');
    auto address = SocketAddress::parse("unix:@" + name);
    EXPECT_EQ(address.to_string(), "unix:@" + name);
    EXPECT_EQ(address.length(), sizeof(sockaddr_un));
}

// ---- canonical text ----

TEST(SocketAddressToString, CanonicalFormsRoundTripThroughParse) {
    for (const char* text :
         {"tcp://127.0.0.1:80", "tcp://0.0.0.0:0", "tcp://10.1.2.3:65535", "tcp6://[::1]:443",
          "tcp6://[::]:80", "tcp6://[fe80::1%1]:1", "tcp6://[2001:db8::42]:8080", "udp://127.0.0.1:53",
          "udp6://[::1]:5353", "unix:/tmp/x.sock", "unix:relative.sock", "unix:@ktricks/once/u0/x"}) {
        SCOPED_TRACE(text);
        auto address = SocketAddress::parse(text);
        EXPECT_EQ(address.to_string(), text);
        auto again = SocketAddress::parse(address.to_string());
        EXPECT_TRUE(again == address);
    }
}

TEST(SocketAddressToString, NonCanonicalSpellingsPrintCanonically) {
    EXPECT_EQ(SocketAddress::parse("tcp6://[0:0:0:0:0:0:0:1]:443").to_string(), "tcp6://[::1]:443");
    EXPECT_EQ(SocketAddress::parse("tcp4://127.0.0.1:80").to_string(), "tcp://127.0.0.1:80");
    EXPECT_EQ(SocketAddress::parse("udp4://127.0.0.1:80").to_string(), "udp://127.0.0.1:80");
    EXPECT_EQ(SocketAddress::parse("tcp://127.0.0.1:0080").to_string(), "tcp://127.0.0.1:80");
}

TEST(SocketAddressToString, AddressesDifferingInTransportAreNotEqual) {
    EXPECT_FALSE(SocketAddress::parse("tcp://127.0.0.1:80") == SocketAddress::parse("udp://127.0.0.1:80"));
    EXPECT_FALSE(SocketAddress::parse("tcp://127.0.0.1:80") == SocketAddress::parse("tcp://127.0.0.1:81"));
    EXPECT_TRUE(SocketAddress::parse("tcp://localhost:80") == SocketAddress::parse("tcp://127.0.0.1:80"));
}

TEST(SocketAddressToString, UnnamedUnixSocketPrintsAsBareScheme) {
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    Fd a(pair[0]), b(pair[1]);
    EXPECT_EQ(SocketAddress::of_socket(a.get()).to_string(), "unix:");
}

TEST(SocketAddressFactories, UnixPathAndAbstractEqualTheirParsedForms) {
    EXPECT_TRUE(SocketAddress::unix_path("/tmp/a.sock") == SocketAddress::parse("unix:/tmp/a.sock"));
    EXPECT_TRUE(SocketAddress::unix_abstract("a/b") == SocketAddress::parse("unix:@a/b"));
    EXPECT_FALSE(SocketAddress::unix_abstract("a") == SocketAddress::unix_path("a"));
}

TEST(SocketAddressFactories, FromSockaddrRejectsImpossibleLengthsAndFamilies) {
    sockaddr_storage storage{};
    storage.ss_family = AF_INET;
    EXPECT_THROW(
        SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&storage), sizeof(storage) + 1, SOCK_STREAM),
        InputError);
    EXPECT_THROW(SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&storage), 1, SOCK_STREAM),
                 InputError);
    storage.ss_family = AF_NETLINK;
    EXPECT_THROW(
        SocketAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&storage), sizeof(sockaddr), SOCK_STREAM),
        InputError);
}

TEST(SocketAddressFactories, FromSockaddrTakesTheTransportFromTheSocketType) {
    auto tcp = SocketAddress::parse("tcp://127.0.0.1:9");
    auto udp = SocketAddress::from_sockaddr(tcp.sockaddr_ptr(), tcp.length(), SOCK_DGRAM);
    EXPECT_EQ(udp.to_string(), "udp://127.0.0.1:9");
}

// ---- parse errors: each names the input and says what is wrong ----

struct ParseErrorCase {
    ParseErrorCase(const char* test_name, std::string text, std::string what_is_wrong,
                   std::string quoted = {})
        : name(test_name),
          input(std::move(text)),
          reason(std::move(what_is_wrong)),
          shown(quoted.empty() ? input : std::move(quoted)) {}
    const char* name;  // the test's name
    std::string input;
    std::string reason;  // what the message must say is wrong
    std::string shown;   // how the message quotes the input (escaped, where it holds control bytes)
};

void PrintTo(const ParseErrorCase& test, std::ostream* out) { *out << test.name; }

const ParseErrorCase parse_errors[] = {
    // missing port
    {"MissingPortAfterIpv4", "tcp://127.0.0.1", "missing port"},
    {"EmptyPortAfterIpv4", "tcp://127.0.0.1:", "missing port"},
    {"MissingPortAfterIpv6", "tcp6://[::1]", "missing ':PORT'"},
    {"EmptyPortAfterIpv6", "tcp6://[::1]:", "missing port"},
    // port above 65535
    {"Port65536", "tcp://127.0.0.1:65536", "port 65536 is out of range 0-65535"},
    {"PortOf20Digits", "tcp://127.0.0.1:99999999999999999999", "out of range"},
    // port that is not a number
    {"PortThatIsALetter", "tcp://127.0.0.1:x", "port \"x\" is not a number"},
    {"PortWithATrailingLetter", "tcp://127.0.0.1:80x", "port \"80x\" is not a number"},
    {"NegativePort", "tcp://127.0.0.1:-1", "not a number"},
    {"PortWithAPlusSign", "tcp://127.0.0.1:+80", "not a number"},
    {"PortWithALeadingSpace", "tcp://127.0.0.1: 80", "not a number"},
    // IPv4 address that is not a dotted quad
    {"Ipv4OfThreeParts", "tcp://1.2.3:80", "\"1.2.3\" is not an IPv4 address"},
    {"Ipv4PartAbove255", "tcp://256.1.1.1:80", "not an IPv4 address"},
    {"Ipv4PartInHex", "tcp://0x7f.0.0.1:80", "not an IPv4 address"},
    // No DNS: a host name is refused, and the message says why.
    {"HostName", "tcp://example.com:80", "no DNS"},
    // IPv6 address without brackets
    {"Ipv6WithoutBracketsForTcp6", "tcp6://::1:443", "IPv6 addresses must be in brackets"},
    {"Ipv6WithoutBracketsForTcp", "tcp://::1:443", "IPv6 addresses must be in brackets"},
    {"Ipv4ForTcp6", "tcp6://127.0.0.1:443", "must be in brackets"},
    // malformed bracketed IPv6
    {"Ipv6WithoutClosingBracket", "tcp6://[::1:443", "missing ']'"},
    {"Ipv4InBrackets", "tcp6://[1.2.3.4]:443", "\"1.2.3.4\" is not an IPv6 address"},
    {"EmptyIpv6Scope", "tcp6://[::1%]:443", "empty IPv6 scope"},
    {"Ipv6ScopeNamingNoInterface", "tcp6://[fe80::1%nosuchif0]:443",
     "no network interface named \"nosuchif0\""},
    {"BracketedIpv6ForTcp4", "tcp4://[::1]:443", "needs tcp6/udp6"},
    // unknown scheme
    {"UnknownScheme", "http://127.0.0.1:80", "unknown scheme \"http\""},
    {"MissingScheme", "127.0.0.1:80", "missing scheme"},
    {"UppercaseScheme", "TCP://127.0.0.1:80", "unknown scheme \"TCP\""},
    // nothing, or too much
    {"EmptyText", "", "empty address"},
    {"PathAfterHostAndPort", "tcp://127.0.0.1:80/x", "unexpected '/'"},
    // unix with an empty path or name
    {"UnixWithEmptyPath", "unix:", "empty unix socket path"},
    {"UnixWithEmptyAbstractName", "unix:@", "empty abstract socket name"},
    {"UnixWithDoubleSlash", "unix://tmp/x", "not unix://"},
    // The message must survive a NUL in the input: std::exception::what() is a C string, so a raw
    // NUL would cut off the reason.
    {"NulByteInUnixPath", "unix:/tmp/a\0b"s, "NUL", "unix:/tmp/a\\x00b"},
    {"NulByteInAbstractName", "unix:@a\0b"s, "NUL", "unix:@a\\x00b"},
    {"NulByteAfterPort", "tcp://127.0.0.1:80\0"s, "NUL", "tcp://127.0.0.1:80\\x00"},
    // control characters are reported and shown escaped
    {"NewlineAfterPort", "tcp://127.0.0.1:80\n", "control character", "tcp://127.0.0.1:80\\x0a"},
    {"EscapeSequenceInUnixPath", "unix:/tmp/\x1b[31mred", "control character", "unix:/tmp/\\x1b[31mred"},
    {"DelInAbstractName", "unix:@x\x7f", "control character", "unix:@x\\x7f"},
    {"TabBeforeScheme", "\ttcp://127.0.0.1:80", "control character", "\\x09tcp://127.0.0.1:80"},
};

class SocketAddressBadInput : public ::testing::TestWithParam<ParseErrorCase> {};

TEST_P(SocketAddressBadInput, IsRejectedNamingTheInputAndWhatIsWrong) {
    const auto& test = GetParam();
    expect_parse_error(test.input, test.shown, test.reason);
}

INSTANTIATE_TEST_SUITE_P(, SocketAddressBadInput, ::testing::ValuesIn(parse_errors),
                         [](const ::testing::TestParamInfo<ParseErrorCase>& test) {
                             return test.param.name;
                         });

TEST(SocketAddressParseError, UnixPathOf108BytesIsTooLong) {
    std::string path = "/" + std::string(107, 'p');
    ASSERT_EQ(path.size(), 108u);
    expect_parse_error("unix:" + path, "unix:" + path,
                       "unix socket path is 108 bytes; the kernel allows at most 107");
}

TEST(SocketAddressParseError, AbstractNameOf108BytesIsTooLong) {
    std::string name(108, 'a');
    expect_parse_error("unix:@" + name, "unix:@" + name,
                       "abstract socket name is 108 bytes; the kernel allows at most 107");
}

TEST(SocketAddressFactoriesError, UnixPathAndAbstractValidateLikeParse) {
    EXPECT_THROW(SocketAddress::unix_path(""), InputError);
    EXPECT_THROW(SocketAddress::unix_path(std::string(108, 'p')), InputError);
    EXPECT_THROW(SocketAddress::unix_path("a\0b"s), InputError);
    EXPECT_THROW(SocketAddress::unix_abstract(""), InputError);
    EXPECT_THROW(SocketAddress::unix_abstract(std::string(108, 'a')), InputError);
    EXPECT_THROW(SocketAddress::unix_abstract("a\0b"s), InputError);
    EXPECT_NO_THROW(SocketAddress::unix_path(std::string(107, 'p')));
    EXPECT_NO_THROW(SocketAddress::unix_abstract(std::string(107, 'a')));
}

// ---- bind_socket on loopback ----

TEST(BindSocket, TcpPortZeroGetsAKernelChosenPortAndListens) {
    auto socket = bind_socket(SocketAddress::parse("tcp://127.0.0.1:0"));
    ASSERT_TRUE(socket);
    EXPECT_TRUE(is_cloexec(socket.get()));
    EXPECT_EQ(socket_option(socket.get(), SOL_SOCKET, SO_TYPE), SOCK_STREAM);
    EXPECT_EQ(socket_option(socket.get(), SOL_SOCKET, SO_ACCEPTCONN), 1);
    EXPECT_EQ(socket_option(socket.get(), SOL_SOCKET, SO_REUSEADDR), 1);
    auto bound = SocketAddress::of_socket(socket.get());
    EXPECT_EQ(bound.family(), AF_INET);
    EXPECT_NE(bound.port(), 0);
    EXPECT_EQ(bound.to_string(), "tcp://127.0.0.1:" + std::to_string(bound.port()));

    // And it accepts a connection.
    Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(client);
    ASSERT_EQ(::connect(client.get(), bound.sockaddr_ptr(), bound.length()), 0) << std::strerror(errno);
    Fd accepted(::accept4(socket.get(), nullptr, nullptr, SOCK_CLOEXEC));
    EXPECT_TRUE(accepted);
}

TEST(BindSocket, SecondTcpBindOfTheSamePortNamesTheAddress) {
    auto first = bind_socket(SocketAddress::parse("tcp://127.0.0.1:0"));
    auto taken = SocketAddress::of_socket(first.get());
    expect_address_in_use(taken, taken.to_string());
}

TEST(BindSocket, UdpIsABoundDatagramSocket) {
    auto socket = bind_socket(SocketAddress::parse("udp://127.0.0.1:0"));
    ASSERT_TRUE(socket);
    EXPECT_TRUE(is_cloexec(socket.get()));
    EXPECT_EQ(socket_option(socket.get(), SOL_SOCKET, SO_TYPE), SOCK_DGRAM);
    auto bound = SocketAddress::of_socket(socket.get());
    EXPECT_EQ(bound.transport(), SocketAddress::Transport::udp);
    EXPECT_NE(bound.port(), 0);
    EXPECT_EQ(bound.to_string(), "udp://127.0.0.1:" + std::to_string(bound.port()));

    // A datagram sent to it arrives.
    Fd client(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::sendto(client.get(), "hi", 2, 0, bound.sockaddr_ptr(), bound.length()), 2);
    char buffer[8] = {};
    EXPECT_EQ(::recv(socket.get(), buffer, sizeof(buffer), MSG_DONTWAIT), 2);
    EXPECT_EQ(std::string(buffer, 2), "hi");
}

TEST(BindSocket, Tcp6LoopbackIsV6Only) {
    if (!ipv6_loopback_available()) GTEST_SKIP() << "no ::1 on this machine";
    auto socket = bind_socket(SocketAddress::parse("tcp6://[::1]:0"));
    EXPECT_TRUE(is_cloexec(socket.get()));
    EXPECT_EQ(socket_option(socket.get(), IPPROTO_IPV6, IPV6_V6ONLY), 1);
    auto bound = SocketAddress::of_socket(socket.get());
    EXPECT_EQ(bound.to_string(), "tcp6://[::1]:" + std::to_string(bound.port()));
}

TEST(BindSocket, UnixPathCreatesASocketFile) {
    TempDir dir;
    std::string path = (dir.path() / "s.sock").string();
    auto address = SocketAddress::parse("unix:" + path);
    auto socket = bind_socket(address);
    EXPECT_TRUE(is_cloexec(socket.get()));
    EXPECT_EQ(socket_option(socket.get(), SOL_SOCKET, SO_ACCEPTCONN), 1);
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    auto bound = SocketAddress::of_socket(socket.get());
    EXPECT_EQ(bound.to_string(), "unix:" + path);
    EXPECT_TRUE(bound == address);
}

TEST(BindSocket, UnixPathThatExistsFailsWithEaddrinuse) {
    TempDir dir;
    std::string path = (dir.path() / "s.sock").string();
    auto first = bind_socket(SocketAddress::unix_path(path));
    expect_address_in_use(SocketAddress::unix_path(path), "unix:" + path);
}

TEST(BindSocket, UnixSeqpacketOverride) {
    BindOptions options;
    options.socket_type = SOCK_SEQPACKET;
    auto socket = bind_socket(SocketAddress::unix_abstract(unique_abstract_name("seqpacket")), options);
    EXPECT_EQ(socket_option(socket.get(), SOL_SOCKET, SO_TYPE), SOCK_SEQPACKET);
    EXPECT_EQ(socket_option(socket.get(), SOL_SOCKET, SO_ACCEPTCONN), 1);
}

TEST(BindSocket, AbstractNameIsBoundWithoutAFile) {
    std::string name = unique_abstract_name("abstract");
    auto socket = bind_socket(SocketAddress::parse("unix:@" + name));
    EXPECT_TRUE(is_cloexec(socket.get()));
    auto bound = SocketAddress::of_socket(socket.get());
    EXPECT_TRUE(bound.is_abstract());
    EXPECT_EQ(bound.to_string(), "unix:@" + name);
}

TEST(BindSocket, SecondBindOfAnAbstractNameFailsNamingIt) {
    std::string name = unique_abstract_name("twice");
    auto first = bind_socket(SocketAddress::parse("unix:@" + name));
    expect_address_in_use(SocketAddress::parse("unix:@" + name), "unix:@" + name);
}

TEST(BindSocket, AbstractNameIsFreedWhenTheSocketCloses) {
    std::string name = unique_abstract_name("freed");
    bind_socket(SocketAddress::unix_abstract(name)).reset();
    EXPECT_NO_THROW(bind_socket(SocketAddress::unix_abstract(name)));
}

TEST(BindSocket, FailedBindLeaksNoDescriptor) {
    std::string name = unique_abstract_name("leak");
    auto first = bind_socket(SocketAddress::unix_abstract(name));
    int before = count_open_fds();
    EXPECT_THROW(bind_socket(SocketAddress::unix_abstract(name)), std::system_error);
    EXPECT_EQ(count_open_fds(), before);
}

}  // namespace
}  // namespace ktricks
