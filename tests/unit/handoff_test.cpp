// The wire formats of handoff: what serve reads from generations, the control socket and /proc.
#include <gtest/gtest.h>

#include <unistd.h>

#include "handoff/proc_sockets.hpp"
#include "handoff/protocol.hpp"
#include "ktricks/core/error.hpp"

namespace ktricks::handoff {
namespace {

using namespace detail;

TEST(HandoffNotify, ReadsReadyStatusAndFdStoreFields) {
    auto m = parse_notify("READY=1\nSTATUS=serving 3 clients\nFDSTORE=1\nFDNAME=cache\nMAINPID=42\n");
    EXPECT_TRUE(m.ready);
    EXPECT_EQ(m.status, "serving 3 clients");
    EXPECT_TRUE(m.fdstore);
    EXPECT_EQ(m.fdname, "cache");
    EXPECT_EQ(m.main_pid, 42);
}

TEST(HandoffNotify, IgnoresUnknownKeysMalformedLinesAndBadValues) {
    auto m = parse_notify("X_FOO=1\ngarbage\nREADY=0\nFDNAME=bad:name\nMAINPID=-3\nSTOPPING=1");
    EXPECT_FALSE(m.ready);
    EXPECT_FALSE(m.fdname);
    EXPECT_FALSE(m.main_pid);
    EXPECT_TRUE(m.stopping);
}

TEST(HandoffListenSpec, TakesAnOptionalNameBeforeTheAddress) {
    auto named = ListenSpec::parse("web=tcp://127.0.0.1:8080");
    EXPECT_EQ(named.name, "web");
    EXPECT_EQ(named.address.to_string(), "tcp://127.0.0.1:8080");
    EXPECT_EQ(ListenSpec::parse("unix:@a=b").name, "");  // '=' after the scheme belongs to the address
    EXPECT_THROW(ListenSpec::parse("=tcp://127.0.0.1:1"), InputError);
    EXPECT_THROW(ListenSpec::parse("tcp://nowhere:1"), InputError);
}

TEST(HandoffReadyCheck, ParsesEveryMode) {
    EXPECT_EQ(ReadyCheck::parse("notify").kind, ReadyCheck::Kind::notify);
    EXPECT_EQ(ReadyCheck::parse("tcp").kind, ReadyCheck::Kind::tcp);
    EXPECT_EQ(ReadyCheck::parse("exec:curl -sf http://x/").command, "curl -sf http://x/");
    EXPECT_EQ(ReadyCheck::parse("delay:250").delay, milliseconds(250));
    EXPECT_THROW(ReadyCheck::parse("delay:soon"), InputError);
    EXPECT_THROW(ReadyCheck::parse("exec:"), InputError);
    EXPECT_THROW(ReadyCheck::parse("http"), InputError);
}

TEST(HandoffReadyCheck, ParsesProbeChecksWithPathAndStatus) {
    auto any = ReadyCheck::parse("http:/health");
    EXPECT_EQ(any.kind, ReadyCheck::Kind::http);
    EXPECT_EQ(any.path, "/health");
    EXPECT_EQ(any.status, 0);
    EXPECT_TRUE(any.uses_probe());
    auto exact = ReadyCheck::parse("http:/ready?x=1=204");
    EXPECT_EQ(exact.path, "/ready?x=1");
    EXPECT_EQ(exact.status, 204);
    EXPECT_EQ(ReadyCheck::parse("http:/a=b").path, "/a=b");  // not a status: the '=' is part of the path
    EXPECT_EQ(ReadyCheck::parse("connect").kind, ReadyCheck::Kind::connect);
    EXPECT_FALSE(ReadyCheck::parse("notify").uses_probe());
    EXPECT_THROW(ReadyCheck::parse("http:health"), InputError);
    EXPECT_THROW(ReadyCheck::parse("http:/a b"), InputError);
    EXPECT_THROW(ReadyCheck::parse("http:/=999"), InputError);
}

TEST(HandoffReadyCheck, ReadsTheStatusOfAnHttpAnswer) {
    EXPECT_EQ(parse_http_status("HTTP/1.1 200 OK\r\n"), 200);
    EXPECT_EQ(parse_http_status("HTTP/1.0 404 Not Found\r\n"), 404);
    EXPECT_EQ(parse_http_status("HTTP/1.1 20"), 0);  // cut short
    EXPECT_EQ(parse_http_status("HTTP/2 200"), 0);
    EXPECT_EQ(parse_http_status("SSH-2.0-OpenSSH_9.2\r\n"), 0);
    EXPECT_EQ(parse_http_status("HTTP/1.1 099 x"), 0);
}

TEST(HandoffServer, PresetsCarryEachServersGracefulSignalAndConventions) {
    auto nginx = server_preset(Server::nginx);
    EXPECT_EQ(nginx.protocol, Protocol::nginx);
    EXPECT_EQ(nginx.drain_signal, SIGQUIT);
    EXPECT_TRUE(nginx.nonblocking_listeners);
    EXPECT_EQ(server_preset(Server::lighttpd).drain_signal, SIGINT);
    EXPECT_EQ(server_preset(Server::gunicorn).drain_signal, SIGTERM);
    EXPECT_EQ(server_preset(Server::gunicorn).ready.kind, ReadyCheck::Kind::http);
    EXPECT_FALSE(server_preset(Server::uwsgi).environment.empty());
    EXPECT_EQ(parse_server("uwsgi"), Server::uwsgi);
    EXPECT_THROW(parse_server("apache"), InputError);
}

TEST(HandoffProtocol, AnnouncesDescriptorsInEachConvention) {
    std::vector<std::string> names{"web", ""};
    EXPECT_EQ(protocol_environment(Protocol::systemd, names),
              std::vector<std::string>{"LISTEN_FDNAMES=web:unknown"});
    EXPECT_EQ(protocol_environment(Protocol::nginx, names), std::vector<std::string>{"NGINX=3;4;"});
    // gunicorn 20.1 reads GUNICORN_FD only together with GUNICORN_PID.
    EXPECT_EQ(protocol_environment(Protocol::gunicorn, names, 42),
              (std::vector<std::string>{"GUNICORN_FD=3,4", "GUNICORN_PID=42"}));
    EXPECT_EQ(protocol_environment(Protocol::einhorn, names),
              (std::vector<std::string>{"EINHORN_FD_COUNT=2", "EINHORN_FD_0=3", "EINHORN_FD_1=4"}));
    EXPECT_THROW(parse_protocol("inetd"), InputError);
}

TEST(HandoffControl, AcceptsOnlyReloadAndStatus) {
    EXPECT_EQ(parse_control_request("reload\n"), ControlRequest::reload);
    EXPECT_EQ(parse_control_request("status\r\n"), ControlRequest::status);
    EXPECT_THROW(parse_control_request("reboot\n"), InputError);
}

TEST(HandoffControl, ReloadAnswersRoundTrip) {
    auto ok = parse_reload_answer(reload_answer({true, "", 3, 1234, 12.5}));
    EXPECT_TRUE(ok.ok);
    EXPECT_EQ(ok.generation, 3u);
    EXPECT_EQ(ok.pid, 1234);
    EXPECT_DOUBLE_EQ(ok.ready_ms, 12.5);
    auto refused = parse_reload_answer(reload_answer({false, "a reload is already in progress", 2, 7, 0}));
    EXPECT_FALSE(refused.ok);
    EXPECT_EQ(refused.message, "a reload is already in progress");
    EXPECT_THROW(parse_reload_answer("<html>"), InputError);
}

TEST(HandoffListenEnvironment, BelongsOnlyToTheProcessLISTEN_PIDNames) {
    auto names = parse_listen_environment("2", "100", "web", 100);
    ASSERT_TRUE(names);
    EXPECT_EQ(*names, (std::vector<std::string>{"web", "unknown"}));
    EXPECT_FALSE(parse_listen_environment("2", "101", nullptr, 100));
    EXPECT_FALSE(parse_listen_environment("two", "100", nullptr, 100));
    EXPECT_FALSE(parse_listen_environment(nullptr, "100", nullptr, 100));
}

TEST(HandoffZerg, GreetingCarriesTheDescriptorCount) {
    auto greeting = zerg_greeting(3);
    EXPECT_TRUE(greeting.starts_with("uwsgi-zerg"));
    EXPECT_EQ(greeting.size(), 10 + sizeof(int));
    EXPECT_EQ(parse_zerg_greeting(greeting), 3);
    EXPECT_FALSE(parse_zerg_greeting("uwsgi-zerX    "));
}

TEST(HandoffProcNet, ReadsTcpListenersAndConnections) {
    std::string table =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0 100 0 0 10 0\n"
        "   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0 20 4 30 10 -1\n";
    auto sockets = parse_proc_net_inet(table, ProcSocket::Kind::tcp, false);
    ASSERT_EQ(sockets.size(), 2u);
    EXPECT_TRUE(sockets[0].listening);
    EXPECT_EQ(sockets[0].local, "tcp://127.0.0.1:8080");
    EXPECT_EQ(sockets[0].inode, 1111u);
    EXPECT_FALSE(sockets[1].listening);
    EXPECT_EQ(sockets[1].remote, "tcp://127.0.0.1:54321");
    EXPECT_TRUE(belongs_to(sockets[1], sockets[0]));
}

TEST(HandoffProcNet, ReadsTcp6AndUnixListeners) {
    std::string tcp6 =
        "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3333 1 0 100 0 0 10 0\n";
    auto six = parse_proc_net_inet(tcp6, ProcSocket::Kind::tcp, true);
    ASSERT_EQ(six.size(), 1u);
    EXPECT_EQ(six[0].local, "tcp6://[::1]:80");
    std::string unix_table =
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 4444 /run/my app.sock\n"
        "0000000000000000: 00000003 00000000 00000000 0001 03 5555 /run/my app.sock\n";
    auto unix_sockets = unix_stream_sockets(ktricks::parse_proc_net_unix(unix_table));
    ASSERT_EQ(unix_sockets.size(), 2u);
    EXPECT_TRUE(unix_sockets[0].listening);
    EXPECT_EQ(unix_sockets[0].local, "unix:/run/my app.sock");
    EXPECT_TRUE(belongs_to(unix_sockets[1], unix_sockets[0]));
}

TEST(HandoffFindListeners, FindsOurOwnListenerByInode) {
    Fd listener = bind_socket(SocketAddress::parse("tcp://127.0.0.1:0"));
    auto address = SocketAddress::of_socket(listener.get()).to_string();
    auto found = find_listeners(::getpid());
    bool seen = false;
    for (const auto& f : found) seen |= f.fd == listener.get() && f.address == address;
    EXPECT_TRUE(seen) << address;
}

}  // namespace
}  // namespace ktricks::handoff
