// ktricks sockets and procwatch against the real kernel, in a network namespace of their own.
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <map>
#include <set>

#include "ktricks/core/child.hpp"
#include "process_helpers.hpp"

namespace ktricks::test {
namespace {

using nlohmann::json;

Child spawn(std::vector<std::string> argv) {
    SpawnOptions options;
    options.argv = std::move(argv);
    return Child::spawn(options);
}

const std::string fixture_script = (std::filesystem::path(KTRICKS_TESTS_DIR) / "sockets_fixture.py").string();

std::vector<json> json_lines(const std::string& text) {
    std::vector<json> out;
    for (const auto& line : lines_of(text))
        if (!line.empty()) out.push_back(json::parse(line));
    return out;
}

// A network namespace made with `ip netns add`, deleted on destruction, holding the fixture's
// known sockets in a python process.
class SocketsInNamespace : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (::geteuid() != 0) return;
        name_ = fmt::format("ktricks-it-{}", ::getpid());
        auto added = run({"ip", "netns", "add", name_});
        ASSERT_EQ(added.status, 0) << added.err;
        ASSERT_EQ(run({"ip", "-n", name_, "link", "set", "lo", "up"}).status, 0);
        temp_ = new TempDir();
        fixture_ = new Process(Process::start(
            {"ip", "netns", "exec", name_, "/usr/bin/python3", fixture_script, *temp_ / "unix.sock"},
            piped_stdin()));
        ASSERT_TRUE(eventually([] { return fixture_->out().find('\n') != std::string::npos; }))
            << fixture_->err();
        known_ = json::parse(lines_of(fixture_->out())[0]);
    }
    static void TearDownTestSuite() {
        delete fixture_;
        fixture_ = nullptr;
        if (!name_.empty()) run({"ip", "netns", "del", name_});
        delete temp_;
        temp_ = nullptr;
    }
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
        ASSERT_NE(fixture_, nullptr);
    }

    static Result sockets(std::vector<std::string> args) {
        std::vector<std::string> argv{KTRICKS_BINARY, "sockets", "--netns", name_};
        argv.insert(argv.end(), args.begin(), args.end());
        return run(argv);
    }
    static std::map<std::uint64_t, json> by_inode(const Result& result) {
        std::map<std::uint64_t, json> out;
        for (auto& socket : json_lines(result.out)) out[socket["inode"].get<std::uint64_t>()] = socket;
        return out;
    }
    static std::set<std::uint64_t> inodes(const Result& result) {
        std::set<std::uint64_t> out;
        for (auto& [inode, socket] : by_inode(result)) out.insert(inode);
        return out;
    }
    static std::uint64_t known(const char* key) { return known_[key].get<std::uint64_t>(); }
    static std::string fixture_say(const std::string& command) {
        std::string before = fixture_->out();
        if (::write(fixture_->stdin_fd(), (command + "\n").data(), command.size() + 1) < 0) return {};
        eventually([&] { return fixture_->out().size() > before.size() && fixture_->out().back() == '\n'; });
        return fixture_->out().substr(before.size());
    }

    static inline std::string name_;
    static inline TempDir* temp_ = nullptr;
    static inline Process* fixture_ = nullptr;
    static inline json known_;
};

TEST_F(SocketsInNamespace, ListsKnownSocketsWithStatesAddressesInodesAndOwner) {
    auto result = sockets({"-tuxap", "--json"});
    ASSERT_EQ(result.status, 0) << result.err;
    auto all = by_inode(result);
    int pid = known_["pid"].get<int>();

    auto& listener = all.at(known("listener"));
    EXPECT_EQ(listener["netid"], "tcp");
    EXPECT_EQ(listener["state"], "LISTEN");
    EXPECT_EQ(listener["local"]["address"], "127.0.0.1");
    EXPECT_EQ(listener["local"]["port"], known("port"));
    ASSERT_TRUE(listener.contains("processes"));
    EXPECT_EQ(listener["processes"][0]["pid"], pid);
    EXPECT_EQ(listener["processes"][0]["command"], "python3");

    auto& client = all.at(known("client"));
    EXPECT_EQ(client["state"], "ESTAB");
    EXPECT_EQ(client["local"]["address"], "127.0.0.2");
    EXPECT_EQ(client["local"]["port"], known("client_port"));
    EXPECT_EQ(client["peer"]["address"], "127.0.0.1");
    EXPECT_EQ(client["peer"]["port"], known("port"));
    EXPECT_EQ(client["processes"][0]["pid"], pid);

    auto& server = all.at(known("server"));
    EXPECT_EQ(server["state"], "ESTAB");
    EXPECT_EQ(server["local"]["port"], known("port"));
    EXPECT_EQ(server["peer"]["port"], known("client_port"));

    auto& udp = all.at(known("udp"));
    EXPECT_EQ(udp["netid"], "udp");
    EXPECT_EQ(udp["state"], "UNCONN");
    EXPECT_EQ(udp["local"]["port"], known("udp_port"));

    auto& unix_listener = all.at(known("unix_listener"));
    EXPECT_EQ(unix_listener["netid"], "u_str");
    EXPECT_EQ(unix_listener["state"], "LISTEN");
    EXPECT_EQ(unix_listener["local"]["path"], *temp_ / "unix.sock");
    auto& unix_a = all.at(known("unix_a"));
    EXPECT_EQ(unix_a["state"], "ESTAB");
    EXPECT_EQ(unix_a["peer"]["inode"], known("unix_b"));
}

TEST_F(SocketsInNamespace, DefaultListingShowsConnectedSocketsOnly) {
    auto found = inodes(sockets({"-t", "--json"}));
    EXPECT_TRUE(found.count(known("client")));
    EXPECT_FALSE(found.count(known("listener")));
}

TEST_F(SocketsInNamespace, StateFilterSelectsListeners) {
    auto found = inodes(sockets({"-t", "--json", "state", "listening"}));
    EXPECT_EQ(found, (std::set<std::uint64_t>{known("listener"), known("other")}));
}

TEST_F(SocketsInNamespace, PortFiltersReturnExactlyTheExpectedSets) {
    auto port = std::to_string(known("port"));
    EXPECT_EQ(inodes(sockets({"-ta", "--json", "sport", "=", ":" + port})),
              (std::set<std::uint64_t>{known("listener"), known("server"), known("killed_server"),
                                       known("watched_server")}));
    EXPECT_EQ(inodes(sockets({"-t", "--json", "dport = :" + port})),
              (std::set<std::uint64_t>{known("client"), known("killed"), known("watched")}));
    EXPECT_EQ(
        inodes(sockets({"-ta", "--json",
                        "sport = :" + port + " and not dport = :" + std::to_string(known("client_port"))})),
        (std::set<std::uint64_t>{known("listener"), known("killed_server"), known("watched_server")}));
    EXPECT_EQ(inodes(sockets({"-ta", "--json",
                              "( sport = :" + std::to_string(known("other_port")) + " or src 127.0.0.2 )"})),
              (std::set<std::uint64_t>{known("other"), known("client")}));
}

TEST_F(SocketsInNamespace, AddressFiltersUsePrefixesAndPorts) {
    EXPECT_EQ(inodes(sockets({"-t", "--json", "src", "127.0.0.2/32"})),
              (std::set<std::uint64_t>{known("client")}));
    EXPECT_EQ(inodes(sockets({"-t", "--json", "dst", "127.0.0.3:" + std::to_string(known("killed_port"))})),
              (std::set<std::uint64_t>{known("killed_server")}));
    auto in_eight = inodes(sockets({"-ta", "--json", "dst", "127.0.0.0/8"}));
    EXPECT_TRUE(in_eight.count(known("client")));
    EXPECT_TRUE(in_eight.count(known("server")));
    EXPECT_TRUE(inodes(sockets({"-ta", "--json", "dst", "10.0.0.0/8"})).empty());
    EXPECT_EQ(inodes(sockets({"-u", "-a", "--json", "sport > :" + std::to_string(known("udp_port") - 1)})),
              (std::set<std::uint64_t>{known("udp")}));
}

TEST_F(SocketsInNamespace, BadFilterPointsAtTheOffendingToken) {
    auto result = sockets({"-t", "sport", "=", ":http5"});
    EXPECT_EQ(result.status, 64);
    EXPECT_NE(result.err.find("bad port \"http5\" at character 9"), std::string::npos) << result.err;
    result = sockets({"-t", "sport = :80 frob 1"});
    EXPECT_EQ(result.status, 64);
    EXPECT_NE(result.err.find("unknown keyword \"frob\" at character 13"), std::string::npos) << result.err;
}

// The Process column of -p, both ways, against ss: a listener held twice by a process and by three
// children forked after the dup (ss lists the last found first: highest pid, then highest fd).
TEST_F(SocketsInNamespace, ProcessColumnMatchesSsThroughBpfAndThroughTheProcWalk) {
    auto shared = json::parse(fixture_say("shared"));
    std::string filter = fmt::format("sport = :{}", shared["port"].get<int>());
    auto users = [](const std::string& text) {
        auto at = text.find("users:(");
        return at == std::string::npos ? std::string() : text.substr(at, text.find('\n', at) - at);
    };
    auto theirs = run({"ip", "netns", "exec", name_, "ss", "-tlnp", filter});
    ASSERT_EQ(theirs.status, 0) << theirs.err;
    std::string expected = users(theirs.out);
    // Eight entries: the parent and three children (forked after the dup), two descriptors each.
    ASSERT_EQ(std::count(expected.begin(), expected.end(), '('), 9) << theirs.out;
    auto through_bpf = sockets({"-v", "-tlnp", filter});
    ASSERT_EQ(through_bpf.status, 0) << through_bpf.err;
    EXPECT_EQ(users(through_bpf.out), expected) << through_bpf.out;
    if (::access("/sys/kernel/btf/vmlinux", R_OK) == 0) {
        EXPECT_NE(through_bpf.err.find("-p: BPF task_file iterator"), std::string::npos) << through_bpf.err;
    }
    auto through_proc = sockets({"-v", "--proc-walk", "-tlnp", filter});
    ASSERT_EQ(through_proc.status, 0) << through_proc.err;
    EXPECT_EQ(users(through_proc.out), expected) << through_proc.out;
    EXPECT_NE(through_proc.err.find("-p: /proc walk; BPF not tried (--proc-walk"), std::string::npos)
        << through_proc.err;
    // The environment variable does the same as --proc-walk.
    ProcessOptions options;
    options.env = {"KTRICKS_SOCKETS_PROC_WALK=1"};
    auto from_environment =
        run({KTRICKS_BINARY, "sockets", "--netns", name_, "-v", "-tlnp", filter}, options);
    EXPECT_EQ(users(from_environment.out), expected) << from_environment.out;
    EXPECT_NE(from_environment.err.find("-p: /proc walk"), std::string::npos) << from_environment.err;
}

// Whole -tanp/-xanp tables through BPF and through the walk: the same rows as ss, Process included.
TEST_F(SocketsInNamespace, ProcessTablesMatchSsBothWays) {
    auto rows = [](const std::string& text) {
        std::multiset<std::string> out;
        auto lines = lines_of(text);
        for (std::size_t i = 1; i < lines.size(); ++i) {
            std::istringstream words(lines[i]);
            std::vector<std::string> tokens{std::istream_iterator<std::string>(words), {}};
            if (tokens.size() < 5) continue;
            std::string key = tokens[0];
            for (std::size_t t = 3; t < tokens.size(); ++t) key += " " + tokens[t];  // not the queues
            out.insert(key);
        }
        return out;
    };
    for (const char* flags : {"-tanp", "-xanp", "-tuanp"}) {
        auto theirs = run({"ip", "netns", "exec", name_, "ss", flags});
        ASSERT_EQ(theirs.status, 0) << theirs.err;
        for (const char* way : {"--processes", "--proc-walk"}) {
            auto ours = sockets({flags, way});
            ASSERT_EQ(ours.status, 0) << ours.err;
            EXPECT_EQ(rows(ours.out), rows(theirs.out)) << flags << " " << way << "\nours:\n"
                                                        << ours.out << "ss:\n"
                                                        << theirs.out;
        }
    }
}

TEST_F(SocketsInNamespace, TableMatchesSsInTheSameNamespace) {
    // Rows as token lists minus the queue columns (the only values that may move between calls).
    auto rows = [](const std::string& text) {
        std::multiset<std::string> out;
        auto lines = lines_of(text);
        for (std::size_t i = 1; i < lines.size(); ++i) {
            std::istringstream words(lines[i]);
            std::vector<std::string> tokens{std::istream_iterator<std::string>(words), {}};
            if (tokens.size() < 6) continue;
            std::string key = tokens[0] + " " + tokens[1];
            for (std::size_t t = 4; t < tokens.size(); ++t) key += " " + tokens[t];
            out.insert(key);
        }
        return out;
    };
    auto ours = sockets({"-tuanx"});
    auto theirs = run({"ip", "netns", "exec", name_, "ss", "-tuanx"});
    ASSERT_EQ(ours.status, 0) << ours.err;
    ASSERT_EQ(theirs.status, 0) << theirs.err;
    EXPECT_EQ(rows(ours.out), rows(theirs.out)) << "ours:\n" << ours.out << "ss:\n" << theirs.out;
}

TEST_F(SocketsInNamespace, AllNetnsIncludesTheTestNamespace) {
    auto result = run({KTRICKS_BINARY, "sockets", "--all-netns", "-tl", "--json"});
    ASSERT_EQ(result.status, 0) << result.err;
    bool seen = false;
    for (auto& socket : json_lines(result.out))
        if (socket.value("netns", "") == name_ && socket["inode"] == known("listener")) seen = true;
    EXPECT_TRUE(seen) << result.out;
}

TEST_F(SocketsInNamespace, KillDestroysTheChosenConnectionOnly) {
    auto chosen = "sport = :" + std::to_string(known("killed_port"));
    auto result = sockets({"-K", "-t", "--json", chosen});
    if (result.status == 69) GTEST_SKIP() << "kernel without CONFIG_INET_DIAG_DESTROY: " << result.err;
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_EQ(inodes(result), (std::set<std::uint64_t>{known("killed")}));
    auto after = inodes(sockets({"-t", "--json"}));
    EXPECT_FALSE(after.count(known("killed")));
    EXPECT_TRUE(after.count(known("client")));
    EXPECT_EQ(fixture_say("recv_killed"), "ECONNABORTED\n");
}

TEST_F(SocketsInNamespace, KillGroupsAndAndOrLeftToRightAsSsDoes) {
    // Two new connections to the fixture's listener, from 127.0.0.10 and 127.0.0.11.
    auto first = json::parse(fixture_say("connect 127.0.0.10"));
    auto second = json::parse(fixture_say("connect 127.0.0.11"));
    auto port = std::to_string(known("port"));
    // ss reads this as "(sport = :PORT or src 127.0.0.10) and dport = :PORT": the client from .10
    // only. Binding `and` tighter would also take every server-side connection (sport = :PORT).
    auto result =
        sockets({"-K", "-t", "--json", "sport = :" + port + " or src 127.0.0.10 and dport = :" + port});
    if (result.status == 69) GTEST_SKIP() << "kernel without CONFIG_INET_DIAG_DESTROY: " << result.err;
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_EQ(inodes(result), (std::set<std::uint64_t>{first["inode"].get<std::uint64_t>()}));
    auto after = inodes(sockets({"-t", "--json"}));
    EXPECT_TRUE(after.count(second["inode"].get<std::uint64_t>()));
    EXPECT_TRUE(after.count(second["server"].get<std::uint64_t>()));
    EXPECT_TRUE(after.count(known("server")));
}

TEST_F(SocketsInNamespace, AddressFiltersMatchNoUnixSocket) {
    // ss: an inet condition matches no unix socket, so -x with a port filter lists none.
    auto result = sockets({"-xa", "--json", "sport = :22"});
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_TRUE(json_lines(result.out).empty()) << result.out;
    result = sockets({"-tua", "--json", "src", "127.0.0.1"});
    ASSERT_EQ(result.status, 0) << result.err;
    for (auto& socket : json_lines(result.out)) EXPECT_NE(socket["netid"], "u_str") << socket;
    EXPECT_TRUE(inodes(result).count(known("listener")));
}

TEST_F(SocketsInNamespace, UnixPathPatternsSelectUnixSockets) {
    auto result = sockets({"-xl", "--json", "src", *temp_ / "*.sock"});
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_EQ(inodes(result), (std::set<std::uint64_t>{known("unix_listener")}));
}

TEST_F(SocketsInNamespace, UnixListingHasANetidColumnAndOneStateDropsTheStateColumn) {
    auto unix_listing = sockets({"-xa"});
    ASSERT_EQ(unix_listing.status, 0) << unix_listing.err;
    EXPECT_TRUE(unix_listing.out.starts_with("Netid State")) << unix_listing.out;
    EXPECT_NE(unix_listing.out.find("u_str"), std::string::npos);
    auto established = sockets({"-tn", "state", "established"});
    ASSERT_EQ(established.status, 0) << established.err;
    EXPECT_TRUE(established.out.starts_with("Recv-Q Send-Q")) << established.out;
}

TEST(SocketsCgroup, ShowsTheCgroupAndUnitOfTheSocketsCreatorFiltersByItAndFindsItsUnnamedNamespace) {
    if (::geteuid() != 0) GTEST_SKIP() << "cgroups and network namespaces need root";
    std::string mount;
    for (const auto& line : lines_of(read_file("/proc/self/mountinfo")))
        if (auto dash = line.find(" - cgroup2 "); dash != std::string::npos) {
            std::istringstream fields(line);
            std::string skip;
            fields >> skip >> skip >> skip >> skip >> mount;
        }
    if (mount.empty()) GTEST_SKIP() << "no cgroup2 mount";
    std::string name = fmt::format("ktricks-it-{}.scope", ::getpid());
    std::string directory = mount + "/" + name;
    ASSERT_EQ(::mkdir(directory.c_str(), 0755), 0) << directory;
    {
        // A listener made by a process in that cgroup, in a namespace of its own.
        auto holder = Process::start(
            {"unshare", "-n", "sh", "-c",
             "echo $$ > " + directory +
                 "/cgroup.procs && ip link set lo up && exec /usr/bin/python3 -c '"
                 "import socket, sys\ns = socket.socket(); s.bind((\"127.0.0.1\", 4711)); s.listen()\n"
                 "print(\"ready\", flush=True); sys.stdin.read()'"},
            piped_stdin());
        ASSERT_TRUE(eventually([&] { return holder.out().find("ready") != std::string::npos; }))
            << holder.describe();
        std::string netns = fmt::format("/proc/{}/ns/net", holder.pid());
        auto listing = run({KTRICKS_BINARY, "sockets", "--netns", netns, "-tln", "--cgroup"});
        EXPECT_EQ(listing.status, 0) << listing.err;
        EXPECT_NE(listing.out.find("cgroup:/" + name + " unit:" + name), std::string::npos) << listing.out;
        auto as_json = run({KTRICKS_BINARY, "sockets", "--netns", netns, "-tl", "-c", "--json"});
        auto sockets = json_lines(as_json.out);
        ASSERT_EQ(sockets.size(), 1u) << as_json.out;
        EXPECT_EQ(sockets[0]["cgroup"], "/" + name);
        EXPECT_EQ(sockets[0]["unit"], name);
        auto filtered =
            run({KTRICKS_BINARY, "sockets", "--netns", netns, "-tl", "--json", "cgroup", "/" + name});
        EXPECT_EQ(json_lines(filtered.out).size(), 1u) << filtered.out << filtered.err;
        auto others =
            run({KTRICKS_BINARY, "sockets", "--netns", netns, "-tl", "--json", "cgroup", "!=", "/" + name});
        EXPECT_EQ(json_lines(others.out).size(), 0u) << others.out << others.err;
        // --all-netns finds the namespace though it has no name, and labels it with its process.
        auto all = run({KTRICKS_BINARY, "sockets", "--all-netns", "-tl", "--json", "sport", "=", ":4711"});
        EXPECT_EQ(all.status, 0) << all.err;
        std::string label = fmt::format("pid:{}({})", holder.pid(), name);
        bool seen = false;
        for (auto& socket : json_lines(all.out)) seen |= socket.value("netns", "") == label;
        EXPECT_TRUE(seen) << label << "\n" << all.out;
    }
    // The holder is gone (its group was killed): the empty cgroup can go.
    EXPECT_TRUE(eventually([&] { return ::rmdir(directory.c_str()) == 0 || errno == ENOENT; })) << directory;
}

TEST(SocketsParity, SameRowsAsSsOnAFixtureOfHundredsOfSockets) {
    if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
    // tests/integration/sockets_parity.py makes its own namespace's sockets and compares
    // ktricks sockets with ss on iproute2's ssfilter.t expressions and generated cases.
    TempDir directory;
    auto script = (std::filesystem::path(KTRICKS_TESTS_DIR) / "sockets_parity.py").string();
    auto result =
        run({"unshare", "-n", "/usr/bin/python3", script, KTRICKS_BINARY, "--dir", directory.path().string()},
            {}, std::chrono::seconds(115));  // under ctest's 120 s TIMEOUT
    ASSERT_TRUE(result.status.has_value()) << "timed out\n" << result.out;
    EXPECT_EQ(*result.status, 0) << result.out << result.err;
    EXPECT_NE(result.out.find(" 0 differ"), std::string::npos) << result.out;
}

TEST_F(SocketsInNamespace, WatchReportsAClosedConnection) {
    auto watcher = Process::start({KTRICKS_BINARY, "sockets", "--netns", name_, "--watch", "-t", "--json"});
    // There is no readiness signal: churn short connections until the watcher reports one, so we
    // know it is subscribed, then close the connection under test.
    auto reported = [&](long port) {
        for (auto& event : json_lines(watcher.out()))
            if (event["event"] == "destroy" && event["local"]["port"] == port) return true;
        return false;
    };
    ASSERT_TRUE(eventually([&] { return reported(std::stol(fixture_say("churn"))); }, 10s, 100ms))
        << watcher.err();
    ASSERT_EQ(fixture_say("close_watched"), "closed\n");
    auto watched_port = known("watched_port");
    bool seen = eventually(
        [&] {
            for (auto& event : json_lines(watcher.out()))
                // The file (and its inode number) is gone by the time the socket is destroyed.
                if (event["event"] == "destroy" && event["local"]["port"] == watched_port &&
                    event["local"]["address"] == "127.0.0.4" && event["peer"]["port"] == known("port"))
                    return true;
            return false;
        },
        5s);
    EXPECT_TRUE(seen) << watcher.out() << watcher.err();
}

TEST(SocketsRawParity, RawSocketsPrintExactlyAsSsDoesThroughSockDiagOrProcNetRaw) {
    if (::geteuid() != 0) GTEST_SKIP() << "raw sockets and network namespaces need root";
    // tests/integration/sockets_raw_parity.py holds raw sockets of several protocols in its own
    // namespace and compares `ktricks sockets -w...` with `ss -w...` byte for byte. Without raw_diag
    // (this kernel) both read /proc/net/raw{,6}; -v must say which source ran.
    auto script = (std::filesystem::path(KTRICKS_TESTS_DIR) / "sockets_raw_parity.py").string();
    auto result =
        run({"unshare", "-n", "/usr/bin/python3", script, KTRICKS_BINARY}, {}, std::chrono::seconds(60));
    ASSERT_TRUE(result.status.has_value()) << "timed out\n" << result.out;
    EXPECT_EQ(*result.status, 0) << result.out << result.err;
    EXPECT_NE(result.out.find(" 0 differ"), std::string::npos) << result.out;
    EXPECT_NE(result.out.find("raw sockets: "), std::string::npos) << result.out;
}

// --- procwatch ----------------------------------------------------------------------------------

TEST(Procwatch, SeesForkExecAndExitOfAChildWithPidCommandAndStatus) {
    if (::geteuid() != 0) GTEST_SKIP() << "the proc connector needs CAP_NET_ADMIN";
    auto watcher = Process::start(
        {KTRICKS_BINARY, "procwatch", "--json", "--event", "fork,exec,exit", "--duration", "30"});
    // Wait until it is listening: it reports the exec of probes we start until one shows up.
    ASSERT_TRUE(eventually(
        [&] {
            Child probe = spawn({"/bin/true"});
            probe.wait();
            return watcher.out().find("\"true\"") != std::string::npos;
        },
        10s, 50ms))
        << watcher.err();
    Child child = spawn({"/bin/sh", "-c", "sleep 0.3; exit 7"});
    pid_t pid = child.pid();
    ASSERT_EQ(child.wait()->code, 7);
    std::map<std::string, json> seen;
    ASSERT_TRUE(eventually(
        [&] {
            for (auto& event : json_lines(watcher.out()))
                if (event["pid"] == pid) seen[event["event"].get<std::string>()] = event;
            return seen.count("fork") && seen.count("exec") && seen.count("exit");
        },
        5s))
        << watcher.out();
    EXPECT_EQ(seen["fork"]["ppid"], ::getpid());
    EXPECT_EQ(seen["exec"]["comm"], "sh");
    EXPECT_EQ(seen["exec"]["command"], json({"/bin/sh", "-c", "sleep 0.3; exit 7"}));
    EXPECT_EQ(seen["exit"]["exit_code"], 7);
    EXPECT_EQ(seen["exit"]["command"], json({"/bin/sh", "-c", "sleep 0.3; exit 7"}));  // remembered from exec
}

TEST(Procwatch, ExecRunsACommandPerMatchingEvent) {
    if (::geteuid() != 0) GTEST_SKIP() << "the proc connector needs CAP_NET_ADMIN";
    TempDir temp;
    std::string probe = temp / "ktricks-probe";
    std::filesystem::create_symlink("/bin/sh", probe);  // comm is the name executed: ktricks-probe
    std::string log = temp / "log";
    auto watcher = Process::start(
        {KTRICKS_BINARY, "procwatch", "--event", "exit", "--comm", "ktricks-pro*", "--exec",
         "echo \"$KTRICKS_EVENT $KTRICKS_PID $KTRICKS_EXIT_CODE\" >> " + log, "--duration", "30"});
    // Probes are started until one is reported: the first may exit before the watcher subscribes,
    // and the script for a probe runs after that probe has been waited for, so any of ours counts.
    std::vector<pid_t> probes;
    ASSERT_TRUE(eventually(
        [&] {
            Child child = spawn({probe, "-c", "exit 5"});
            probes.push_back(child.pid());
            child.wait();
            auto text = read_file(log);
            return std::any_of(probes.begin(), probes.end(), [&](pid_t pid) {
                return text.find(fmt::format("exit {} 5\n", pid)) != std::string::npos;
            });
        },
        10s, 100ms))
        << watcher.out() << watcher.err() << read_file(log);
    // Only the probe's exits matched: the sh/echo that --exec started are not reported back.
    for (const auto& line : lines_of(read_file(log))) EXPECT_TRUE(line.ends_with(" 5")) << line;
}

TEST(Procwatch, UnknownEventIsAUsageError) {
    auto result = run({KTRICKS_BINARY, "procwatch", "--event", "exec,bogus"});
    EXPECT_EQ(result.status, 64);
    EXPECT_NE(result.err.find("\"bogus\""), std::string::npos) << result.err;
}

}  // namespace
}  // namespace ktricks::test

namespace ktricks::test {
namespace {

// Where the BPF iterator cannot give ss's answer, -p falls back to the /proc walk and -v says why.
TEST(SocketsOwners, WithoutPrivilegeTheProcWalkRunsAndVerboseSaysWhy) {
    if (::geteuid() != 0) GTEST_SKIP() << "dropping privileges needs root";
    auto result = run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--",
                       KTRICKS_BINARY, "sockets", "-v", "-xp"});
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_NE(result.err.find("-p: /proc walk; BPF socket owners: loading the task_file iterator was refused "
                              "(needs root, or CAP_BPF and CAP_PERFMON)"),
              std::string::npos)
        << result.err;
}

TEST(SocketsOwners, InAChildPidNamespaceTheProcWalkRunsWithThatNamespacesPids) {
    if (::geteuid() != 0) GTEST_SKIP() << "pid namespaces need root";
    if (::access("/sys/kernel/btf/vmlinux", R_OK) != 0) GTEST_SKIP() << "no kernel BTF: BPF never runs here";
    // In the new namespace ktricks is pid 1 (unshare --fork execs it in the child) and holds its
    // own sock_diag socket: the only owner the walk can name there.
    auto result = run({"unshare", "--pid", "--fork", "--mount-proc", "--", KTRICKS_BINARY, "sockets", "-v",
                       "-xap", "--json"});
    ASSERT_EQ(result.status, 0) << result.err;
    EXPECT_NE(result.err.find("-p: /proc walk; BPF socket owners: not in the initial pid namespace"),
              std::string::npos)
        << result.err;
    for (const auto& line : lines_of(result.out)) {
        if (line.empty()) continue;
        auto socket = json::parse(line);
        if (!socket.contains("processes")) continue;
        for (const auto& process : socket["processes"]) {
            EXPECT_EQ(process["pid"], 1) << line;
        }
    }
}

}  // namespace
}  // namespace ktricks::test
