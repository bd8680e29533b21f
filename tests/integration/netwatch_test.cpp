// netwatch against the real kernel: veth pairs in private network namespaces, real rtnetlink.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <atomic>
#include <set>

#include <nlohmann/json.hpp>

#include "netns_helpers.hpp"
#include "process_helpers.hpp"

namespace ktricks::test {
namespace {

// `ktricks netwatch --json ARGS` inside the namespace, started and waited for until it is ready.
Process start_netwatch(const Netns& netns, std::vector<std::string> args) {
    std::vector<std::string> argv = netns.exec_prefix();
    argv.push_back(KTRICKS_BINARY);
    argv.push_back("netwatch");
    argv.push_back("--json");
    argv.insert(argv.end(), args.begin(), args.end());
    Process process = Process::start(argv);
    bool ready = eventually([&] { return process.out().find("\"event\":\"ready\"") != std::string::npos; });
    EXPECT_TRUE(ready) << process.describe();
    return process;
}

std::vector<nlohmann::json> json_lines(const std::string& text) {
    std::vector<nlohmann::json> lines;
    for (const auto& line : lines_of(text)) {
        auto json = nlohmann::json::parse(line, nullptr, false);
        if (json.is_object()) lines.push_back(json);
    }
    return lines;
}

// Lines of a log file the scripts append to ("" if it does not exist yet).
std::vector<std::string> log_lines(const std::string& path) { return lines_of(read_file(path)); }

bool has_line(const std::string& path, const std::string& line) {
    auto lines = log_lines(path);
    return std::find(lines.begin(), lines.end(), line) != lines.end();
}

constexpr const char* log_variables =
    "printf '%s %s %s %s %s %s\\n' \"$KTRICKS_EVENT\" \"$KTRICKS_IFACE\" \"${KTRICKS_ADDR:--}\" "
    "\"${KTRICKS_DST:--}\" \"${KTRICKS_GATEWAY:--}\" \"$KTRICKS_INITIAL\" >> ";

TEST(Netwatch, EachEventTypeFiresItsRuleWithItsVariables) {
    Netns netns;
    TempDir dir;
    std::string log = dir / "log";
    auto watcher =
        start_netwatch(netns, {"--no-initial", "--on", "*,iface=va", "--exec", log_variables + log});
    netns.ip("link add va type veth peer name vb");
    netns.ip("addr add 10.9.0.1/24 dev va");
    netns.ip("link set vb up");
    netns.ip("link set va up");
    netns.ip("route add default via 10.9.0.2 dev va");
    auto expect = [&](const std::string& line) {
        EXPECT_TRUE(eventually([&] { return has_line(log, line); })) << line << "\n"
                                                                     << read_file(log) << watcher.describe();
    };
    expect("link-add va - - - 0");
    expect("addr-add va 10.9.0.1 - - 0");
    expect("link-up va - - - 0");
    expect("route-add va - default 10.9.0.2 0");
    expect("default-route-change va - - 10.9.0.2 0");
    expect("online va - - - 0");
    // Carrier loss: the peer goes down.
    netns.ip("link set vb down");
    expect("link-down va - - - 0");
    expect("offline va - - - 0");
    // Administratively down: the kernel flushes the IPv4 routes without telling anyone.
    netns.ip("link set va down");
    expect("route-remove va - default 10.9.0.2 0");
    expect("route-remove va - 10.9.0.0/24 - 0");
    netns.ip("addr del 10.9.0.1/24 dev va");
    expect("addr-remove va 10.9.0.1 - - 0");
    netns.ip("link del va");
    expect("link-remove va - - - 0");
    auto derived = json_lines(watcher.out());
    bool flagged = std::any_of(derived.begin(), derived.end(), [](const nlohmann::json& line) {
        return line.value("event", "") == "route-remove" && line.value("derived", false);
    });
    EXPECT_TRUE(flagged) << watcher.out();
}

TEST(Netwatch, ScriptGetsTheEventAsJsonOnStdin) {
    Netns netns;
    TempDir dir;
    auto watcher = start_netwatch(netns, {"--no-initial", "--on", "addr-add,family=inet,addr=10.9.0.0/16",
                                          "--exec", "cat > " + dir / "event.json"});
    netns.ip("link add va type veth peer name vb");
    netns.ip("addr add 10.8.0.1/24 dev va");  // outside the CIDR: no run
    netns.ip("addr add 10.9.3.1/24 dev va");
    ASSERT_TRUE(eventually([&] { return !read_file(dir / "event.json").empty(); })) << watcher.describe();
    auto event = nlohmann::json::parse(read_file(dir / "event.json"));
    EXPECT_EQ(event["event"], "addr-add");
    EXPECT_EQ(event["iface"], "va");
    EXPECT_EQ(event["addr"], "10.9.3.1");
    EXPECT_EQ(event["prefixlen"], 24);
    EXPECT_EQ(event["source"], "netwatch");
}

TEST(Netwatch, DebounceCollapsesAFlappingLinkIntoOneSettledEvent) {
    Netns netns;
    TempDir dir;
    std::string log = dir / "log";
    netns.ip("link add va type veth peer name vb");
    netns.ip("link set va up");
    // The kernel's linkwatch batches carrier changes (at most about one run per second), so the
    // flaps are spread over two seconds and the quiet period is longer than linkwatch's delay.
    auto watcher = start_netwatch(netns, {"--no-initial", "--on", "link-up,iface=va,debounce_ms=1500",
                                          "--exec", "echo settled >> " + log, "--on", "link-up,iface=va",
                                          "--exec", "echo raw >> " + dir / "raw"});
    auto flaps =
        run({"ip", "netns", "exec", netns.name(), "sh", "-c",
             "for i in $(seq 20); do ip link set vb down; sleep 0.05; ip link set vb up; sleep 0.05; done"},
            {}, 20s);
    ASSERT_EQ(flaps.status, 0) << flaps.describe;
    ASSERT_TRUE(eventually([&] { return log_lines(log).size() == 1; })) << watcher.describe();
    std::this_thread::sleep_for(800ms);
    EXPECT_EQ(log_lines(log).size(), 1u);
    EXPECT_GE(log_lines(dir / "raw").size(), 2u)
        << "the burst should have produced several raw link-up events";
}

TEST(Netwatch, DebouncedEventThatIsUndoneWithinTheQuietPeriodNeverFires) {
    Netns netns;
    TempDir dir;
    netns.ip("link add va type veth peer name vb");
    netns.ip("link set va up");
    netns.ip("link set vb up");
    auto watcher = start_netwatch(netns, {"--no-initial", "--on", "link-down,iface=va,debounce_ms=500",
                                          "--exec", "echo down >> " + dir / "log"});
    write_file(dir / "flap", "link set vb down\nlink set vb up\n");
    netns.batch(dir / "flap");
    std::this_thread::sleep_for(1200ms);
    EXPECT_TRUE(log_lines(dir / "log").empty()) << read_file(dir / "log");
}

TEST(Netwatch, HangingScriptDoesNotDelayOtherEventsAndIsKilledAtItsTimeout) {
    Netns netns;
    TempDir dir;
    netns.ip("link add va type veth peer name vb");
    auto watcher =
        start_netwatch(netns, {"--no-initial", "--on", "link-add,timeout=2", "--exec", "sleep 100", "--on",
                               "addr-add,iface=va", "--exec", "echo fired >> " + dir / "log"});
    netns.ip("link add vc type veth peer name vd");
    auto start = Clock::now();
    netns.ip("addr add 10.9.0.1/24 dev va");
    ASSERT_TRUE(eventually([&] { return !log_lines(dir / "log").empty(); }, 3s)) << watcher.describe();
    EXPECT_LT(Clock::now() - start, 1500ms);
    EXPECT_TRUE(eventually([&] { return watcher.err().find("timed out") != std::string::npos; }, 8s))
        << watcher.describe();
    EXPECT_NE(watcher.out().find("script-timeout"), std::string::npos);
}

TEST(Netwatch, RunsOfOneRuleOnOneInterfaceStayInEventOrder) {
    Netns netns;
    TempDir dir;
    netns.ip("link add va type veth peer name vb");
    // The first run is the slowest: without per-rule ordering the later ones would overtake it.
    auto watcher = start_netwatch(
        netns, {"--no-initial", "--on", "addr-add,iface=va", "--exec",
                "[ \"$KTRICKS_ADDR\" = 10.9.0.1 ] && sleep 0.5; echo $KTRICKS_ADDR >> " + dir / "log"});
    for (int i = 1; i <= 4; ++i) netns.ip(fmt::format("addr add 10.9.0.{}/24 dev va", i));
    ASSERT_TRUE(eventually([&] { return log_lines(dir / "log").size() == 4; })) << watcher.describe();
    EXPECT_EQ(log_lines(dir / "log"),
              (std::vector<std::string>{"10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4"}));
}

TEST(Netwatch, InitialEventsDescribeTheStateFoundAtStartUp) {
    Netns netns;
    TempDir dir;
    netns.ip("link add va type veth peer name vb");
    netns.ip("addr add 10.9.0.1/24 dev va");
    netns.ip("link set vb up");
    netns.ip("link set va up");
    netns.ip("route add default via 10.9.0.2 dev va");
    ASSERT_TRUE(eventually([&] {
        return run({"ip", "-n", netns.name(), "link", "show", "va"}).out.find("state UP") !=
               std::string::npos;
    }));
    auto watcher = start_netwatch(netns, {"--on", "online", "--exec", log_variables + dir / "log"});
    EXPECT_TRUE(eventually([&] { return has_line(dir / "log", "online va - - - 1"); })) << watcher.describe();

    auto quiet =
        start_netwatch(netns, {"--no-initial", "--on", "online", "--exec", "echo x >> " + dir / "quiet"});
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE(log_lines(dir / "quiet").empty());
    EXPECT_EQ(quiet.out().find("\"initial\":true"), std::string::npos);
}

TEST(Netwatch, OverrunResyncsTheCacheToTheKernelsState) {
    Netns netns;
    TempDir dir;
    netns.ip("link add va type veth peer name vb");
    // A tiny receive buffer, and a watcher stopped (SIGSTOP) while thousands of addresses change:
    // the kernel must drop events, and the watcher must notice when it runs again.
    auto watcher = start_netwatch(
        netns, {"--no-initial", "--receive-buffer", "4096", "--on", "resync", "--exec", "true"});
    std::string batch;
    for (int i = 0; i < 3000; ++i)
        batch += fmt::format("addr add 10.{}.{}.1/32 dev va\n", 100 + i / 250, i % 250);
    for (int i = 0; i < 3000; i += 2)
        batch += fmt::format("addr del 10.{}.{}.1/32 dev va\n", 100 + i / 250, i % 250);
    write_file(dir / "batch", batch);
    watcher.signal(SIGSTOP);
    netns.batch(dir / "batch");
    watcher.signal(SIGCONT);
    ASSERT_TRUE(
        eventually([&] { return watcher.out().find("\"event\":\"resync\"") != std::string::npos; }, 20s))
        << watcher.err();
    // Compare the cache (SIGUSR1) with the kernel once things are quiet.
    std::this_thread::sleep_for(1s);
    auto kernel = run({"ip", "-n", netns.name(), "-o", "-4", "addr", "show", "dev", "va"});
    std::set<std::string> expected;
    for (const auto& line : lines_of(kernel.out)) {
        auto at = line.find("inet ");
        if (at == std::string::npos) continue;
        expected.insert(line.substr(at + 5, line.find(' ', at + 5) - at - 5));
    }
    ASSERT_EQ(expected.size(), 1500u);
    watcher.signal(SIGUSR1);
    ASSERT_TRUE(eventually([&] { return watcher.out().find("\"event\":\"state\"") != std::string::npos; }));
    std::set<std::string> cached;
    for (const auto& line : json_lines(watcher.out())) {
        if (line.value("event", "") != "state") continue;
        for (const auto& entry : lines_of(line.value("state", ""))) {
            if (entry.rfind("addr ", 0) != 0) continue;
            std::string address = entry.substr(entry.find(' ', 5) + 1);
            if (address.find(':') == std::string::npos && address.rfind("127.", 0) != 0)
                cached.insert(address);
        }
    }
    EXPECT_EQ(cached, expected);
}

TEST(Netwatch, DispatcherDirRunsAScriptWrittenForNetworkManager) {
    Netns netns;
    TempDir dir;
    std::string scripts = dir / "dispatcher.d";
    std::filesystem::create_directory(scripts);
    write_file(scripts + "/10-log",
               "#!/bin/sh\n"
               "# A NetworkManager-dispatcher script: $1 interface, $2 action.\n"
               "IFACE=\"$1\"\nACTION=\"$2\"\n"
               "case \"$ACTION\" in\n"
               "  up) echo \"up $IFACE $DEVICE_IFACE $CONNECTION_ID $IP4_NUM_ADDRESSES $IP4_ADDRESS_0\" >> " +
                   dir / "log" +
                   " ;;\n"
                   "  down) echo \"down $IFACE\" >> " +
                   dir / "log" +
                   " ;;\n"
                   "esac\n",
               0755);
    netns.ip("link add va type veth peer name vb");
    netns.ip("addr add 10.9.0.1/24 dev va");
    auto watcher = start_netwatch(netns, {"--no-initial", "--dispatcher-dir", scripts});
    netns.ip("link set vb up");
    netns.ip("link set va up");
    EXPECT_TRUE(eventually([&] { return has_line(dir / "log", "up va va va 1 10.9.0.1/24 0.0.0.0"); }))
        << read_file(dir / "log") << watcher.describe();
    netns.ip("link set va down");
    EXPECT_TRUE(eventually([&] { return has_line(dir / "log", "down va"); })) << read_file(dir / "log");
}

TEST(Netwatch, RecordedStreamReplaysThroughTheRules) {
    Netns netns;
    TempDir dir;
    {
        auto watcher = start_netwatch(netns, {"--record", dir / "rec"});
        netns.ip("link add va type veth peer name vb");
        netns.ip("addr add 10.9.0.7/24 dev va");
        ASSERT_TRUE(eventually([&] { return watcher.out().find("10.9.0.7") != std::string::npos; }));
    }
    auto replay = run({KTRICKS_BINARY, "netwatch", "--replay", dir / "rec", "--on", "addr-add,iface=va",
                       "--exec", "echo $KTRICKS_ADDR >> " + dir / "log"});
    EXPECT_EQ(replay.status, 0) << replay.describe;
    EXPECT_EQ(log_lines(dir / "log"), std::vector<std::string>{"10.9.0.7"});
}

// netwatch --user as a normal user (nobody, uid 65534, via setpriv with no capabilities): the rules
// of ~/.config/ktricks/netwatch.toml run, as that user, on link events of the namespace.
TEST(Netwatch, UserModeRunsTheUsersRulesAsThatUser) {
    Netns netns;
    TempDir dir;
    std::string home = dir / "home";
    std::filesystem::create_directories(home + "/.config/ktricks");
    write_file(home + "/.config/ktricks/netwatch.toml",
               "[[rule]]\non = \"link-add\"\nrun = \"echo $(id -u) $KTRICKS_IFACE >> " + home + "/log\"\n");
    auto chown = run({"chown", "-R", "65534:65534", home});
    ASSERT_EQ(chown.status, 0) << chown.describe;
    std::vector<std::string> argv = netns.exec_prefix();
    argv.insert(argv.end(), {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                             "--bounding-set=-all", "env", "-u", "XDG_CONFIG_HOME", "HOME=" + home,
                             KTRICKS_BINARY, "netwatch", "--json", "--no-initial", "--user"});
    auto watcher = Process::start(argv);
    ASSERT_TRUE(eventually([&] { return watcher.out().find("\"event\":\"ready\"") != std::string::npos; }))
        << watcher.describe();
    netns.ip("link add ua type veth peer name ub");
    EXPECT_TRUE(eventually([&] { return has_line(home + "/log", "65534 ua"); }))
        << read_file(home + "/log") << watcher.describe();
    // Without the file: one line naming it, exit 66 (no input).
    auto missing = run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "-u",
                        "XDG_CONFIG_HOME", "HOME=" + dir / "nohome", KTRICKS_BINARY, "netwatch", "--user"});
    EXPECT_EQ(missing.status, 66) << missing.describe;
    EXPECT_NE(missing.err.find(dir / "nohome/.config/ktricks/netwatch.toml"), std::string::npos)
        << missing.err;
}

TEST(Netwatch, BadRulesFileIsOneLineNamingFileAndLine) {
    TempDir dir;
    write_file(dir / "rules.toml",
               "[[rule]]\non = \"link-up\"\nrun = \"true\"\n\n[[rule]]\non = \"link-upp\"\nrun = \"x\"\n");
    auto result = run({KTRICKS_BINARY, "netwatch", "--rules", dir / "rules.toml"});
    EXPECT_EQ(result.status, 65) << result.describe;
    EXPECT_EQ(lines_of(result.err).size(), 1u) << result.err;
    EXPECT_NE(result.err.find(dir / "rules.toml:6: unknown event \"link-upp\""), std::string::npos)
        << result.err;
}

}  // namespace
}  // namespace ktricks::test

namespace ktricks::test {
namespace {

TEST(Netwatch, AllNetnsTagsEventsWithTheNamespaceAndCanRunScriptsInside) {
    Netns home;
    Netns other;
    TempDir dir;
    write_file(
        dir / "rules.toml",
        "[[rule]]\non = \"link-add\"\nnetns = \"" + other.name() +
            "\"\nin_netns = true\n"
            "run = \"echo $KTRICKS_NETNS $KTRICKS_IFACE $(ip -o link show $KTRICKS_IFACE | wc -l) >> " +
            dir / "log" + "\"\n");
    auto watcher = start_netwatch(home, {"--no-initial", "--all-netns", "--rules", dir / "rules.toml"});
    home.ip("link add ha type veth peer name hb");  // our own namespace: the netns filter rejects it
    other.ip("link add oa type veth peer name ob");
    EXPECT_TRUE(eventually([&] { return has_line(dir / "log", other.name() + " oa 1"); }))
        << read_file(dir / "log") << watcher.describe();
    std::this_thread::sleep_for(200ms);
    for (const auto& line : log_lines(dir / "log")) EXPECT_EQ(line.find("ha"), std::string::npos) << line;
    bool tagged = false;
    for (const auto& line : json_lines(watcher.out()))
        if (line.value("iface", "") == "ha" && line.value("netns", "") == home.name()) tagged = true;
    EXPECT_TRUE(tagged) << "our own namespace is tagged with its /run/netns name";
}

// --all-netns follows /run/netns: a namespace named after start-up is watched (its events come,
// its rules run), and one deleted is dropped with one log line, no errors, the rest unaffected.
TEST(Netwatch, AllNetnsFollowsNamespacesCreatedAndDeletedWhileRunning) {
    Netns home;
    TempDir dir;
    auto watcher = start_netwatch(home, {"--no-initial", "--all-netns", "--on", "link-add", "--exec",
                                         "echo $KTRICKS_NETNS $KTRICKS_IFACE >> " + dir / "log"});
    // First an event of our own namespace: netwatch has read /run/netns and watches it, so the
    // namespace below is one that appears later, not one found at start-up.
    home.ip("link add ia type veth peer name ib");
    ASSERT_TRUE(eventually([&] { return has_line(dir / "log", home.name() + " ia"); }))
        << read_file(dir / "log") << watcher.describe();
    std::string name;
    {
        Netns later;
        name = later.name();
        // Found by its name in /run/netns, or first by the exec of a process in it (the proc
        // connector can be quicker than inotify) and then named: either way one line names it. Until
        // then its events may carry that pid:N label, so the link is added only after.
        EXPECT_TRUE(eventually([&] {
            auto err = watcher.err();
            return err.find("watching new network namespace " + name) != std::string::npos ||
                   err.find(") is now named " + name) != std::string::npos;
        })) << watcher.err();
        later.ip("link add la type veth peer name lb");
        EXPECT_TRUE(eventually([&] { return has_line(dir / "log", name + " la"); }))
            << read_file(dir / "log") << watcher.describe();
    }  // ip netns del
    EXPECT_TRUE(eventually([&] {
        return watcher.err().find("network namespace " + name + " was deleted") != std::string::npos;
    })) << watcher.describe();
    home.ip("link add ha type veth peer name hb");
    EXPECT_TRUE(eventually([&] { return has_line(dir / "log", home.name() + " ha"); }))
        << read_file(dir / "log") << watcher.describe();
    std::this_thread::sleep_for(300ms);
    EXPECT_TRUE(watcher.running());
    // One line when it came, one when it went: no retries, no error storm.
    std::size_t mentions = 0;
    for (const auto& line : lines_of(watcher.err()))
        if (line.find(name) != std::string::npos) ++mentions;
    EXPECT_EQ(mentions, 2u) << watcher.err();
}

// The nsfs inode of a process's network namespace (0 if it cannot be read).
std::uint64_t netns_inode_of(pid_t pid) {
    struct stat status {};
    if (::stat(fmt::format("/proc/{}/ns/net", pid).c_str(), &status) != 0) return 0;
    return status.st_ino;
}

// The open fds of a process, as their /proc/PID/fd link targets ("socket:[123]", "net:[4026...]").
std::vector<std::string> fd_targets(pid_t pid) {
    std::vector<std::string> targets;
    std::error_code error;
    for (auto it = std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", pid), error);
         !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
        std::error_code ignored;
        targets.push_back(std::filesystem::read_symlink(it->path(), ignored).string());
    }
    return targets;
}

bool holds(pid_t pid, const std::string& target) {
    auto targets = fd_targets(pid);
    return std::find(targets.begin(), targets.end(), target) != targets.end();
}

// A string field of a JSON line, "" if absent or not a string (the ready line's netns is a list).
std::string text_of(const nlohmann::json& line, const std::string& key) {
    auto it = line.find(key);
    return it != line.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool has_event(const Process& watcher, const std::string& type, const std::string& netns,
               const std::string& key, const std::string& value) {
    for (const auto& line : json_lines(watcher.out()))
        if (text_of(line, "event") == type && text_of(line, "netns") == netns && text_of(line, key) == value)
            return true;
    return false;
}

// `unshare -n` (no name in /run/netns) after start-up: found through its exec, its events carry
// netns=pid:N and its inode, a rule with in_netns runs inside it, and once its processes are gone it
// is dropped with one line and netwatch holds nothing of it any more.
TEST(Netwatch, AllNetnsFollowsAnUnnamedNamespaceFromItsFirstExecToItsLastProcess) {
    Netns home;
    TempDir dir;
    // The addr filter keeps other namespaces' events (other tests on this machine) out of the log.
    write_file(dir / "rules.toml",
               "[[rule]]\non = \"addr-add\"\nnetns = \"pid:*\"\naddr = \"10.77.0.0/16\"\nin_netns = true\n"
               "run = \"echo $KTRICKS_NETNS $KTRICKS_NETNS_INODE $(readlink /proc/self/ns/net) >> " +
                   dir / "log" + "\"\n");
    auto watcher =
        start_netwatch(home, {"--no-initial", "--no-wifi", "--all-netns", "--rules", dir / "rules.toml"});
    pid_t netwatch = watcher.pid();
    ASSERT_EQ(read_file(fmt::format("/proc/{}/comm", netwatch)), "ktricks\n");
    std::size_t fds_before = fd_targets(netwatch).size();
    auto inner = Process::start({"unshare", "-n", "sh", "-c",
                                 "ip link set lo up && ip addr add 10.77.0.1/16 dev lo && "
                                 "while [ ! -e " +
                                     dir / "stop" + " ]; do sleep 0.05; done"});
    pid_t pid = inner.pid();
    std::string label = fmt::format("pid:{}", pid);
    std::uint64_t inode = 0;
    ASSERT_TRUE(eventually([&] {
        inode = netns_inode_of(pid);
        return inode != 0 && inode != netns_inode_of(::getpid());
    }));
    EXPECT_TRUE(eventually([&] { return has_event(watcher, "addr-add", label, "addr", "10.77.0.1"); }))
        << watcher.describe();
    bool identified = false;
    for (const auto& line : json_lines(watcher.out()))
        if (text_of(line, "netns") == label)
            identified = line.value("netns_inode", std::uint64_t{0}) == inode;
    EXPECT_TRUE(identified) << "events of " << label << " carry netns_inode " << inode << "\n"
                            << watcher.out();
    std::string expected = fmt::format("{} {} net:[{}]", label, inode, inode);
    EXPECT_TRUE(eventually([&] { return has_line(dir / "log", expected); }))
        << "the rule runs inside the namespace: " << read_file(dir / "log") << watcher.describe();
    EXPECT_TRUE(holds(netwatch, fmt::format("net:[{}]", inode)));
    EXPECT_NE(watcher.err().find(fmt::format("watching new network namespace {} (inode {})", label, inode)),
              std::string::npos)
        << watcher.err();

    write_file(dir / "stop", "");
    ASSERT_EQ(inner.wait(10s), 0) << inner.describe();
    std::string dropped =
        fmt::format("network namespace {} (inode {}) has no process left; no longer watched", label, inode);
    EXPECT_TRUE(eventually([&] { return watcher.err().find(dropped) != std::string::npos; }))
        << watcher.describe();
    EXPECT_FALSE(holds(netwatch, fmt::format("net:[{}]", inode)));
    // Every fd it took for the namespace (its fd, the pidfd, the rtnetlink socket) is closed. Other
    // namespaces on this machine may come and go meanwhile, so this waits for the count to settle.
    EXPECT_TRUE(eventually([&] { return fd_targets(netwatch).size() == fds_before; }, 10s))
        << fds_before << " fds before, now: " << fmt::format("{}", fmt::join(fd_targets(netwatch), " "));
    EXPECT_TRUE(watcher.running()) << watcher.describe();
    std::size_t mentions = 0;
    for (const auto& line : lines_of(watcher.err()))
        if (line.find(label + " ") != std::string::npos) ++mentions;
    EXPECT_EQ(mentions, 2u) << "one line when it came, one when it went: " << watcher.err();
}

// A container-like namespace: a process unshares its network namespace and execs nothing after
// (no exec or fork event shows it), then the host moves a veth end into it. The nsid the host's
// namespace gets for it reveals it; events inside it follow. When its process exits, netwatch lets
// go: the kernel frees the namespace, which takes the host's veth end with it.
TEST(Netwatch, AllNetnsFindsANamespaceThatAVethIsMovedIntoAndLetsItDie) {
    Netns home;
    TempDir dir;
    auto watcher = start_netwatch(home, {"--no-initial", "--no-wifi", "--all-netns"});
    // unshare(CLONE_NEWNET) is syscall 272 on x86-64; perl is in every Debian (perl-base).
    auto inner = Process::start(
        {"perl", "-e",
         "syscall(272, 0x40000000) == 0 or die \"unshare: $!\\n\"; open(my $f, '>', '" + dir / "ready" +
             "') or die; close $f; select(undef, undef, undef, 0.05) until -e '" + dir / "stop" + "';"});
    pid_t pid = inner.pid();
    ASSERT_TRUE(eventually([&] { return std::filesystem::exists(dir / "ready"); })) << inner.describe();
    std::uint64_t inode = netns_inode_of(pid);
    std::string label = fmt::format("pid:{}", pid);
    home.ip("link add c0 type veth peer name c1");
    home.ip(fmt::format("link set c1 netns {}", pid));
    auto in_container = [&](const std::string& args) {
        std::vector<std::string> argv = {"nsenter", "-t", std::to_string(pid), "-n", "ip"};
        std::istringstream words(args);
        for (std::string word; words >> word;) argv.push_back(word);
        auto result = run(argv);
        EXPECT_EQ(result.status, 0) << result.describe;
    };
    EXPECT_TRUE(eventually([&] { return has_event(watcher, "link-add", label, "iface", "c1"); }))
        << watcher.describe();
    in_container("addr add 10.78.0.2/24 dev c1");
    EXPECT_TRUE(eventually([&] { return has_event(watcher, "addr-add", label, "addr", "10.78.0.2"); }))
        << watcher.describe();
    EXPECT_NE(watcher.err().find(fmt::format("watching new network namespace {} (inode {})", label, inode)),
              std::string::npos)
        << watcher.err();

    write_file(dir / "stop", "");
    ASSERT_EQ(inner.wait(10s), 0) << inner.describe();
    EXPECT_TRUE(eventually([&] {
        return watcher.err().find(fmt::format("network namespace {} (inode {}) has no process left", label,
                                              inode)) != std::string::npos;
    })) << watcher.describe();
    // Nothing of netwatch pins it: the namespace is freed and its veth pair goes with it.
    EXPECT_TRUE(
        eventually([&] { return has_event(watcher, "link-remove", home.name(), "iface", "c0"); }, 20s))
        << watcher.describe();
    EXPECT_TRUE(watcher.running()) << watcher.describe();
}

// 40 namespaces that live for one `true`: each is gone before, while or after netwatch looks. Every
// one ends in one of three ways — never seen (its exec was read after it died), one line (it vanished
// between being seen and being entered), or a pair of lines (watched, then dropped) — and netwatch
// ends with the fds it started with.
TEST(Netwatch, AllNetnsSurvivesNamespacesThatVanishWhileBeingFound) {
    Netns home;
    auto watcher = start_netwatch(home, {"--no-initial", "--no-wifi", "--all-netns"});
    pid_t netwatch = watcher.pid();
    std::size_t fds_before = fd_targets(netwatch).size();
    std::vector<pid_t> pids;
    for (int i = 0; i < 40; ++i) {
        auto brief = Process::start({"unshare", "-n", "true"});
        pids.push_back(brief.pid());
        ASSERT_EQ(brief.wait(10s), 0) << brief.describe();
    }
    auto settled = [&] {
        for (pid_t pid : pids) {
            std::string label = fmt::format("pid:{} ", pid);
            std::size_t watching = 0, dropped = 0;
            for (const auto& line : lines_of(watcher.err())) {
                if (line.find(label) == std::string::npos) continue;
                if (line.find("watching new network namespace") != std::string::npos) ++watching;
                if (line.find("has no process left") != std::string::npos) ++dropped;
            }
            if (watching != dropped) return false;
        }
        return true;
    };
    EXPECT_TRUE(eventually(settled, 10s)) << watcher.describe();
    for (pid_t pid : pids) {
        std::size_t mentions = 0;
        for (const auto& line : lines_of(watcher.err()))
            if (line.find(fmt::format("pid:{} ", pid)) != std::string::npos) ++mentions;
        EXPECT_LE(mentions, 2u) << pid << "\n" << watcher.err();
    }
    EXPECT_EQ(watcher.err().find("error"), std::string::npos) << watcher.err();
    EXPECT_TRUE(eventually([&] { return fd_targets(netwatch).size() == fds_before; }, 10s))
        << fds_before << " fds before, now: " << fmt::format("{}", fmt::join(fd_targets(netwatch), " "));
    EXPECT_TRUE(watcher.running()) << watcher.describe();
}

// As a normal user: one line says what --all-netns cannot see, and netwatch still watches its own.
TEST(Netwatch, AllNetnsAsANormalUserSaysWhatItCannotSee) {
    Netns home;
    Netns other;  // named, but a normal user may not enter it
    std::vector<std::string> argv = home.exec_prefix();
    argv.insert(argv.end(), {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                             "--bounding-set=-all", KTRICKS_BINARY, "netwatch", "--json", "--no-initial",
                             "--no-wifi", "--all-netns"});
    auto watcher = Process::start(argv);
    ASSERT_TRUE(eventually([&] { return watcher.out().find("\"event\":\"ready\"") != std::string::npos; }))
        << watcher.describe();
    EXPECT_NE(watcher.err().find("--all-netns as a normal user"), std::string::npos) << watcher.err();
    home.ip("link add na type veth peer name nb");
    EXPECT_TRUE(eventually([&] { return has_event(watcher, "link-add", home.name(), "iface", "na"); }))
        << watcher.describe();
    EXPECT_TRUE(watcher.running()) << watcher.describe();
}

}  // namespace
}  // namespace ktricks::test

namespace ktricks::test {
namespace {

// Dispatcher scripts as NetworkManager runs them: leftovers and empty files skipped, an /etc-style
// folder masking a /usr/lib-style one, and an environment of PATH and NetworkManager's variables only.
TEST(Netwatch, DispatcherSkipsLeftoversAndPassesOnlyNetworkManagersEnvironment) {
    Netns netns;
    TempDir dir;
    std::string lib = dir / "lib", etc = dir / "etc";
    std::filesystem::create_directory(lib);
    std::filesystem::create_directory(etc);
    // Only va's `up`: its peer vb comes up too, without addresses (and must not overwrite the dump).
    std::string dump = "#!/bin/sh\n[ \"$1 $2\" = \"va up\" ] && env | sort > " + dir / "env" + "\n";
    write_file(lib + "/10-env", "#!/bin/sh\necho masked >> " + dir / "masked" + "\n", 0755);
    write_file(etc + "/10-env", dump, 0755);
    for (const char* leftover :
         {"10-env~", "10-env.dpkg-old", "10-env.dpkg-dist", "10-env.rpmnew", ".10-env.swp"})
        write_file(lib + "/" + leftover, "#!/bin/sh\necho $0 >> " + dir / "leftovers" + "\n", 0755);
    write_file(lib + "/20-empty", "", 0755);
    netns.ip("link add va type veth peer name vb");
    netns.ip("addr add 10.9.0.1/24 dev va");
    auto watcher = start_netwatch(netns, {"--no-initial", "--dispatcher-dir", lib, "--dispatcher-dir", etc});
    netns.ip("link set vb up");
    netns.ip("link set va up");
    ASSERT_TRUE(eventually([&] { return !read_file(dir / "env").empty(); })) << watcher.describe();
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(read_file(dir / "leftovers"), "");
    EXPECT_EQ(read_file(dir / "masked"), "");
    EXPECT_EQ(watcher.err().find("20-empty"), std::string::npos) << watcher.err();  // skipped silently
    std::set<std::string> keys;
    for (const auto& line : lines_of(read_file(dir / "env"))) keys.insert(line.substr(0, line.find('=')));
    keys.erase("PWD"), keys.erase("SHLVL"), keys.erase("_");  // the shell's own
    std::set<std::string> expected = {"PATH",
                                      "NM_DISPATCHER_ACTION",
                                      "CONNECTION_UUID",
                                      "CONNECTION_ID",
                                      "CONNECTION_FILENAME",
                                      "CONNECTION_EXTERNAL",
                                      "DEVICE_IFACE",
                                      "DEVICE_IP_IFACE",
                                      "IP4_ADDRESS_0",
                                      "IP4_NUM_ADDRESSES",
                                      "IP4_GATEWAY",
                                      "IP4_ROUTE_0",
                                      "IP4_NUM_ROUTES",
                                      "IP6_GATEWAY"};
    // IPv6 link-local addresses (DAD may or may not be done by now) are reported as NetworkManager does.
    for (auto it = keys.begin(); it != keys.end();)
        it = it->rfind("IP6_ADDRESS_", 0) == 0 || *it == "IP6_NUM_ADDRESSES" ||
                     it->rfind("IP6_ROUTE_", 0) == 0 || *it == "IP6_NUM_ROUTES"
                 ? keys.erase(it)
                 : std::next(it);
    EXPECT_EQ(keys, expected) << read_file(dir / "env");
    EXPECT_NE(read_file(dir / "env").find("IP4_GATEWAY=0.0.0.0\n"), std::string::npos);
    EXPECT_NE(read_file(dir / "env").find("CONNECTION_EXTERNAL=1\n"), std::string::npos);
}

// A DHCP exchange between two namespaces the test made: busybox udhcpd on `server`'s vb offers
// 10.9.0.10-20 with NTP servers 10.9.0.2 and 10.9.0.4; the client's va is its peer.
Process start_dhcp_server(const Netns& client, const Netns& server, const TempDir& dir) {
    client.ip("link add va type veth peer name vb netns " + server.name());
    server.ip("addr add 10.9.0.1/24 dev vb");
    server.ip("link set vb up");
    write_file(dir / "udhcpd.conf", "start 10.9.0.10\nend 10.9.0.20\ninterface vb\nlease_file " +
                                        dir / "udhcpd.leases" + "\npidfile " + dir / "udhcpd.pid" +
                                        "\nopt subnet 255.255.255.0\nopt router 10.9.0.1\n"
                                        "opt ntpsrv 10.9.0.2 10.9.0.4\nopt lease 600\n");
    write_file(dir / "udhcpd.leases", "");
    return Process::start(
        {"ip", "netns", "exec", server.name(), "busybox", "udhcpd", "-f", dir / "udhcpd.conf"});
}

// Shell text for a private mount namespace whose /var/lib/dhcp is a scratch tmpfs: starts ISC
// dhclient on va in the background once DIR/go exists. dhclient's own script would rewrite
// /etc/resolv.conf and run the host's exit hooks; this one only configures the address, as every
// DHCP client does.
std::string start_dhclient_on_go(const TempDir& dir) {
    write_file(dir / "dhclient-script",
               "#!/bin/sh\ncase \"$reason\" in BOUND|RENEW|REBIND|REBOOT)\n"
               "  ip addr add \"$new_ip_address/$new_subnet_mask\" dev \"$interface\";;\nesac\n",
               0755);
    return "(while [ ! -e " + dir / "go" + " ]; do sleep 0.05; done; exec dhclient -d -1 -sf " +
           dir / "dhclient-script" + " -pf " + dir / "dhclient.pid" +
           " -lf /var/lib/dhcp/dhclient.leases va > " + dir / "dhclient.log" + " 2>&1) & ";
}

// A file as process `pid` sees it in its mount namespace, or "(cat's error)". The tests start
// netwatch as `ip netns exec NS unshare -m sh -c '...; exec ktricks ...'`: all of them exec, so
// the process started is netwatch itself, inside the private mount namespace.
std::string read_in_mount_namespace(pid_t pid, const std::string& path) {
    auto result = run({"nsenter", "-t", std::to_string(pid), "-m", "cat", path});
    return result.status == 0 ? result.out : "(" + result.err + ")";
}

// Debian's chrony ships 20-chrony-dhcp and 20-chrony-onoffline in /usr/lib/NetworkManager/dispatcher.d.
// A real DHCP exchange (busybox udhcpd offering NTP servers, ISC dhclient taking the lease) in
// private namespaces; netwatch --nm-dirs runs chrony's scripts, which write the servers of the
// lease (DHCP4_NTP_SERVERS) into /run/chrony-dhcp/IFACE.sources as they do under NetworkManager.
// netwatch, dhclient and the scripts share a private mount namespace whose /run/chrony-dhcp,
// /run/chrony, /run/systemd, /var/lib/dhcp and /etc/resolv.conf are scratch copies, so the host
// is untouched (chronyc, an absolute path in chrony's scripts, finds no chronyd socket).
TEST(Netwatch, ChronysDispatcherScriptsTakeTheNtpServersOfARealDhcpLease) {
    for (const char* needed : {"/usr/lib/NetworkManager/dispatcher.d/20-chrony-dhcp",
                               "/usr/lib/NetworkManager/dispatcher.d/20-chrony-onoffline", "/sbin/dhclient"})
        if (!std::filesystem::exists(needed))
            GTEST_SKIP() << needed << " is missing: run scripts/install-deps.sh (chrony, isc-dhcp-client)";
    Netns client;
    Netns server;
    TempDir dir;
    auto dhcp_server = start_dhcp_server(client, server, dir);
    write_file(dir / "resolv.conf", "nameserver 10.9.0.1\n");
    std::string setup =
        "set -e; mkdir -p /run/chrony-dhcp /run/chrony /var/lib/dhcp; "
        "for d in /run/chrony-dhcp /run/chrony /run/systemd /var/lib/dhcp; do "
        "mount -t tmpfs scratch $d; done; mount --bind " +
        dir / "resolv.conf" + " /etc/resolv.conf; " + start_dhclient_on_go(dir) +
        "exec " KTRICKS_BINARY " netwatch --json --no-initial --nm-dirs";
    auto watcher = Process::start({"ip", "netns", "exec", client.name(), "unshare", "-m", "sh", "-c", setup});
    ASSERT_TRUE(eventually([&] { return watcher.out().find("\"event\":\"ready\"") != std::string::npos; }))
        << watcher.describe();
    client.ip("link set va up");
    write_file(dir / "go", "");
    auto ran = [&](const std::string& script, const std::string& action) {
        return watcher.out().find("dispatcher /usr/lib/NetworkManager/dispatcher.d/" + script + " (" +
                                  action + " va)") != std::string::npos;
    };
    // up (before any lease), then the address (dhcp4-change), then the lease file: `up` again with
    // the lease, as NetworkManager's `up` has it.
    ASSERT_TRUE(eventually(
        [&] { return ran("20-chrony-onoffline", "up") && ran("20-chrony-dhcp", "dhcp4-change"); }, 20s))
        << watcher.describe() << read_file(dir / "dhclient.log");
    auto sources = [&] { return read_in_mount_namespace(watcher.pid(), "/run/chrony-dhcp/va.sources"); };
    const std::string expected = "server 10.9.0.2 iburst\nserver 10.9.0.4 iburst\n";
    ASSERT_TRUE(eventually([&] { return sources() == expected; }, 15s))
        << sources() << watcher.describe() << read_file(dir / "dhclient.log");
    // Down: chrony's script removes the file of the interface again.
    client.ip("link set va down");
    EXPECT_TRUE(eventually([&] { return ran("20-chrony-dhcp", "down"); })) << watcher.describe();
    EXPECT_TRUE(eventually([&] { return sources().find("No such file") != std::string::npos; }, 10s))
        << sources();
    for (const auto& line : json_lines(watcher.out()))
        if (line.value("event", "") == "script-failed") ADD_FAILURE() << line.dump();
}

// Debian's ntpsec ships /etc/NetworkManager/dispatcher.d/ntpsec, which on `up` (only when
// DHCP4_REQUESTED_NTP_SERVERS=1) and `down` sources its dhclient hook: that writes the lease's NTP
// servers into /run/ntpsec/ntp.conf.dhcp (a copy of /etc/ntpsec/ntp.conf with the servers
// replaced) and runs `invoke-rc.d ntpsec try-restart`; `down` removes the file and restarts again.
// ntpsec conflicts with chrony, so install-deps.sh unpacks its package into a folder; the test
// lays its files into a private overlay of /etc, with a scratch /run and /var/lib/dhcp. The only
// command replaced is invoke-rc.d, through PATH, by one that logs its arguments.
TEST(Netwatch, NtpsecsDispatcherScriptWritesTheNtpServersOfARealDhcpLease) {
    const std::string ntpsec = "/var/lib/ktricks-test/debian/ntpsec";
    for (std::string needed : {ntpsec + "/etc/NetworkManager/dispatcher.d/ntpsec",
                               ntpsec + "/etc/dhcp/dhclient-exit-hooks.d/ntpsec",
                               ntpsec + "/etc/ntpsec/ntp.conf", std::string("/sbin/dhclient")})
        if (!std::filesystem::exists(needed))
            GTEST_SKIP() << needed
                         << " is missing: run scripts/install-deps.sh (unpacks ntpsec, isc-dhcp-client)";
    Netns client;
    Netns server;
    TempDir dir;
    auto dhcp_server = start_dhcp_server(client, server, dir);
    for (const char* folder : {"bin", "upper", "work"}) std::filesystem::create_directory(dir / folder);
    write_file(dir / "bin/invoke-rc.d", "#!/bin/sh\necho \"$*\" >> " + dir / "invoke.log" + "\n", 0755);
    std::string setup =
        "set -e; for d in /run /var/lib/dhcp; do mount -t tmpfs scratch $d; done; "
        "mount -t overlay ktricks -o lowerdir=/etc,upperdir=" +
        dir / "upper" + ",workdir=" + dir / "work" +
        " /etc; "
        "mkdir -p /etc/NetworkManager/dispatcher.d /etc/dhcp/dhclient-exit-hooks.d /etc/ntpsec; "
        "cp -p " +
        ntpsec + "/etc/NetworkManager/dispatcher.d/ntpsec /etc/NetworkManager/dispatcher.d/; cp -p " +
        ntpsec + "/etc/dhcp/dhclient-exit-hooks.d/ntpsec /etc/dhcp/dhclient-exit-hooks.d/; cp -p " + ntpsec +
        "/etc/ntpsec/ntp.conf /etc/ntpsec/; echo 'nameserver 10.9.0.1' > /etc/resolv.conf; " +
        start_dhclient_on_go(dir) + "PATH=" + dir / "bin" +
        ":$PATH exec " KTRICKS_BINARY
        " netwatch --json --no-initial --dispatcher-dir /etc/NetworkManager/dispatcher.d";
    auto watcher = Process::start({"ip", "netns", "exec", client.name(), "unshare", "-m", "sh", "-c", setup});
    ASSERT_TRUE(eventually([&] { return watcher.out().find("\"event\":\"ready\"") != std::string::npos; }))
        << watcher.describe();
    client.ip("link set va up");
    write_file(dir / "go", "");
    auto conf = [&] { return read_in_mount_namespace(watcher.pid(), "/run/ntpsec/ntp.conf.dhcp"); };
    // The first `up` comes before the lease (the script does nothing); the lease brings `up` again.
    ASSERT_TRUE(eventually(
        [&] {
            std::string text = conf();
            return text.find("server 10.9.0.2 iburst\nserver 10.9.0.4 iburst\n") != std::string::npos;
        },
        20s))
        << conf() << watcher.describe() << read_file(dir / "dhclient.log");
    std::string text = conf();
    EXPECT_EQ(text.find("\npool "), std::string::npos) << "ntp.conf's own pool lines are dropped:\n" << text;
    EXPECT_NE(text.find("driftfile"), std::string::npos) << "the rest of ntp.conf is kept:\n" << text;
    EXPECT_TRUE(eventually([&] { return has_line(dir / "invoke.log", "ntpsec try-restart"); }))
        << read_file(dir / "invoke.log");
    // Down: RELEASE, the file goes and ntpsec is restarted once more.
    client.ip("link set va down");
    EXPECT_TRUE(eventually([&] { return conf().find("No such file") != std::string::npos; }, 10s)) << conf();
    EXPECT_TRUE(eventually([&] { return log_lines(dir / "invoke.log").size() == 2; }))
        << read_file(dir / "invoke.log");
    for (const auto& line : json_lines(watcher.out()))
        if (line.value("event", "") == "script-failed") ADD_FAILURE() << line.dump();
}

// network-manager's own /etc/NetworkManager/dispatcher.d/01-ifupdown runs the ifupdown hooks
// (/etc/network/if-up.d on up, if-post-down.d on down) with ifupdown's variables, one run per
// address family it finds in IP4_/IP6_NUM_ADDRESSES. Unpacked by install-deps.sh (installing
// network-manager would bring the daemon); run from there, with the two hook folders replaced by
// scratch tmpfs mounts holding one logging hook, in a private mount namespace.
TEST(Netwatch, NetworkManagersIfupdownScriptRunsTheIfupdownHooks) {
    const std::string scripts =
        "/var/lib/ktricks-test/debian/network-manager/etc/NetworkManager/dispatcher.d";
    if (!std::filesystem::exists(scripts + "/01-ifupdown"))
        GTEST_SKIP() << scripts
                     << "/01-ifupdown is missing: run scripts/install-deps.sh (unpacks network-manager)";
    Netns netns;
    TempDir dir;
    netns.ip("link add va type veth peer name vb");
    netns.ip("addr add 10.9.0.1/24 dev va");
    netns.ip("link set vb up");
    write_file(
        dir / "hook",
        "#!/bin/sh\n[ \"$IFACE\" = va ] && echo \"$IFACE $LOGICAL $MODE $PHASE $ADDRFAM $METHOD\" >> " +
            dir / "log" + "\nexit 0\n",
        0755);
    std::string setup =
        "set -e; for d in /etc/network/if-up.d /etc/network/if-post-down.d; do "
        "mount -t tmpfs scratch $d; cp -p " +
        dir / "hook" +
        " $d/log; done; exec " KTRICKS_BINARY " netwatch --json --no-initial --dispatcher-dir " + scripts;
    auto watcher = Process::start({"ip", "netns", "exec", netns.name(), "unshare", "-m", "sh", "-c", setup});
    ASSERT_TRUE(eventually([&] { return watcher.out().find("\"event\":\"ready\"") != std::string::npos; }))
        << watcher.describe();
    netns.ip("link set va up");
    EXPECT_TRUE(eventually([&] { return has_line(dir / "log", "va va start post-up inet NetworkManager"); }))
        << read_file(dir / "log") << watcher.describe();
    netns.ip("link set va down");
    EXPECT_TRUE(eventually([&] { return has_line(dir / "log", "va va stop post-down inet NetworkManager"); }))
        << read_file(dir / "log") << watcher.describe();
    // vb's up and down run it too (no hook line: the hook logs va only); nothing fails.
    std::this_thread::sleep_for(300ms);
    for (const auto& line : json_lines(watcher.out()))
        if (line.value("event", "") == "script-failed") ADD_FAILURE() << line.dump();
}

}  // namespace
}  // namespace ktricks::test
