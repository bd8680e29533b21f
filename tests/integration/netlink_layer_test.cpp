// The netlink layer against the real kernel: dumps, errors with extended acks, generic netlink
// lookup, namespace entry.
#include <fcntl.h>
#include <linux/cn_proc.h>
#include <linux/genetlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <set>

#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/netlink.hpp"

namespace ktricks::netlink {
namespace {

TEST(NetlinkLayer, SocketsAreCloseOnExec) {
    auto socket = Socket::open(NETLINK_ROUTE);
    EXPECT_TRUE(is_cloexec(socket.fd()));
    EXPECT_NE(socket.port_id(), 0u);
}

TEST(NetlinkLayer, DumpDeliversEveryLinkIncludingLoopback) {
    auto socket = Socket::open(NETLINK_ROUTE);
    Request request(RTM_GETLINK, 0);
    request.put_header(ifinfomsg{});
    std::set<std::string> names;
    socket.dump(
        request,
        [&](const nlmsghdr& message) {
            Attributes attributes(message, sizeof(ifinfomsg), IFLA_MAX);
            if (auto name = attributes.string(IFLA_IFNAME)) names.emplace(*name);
            return true;
        },
        "dump links");
    EXPECT_TRUE(names.count("lo"));
}

TEST(NetlinkLayer, MultiPartDumpOfManyUnixSocketsIsComplete) {
    std::vector<Fd> sockets;
    std::set<std::uint32_t> inodes;
    for (int i = 0; i < 600; ++i) {
        sockets.emplace_back(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        struct stat status {};
        ASSERT_EQ(::fstat(sockets.back().get(), &status), 0);
        inodes.insert(static_cast<std::uint32_t>(status.st_ino));
    }
    auto socket = Socket::open(NETLINK_SOCK_DIAG);
    Request request(SOCK_DIAG_BY_FAMILY, 0);
    unix_diag_req unix_request{};
    unix_request.sdiag_family = AF_UNIX;
    unix_request.udiag_states = ~0u;
    request.put_header(unix_request);
    std::size_t found = 0, messages = 0;
    socket.dump(
        request,
        [&](const nlmsghdr& message) {
            ++messages;
            if (auto diag = read_header<unix_diag_msg>(message); diag && inodes.count(diag->udiag_ino))
                ++found;
            return true;
        },
        "dump unix sockets");
    EXPECT_EQ(found, inodes.size());
    EXPECT_GE(messages, found);
}

TEST(NetlinkLayer, KernelErrorCarriesErrnoAndNamesTheRequest) {
    auto socket = Socket::open(NETLINK_SOCK_DIAG);
    Request request(SOCK_DIAG_BY_FAMILY, 0);
    unix_diag_req bad{};
    bad.sdiag_family = 250;  // no such family
    request.put_header(bad);
    try {
        socket.dump(request, {}, "dump family 250");
        FAIL() << "expected an error";
    } catch (const NetlinkError& error) {
        EXPECT_EQ(error.code().value(), EINVAL);
        EXPECT_NE(std::string(error.what()).find("dump family 250"), std::string::npos) << error.what();
    }
}

TEST(NetlinkLayer, ExtendedAckTextIsSurfaced) {
    // RTM_NEWLINK without a kind is refused by rtnetlink with an extack message on 6.x kernels.
    auto socket = Socket::open(NETLINK_ROUTE);
    Request request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    request.put_header(ifinfomsg{});
    mnl_attr_put_strz(request.header(), IFLA_IFNAME, "ktricks-noext");
    try {
        socket.transact(request, {}, "create link without kind");
        FAIL() << "expected an error";
    } catch (const NetlinkError& error) {
        EXPECT_FALSE(error.extack().empty()) << error.what();
        EXPECT_NE(std::string(error.what()).find(error.extack()), std::string::npos);
    }
}

TEST(NetlinkLayer, GenericFamilyLookupFindsControllerAndItsGroup) {
    auto socket = Socket::open(NETLINK_GENERIC);
    auto family = resolve_family(socket, "nlctrl");
    EXPECT_EQ(family.id, GENL_ID_CTRL);
    EXPECT_EQ(family.group("notify"), family.groups.at("notify"));
    EXPECT_THROW(family.group("nonexistent"), std::system_error);
}

TEST(NetlinkLayer, UnknownGenericFamilyIsENOENT) {
    auto socket = Socket::open(NETLINK_GENERIC);
    try {
        resolve_family(socket, "no-such-family");
        FAIL();
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), ENOENT);
        EXPECT_NE(std::string(error.what()).find("no-such-family"), std::string::npos);
    }
}

TEST(NetlinkLayer, ReceiveBufferCanBeRaisedBeyondRmemMaxAsRoot) {
    if (::geteuid() != 0) GTEST_SKIP() << "SO_RCVBUFFORCE needs root";
    auto socket = Socket::open(NETLINK_ROUTE);
    EXPECT_GE(socket.set_receive_buffer(16 << 20), std::size_t(16 << 20));
}

TEST(NetlinkLayer, SubscriptionDeliversEventsAndReportsNothingQueuedWhenIdle) {
    auto socket = Socket::open(NETLINK_ROUTE);
    socket.subscribe(RTNLGRP_LINK, "link");
    socket.set_nonblocking();
    EXPECT_EQ(socket.receive({}), Received::would_block);
}

TEST(NetlinkLayer, NetnsGuardEntersAndRestores) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    struct stat before {
    }, inside{}, after{};
    ASSERT_EQ(::stat("/proc/thread-self/ns/net", &before), 0);
    Fd fresh;
    run_in_netns(open_netns("/proc/self/ns/net").get(), "self", [&] {
        ASSERT_EQ(::unshare(CLONE_NEWNET), 0);
        fresh = open_netns("/proc/thread-self/ns/net");
    });
    {
        NetnsGuard guard(fresh.get(), "fresh");
        ASSERT_EQ(::stat("/proc/thread-self/ns/net", &inside), 0);
        EXPECT_NE(inside.st_ino, before.st_ino);
        auto socket = Socket::open(NETLINK_ROUTE);  // lives in the fresh namespace
        Request request(RTM_GETLINK, 0);
        request.put_header(ifinfomsg{});
        int links = 0;
        socket.dump(
            request, [&](const nlmsghdr&) { return ++links, true; }, "dump links");
        EXPECT_EQ(links, 1);  // only lo
    }
    ASSERT_EQ(::stat("/proc/thread-self/ns/net", &after), 0);
    EXPECT_EQ(after.st_ino, before.st_ino);
}

// A forked child in a fresh network namespace (no name anywhere) is found by the /proc scan, under
// its own pid, with the id its /proc/PID/ns/net has; our own namespace is there too.
TEST(NetlinkLayer, ProcessNamespacesFindsAnUnnamedNamespace) {
    if (::geteuid() != 0) GTEST_SKIP() << "unshare(CLONE_NEWNET) needs root";
    int ready[2];
    ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        if (::unshare(CLONE_NEWNET) != 0) ::_exit(1);
        (void)!::write(ready[1], "x", 1);
        ::pause();
        ::_exit(0);
    }
    ::close(ready[1]);
    char byte = 0;
    bool unshared = ::read(ready[0], &byte, 1) == 1;
    ::close(ready[0]);
    auto id = netns_id("/proc/" + std::to_string(child) + "/ns/net");
    auto ours = netns_id("/proc/self/ns/net");
    auto found = process_namespaces();
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    ASSERT_TRUE(unshared);
    ASSERT_TRUE(id && ours);
    EXPECT_NE(*id, *ours);
    bool child_found = false, ours_found = false;
    for (const auto& space : found) {
        if (space.id == *id) child_found = space.pid == child;
        if (space.id == *ours) ours_found = true;
    }
    EXPECT_TRUE(child_found);
    EXPECT_TRUE(ours_found);
}

// The proc connector subscription reports the exec of a child started after it.
TEST(NetlinkLayer, ProcConnectorReportsAnExec) {
    if (::geteuid() != 0) GTEST_SKIP() << "the proc connector needs CAP_NET_ADMIN";
    auto connector = ProcConnector::open(1u << 20);
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        ::execl("/bin/true", "true", static_cast<char*>(nullptr));
        ::_exit(127);
    }
    bool exec_seen = false, fork_seen = false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!exec_seen && std::chrono::steady_clock::now() < deadline) {
        pollfd ready{connector.fd(), POLLIN, 0};
        if (::poll(&ready, 1, 100) <= 0) continue;
        connector.receive([&](const ProcEvent& event) {
            if (event.tgid != child) return;
            if (event.what == proc_event::PROC_EVENT_FORK) fork_seen = event.parent_tgid == ::getpid();
            if (event.what == proc_event::PROC_EVENT_EXEC) exec_seen = true;
        });
    }
    ::waitpid(child, nullptr, 0);
    EXPECT_TRUE(fork_seen);
    EXPECT_TRUE(exec_seen);
}

TEST(NetlinkLayer, BadNamespaceNamesAreRefused) {
    EXPECT_THROW(open_netns(""), InputError);
    EXPECT_THROW(open_netns(".."), InputError);
    EXPECT_THROW(open_netns("ktricks-does-not-exist"), std::system_error);
}

}  // namespace
}  // namespace ktricks::netlink
