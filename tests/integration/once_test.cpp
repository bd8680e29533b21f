// `ktricks once` as a user meets it: the real binary, real processes, the real kernel.
//
// Each test uses its own lock name ("it-TESTNAME-PID"), so tests cannot collide with each other, with
// a parallel ctest run or with a user's locks. Every process is started in its own process group and
// the whole group is SIGKILLed when the test ends (see process_helpers.hpp), so a failed assertion
// leaves nothing running; every wait is bounded.
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <set>

#include "ktricks/core/proc.hpp"
#include "process_helpers.hpp"

namespace ktricks::test {
namespace {

const std::string K = KTRICKS_BINARY;
constexpr uid_t nobody = 65534;
// The system's Python (3.9+ for socket.recv_fds), which uid 65534 can run too; a pyenv shim under
// /root first in PATH would not be.
const std::string python = "/usr/bin/python3";

std::string unique_name() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    return fmt::format("it-{}-{}", info->name(), ::getpid());
}

// Tests that start processes as another uid or in new namespaces need root; the rest run as anyone.
#define REQUIRE_ROOT() \
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (setpriv, unshare)"

const uid_t me = ::geteuid();
const gid_t my_group = ::getegid();

std::string user_socket(const std::string& name, uid_t uid = me) {
    return fmt::format("@ktricks/once/u{}/{}", uid, name);
}
std::string global_socket(const std::string& name) { return "@ktricks/once/global/" + name; }

// The holder's name is bound and listening (`once` binds and listens before it starts CMD).
::testing::AssertionResult listens(const std::string& socket_name, Process& holder) {
    if (eventually([&] { return is_listening(socket_name) || !holder.running(); }) && holder.running())
        return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << socket_name << " never listened\n" << holder.describe();
}

// Runs as uid/gid 65534 with no supplementary groups.
std::vector<std::string> as_nobody(std::vector<std::string> argv) {
    std::vector<std::string> full = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
    full.insert(full.end(), argv.begin(), argv.end());
    return full;
}

// The ktricks binary as uid 65534 can run it: the build tree if nobody can reach it, else a copy.
std::string binary_for_nobody(const TempDir& dir) {
    if (run(as_nobody({K, "--version"}), in_dir("/")).status == 0) return K;
    std::string copy = dir / "ktricks";
    std::filesystem::copy_file(K, copy);
    ::chmod(copy.c_str(), 0755);
    return copy;
}

std::set<std::string> files_in(const std::filesystem::path& dir, std::string_view prefix) {
    std::set<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
        std::string name = entry.path().filename().string();
        if (name.starts_with(prefix)) names.insert(name);
    }
    return names;
}

// `ls -l /proc/self/fd` output as fd number -> link target.
std::map<int, std::string> parse_fd_listing(const std::string& listing) {
    std::map<int, std::string> fds;
    for (const auto& line : lines_of(listing)) {
        auto arrow = line.find(" -> ");
        if (arrow == std::string::npos) continue;
        auto space = line.rfind(' ', arrow - 1);
        fds[std::stoi(line.substr(space + 1, arrow - space - 1))] = line.substr(arrow + 4);
    }
    return fds;
}

std::string fd_table(const std::map<int, std::string>& fds) {
    std::string text;
    for (const auto& [fd, target] : fds) text += fmt::format("  {} -> {}\n", fd, target);
    return text;
}

bool one_line(const std::string& text) {
    return !text.empty() && text.back() == '\n' && std::count(text.begin(), text.end(), '\n') == 1;
}

// The command failed with `status` and said why in one line of stderr that contains each of `parts`.
void expect_failure_line(const Result& result, int status, std::initializer_list<std::string> parts) {
    EXPECT_EQ(result.status, status) << result.describe;
    EXPECT_TRUE(one_line(result.err)) << result.err;
    for (const auto& part : parts) EXPECT_NE(result.err.find(part), std::string::npos) << result.err;
}

// How many bytes a lock name of this uid may have: sun_path holds 108, and the leading NUL and
// "ktricks/once/u<uid>/" come first (root's names get 91).
std::size_t room_for_names() { return 107 - fmt::format("ktricks/once/u{}/", me).size(); }

// ---------------------------------------------------------------------------------------------
// Holding, refusing, releasing

TEST(Once, RunsTheCommandAndExitsWithItsStatus) {
    auto name = unique_name();
    auto exited = run({K, "once", name, "--", "sh", "-c", "exit 42"});
    EXPECT_EQ(exited.status, 42) << exited.describe;
    auto killed = run({K, "once", name, "--", "sh", "-c", "kill -KILL $$"});
    EXPECT_EQ(killed.status, 128 + SIGKILL) << killed.describe;
}

TEST(Once, SecondInstanceExits75NamingTheHolder) {
    TempDir dir;
    auto name = unique_name();
    Process holder = Process::start({K, "once", name, "--", "cat"}, piped_stdin());
    ASSERT_TRUE(listens(user_socket(name), holder));

    auto second = run({K, "once", name, "--", "touch", dir / "second-ran"});
    EXPECT_EQ(second.status, 75) << second.describe;
    EXPECT_EQ(second.err, fmt::format("ktricks once: {} is held by pid {} ({} once {} -- cat)\n", name,
                                      holder.pid(), shell_join({K}), name));
    EXPECT_FALSE(std::filesystem::exists(dir / "second-ran"));

    holder.close_stdin();
    EXPECT_EQ(holder.wait(), 0) << holder.describe();
}

TEST(Once, NameIsFreeAgainWhenTheHolderEnds) {
    auto name = unique_name();
    Process holder = Process::start({K, "once", name, "--", "cat"}, piped_stdin());
    ASSERT_TRUE(listens(user_socket(name), holder));
    auto held = run({K, "once", "--status", name});
    EXPECT_EQ(held.status, 0) << held.describe;

    holder.close_stdin();
    ASSERT_EQ(holder.wait(), 0) << holder.describe();
    auto status = run({K, "once", "--status", name});
    EXPECT_EQ(status.status, 1) << status.describe;
    EXPECT_EQ(status.out, "free\n");
    auto again = run({K, "once", name, "--", "true"});
    EXPECT_EQ(again.status, 0) << again.describe;
}

// The lock is the socket: no file, no pid file, nothing the kernel keeps once the holder is gone.
TEST(Once, LeavesNoSocketBehindTheInstantTheHolderExits) {
    auto name = unique_name();
    auto socket = user_socket(name);
    Process holder = Process::start({K, "once", name, "--", "cat"}, piped_stdin());
    ASSERT_TRUE(listens(socket, holder));
    // Status queries leave accepted connections on the holder's side; those carry the name too.
    for (int i = 0; i < 3; ++i) EXPECT_EQ(run({K, "once", "--status", name}).status, 0);

    holder.close_stdin();
    ASSERT_EQ(holder.wait(), 0) << holder.describe();
    // Checked right after waitpid: a process's descriptors are closed before its parent can reap it.
    EXPECT_TRUE(unix_sockets_named(socket).empty());
}

// ---------------------------------------------------------------------------------------------
// Waiting

TEST(Once, WaiterTakesOverWithin50msWhenTheHolderIsKilled) {
    TempDir dir;
    auto name = unique_name();
    auto socket = user_socket(name);
    // SIGKILL gives the holder no chance to clean up: only the kernel closing its socket frees the name.
    Process holder = Process::start({K, "once", name, "--", "sleep", "30"});
    ASSERT_TRUE(listens(socket, holder));

    Fd inotify(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    ASSERT_TRUE(inotify);
    ASSERT_GE(::inotify_add_watch(inotify.get(), dir.path().c_str(), IN_CREATE), 0);
    Process waiter =
        Process::start({K, "once", "--wait", name, "--", "sh", "-c", ": > \"$1\"", "sh", dir / "started"});
    // The waiter is asleep once its connection exists: an accepted (or queued) socket carries the name.
    ASSERT_TRUE(eventually([&] {
        auto sockets = unix_sockets_named(socket);
        return std::any_of(sockets.begin(), sockets.end(),
                           [](const UnixSocket& s) { return !s.listening(); });
    })) << waiter.describe();
    ASSERT_TRUE(waiter.running()) << waiter.describe();

    auto killed_at = Clock::now();
    ASSERT_EQ(::kill(holder.pid(), SIGKILL), 0);
    std::optional<Clock::time_point> started_at;
    auto deadline = killed_at + 5s;
    while (!started_at && Clock::now() < deadline) {
        pollfd ready{inotify.get(), POLLIN, 0};
        if (::poll(&ready, 1, 100) <= 0) continue;
        alignas(inotify_event) char buffer[4096];
        ssize_t got = ::read(inotify.get(), buffer, sizeof(buffer));
        for (ssize_t offset = 0; offset < got;) {
            auto* event = reinterpret_cast<inotify_event*>(buffer + offset);
            if (event->len && std::string_view(event->name) == "started") started_at = Clock::now();
            offset += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
        }
    }
    ASSERT_TRUE(started_at) << "the waiter's command never ran\n" << waiter.describe();
    auto latency = std::chrono::duration_cast<std::chrono::microseconds>(*started_at - killed_at);
    RecordProperty("takeover_us", static_cast<int>(latency.count()));
    std::printf("[ measured ] kill -> waiter's command created its file: %lld us\n",
                static_cast<long long>(latency.count()));
    EXPECT_LT(latency, 50ms);
    EXPECT_EQ(waiter.wait(), 0) << waiter.describe();
    EXPECT_EQ(holder.wait(), 128 + SIGKILL);
}

TEST(Once, CommandDiesWithOnceSoItNeverRunsUnlocked) {
    TempDir dir;
    auto name = unique_name();
    auto socket = user_socket(name);
    // SIGKILL cannot be forwarded; without PR_SET_PDEATHSIG the command would run on without the lock.
    Process holder = Process::start(
        {K, "once", name, "--", "sh", "-c", "echo $$ > \"$1\"; exec sleep 30", "sh", dir / "command.pid"});
    ASSERT_TRUE(listens(socket, holder));
    ASSERT_TRUE(eventually([&] { return read_file(dir / "command.pid").ends_with("\n"); }))
        << holder.describe();
    pid_t command = std::stoi(read_file(dir / "command.pid"));
    ASSERT_EQ(::kill(holder.pid(), SIGKILL), 0);
    EXPECT_EQ(holder.wait(), 128 + SIGKILL);
    // The orphaned command is reaped by init, so "gone" means: no longer a live sleep.
    EXPECT_TRUE(eventually([&] {
        std::string state = read_file(std::filesystem::path("/proc") / std::to_string(command) / "stat");
        return state.empty() || state.find(") Z ") != std::string::npos;
    })) << "the command outlived the killed once process";
    auto second = run({K, "once", name, "--", "true"});
    EXPECT_EQ(second.status, 0) << second.describe;
}

TEST(Once, ConcurrentWaitersAllRunOneAtATime) {
    TempDir dir;
    auto name = unique_name();
    // mkdir is atomic: it fails if another instance is inside, and that instance would exit 99.
    const std::string critical_section =
        "mkdir \"$1/running\" || exit 99; echo $$ >> \"$1/log\"; sleep 0.01; rmdir \"$1/running\"";
    std::vector<Process> starters;
    for (int i = 0; i < 20; ++i)
        starters.push_back(Process::start(
            {K, "once", "--wait", name, "--", "sh", "-c", critical_section, "sh", dir.path().string()}));
    auto deadline = Clock::now() + 20s;
    for (auto& starter : starters) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        EXPECT_EQ(starter.wait(std::max(left, 1ms)), 0) << starter.describe();
    }
    EXPECT_EQ(lines_of(read_file(dir.path() / "log")).size(), 20u);
}

TEST(Once, ConcurrentStartersWithoutWaitRunExactlyOne) {
    TempDir dir;
    auto name = unique_name();
    // The command holds the lock until we end it, so no second starter can find the name free.
    const std::string command = "touch \"$1/ran.$$\"; exec sleep 30";
    std::vector<Process> starters;
    for (int i = 0; i < 20; ++i)
        starters.push_back(
            Process::start({K, "once", name, "--", "sh", "-c", command, "sh", dir.path().string()}));

    ASSERT_TRUE(eventually([&] {
        return std::count_if(starters.begin(), starters.end(), [](Process& p) { return !p.running(); }) >= 19;
    }));
    auto holder = std::find_if(starters.begin(), starters.end(), [](Process& p) { return p.running(); });
    ASSERT_NE(holder, starters.end());
    for (auto& starter : starters) {
        if (&starter == &*holder) continue;
        EXPECT_EQ(starter.wait(), 75) << starter.describe();
        EXPECT_TRUE(starter.err().starts_with(
            fmt::format("ktricks once: {} is held by pid {} (", name, holder->pid())))
            << starter.describe();
    }
    ASSERT_TRUE(eventually([&] { return !files_in(dir.path(), "ran.").empty(); }));
    EXPECT_EQ(files_in(dir.path(), "ran.").size(), 1u);

    holder->signal(SIGTERM);  // forwarded to sleep
    EXPECT_EQ(holder->wait(), 128 + SIGTERM) << holder->describe();
}

TEST(Once, WaitWithTimeoutGivesUpWith75AfterThatLong) {
    TempDir dir;
    auto name = unique_name();
    Process holder = Process::start({K, "once", name, "--", "cat"}, piped_stdin());
    ASSERT_TRUE(listens(user_socket(name), holder));

    auto started = Clock::now();
    auto waiter = run({K, "once", "--wait=0.3", name, "--", "touch", dir / "ran"});
    auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
    std::printf("[ measured ] --wait=0.3 gave up after %lld ms\n", static_cast<long long>(elapsed.count()));
    EXPECT_EQ(waiter.status, 75) << waiter.describe;
    EXPECT_EQ(waiter.err, fmt::format("ktricks once: {} is held by pid {} ({} once {} -- cat)\n", name,
                                      holder.pid(), shell_join({K}), name));
    EXPECT_GE(elapsed, 300ms);
    EXPECT_LT(elapsed, 1500ms);  // generous: this machine is shared and noisy
    EXPECT_FALSE(std::filesystem::exists(dir / "ran"));
}

// ---------------------------------------------------------------------------------------------
// Status

TEST(Once, StatusReportsTheHoldersPidUidAndCommand) {
    auto name = unique_name();
    Process holder = Process::start({K, "once", name, "--", "sh", "-c", "cat"}, piped_stdin());
    ASSERT_TRUE(listens(user_socket(name), holder));

    auto status = run({K, "once", "--status", name});
    EXPECT_EQ(status.status, 0) << status.describe;
    EXPECT_EQ(status.out,
              fmt::format("held\npid: {}\nuid: {}\ncommand: {} once {} -- sh -c cat\nsocket: {}\n",
                          holder.pid(), me, shell_join({K}), name, user_socket(name)));
    holder.close_stdin();
    EXPECT_EQ(holder.wait(), 0);
}

TEST(Once, StatusJsonCarriesTheSameFields) {
    auto name = unique_name();
    Process holder = Process::start({K, "once", name, "--", "sh", "-c", "cat"}, piped_stdin());
    ASSERT_TRUE(listens(user_socket(name), holder));

    auto status = run({K, "once", "--status", "--json", name});
    ASSERT_EQ(status.status, 0) << status.describe;
    ASSERT_TRUE(one_line(status.out)) << status.out;
    auto json = nlohmann::json::parse(status.out, nullptr, false);
    ASSERT_TRUE(json.is_object()) << status.out;
    EXPECT_EQ(json.value("source", ""), "once");
    EXPECT_EQ(json.value("event", ""), "held");
    EXPECT_EQ(json.value("name", ""), name);
    EXPECT_EQ(json.value("socket", ""), user_socket(name));
    EXPECT_EQ(json.value("pid", -1), holder.pid());
    EXPECT_EQ(json.value("uid", -1), static_cast<int>(me));
    EXPECT_EQ(json.value("gid", -1), static_cast<int>(my_group));
    EXPECT_EQ(json.value("command", std::vector<std::string>{}),
              (std::vector<std::string>{K, "once", name, "--", "sh", "-c", "cat"}));
    EXPECT_EQ(json.value("squatted", true), false);
    EXPECT_TRUE(json.contains("ts"));

    holder.close_stdin();
    ASSERT_EQ(holder.wait(), 0);
    auto free = run({K, "once", "--status", "--json", name});
    EXPECT_EQ(free.status, 1) << free.describe;
    auto free_json = nlohmann::json::parse(free.out, nullptr, false);
    ASSERT_TRUE(free_json.is_object()) << free.out;
    EXPECT_EQ(free_json.value("event", ""), "free");
    EXPECT_FALSE(free_json.contains("pid"));
}

// ---------------------------------------------------------------------------------------------
// Messages

TEST(Once, SendDeliversArgsCwdAndTheSendersCredentials) {
    TempDir dir;
    auto name = unique_name();
    std::filesystem::create_directory(dir / "sender-cwd");
    // The instance reads one message, then ends (and with it the holder).
    Process holder =
        Process::start({K, "once", "--inbox", name, "--", "sh", "-c",
                        "\"$0\" once --recv > \"$1.tmp\" && mv \"$1.tmp\" \"$1\"", K, dir / "message"});
    ASSERT_TRUE(listens(user_socket(name), holder));

    Process sender =
        Process::start({K, "once", "--send", name, "--", "a", "b c"}, in_dir(dir / "sender-cwd"));
    EXPECT_EQ(sender.wait(), 0) << sender.describe();
    EXPECT_EQ(holder.wait(), 0) << holder.describe();

    std::string line = read_file(dir / "message");
    ASSERT_TRUE(one_line(line)) << line;
    auto json = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(json.is_object()) << line;
    EXPECT_EQ(json.value("args", std::vector<std::string>{}), (std::vector<std::string>{"a", "b c"}));
    EXPECT_EQ(json.value("cwd", ""), dir / "sender-cwd");
    EXPECT_EQ(json.value("pid", -1), sender.pid());  // from SO_PEERCRED, not from the sender's word
    EXPECT_EQ(json.value("uid", -1), static_cast<int>(me));
    EXPECT_EQ(json.value("gid", -1), static_cast<int>(my_group));
    EXPECT_EQ(json.value("stdio", true), false);
}

TEST(Once, SendToAHolderWithoutInboxFailsWith69) {
    auto name = unique_name();
    Process holder = Process::start({K, "once", name, "--", "cat"}, piped_stdin());
    ASSERT_TRUE(listens(user_socket(name), holder));

    auto sent = run({K, "once", "--send", name, "--", "hello"});
    expect_failure_line(sent, 69, {name, "without --inbox"});
    EXPECT_TRUE(holder.running());  // a refused message does not disturb the holder
}

TEST(Once, SendToAFreeNameFailsWith69) {
    auto name = unique_name();
    auto sent = run({K, "once", "--send", name, "--", "hello"});
    expect_failure_line(sent, 69, {"nobody holds the lock"});
}

// The instance answers on the sender's own stdout/stderr and decides the sender's exit status.
// `ktricks once --recv` cannot do this (it exits and so closes the passed descriptors), so the
// instance here is a small Python program speaking the inbox protocol directly.
TEST(Once, SendStdioLetsTheInstanceAnswerOnTheSendersTerminal) {
    TempDir dir;
    auto name = unique_name();
    const std::string instance = R"(
import os, socket, sys
inbox = socket.socket(fileno=int(os.environ["KTRICKS_INBOX_FD"]))
message, fds, flags, address = socket.recv_fds(inbox, 65536, 4)
open(sys.argv[1], "wb").write(message)
stdin, stdout, stderr, reply = fds
os.write(stdout, b"hello from the instance\n")
os.write(stderr, b"a note on stderr\n")
os.write(reply, b"7")
for fd in fds:
    os.close(fd)
)";
    Process holder =
        Process::start({K, "once", "--inbox", name, "--", python, "-c", instance, dir / "message"});
    ASSERT_TRUE(listens(user_socket(name), holder));

    auto sent = run({K, "once", "--send", "--send-stdio", name, "--", "x"});
    EXPECT_EQ(sent.status, 7) << sent.describe;
    EXPECT_EQ(sent.out, "hello from the instance\n");
    EXPECT_EQ(sent.err, "a note on stderr\n");
    EXPECT_EQ(holder.wait(), 0) << holder.describe();
    auto json = nlohmann::json::parse(read_file(dir / "message"), nullptr, false);
    EXPECT_EQ(json.value("stdio", false), true) << read_file(dir / "message");
    EXPECT_EQ(json.value("args", std::vector<std::string>{}), std::vector<std::string>{"x"});
}

// The holder never blocks on its instance: a message that does not fit is refused at once.
TEST(Once, InboxThatIsNotReadRefusesRatherThanStalls) {
    auto name = unique_name();
    Process holder = Process::start({K, "once", "--inbox", name, "--", "cat"}, piped_stdin());
    ASSERT_TRUE(listens(user_socket(name), holder));

    const std::string big(16 * 1024, 'm');  // a few dozen of these fill any socket buffer
    std::optional<Result> refused;
    int delivered = 0;
    for (int i = 0; i < 200 && !refused; ++i) {
        auto sent = run({K, "once", "--send", name, "--", big});
        if (sent.status == 0) ++delivered;
        else
            refused = std::move(sent);
    }
    std::printf("[ measured ] %d messages of 16 KiB queued before the inbox was full\n", delivered);
    ASSERT_TRUE(refused) << "200 messages of 16 KiB were all accepted by an instance that reads none";
    EXPECT_GT(delivered, 0);
    EXPECT_EQ(refused->status, 75) << refused->describe;
    EXPECT_NE(refused->err.find("inbox is full"), std::string::npos) << refused->err;
    // The holder still answers.
    EXPECT_EQ(run({K, "once", "--status", name}).status, 0);
    holder.close_stdin();
    EXPECT_EQ(holder.wait(), 0) << holder.describe();
}

TEST(Once, SendToAnInstanceThatClosedItsInboxFails) {
    TempDir dir;
    auto name = unique_name();
    Process holder = Process::start({K, "once", "--inbox", name, "--", "bash", "-c",
                                     "exec {KTRICKS_INBOX_FD}<&-; : > \"$1\"; cat", "bash", dir / "closed"},
                                    piped_stdin());
    ASSERT_TRUE(eventually([&] { return std::filesystem::exists(dir / "closed"); })) << holder.describe();

    auto sent = run({K, "once", "--send", name, "--", "hello"});
    expect_failure_line(sent, 69, {"closed its inbox"});  // EX_UNAVAILABLE: nobody is reading
    holder.close_stdin();
    EXPECT_EQ(holder.wait(), 0) << holder.describe();
}

// ---------------------------------------------------------------------------------------------
// Scopes, squatters and namespaces

TEST(Once, UserScopesOfDifferentUidsDoNotCollide) {
    REQUIRE_ROOT();
    TempDir dir;
    auto name = unique_name();
    std::string binary = binary_for_nobody(dir);
    Process nobody_holder =
        Process::start(as_nobody({binary, "once", name, "--", "cat"}), in_dir("/").with_piped_stdin());
    ASSERT_TRUE(listens(user_socket(name, nobody), nobody_holder));

    auto root = run({K, "once", name, "--", "true"});
    EXPECT_EQ(root.status, 0) << root.describe;
    auto status = run({K, "once", "--status", name});
    EXPECT_EQ(status.status, 1) << status.describe;
    EXPECT_EQ(status.out, "free\n");

    nobody_holder.close_stdin();
    EXPECT_EQ(nobody_holder.wait(), 0) << nobody_holder.describe();
}

TEST(Once, GlobalScopeIsSharedAcrossUids) {
    REQUIRE_ROOT();
    TempDir dir;
    auto name = unique_name();
    std::string binary = binary_for_nobody(dir);
    {
        Process nobody_holder = Process::start(as_nobody({binary, "once", "--global", name, "--", "cat"}),
                                               in_dir("/").with_piped_stdin());
        ASSERT_TRUE(listens(global_socket(name), nobody_holder));
        auto root = run({K, "once", "--global", name, "--", "true"});
        EXPECT_EQ(root.status, 75) << root.describe;
        EXPECT_EQ(root.err, fmt::format("ktricks once: {} is held by pid {} ({} once --global {} -- cat)\n",
                                        name, nobody_holder.pid(), shell_join({binary}), name));
        auto status = run({K, "once", "--status", "--json", "--global", name});
        auto json = nlohmann::json::parse(status.out, nullptr, false);
        EXPECT_EQ(json.value("uid", -1), static_cast<int>(nobody)) << status.out;
        EXPECT_EQ(json.value("squatted", true), false) << status.out;  // anyone may hold a global name
        nobody_holder.close_stdin();
        EXPECT_EQ(nobody_holder.wait(), 0) << nobody_holder.describe();
    }
    Process root_holder = Process::start({K, "once", "--global", name, "--", "cat"}, piped_stdin());
    ASSERT_TRUE(listens(global_socket(name), root_holder));
    auto as_other = run(as_nobody({binary, "once", "--global", name, "--", "true"}), in_dir("/"));
    EXPECT_EQ(as_other.status, 75) << as_other.describe;
}

const std::string squatter_program = R"(
import socket, sys, time
s = socket.socket(socket.AF_UNIX, getattr(socket, sys.argv[2]))
s.bind("\0" + sys.argv[1])
if sys.argv[3] == "listen":
    s.listen(8)
time.sleep(30)
)";

TEST(Once, SquattedNameIsRefusedAndReportedAsSquatted) {
    REQUIRE_ROOT();
    auto name = unique_name();
    auto socket = user_socket(name);  // root's name, bound by uid 65534
    Process squatter = Process::start(
        as_nobody({python, "-c", squatter_program, socket.substr(1), "SOCK_SEQPACKET", "listen"}),
        in_dir("/"));
    ASSERT_TRUE(listens(socket, squatter));

    auto refused = run({K, "once", name, "--", "true"});
    EXPECT_EQ(refused.status, 75) << refused.describe;
    EXPECT_TRUE(one_line(refused.err)) << refused.err;
    EXPECT_TRUE(refused.err.starts_with(
        fmt::format("ktricks once: {} is squatted by pid {} uid {} (", name, squatter.pid(), nobody)))
        << refused.err;
    EXPECT_NE(refused.err.find("(the lock belongs to uid 0)"), std::string::npos) << refused.err;
    // The squatter chose its argv (here a program with newlines): control bytes are shown escaped.
    EXPECT_NE(refused.err.find("-c '\\x0aimport socket"), std::string::npos) << refused.err;

    auto status = run({K, "once", "--status", name});
    EXPECT_EQ(status.status, 0) << status.describe;
    EXPECT_NE(status.out.find(fmt::format("pid: {}\n", squatter.pid())), std::string::npos) << status.out;
    EXPECT_NE(status.out.find("uid: 65534\n"), std::string::npos) << status.out;
    EXPECT_NE(status.out.find("squatted: yes"), std::string::npos) << status.out;
    EXPECT_EQ(lines_of(status.out).size(), 6u) << status.out;  // held, pid, uid, command, socket, squatted
    auto json = nlohmann::json::parse(run({K, "once", "--status", "--json", name}).out, nullptr, false);
    EXPECT_EQ(json.value("squatted", false), true);

    // Nor does a message go to a squatter: it could read whatever we send.
    auto sent = run({K, "once", "--send", name, "--", "secret"});
    EXPECT_EQ(sent.status, 77) << sent.describe;
    EXPECT_NE(sent.err.find("squatted"), std::string::npos) << sent.err;
}

TEST(Once, NameBoundWithoutListeningIsReportedAsNotALock) {
    auto name = unique_name();
    auto socket = user_socket(name);
    Process squatter =
        Process::start({python, "-c", squatter_program, socket.substr(1), "SOCK_SEQPACKET", "bind"});
    ASSERT_TRUE(eventually([&] { return !unix_sockets_named(socket).empty(); })) << squatter.describe();

    auto refused = run({K, "once", name, "--", "true"});
    EXPECT_EQ(refused.status, 75) << refused.describe;
    EXPECT_EQ(refused.err,
              fmt::format("ktricks once: {} is held by a socket that accepts no connections (not a "
                          "ktricks lock)\n",
                          name));
    auto status = run({K, "once", "--status", name});
    EXPECT_EQ(status.status, 0) << status.describe;
    EXPECT_EQ(status.out, "held by a socket that accepts no connections (not a ktricks lock)\n");
}

// The kernel keeps abstract names apart by socket type: a stream (or datagram) socket on the same
// name neither blocks the lock nor is it a holder.
TEST(Once, StreamSocketOnTheSameNameNeitherBlocksNorHoldsTheLock) {
    auto name = unique_name();
    auto socket = user_socket(name);
    Process other =
        Process::start({python, "-c", squatter_program, socket.substr(1), "SOCK_STREAM", "listen"});
    ASSERT_TRUE(listens(socket, other));

    auto status = run({K, "once", "--status", name});
    EXPECT_EQ(status.status, 1) << status.describe;
    EXPECT_EQ(status.out, "free\n");
    auto ran = run({K, "once", name, "--", "true"});
    EXPECT_EQ(ran.status, 0) << ran.describe;
}

// Abstract names belong to a network namespace: a process in another one has its own, separate lock.
// (Put every instance that must exclude each other in the same network namespace.)
TEST(Once, NetworkNamespacesHaveIndependentLocks) {
    REQUIRE_ROOT();
    auto name = unique_name();
    Process holder = Process::start({K, "once", name, "--", "cat"}, piped_stdin());
    ASSERT_TRUE(listens(user_socket(name), holder));

    auto inside = run({"unshare", "-n", K, "once", name, "--", "true"});
    EXPECT_EQ(inside.status, 0) << inside.describe;
    auto status_inside = run({"unshare", "-n", K, "once", "--status", name});
    EXPECT_EQ(status_inside.status, 1) << status_inside.describe;
    auto outside = run({K, "once", name, "--", "true"});
    EXPECT_EQ(outside.status, 75) << outside.describe;
}

// SO_PEERCRED translates the holder's pid into the asker's pid namespace; from a namespace that
// cannot see the holder it is 0, and the report says so rather than naming a wrong process.
TEST(Once, HolderInAnInvisiblePidNamespaceIsReportedWithoutAPid) {
    REQUIRE_ROOT();
    auto name = unique_name();
    Process holder = Process::start({K, "once", name, "--", "cat"}, piped_stdin());
    ASSERT_TRUE(listens(user_socket(name), holder));

    auto refused = run({"unshare", "--pid", "--fork", "--mount-proc", K, "once", name, "--", "true"});
    EXPECT_EQ(refused.status, 75) << refused.describe;
    EXPECT_EQ(refused.err,
              fmt::format("ktricks once: {} is held by a process in another pid namespace\n", name));
    auto status = run({"unshare", "--pid", "--fork", "--mount-proc", K, "once", "--status", name});
    EXPECT_EQ(status.status, 0) << status.describe;
    EXPECT_NE(status.out.find("pid: 0\n"), std::string::npos) << status.out;
}

// ---------------------------------------------------------------------------------------------
// What the command inherits

// Runs `ls -l /proc/self/fd` as the command, then waits on stdin so the lock is still there to
// compare with; returns the listing and the inodes of the lock's sockets at that moment.
struct CommandFds {
    std::map<int, std::string> fds;
    std::string inbox_fd;
    std::set<std::string> lock_sockets;  // "socket:[INODE]" of the listener and accepted connections
    std::string describe;
};

CommandFds fds_of_command(const std::string& name, std::vector<std::string> flags) {
    std::vector<std::string> argv = {K, "once"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.insert(argv.end(),
                {name, "--", "sh", "-c",
                 "echo \"inbox=${KTRICKS_INBOX_FD-}\"; ls -l /proc/self/fd; echo END; read line"});
    Process holder = Process::start(argv, piped_stdin());
    CommandFds result;
    eventually([&] { return holder.out().find("END\n") != std::string::npos || !holder.running(); });
    for (const auto& socket : unix_sockets_named(user_socket(name)))
        result.lock_sockets.insert(fmt::format("socket:[{}]", socket.inode));
    std::string out = holder.out();
    result.describe = holder.describe();
    if (auto at = out.find("inbox="); at != std::string::npos)
        result.inbox_fd = out.substr(at + 6, out.find('\n', at) - at - 6);
    result.fds = parse_fd_listing(out);
    holder.close_stdin();
    holder.wait();
    return result;
}

// ls's own descriptor for the directory it lists.
bool is_ls_directory(const std::string& target) {
    return target.starts_with("/proc/") && target.ends_with("/fd");
}

TEST(Once, CommandInheritsNoLockDescriptor) {
    auto name = unique_name();
    auto command = fds_of_command(name, {});
    ASSERT_FALSE(command.lock_sockets.empty()) << "the lock was not held while the command ran\n"
                                               << command.describe;
    EXPECT_EQ(command.inbox_fd, "");
    std::set<int> expected = {0, 1, 2};
    for (const auto& [fd, target] : command.fds) {
        if (expected.contains(fd) || is_ls_directory(target)) continue;
        ADD_FAILURE() << "descriptor " << fd << " -> " << target << " leaked into the command\n"
                      << fd_table(command.fds);
    }
    for (int fd : expected) EXPECT_TRUE(command.fds.contains(fd)) << fd_table(command.fds);
    for (const auto& [fd, target] : command.fds) EXPECT_FALSE(command.lock_sockets.contains(target)) << fd;
}

TEST(Once, CommandWithInboxGetsOnlyTheInboxSocket) {
    auto name = unique_name();
    auto command = fds_of_command(name, {"--inbox"});
    ASSERT_FALSE(command.lock_sockets.empty()) << command.describe;
    ASSERT_FALSE(command.inbox_fd.empty()) << command.describe;
    int inbox = std::stoi(command.inbox_fd);
    ASSERT_TRUE(command.fds.contains(inbox)) << fd_table(command.fds);
    EXPECT_TRUE(command.fds[inbox].starts_with("socket:[")) << command.fds[inbox];
    EXPECT_FALSE(command.lock_sockets.contains(command.fds[inbox]));
    for (const auto& [fd, target] : command.fds) {
        if (fd <= 2 || fd == inbox || is_ls_directory(target)) continue;
        ADD_FAILURE() << "descriptor " << fd << " -> " << target << " leaked into the command\n"
                      << fd_table(command.fds);
    }
}

TEST(Once, DescriptorsTheUserPassesReachTheCommand) {
    TempDir dir;
    auto name = unique_name();
    auto run_with_fd = run({"sh", "-c", "exec 7>\"$1\"; exec \"$0\" once \"$2\" -- ls -l /proc/self/fd", K,
                            dir / "seven", name});
    ASSERT_EQ(run_with_fd.status, 0) << run_with_fd.describe;
    auto fds = parse_fd_listing(run_with_fd.out);
    EXPECT_EQ(fds[7], dir / "seven") << fd_table(fds);
}

TEST(Once, CommandSeesTheLockNameInItsEnvironment) {
    auto name = unique_name();
    auto ran = run({K, "once", name, "--", "sh", "-c", "echo \"$KTRICKS_ONCE_NAME\""});
    EXPECT_EQ(ran.status, 0) << ran.describe;
    EXPECT_EQ(ran.out, name + "\n");
}

// ---------------------------------------------------------------------------------------------
// Signals

TEST(Once, TermSentToOnceIsForwardedToTheCommand) {
    TempDir dir;
    auto name = unique_name();
    Process holder = Process::start(
        {K, "once", name, "--", "sh", "-c",
         "trap 'echo got TERM > \"$1\"; exit 3' TERM; : > \"$1.ready\"; while :; do sleep 0.02; done", "sh",
         dir / "trapped"});
    ASSERT_TRUE(eventually([&] { return std::filesystem::exists(dir / "trapped.ready"); }))
        << holder.describe();

    ASSERT_EQ(::kill(holder.pid(), SIGTERM), 0);
    EXPECT_EQ(holder.wait(), 3) << holder.describe();
    EXPECT_EQ(read_file(dir / "trapped"), "got TERM\n");
}

TEST(Once, EveryForwardedSignalReachesTheCommand) {
    TempDir dir;
    auto name = unique_name();
    // The command logs each signal it gets and keeps running; TERM ends it.
    Process holder = Process::start(
        {K, "once", name, "--", "sh", "-c",
         "for s in HUP INT QUIT USR1 USR2; do trap \"echo $s >> '$1'\" $s; done; trap 'exit 0' TERM; "
         ": > \"$1.ready\"; while :; do sleep 0.02; done",
         "sh", dir / "log"});
    ASSERT_TRUE(eventually([&] { return std::filesystem::exists(dir / "log.ready"); })) << holder.describe();

    std::string expected;
    for (auto [signal_number, signal_name] : {std::pair{SIGHUP, "HUP"},
                                              {SIGINT, "INT"},
                                              {SIGQUIT, "QUIT"},
                                              {SIGUSR1, "USR1"},
                                              {SIGUSR2, "USR2"}}) {
        ASSERT_EQ(::kill(holder.pid(), signal_number), 0);
        expected += std::string(signal_name) + "\n";
        ASSERT_TRUE(eventually([&] { return read_file(dir / "log") == expected; }, 5s))
            << signal_name << " did not arrive: log is \"" << read_file(dir / "log") << "\"\n"
            << holder.describe();
        EXPECT_TRUE(holder.running()) << "once died of " << signal_name;
    }
    ASSERT_EQ(::kill(holder.pid(), SIGTERM), 0);
    EXPECT_EQ(holder.wait(), 0) << holder.describe();
}

// ---------------------------------------------------------------------------------------------
// Bad input: exit 64 with one line that names what was wrong

TEST(Once, RejectsAnEmptyName) {
    auto result = run({K, "once", "", "--", "true"});
    EXPECT_EQ(result.status, 64) << result.describe;
    EXPECT_TRUE(one_line(result.err)) << result.err;
    EXPECT_EQ(result.err, "ktricks once: lock name is empty\n");
}

TEST(Once, RejectsANameTooLongForAnAbstractSocket) {
    const std::size_t room = room_for_names();
    auto name = unique_name();
    std::string too_long = name + std::string(room + 1 - name.size(), 'x');
    auto result = run({K, "once", too_long, "--", "true"});
    EXPECT_EQ(result.status, 64) << result.describe;
    EXPECT_TRUE(one_line(result.err)) << result.err;
    EXPECT_TRUE(result.err.starts_with(
        fmt::format("ktricks once: lock name is {} bytes; at most {} fit", room + 1, room)))
        << result.err;
}

TEST(Once, AcceptsTheLongestNameThatFits) {
    auto name = unique_name();
    const std::size_t room = room_for_names();
    std::string longest = name + std::string(room - name.size(), 'x');
    auto result =
        run({K, "once", longest, "--", "sh", "-c", "grep -c \"$1\\$\" /proc/net/unix", "sh", longest});
    EXPECT_EQ(result.status, 0) << result.describe;
    EXPECT_EQ(result.out, "1\n");  // the full name was bound, not a truncated one
}

TEST(Once, RejectsAMissingCommand) {
    auto name = unique_name();
    for (auto argv :
         {std::vector<std::string>{K, "once", name}, std::vector<std::string>{K, "once", name, "--"}}) {
        auto result = run(argv);
        EXPECT_EQ(result.status, 64) << result.describe;
        EXPECT_TRUE(one_line(result.err)) << result.err;
        EXPECT_TRUE(result.err.starts_with("ktricks once: missing command")) << result.err;
    }
}

TEST(Once, RejectsANonNumericWaitTimeout) {
    auto name = unique_name();
    auto result = run({K, "once", "--wait=abc", name, "--", "true"});
    expect_failure_line(result, 64, {"--wait=\"abc\""});
}

TEST(Once, MissingProgramExits127AndFreesTheLock) {
    auto name = unique_name();
    auto result = run({K, "once", name, "--", "nosuchprog"});
    EXPECT_EQ(result.status, 127) << result.describe;
    EXPECT_EQ(result.err, "ktricks once: exec nosuchprog: No such file or directory\n");
    EXPECT_TRUE(unix_sockets_named(user_socket(name)).empty());
}

TEST(Once, MissingProgramFailsBeforeTakingOrWaitingForTheLock) {
    auto name = unique_name();
    Process holder = Process::start({K, "once", name, "--", "sleep", "30"});
    ASSERT_TRUE(listens(user_socket(name), holder));
    // A held lock would mean 75, and --wait would wait: the missing program is the real problem.
    auto result = run({K, "once", "--wait", name, "--", "nosuchprog"}, {}, 5000ms);
    EXPECT_EQ(result.status, 127) << result.describe;
    EXPECT_EQ(result.err, "ktricks once: exec nosuchprog: No such file or directory\n");
}

}  // namespace
}  // namespace ktricks::test
