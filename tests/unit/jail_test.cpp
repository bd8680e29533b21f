// The jail's pure logic: --allow rules, --bind parsing and the broker's answers.
#include <netinet/in.h>
#include <sys/stat.h>

#include <algorithm>

#include <gtest/gtest.h>

#include <fmt/format.h>

#include "jail/intercept.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/jail.hpp"

namespace ktricks::jail {
namespace {

bool allows(std::string_view rule, std::string_view address) {
    return AllowRule::parse(rule).allows(SocketAddress::parse(address));
}

TEST(AllowRule, PortRangeIsInclusive) {
    EXPECT_TRUE(allows("tcp://0.0.0.0:8000-8100", "tcp://0.0.0.0:8000"));
    EXPECT_TRUE(allows("tcp://0.0.0.0:8000-8100", "tcp://0.0.0.0:8100"));
    EXPECT_FALSE(allows("tcp://0.0.0.0:8000-8100", "tcp://0.0.0.0:8101"));
    EXPECT_FALSE(allows("tcp://0.0.0.0:8000-8100", "tcp://0.0.0.0:7999"));
}

TEST(AllowRule, HostMustMatchExactlyUnlessStar) {
    EXPECT_FALSE(allows("tcp://0.0.0.0:80", "tcp://127.0.0.1:80"));
    EXPECT_TRUE(allows("tcp://*:80", "tcp://127.0.0.1:80"));
    EXPECT_FALSE(allows("tcp://*:80", "tcp6://[::1]:80"));
    EXPECT_TRUE(allows("tcp6://*:80", "tcp6://[::1]:80"));
    EXPECT_TRUE(allows("udp6://[::1]:53", "udp6://[::1]:53"));
}

TEST(AllowRule, TransportMustMatch) {
    EXPECT_FALSE(allows("tcp://*:53", "udp://127.0.0.1:53"));
    EXPECT_TRUE(allows("udp://*:53", "udp://127.0.0.1:53"));
}

TEST(AllowRule, PrintsBackToWhatItParses) {
    for (const char* text : {"tcp://0.0.0.0:8000-8100", "udp6://*:53", "tcp6://[::1]:443", "tcp://*:9000"})
        EXPECT_EQ(AllowRule::parse(text).to_string(), text);
}

TEST(AllowRule, RejectsBadRulesNamingThem) {
    for (const char* text : {"", "tcp://*:9-1", "unix:/x", "tcp://*:70000", "ftp://*:21", "tcp://host:80",
                             "tcp://*:", "tcp://*:1-"})
        EXPECT_THROW(AllowRule::parse(text), InputError) << text;
    try {
        AllowRule::parse("tcp://*:9-1");
    } catch (const InputError& error) {
        EXPECT_STREQ(error.what(), "--allow \"tcp://*:9-1\": the port range ends before it starts");
    }
}

TEST(SandboxOptions, BindTakesSourceAndOptionalTarget) {
    auto same = SandboxOptions::parse_bind("/srv/data");
    EXPECT_EQ(same.source, "/srv/data");
    EXPECT_EQ(same.target, "/srv/data");
    auto moved = SandboxOptions::parse_bind("/srv/data:/data");
    EXPECT_EQ(moved.target, "/data");
    EXPECT_THROW(SandboxOptions::parse_bind("/srv:relative"), InputError);
    EXPECT_THROW(SandboxOptions::parse_bind(""), InputError);
}

TEST(Broker, RefusesWhatTheAllowListDoesNotCover) {
    Broker broker({AllowRule::parse("tcp://127.0.0.1:1-2")}, false);
    auto answer = broker.answer("listen tcp://127.0.0.1:80");
    EXPECT_FALSE(answer.socket);
    EXPECT_EQ(answer.reply, "refused tcp://127.0.0.1:80 is not in the allow-list");
}

TEST(Broker, GrantsAnAllowedAddressWithABoundSocket) {
    Broker broker({AllowRule::parse("tcp://127.0.0.1:0")}, false);
    auto answer = broker.answer("listen tcp://127.0.0.1:0");
    ASSERT_TRUE(answer.socket) << answer.reply;
    EXPECT_TRUE(answer.reply.starts_with("ok tcp://127.0.0.1:")) << answer.reply;
}

// The same open socket (a dup of it), not merely the same address.
ino_t socket_inode(const Fd& fd) {
    struct stat st {};
    return ::fstat(fd.get(), &st) == 0 ? st.st_ino : 0;
}

TEST(Broker, GrantsTheSameSocketAgainAndSiblingsShareIt) {
    Fd probe = bind_socket(SocketAddress::parse("tcp://127.0.0.1:0"));
    auto port = SocketAddress::of_socket(probe.get()).port();
    probe.reset();
    std::string address = fmt::format("tcp://127.0.0.1:{}", port);
    Broker broker({AllowRule::parse(address), AllowRule::parse("tcp://127.0.0.1:0")}, false);
    auto first = broker.answer("listen " + address);
    ASSERT_TRUE(first.socket) << first.reply;
    // A second bind of the port would fail with EADDRINUSE: this is the kept socket.
    Broker next = broker.sibling();
    EXPECT_NE(next.socket_fd(), broker.socket_fd());
    auto again = next.answer("listen " + address);
    ASSERT_TRUE(again.socket) << again.reply;
    EXPECT_EQ(again.reply, "ok " + address);
    EXPECT_EQ(socket_inode(again.socket), socket_inode(first.socket));
    // Port 0 asks for a fresh port every time.
    auto any = broker.answer("listen tcp://127.0.0.1:0"), other = next.answer("listen tcp://127.0.0.1:0");
    ASSERT_TRUE(any.socket && other.socket) << any.reply << other.reply;
    EXPECT_NE(any.reply, other.reply);
}

TEST(Broker, AnswersGarbageWithOnePrintableRefusal) {
    Broker broker({}, false);
    EXPECT_EQ(broker.answer("hello\n").reply.substr(0, 8), "refused ");
    EXPECT_EQ(broker.answer("offer tcp://127.0.0.1:1").reply,
              "refused the broker only answers \"listen ADDRESS\"");
    EXPECT_TRUE(broker.answer("listen nonsense").reply.starts_with("refused address \"nonsense\"") ||
                broker.answer("listen nonsense").reply.starts_with("refused "));
}

TEST(SandboxOptions, CapabilityNamesInAnySpellingOrNumber) {
    EXPECT_EQ(SandboxOptions::parse_capability("CAP_NET_BIND_SERVICE"), 10);
    EXPECT_EQ(SandboxOptions::parse_capability("net_bind_service"), 10);
    EXPECT_EQ(SandboxOptions::parse_capability("21"), 21);
    EXPECT_EQ(SandboxOptions::parse_capability("cap_checkpoint_restore"), 40);
    EXPECT_THROW(SandboxOptions::parse_capability("CAP_FLY"), InputError);
    EXPECT_THROW(SandboxOptions::parse_capability("41"), InputError);
    EXPECT_THROW(SandboxOptions::parse_capability(""), InputError);
}

TEST(SandboxOptions, DefaultsAreTheSafeChoice) {
    SandboxOptions options;
    EXPECT_TRUE(options.readonly);
    EXPECT_TRUE(options.user_namespace);
    EXPECT_TRUE(options.capabilities.empty());
    EXPECT_FALSE(options.host_dev);
    EXPECT_TRUE(options.no_new_privs);
    EXPECT_TRUE(options.seccomp);
    EXPECT_TRUE(options.init);
}

TEST(Sandbox, AnInitCommandGetsNoSecondInit) {
    EXPECT_TRUE(looks_like_init("/usr/bin/tini"));
    EXPECT_TRUE(looks_like_init("dumb-init"));
    EXPECT_FALSE(looks_like_init("/usr/sbin/nginx"));
    EXPECT_FALSE(looks_like_init("initdb"));
}

TEST(Sandbox, DefaultDenyListCoversTheKernelChangingCalls) {
    const auto& names = default_denied_syscalls();
    for (const char* name :
         {"init_module", "finit_module", "kexec_load", "mount", "fsopen", "move_mount", "open_tree", "bpf",
          "ptrace", "keyctl", "perf_event_open", "userfaultfd", "open_by_handle_at", "setns", "unshare"})
        EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
}

TEST(InterceptBind, MatchesTransportFamilyAndHostAndThePortUnlessZero) {
    auto listener = [](const char* text, std::uint16_t asked) {
        return InterceptListener{SocketAddress::parse(text), asked};
    };
    std::vector<InterceptListener> listeners{listener("tcp://127.0.0.1:8000", 8000),
                                             listener("udp://127.0.0.1:5353", 5353),
                                             listener("tcp6://[::]:40000", 0)};
    auto match = [&](const char* text) { return match_bind(listeners, SocketAddress::parse(text)); };
    EXPECT_EQ(match("tcp://127.0.0.1:8000"), 0u);
    EXPECT_EQ(match("tcp://127.0.0.1:0"), 0u);  // a server that binds port 0 gets the listener
    EXPECT_EQ(match("tcp://127.0.0.1:8001"), std::nullopt);
    EXPECT_EQ(match("tcp://0.0.0.0:8000"), std::nullopt);  // not the host asked for
    EXPECT_EQ(match("udp://127.0.0.1:5353"), 1u);
    EXPECT_EQ(match("tcp://127.0.0.1:5353"), std::nullopt);
    EXPECT_EQ(match("tcp6://[::]:8080"), 2u);  // --listen port 0: any port the server asks for
    EXPECT_EQ(match("tcp6://[::1]:8080"), std::nullopt);
}

TEST(InterceptBind, ReadsOnlyInetAddressesOfTheKernelsMinimumLength) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(80);
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(parse_bind_address(&in, sizeof(in), SOCK_STREAM)->to_string(), "tcp://127.0.0.1:80");
    EXPECT_EQ(parse_bind_address(&in, sizeof(in), SOCK_DGRAM)->to_string(), "udp://127.0.0.1:80");
    EXPECT_THROW(parse_bind_address(&in, 8, SOCK_STREAM), InputError);
    sa_family_t unix_family = AF_UNIX;
    EXPECT_EQ(parse_bind_address(&unix_family, sizeof(unix_family), SOCK_STREAM), std::nullopt);
    EXPECT_THROW(parse_bind_address(&in, 1, SOCK_STREAM), InputError);
}

}  // namespace
}  // namespace ktricks::jail
