// Runner: the one script runner behind every --exec (per-key order, concurrency, timeouts, clean
// environment), run against real /bin/sh scripts on a real EventLoop.
#include "ktricks/core/runner.hpp"

#include <signal.h>
#include <stdlib.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "test_support.hpp"

namespace ktricks {
namespace {

using namespace std::chrono_literals;
using namespace test_support;
using Clock = std::chrono::steady_clock;

std::string slurp(const std::filesystem::path& path) {
    std::ifstream file(path);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
}

Job shell(std::string key, std::string command, std::chrono::milliseconds timeout = 10s) {
    Job job;
    job.key = std::move(key);
    job.argv = {"/bin/sh", "-c", std::move(command)};
    job.timeout = timeout;
    job.label = job.argv.back();
    return job;
}

// Runs the loop until every job reported or `limit` passed; returns the reports.
struct Harness {
    EventLoop loop;
    std::vector<JobReport> reports;
    Runner runner;
    explicit Harness(RunnerOptions options = {})
        : runner(loop, options, [this](const JobReport& report) { reports.push_back(report); }) {}
    void run(std::size_t count, std::chrono::milliseconds limit = 10s) {
        auto deadline = Clock::now() + limit;
        while (reports.size() < count && Clock::now() < deadline) loop.run_once(100ms);
    }
};

TEST(Runner, JobsOfOneKeyRunInSubmissionOrderOneAtATime) {
    TempDir dir;
    auto log = dir.path() / "log";
    Harness h;
    for (int i = 0; i < 5; ++i)
        h.runner.submit(shell(
            "k", fmt::format("echo start{0} >> {1}; sleep 0.0{0}; echo end{0} >> {1}", 5 - i, log.string())));
    h.run(5);
    ASSERT_EQ(h.reports.size(), 5u);
    EXPECT_EQ(slurp(log), "start5\nend5\nstart4\nend4\nstart3\nend3\nstart2\nend2\nstart1\nend1\n");
}

TEST(Runner, DifferentKeysRunInParallel) {
    Harness h;
    auto begin = Clock::now();
    for (int i = 0; i < 4; ++i) h.runner.submit(shell(fmt::format("k{}", i), "sleep 0.5"));
    EXPECT_EQ(h.runner.running(), 4u);
    h.run(4);
    ASSERT_EQ(h.reports.size(), 4u);
    EXPECT_LT(Clock::now() - begin, 1500ms);
}

TEST(Runner, ConcurrencyLimitHoldsBackOtherKeys) {
    TempDir dir;
    auto log = dir.path() / "log";
    Harness h({.concurrency = 2});
    // Each script records how many scripts were running when it started (files present).
    for (int i = 0; i < 6; ++i)
        h.runner.submit(
            shell(fmt::format("k{}", i),
                  fmt::format("touch {0}/run.$$; ls {0} | grep -c '^run' >> {1}; sleep 0.2; rm {0}/run.$$",
                              dir.path().string(), log.string())));
    EXPECT_EQ(h.runner.running(), 2u);
    EXPECT_EQ(h.runner.busy(), 6u);
    h.run(6);
    ASSERT_EQ(h.reports.size(), 6u);
    std::istringstream counts(slurp(log));
    int seen = 0;
    for (int count; counts >> count; ++seen) EXPECT_LE(count, 2);
    EXPECT_EQ(seen, 6);
}

TEST(Runner, TimeoutKillsTheWholeProcessGroup) {
    TempDir dir;
    auto pids = dir.path() / "pids";
    Harness h;
    // The shell starts a background sleeper that ignores nothing and would outlive a killed shell.
    h.runner.submit(shell("k", fmt::format("sleep 30 & echo $! > {}; wait", pids.string()), 300ms));
    h.run(1, 5s);
    ASSERT_EQ(h.reports.size(), 1u);
    EXPECT_TRUE(h.reports[0].timed_out);
    EXPECT_TRUE(h.reports[0].failed());
    EXPECT_EQ(h.reports[0].to_event("test").json()["event"], "script-timeout");
    pid_t sleeper = std::stoi(slurp(pids));
    // Reaped by init or already gone: either way it must not exist (or be a zombie) shortly after.
    bool gone = false;
    for (int i = 0; i < 100 && !gone; ++i) {
        std::string state = slurp(fmt::format("/proc/{}/stat", sleeper));
        gone = state.empty() || state.find(") Z") != std::string::npos;
        if (!gone) std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(gone) << "the script's background child survived its timeout";
}

TEST(Runner, ScriptsSeeOnlyPathKtricksVariablesAndTheirOwn) {
    TempDir dir;
    auto out = dir.path() / "env";
    ::setenv("KTRICKS_RUNNER_TEST", "kept", 1);
    ::setenv("RUNNER_TEST_SECRET", "leaked", 1);
    Harness h;
    Job job = shell("k", fmt::format("env > {}", out.string()));
    job.env = {"KTRICKS_EVENT=change"};
    h.runner.submit(std::move(job));
    h.run(1);
    ::unsetenv("KTRICKS_RUNNER_TEST");
    ::unsetenv("RUNNER_TEST_SECRET");
    ASSERT_EQ(h.reports.size(), 1u);
    std::string env = slurp(out);
    EXPECT_NE(env.find("KTRICKS_RUNNER_TEST=kept\n"), std::string::npos) << env;
    EXPECT_NE(env.find("KTRICKS_EVENT=change\n"), std::string::npos) << env;
    EXPECT_NE(env.find("PATH="), std::string::npos) << env;
    EXPECT_EQ(env.find("RUNNER_TEST_SECRET"), std::string::npos) << env;
    EXPECT_EQ(env.find("HOME="), std::string::npos) << env;
}

TEST(Runner, InputArrivesOnStdinAndStatusAndDurationAreReported) {
    TempDir dir;
    auto out = dir.path() / "in";
    Harness h;
    Job job = shell("k", fmt::format("cat > {}; sleep 0.1; exit 3", out.string()));
    job.input = "{\"event\":\"x\"}\n";
    h.runner.submit(std::move(job));
    h.run(1);
    ASSERT_EQ(h.reports.size(), 1u);
    EXPECT_EQ(slurp(out), "{\"event\":\"x\"}\n");
    EXPECT_EQ(h.reports[0].status.code, 3);
    EXPECT_FALSE(h.reports[0].timed_out);
    EXPECT_GE(h.reports[0].duration, 100ms);
    EXPECT_EQ(h.reports[0].to_event("test").json()["event"], "script-failed");
}

TEST(Runner, ProgramThatCannotStartIsReportedAndTheQueueGoesOn) {
    Harness h;
    Job missing;
    missing.key = "k";
    missing.argv = {"/nonexistent/ktricks-no-such-program"};
    missing.label = "missing";
    h.runner.submit(std::move(missing));
    h.runner.submit(shell("k", "exit 0"));
    h.run(2);
    ASSERT_EQ(h.reports.size(), 2u);
    EXPECT_FALSE(h.reports[0].error.empty());
    EXPECT_FALSE(h.reports[1].failed());
}

TEST(Runner, StopKillsRunningScriptsAtOnce) {
    TempDir dir;
    auto pids = dir.path() / "pids";
    Harness h;
    h.runner.submit(shell("k", fmt::format("sleep 30 & echo $! > {}; wait", pids.string())));
    h.runner.submit(shell("k", "exit 0"));
    ASSERT_TRUE([&] {
        for (int i = 0; i < 200; ++i) {
            if (!slurp(pids).empty()) return true;
            std::this_thread::sleep_for(10ms);
        }
        return false;
    }());
    auto begin = Clock::now();
    h.runner.stop();
    EXPECT_LT(Clock::now() - begin, 500ms);
    EXPECT_EQ(h.runner.busy(), 0u);
    pid_t sleeper = std::stoi(slurp(pids));
    std::this_thread::sleep_for(50ms);
    std::string state = slurp(fmt::format("/proc/{}/stat", sleeper));
    EXPECT_TRUE(state.empty() || state.find(") Z") != std::string::npos) << state;
}

}  // namespace
}  // namespace ktricks
