// Child: spawning with an exact descriptor layout and environment, waiting through a pidfd.
#include "ktricks/core/child.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "test_support.hpp"

namespace ktricks {
namespace {

using namespace std::chrono_literals;
using namespace test_support;
using Clock = std::chrono::steady_clock;

// Sets (or unsets) an environment variable of this process for the length of a test.
class EnvGuard {
public:
    EnvGuard(const char* key, const char* value) : key_(key) {
        if (const char* old = ::getenv(key)) old_ = old;
        if (value) ::setenv(key, value, 1);
        else
            ::unsetenv(key);
    }
    ~EnvGuard() {
        if (old_) ::setenv(key_.c_str(), old_->c_str(), 1);
        else
            ::unsetenv(key_.c_str());
    }
    EnvGuard(const EnvGuard&) = delete;
    EnvGuard& operator=(const EnvGuard&) = delete;

private:
    std::string key_;
    std::optional<std::string> old_;
};

class SignalActionGuard {
public:
    SignalActionGuard(int signal_number, void (*handler)(int)) : signal_number_(signal_number) {
        struct sigaction action {};
        action.sa_handler = handler;
        ::sigaction(signal_number, &action, &saved_);
    }
    ~SignalActionGuard() { ::sigaction(signal_number_, &saved_, nullptr); }
    SignalActionGuard(const SignalActionGuard&) = delete;
    SignalActionGuard& operator=(const SignalActionGuard&) = delete;

private:
    int signal_number_;
    struct sigaction saved_ {};
};

// Frees descriptor numbers for a test and puts back what was there (with its close-on-exec flag)
// when the test ends.
class BorrowedFdSlots {
public:
    explicit BorrowedFdSlots(std::initializer_list<int> fds) {
        for (int fd : fds) {
            int flags = ::fcntl(fd, F_GETFD);
            if (flags < 0) {
                slots_.push_back({fd, -1, 0});
                continue;
            }
            int saved = ::fcntl(fd, F_DUPFD_CLOEXEC, 100);
            if (saved < 0) throw_errno("fcntl(F_DUPFD_CLOEXEC)");
            slots_.push_back({fd, saved, flags});
            ::close(fd);
        }
    }
    ~BorrowedFdSlots() {
        for (const auto& slot : slots_) {
            ::close(slot.fd);
            if (slot.saved < 0) continue;
            ::dup3(slot.saved, slot.fd, (slot.flags & FD_CLOEXEC) ? O_CLOEXEC : 0);
            ::close(slot.saved);
        }
    }
    BorrowedFdSlots(const BorrowedFdSlots&) = delete;
    BorrowedFdSlots& operator=(const BorrowedFdSlots&) = delete;

private:
    struct Slot {
        int fd, saved, flags;
    };
    std::vector<Slot> slots_;
};

// Reads until end of file, giving up after `limit`.
std::string read_all(int fd, std::chrono::milliseconds limit = 10s) {
    std::string out;
    auto deadline = Clock::now() + limit;
    char buffer[4096];
    while (true) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left <= 0ms || !readable_within(fd, left))
            throw std::runtime_error("read_all: no end of file in time; got \"" + out + "\"");
        ssize_t got = ::read(fd, buffer, sizeof(buffer));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) throw_errno("read");
        if (got == 0) return out;
        out.append(buffer, static_cast<std::size_t>(got));
    }
}

struct Finished {
    ExitStatus status;
    std::string output;  // what the child wrote to stdout
};

// Runs a command to completion with stdout captured. The child is killed (by ~Child) if anything
// here throws or times out.
Finished run(SpawnOptions options, std::chrono::milliseconds limit = 10s) {
    Pipe out;
    options.stdout_fd = out.write_end.get();
    auto child = Child::spawn(options);
    out.write_end.reset();
    Finished finished;
    finished.output = read_all(out.read_end.get(), limit);
    auto status = child.wait(limit);
    if (!status) throw std::runtime_error("child did not exit in time");
    finished.status = *status;
    return finished;
}

// The descriptors a running `cat` holds, as the kernel lists them in /proc/PID/fd. The child gets
// a line and echoes it first, so it is past its start-up and sitting in read(0) when we look.
std::set<int> descriptors_of_cat(SpawnOptions options, pid_t* pid_out = nullptr) {
    Pipe in, out;
    options.argv = {"cat"};
    options.stdin_fd = in.read_end.get();
    options.stdout_fd = out.write_end.get();
    auto child = Child::spawn(options);
    in.read_end.reset();
    out.write_end.reset();
    if (::write(in.write_end.get(), "x\n", 2) != 2) throw_errno("write");
    if (!readable_within(out.read_end.get(), 10s)) throw std::runtime_error("cat did not answer");
    auto fds = fds_listed_in("/proc/" + std::to_string(child.pid()) + "/fd");
    if (pid_out) *pid_out = child.pid();
    in.write_end.reset();  // cat sees end of file and exits
    if (!child.wait(10s)) throw std::runtime_error("cat did not exit");
    return fds;
}

bool reaped(pid_t pid) {
    int status;
    return ::waitpid(pid, &status, WNOHANG) < 0 && errno == ECHILD;
}

// The SpawnError that spawning `options` throws (the program could not be executed); nullopt if it
// spawned. Any other exception goes on up and fails the test.
std::optional<SpawnError> spawn_error(const SpawnOptions& options) {
    try {
        Child::spawn(options);
    } catch (const SpawnError& error) {
        return error;
    }
    return std::nullopt;
}

// ---- exit status ----

TEST(ChildExitStatus, ExitCodeIsReportedAsIs) {
    auto finished = run(command({"sh", "-c", "exit 3"}));
    EXPECT_FALSE(finished.status.signaled);
    EXPECT_EQ(finished.status.code, 3);
    EXPECT_EQ(finished.status.shell_status(), 3);
    EXPECT_EQ(finished.status.to_string(), "exited with status 3");
}

TEST(ChildExitStatus, DeathBySignalIs128PlusTheSignal) {
    auto finished = run(command({"sh", "-c", "kill -KILL $$"}));
    EXPECT_TRUE(finished.status.signaled);
    EXPECT_EQ(finished.status.code, SIGKILL);
    EXPECT_EQ(finished.status.shell_status(), 128 + SIGKILL);
    EXPECT_EQ(finished.status.to_string(), "killed by signal 9 (Killed)");
}

TEST(ChildExitStatus, SuccessIsZero) {
    EXPECT_EQ(run(command({"true"})).status.shell_status(), 0);
    EXPECT_EQ(run(command({"false"})).status.shell_status(), 1);
}

// ---- failures to start ----

TEST(ChildSpawnError, MissingProgramIsEnoentAndExits127) {
    int before = count_open_fds();
    auto error = spawn_error(command({"ktricks-no-such-program"}));
    ASSERT_TRUE(error) << "spawned a program that does not exist";
    EXPECT_EQ(error->code().value(), ENOENT);
    EXPECT_EQ(std::string(error->what()), "exec ktricks-no-such-program: No such file or directory");
    EXPECT_EQ(exit_status_for(*error), 127);
    EXPECT_EQ(count_open_fds(), before);
}

TEST(ChildSpawnError, MissingProgramByPathIsEnoent) {
    auto error = spawn_error(command({"/nonexistent/ktricks-prog"}));
    ASSERT_TRUE(error);
    EXPECT_EQ(error->code().value(), ENOENT);
    EXPECT_EQ(exit_status_for(*error), 127);
}

TEST(ChildSpawnError, NonExecutableFileIsEaccesAndExits126) {
    TempDir dir;
    auto path = dir.write_file("not-executable", "#!/bin/sh\nexit 0\n", std::filesystem::perms(0644));
    auto error = spawn_error(command({path}));
    ASSERT_TRUE(error) << "spawned a file without execute permission";
    EXPECT_EQ(error->code().value(), EACCES);
    EXPECT_EQ(std::string(error->what()), "exec " + path + ": Permission denied");
    EXPECT_EQ(exit_status_for(*error), 126);
}

TEST(ChildSpawnError, NonExecutableFileFoundInPathIsEaccesNotEnoent) {
    TempDir dir;
    dir.write_file("ktricks-test-prog", "#!/bin/sh\nexit 0\n", std::filesystem::perms(0644));
    EnvGuard path("PATH", (dir.path().string() + ":/usr/bin:/bin").c_str());
    auto error = spawn_error(command({"ktricks-test-prog"}));
    ASSERT_TRUE(error);
    EXPECT_EQ(error->code().value(), EACCES);
}

TEST(ChildSpawnError, DirectoryIsNotAProgram) {
    TempDir dir;
    auto error = spawn_error(command({dir.path().string()}));
    ASSERT_TRUE(error);
    EXPECT_EQ(error->code().value(), EACCES);
}

TEST(ChildSpawnError, ExecFailureInTheForkedChildIsReportedAndTheChildReaped) {
    // find_program accepts it (a regular executable file); only execve finds the missing interpreter.
    TempDir dir;
    auto path =
        dir.write_file("bad-interpreter", "#!/nonexistent/interpreter\n", std::filesystem::perms(0755));
    int before = count_open_fds();
    auto error = spawn_error(command({path}));
    ASSERT_TRUE(error);
    EXPECT_EQ(error->code().value(), ENOENT);
    EXPECT_EQ(std::string(error->what()), "exec " + path + ": No such file or directory");
    EXPECT_TRUE(reaped(-1)) << "a child is left unreaped";
    EXPECT_EQ(count_open_fds(), before);
}

TEST(ChildSpawnError, EmptyCommandIsAnInputError) {
    EXPECT_THROW(Child::spawn(SpawnOptions{}), InputError);
    EXPECT_THROW(Child::spawn(command({""})), SpawnError);
}

TEST(ChildSpawnError, MissingWorkingDirectoryNamesTheDirectoryNotTheProgram) {
    TempDir dir;
    auto missing = (dir.path() / "missing").string();
    auto options = command({"true"});
    options.working_directory = missing;
    int before = count_open_fds();
    try {
        Child::spawn(options);
        FAIL() << "spawned into a missing directory";
    } catch (const SpawnError& error) {
        ADD_FAILURE() << "reported as a failure to execute the program: " << error.what();
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), ENOENT);
        EXPECT_EQ(std::string(error.what()), "chdir " + missing + ": No such file or directory");
        EXPECT_EQ(exit_status_for(error), exit_code::no_input);
    }
    EXPECT_TRUE(reaped(-1));
    EXPECT_EQ(count_open_fds(), before);
}

TEST(ChildSpawnError, ClosedDescriptorToPassNamesTheDescriptor) {
    // A number far above anything open, so the spawn's own pipe cannot take it.
    int closed;
    {
        Fd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        closed = ::fcntl(null.get(), F_DUPFD_CLOEXEC, 900);
        ASSERT_GE(closed, 900);
        ::close(closed);
    }
    auto options = command({"true"});
    options.pass_fds = {closed};
    try {
        Child::spawn(options);
        FAIL() << "spawned with a closed fd to pass";
    } catch (const SpawnError& error) {
        ADD_FAILURE() << "reported as a failure to execute the program: " << error.what();
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), EBADF);
        EXPECT_NE(std::string(error.what()).find("fd " + std::to_string(closed)), std::string::npos)
            << error.what();
    }
    EXPECT_TRUE(reaped(-1));
}

TEST(ChildSpawnError, KeptFdThatIsAlsoAListenFdsTargetIsRefused) {
    auto options = command({"true"});
    Pipe pipe;
    options.pass_fds = {pipe.write_end.get()};
    options.keep_fds = {3};
    EXPECT_THROW(Child::spawn(options), InputError);
}

// ---- descriptors ----

TEST(ChildFds, PassFdsLandAt3And4And5InOrder) {
    Pipe a, b, c;
    auto options = command({"sh", "-c", "echo three >&3; echo four >&4; echo five >&5"});
    options.pass_fds = {a.write_end.get(), b.write_end.get(), c.write_end.get()};
    auto child = Child::spawn(options);
    a.write_end.reset();
    b.write_end.reset();
    c.write_end.reset();
    EXPECT_EQ(read_all(a.read_end.get()), "three\n");
    EXPECT_EQ(read_all(b.read_end.get()), "four\n");
    EXPECT_EQ(read_all(c.read_end.get()), "five\n");
    auto status = child.wait(10s);
    ASSERT_TRUE(status);
    EXPECT_EQ(status->shell_status(), 0);
}

TEST(ChildFds, PassFdsThatAlreadySitAtTheTargetsArePermutedCorrectly) {
    // Sources at 5, 4, 3 going to 3, 4, 5: a naive dup2 loop would overwrite 5 before moving it.
    Pipe pipes[3];
    for (auto& pipe : pipes) {  // out of the way of 3..5
        pipe.read_end = Fd(::fcntl(pipe.read_end.get(), F_DUPFD_CLOEXEC, 100));
        pipe.write_end = Fd(::fcntl(pipe.write_end.get(), F_DUPFD_CLOEXEC, 100));
    }
    BorrowedFdSlots slots({3, 4, 5});  // the test runner may have left something there
    Fd placed[3];
    for (int i = 0; i < 3; ++i) {
        if (::dup3(pipes[i].write_end.get(), 5 - i, O_CLOEXEC) < 0) throw_errno("dup3");
        placed[i].reset(5 - i);
    }
    auto options = command({"sh", "-c", "echo zero >&3; echo one >&4; echo two >&5"});
    options.pass_fds = {5, 4, 3};  // pipe 0 sits at 5 and must become 3
    auto child = Child::spawn(options);
    for (int i = 0; i < 3; ++i) {
        placed[i].reset();
        pipes[i].write_end.reset();
    }
    EXPECT_EQ(read_all(pipes[0].read_end.get()), "zero\n");
    EXPECT_EQ(read_all(pipes[1].read_end.get()), "one\n");
    EXPECT_EQ(read_all(pipes[2].read_end.get()), "two\n");
    ASSERT_TRUE(child.wait(10s));
}

TEST(ChildFds, WithCloseOtherFdsTheChildHasOnlyStdioAndPassFds) {
    Pipe passed1, passed2;
    Fd inheritable(::open("/dev/null", O_RDONLY));  // no O_CLOEXEC
    ASSERT_TRUE(inheritable);
    ASSERT_FALSE(is_cloexec(inheritable.get()));
    SpawnOptions options;
    options.pass_fds = {passed1.write_end.get(), passed2.write_end.get()};
    options.close_other_fds = true;
    pid_t pid = 0;
    auto fds = descriptors_of_cat(options, &pid);
    EXPECT_EQ(fds, (std::set<int>{0, 1, 2, 3, 4})) << "pid " << pid;
}

TEST(ChildFds, PassedDescriptorsReferToTheCallersOpenFiles) {
    Pipe passed1, passed2, in, out;
    auto options = command({"cat"});
    options.pass_fds = {passed1.write_end.get(), passed2.write_end.get()};
    options.stdin_fd = in.read_end.get();
    options.stdout_fd = out.write_end.get();
    auto child = Child::spawn(options);
    std::string proc = "/proc/" + std::to_string(child.pid()) + "/fd/";
    EXPECT_TRUE(same_file(proc + "3", passed1.write_end.get()));
    EXPECT_TRUE(same_file(proc + "4", passed2.write_end.get()));
    EXPECT_TRUE(same_file(proc + "0", in.read_end.get()));
    EXPECT_TRUE(same_file(proc + "1", out.write_end.get()));
    in.write_end.reset();
    ASSERT_TRUE(child.wait(10s));
}

TEST(ChildFds, WithoutCloseOtherFdsAnInheritableFdPassesButACloexecOneNever) {
    Fd inheritable(::open("/dev/null", O_RDONLY));
    Fd private_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(inheritable && private_fd);
    auto options = command(
        {"sh", "-c",
         "for fd in \"$@\"; do if [ -e /proc/self/fd/$fd ]; then echo open; else echo closed; fi; done", "sh",
         std::to_string(inheritable.get()), std::to_string(private_fd.get())});
    options.close_other_fds = false;
    auto finished = run(options);
    EXPECT_EQ(finished.output, "open\nclosed\n");

    options.close_other_fds = true;
    EXPECT_EQ(run(options).output, "closed\nclosed\n");
}

TEST(ChildFds, KeepFdsStayAtTheirNumbersEvenIfCloexec) {
    Pipe kept;
    ASSERT_TRUE(is_cloexec(kept.write_end.get()));
    int number = kept.write_end.get();
    auto options = command({"sh", "-c", "echo kept >&" + std::to_string(number)});
    options.keep_fds = {number};
    auto child = Child::spawn(options);
    EXPECT_TRUE(is_cloexec(number)) << "FD_CLOEXEC must be cleared in the child only";
    kept.write_end.reset();
    EXPECT_EQ(read_all(kept.read_end.get()), "kept\n");
    ASSERT_TRUE(child.wait(10s));
}

TEST(ChildFds, StdioReplacements) {
    Pipe in, err;
    if (::write(in.write_end.get(), "from stdin\n", 11) != 11) throw_errno("write");
    in.write_end.reset();
    auto options = command({"sh", "-c", "read line; echo \"$line\" >&2"});
    options.stdin_fd = in.read_end.get();
    options.stderr_fd = err.write_end.get();
    auto child = Child::spawn(options);
    err.write_end.reset();
    EXPECT_EQ(read_all(err.read_end.get()), "from stdin\n");
    ASSERT_TRUE(child.wait(10s));
}

TEST(ChildFds, SpawnAndWaitLeakNoDescriptorInTheParent) {
    int before = count_open_fds();
    {
        auto child = Child::spawn(command({"true"}));
        EXPECT_EQ(count_open_fds(), before + 1);  // the pidfd
        EXPECT_TRUE(is_cloexec(child.pidfd()));
        ASSERT_TRUE(child.wait(10s));
    }
    EXPECT_EQ(count_open_fds(), before);
}

// ---- environment ----

TEST(ChildEnvironment, ListenFdsEnvNamesTheChildItselfAndCountsPassFds) {
    Pipe a, b;
    EnvGuard stale("LISTEN_PID", "1");  // an inherited value must not leak through
    auto options = command({"sh", "-c", "echo $LISTEN_PID $$ $LISTEN_FDS"});
    options.pass_fds = {a.write_end.get(), b.write_end.get()};
    options.listen_fds_env = true;
    Pipe out;
    options.stdout_fd = out.write_end.get();
    auto child = Child::spawn(options);
    out.write_end.reset();
    auto output = read_all(out.read_end.get());
    ASSERT_TRUE(child.wait(10s));
    std::istringstream fields(output);
    pid_t listen_pid = 0, shell_pid = 0;
    int listen_fds = -1;
    fields >> listen_pid >> shell_pid >> listen_fds;
    EXPECT_EQ(listen_pid, child.pid()) << output;
    EXPECT_EQ(shell_pid, child.pid()) << output;
    EXPECT_EQ(listen_fds, 2) << output;
}

TEST(ChildEnvironment, WithoutListenFdsEnvNoListenVariablesAreAdded) {
    EnvGuard pid("LISTEN_PID", nullptr);
    EnvGuard fds("LISTEN_FDS", nullptr);
    auto finished = run(command({"sh", "-c", "echo \"${LISTEN_PID-unset} ${LISTEN_FDS-unset}\""}));
    EXPECT_EQ(finished.output, "unset unset\n");
}

TEST(ChildEnvironment, SetEnvAddsAndReplacesAndUnsetEnvRemoves) {
    EnvGuard replaced("KTRICKS_TEST_REPLACED", "old");
    EnvGuard removed("KTRICKS_TEST_REMOVED", "present");
    EnvGuard kept("KTRICKS_TEST_KEPT", "kept");
    auto options = command({"sh", "-c",
                            "echo \"$KTRICKS_TEST_NEW|$KTRICKS_TEST_REPLACED|${KTRICKS_TEST_REMOVED-unset}|"
                            "$KTRICKS_TEST_KEPT|$KTRICKS_TEST_EQUALS\""});
    options.set_env = {"KTRICKS_TEST_NEW=new", "KTRICKS_TEST_REPLACED=new value", "KTRICKS_TEST_EQUALS=a=b"};
    options.unset_env = {"KTRICKS_TEST_REMOVED"};
    EXPECT_EQ(run(options).output, "new|new value|unset|kept|a=b\n");
}

TEST(ChildEnvironment, ReplacedVariableAppearsOnce) {
    EnvGuard replaced("KTRICKS_TEST_REPLACED", "old");
    auto options = command({"env"});
    options.set_env = {"KTRICKS_TEST_REPLACED=new"};
    auto output = run(options).output;
    std::istringstream lines(output);
    int count = 0;
    for (std::string line; std::getline(lines, line);)
        if (line.starts_with("KTRICKS_TEST_REPLACED=")) {
            ++count;
            EXPECT_EQ(line, "KTRICKS_TEST_REPLACED=new");
        }
    EXPECT_EQ(count, 1);
}

// ---- process state ----

TEST(ChildProcessState, SignalMaskAndIgnoredSignalsAreResetEvenIfTheParentChangedThem) {
    SignalMaskGuard mask;
    SignalActionGuard ignore_pipe(SIGPIPE, SIG_IGN);
    ASSERT_EQ(block_signal(SIGTERM), 0);
    auto output = run(command({"grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"})).output;
    EXPECT_EQ(output, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

TEST(ChildProcessState, WorkingDirectory) {
    TempDir dir;
    auto options = command({"pwd", "-P"});
    options.working_directory = dir.path().string();
    EXPECT_EQ(run(options).output, dir.path().string() + "\n");
}

TEST(ChildProcessState, NewProcessGroupLeadsItsOwnGroup) {
    auto options = command({"sleep", "30"});
    options.new_process_group = true;
    auto leader = Child::spawn(options);
    EXPECT_EQ(::getpgid(leader.pid()), leader.pid());
    auto member = Child::spawn(command({"sleep", "30"}));
    EXPECT_EQ(::getpgid(member.pid()), ::getpgrp());
}

// ---- waiting, signalling, lifetime ----

TEST(ChildLifetime, WaitWithTimeoutReturnsNulloptWhileRunning) {
    auto child = Child::spawn(command({"sleep", "30"}));
    auto start = Clock::now();
    EXPECT_FALSE(child.wait(50ms));
    EXPECT_GE(Clock::now() - start, 45ms);
    EXPECT_TRUE(child.running());
    EXPECT_FALSE(child.try_wait());
}

TEST(ChildLifetime, WaitReturnsTheSameStatusAgain) {
    auto child = Child::spawn(command({"sh", "-c", "exit 7"}));
    auto first = child.wait(10s);
    ASSERT_TRUE(first);
    EXPECT_FALSE(child.running());
    auto second = child.wait();
    ASSERT_TRUE(second);
    EXPECT_EQ(second->code, 7);
    EXPECT_EQ(child.try_wait()->code, 7);
}

TEST(ChildLifetime, TryWaitReapsAnExitedChildWithoutBlocking) {
    auto child = Child::spawn(command({"true"}));
    ASSERT_TRUE(readable_within(child.pidfd(), 10s));  // the pidfd turns readable at exit
    auto status = child.try_wait();
    ASSERT_TRUE(status);
    EXPECT_EQ(status->code, 0);
    EXPECT_TRUE(reaped(child.pid()));
}

TEST(ChildLifetime, SignalReachesARunningChild) {
    auto child = Child::spawn(command({"sleep", "30"}));
    EXPECT_TRUE(child.signal(SIGTERM));
    auto status = child.wait(10s);
    ASSERT_TRUE(status);
    EXPECT_TRUE(status->signaled);
    EXPECT_EQ(status->code, SIGTERM);
    EXPECT_EQ(status->shell_status(), 128 + SIGTERM);
}

TEST(ChildLifetime, SignalAfterWaitReturnsFalse) {
    auto child = Child::spawn(command({"true"}));
    ASSERT_TRUE(child.wait(10s));
    EXPECT_FALSE(child.signal(SIGTERM));
}

TEST(ChildLifetime, SignalAfterExitButBeforeWaitReturnsFalse) {
    auto child = Child::spawn(command({"true"}));
    ASSERT_TRUE(readable_within(child.pidfd(), 10s));
    EXPECT_FALSE(child.signal(SIGTERM));
    auto status = child.wait(10s);
    ASSERT_TRUE(status);
    EXPECT_FALSE(status->signaled);
}

TEST(ChildLifetime, DestructorKillsAndReapsARunningChild) {
    pid_t pid;
    {
        auto child = Child::spawn(command({"sleep", "30"}));
        pid = child.pid();
        ASSERT_EQ(::kill(pid, 0), 0);
    }
    EXPECT_TRUE(reaped(pid)) << "pid " << pid << " is still our child";
    EXPECT_FALSE(std::filesystem::exists("/proc/" + std::to_string(pid)));
}

TEST(ChildLifetime, MoveTransfersTheChild) {
    auto first = Child::spawn(command({"sleep", "30"}));
    pid_t pid = first.pid();
    Child second(std::move(first));
    EXPECT_EQ(second.pid(), pid);
    EXPECT_EQ(first.pid(), -1);  // NOLINT(bugprone-use-after-move)
    EXPECT_FALSE(first.signal(SIGTERM));
    EXPECT_TRUE(second.running());
    EXPECT_EQ(::kill(pid, 0), 0);
}

TEST(ChildLifetime, MoveAssignmentKillsTheChildItReplaces) {
    auto target = Child::spawn(command({"sleep", "30"}));
    pid_t replaced = target.pid();
    target = Child::spawn(command({"sleep", "30"}));
    EXPECT_NE(target.pid(), replaced);
    EXPECT_TRUE(reaped(replaced));
}

TEST(ChildLifetime, DetachedChildOutlivesItsChildObject) {
    pid_t pid;
    {
        auto child = Child::spawn(command({"sleep", "30"}));
        pid = child.pid();
        child.detach();
    }
    // Still running and still ours to reap.
    struct Reaper {
        pid_t pid;
        ~Reaper() {
            ::kill(pid, SIGKILL);
            int status;
            ::waitpid(pid, &status, 0);
        }
    } reaper{pid};
    EXPECT_EQ(::kill(pid, 0), 0);
    int status;
    EXPECT_EQ(::waitpid(pid, &status, WNOHANG), 0);
}

TEST(ChildLifetime, OpenPidfdOfAMissingProcessNamesThePid) {
    try {
        open_pidfd(0x3fffffff);
        FAIL();
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), ESRCH);
        EXPECT_EQ(std::string(error.what()).rfind("pidfd_open pid 1073741823", 0), 0u) << error.what();
    }
}

TEST(ChildFindProgram, SearchesPathLikeExecvp) {
    EXPECT_EQ(find_program("/bin/sh"), "/bin/sh");
    auto sh = find_program("sh");
    EXPECT_TRUE(sh.ends_with("/sh")) << sh;
    EXPECT_EQ(::access(sh.c_str(), X_OK), 0);
}

TEST(ChildFindProgram, MissingProgramIsTheSameSpawnErrorSpawnGives) {
    try {
        find_program("nosuchprogram-ktricks");
        FAIL() << "find_program found a program that does not exist";
    } catch (const SpawnError& error) {
        EXPECT_EQ(error.code().value(), ENOENT);
        EXPECT_STREQ(error.what(), "exec nosuchprogram-ktricks: No such file or directory");
        EXPECT_EQ(exit_status_for(error), 127);
    }
}

}  // namespace
}  // namespace ktricks
