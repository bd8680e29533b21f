// Runner: runs user scripts for events without ever blocking the caller's event loop.
//
// Jobs carry a key ("rule 2/eth0", "shop.orders"); jobs of one key run one at a time, in
// submission order, and different keys run in parallel up to a concurrency limit (waiting keys
// start in the order they became ready). Each script is a Child in its own process group, watched
// through its pidfd on the caller's EventLoop. Its stdin is a memfd holding the event (usually its
// JSON line), so a script that never reads stdin cannot stall us on a full pipe. Its environment
// is clean: PATH and our KTRICKS_* variables, plus what the job adds; nothing else of ours leaks
// into a script (credentials, NOTIFY_SOCKET, LISTEN_FDS). Past its timeout the whole group gets
// SIGTERM, and SIGKILL one second later, so what the script started dies with it.
//
// Every job ends in one JobReport (exit status, timeout, duration), delivered on the loop.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ktricks/core/child.hpp"
#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"

namespace ktricks {

struct Job {
    std::string key;                // jobs of one key run one after another
    std::vector<std::string> argv;  // e.g. {"/bin/sh", "-c", command}
    std::vector<std::string> env;   // "KEY=VALUE" added to the clean environment
    // false: only PATH is inherited, not our KTRICKS_* (NetworkManager-dispatcher scripts get
    // PATH and NetworkManager's variables, nothing else).
    bool inherit_ktricks_env = true;
    std::optional<std::string> working_directory;  // unset: ours
    std::string input;                             // the script's stdin
    std::chrono::milliseconds timeout{60000};
    std::string label;  // "rule 2 (link-up veth0)" for reports
    std::chrono::steady_clock::time_point event_time = std::chrono::steady_clock::now();
};

struct JobReport {
    std::string label;
    std::string key;
    pid_t pid = 0;
    ExitStatus status;
    bool timed_out = false;
    std::string error;                      // the script could not be started
    std::chrono::milliseconds latency{0};   // event -> script started
    std::chrono::milliseconds duration{0};  // script started -> ended

    bool failed() const noexcept {
        return !error.empty() || timed_out || status.signaled || status.code != 0;
    }
    // {"source":SOURCE,"event":"script-done"|"script-failed"|"script-timeout","script":LABEL,
    //  "latency_ms","duration_ms","status"|"error"}
    Event to_event(std::string_view source) const;
    // One line for a log: "LABEL: timed out after N ms, killed (killed by signal 15 (Terminated))".
    std::string describe() const;
};

struct RunnerOptions {
    std::size_t concurrency = 8;  // scripts running at once over all keys (0: no limit)
    int script_stdout = -1;       // the scripts' stdout (-1: ours)
};

class Runner {
public:
    Runner(EventLoop& loop, RunnerOptions options, std::function<void(const JobReport&)> report);
    // Kills every script still running (SIGKILL to its process group) and reaps it; waiting jobs
    // are dropped.
    ~Runner();
    Runner(const Runner&) = delete;
    Runner& operator=(const Runner&) = delete;

    void submit(Job job);
    // Kills what runs (SIGKILL to each group) and drops what waits; no reports for them.
    void stop() noexcept;

    std::size_t busy() const noexcept;     // jobs running or waiting
    std::size_t running() const noexcept;  // scripts running now
    // True if `pid` is one of our running scripts (procwatch must not report its own children).
    bool runs(pid_t pid) const noexcept;

private:
    struct Running;
    struct Queue {
        std::deque<Job> waiting;
        std::unique_ptr<Running> running;
    };
    void pump();
    bool start(const std::string& key, Queue& queue);
    void finished(const std::string& key);

    EventLoop& loop_;
    RunnerOptions options_;
    std::function<void(const JobReport&)> report_;
    std::map<std::string, Queue> queues_;
    std::deque<std::string> ready_;  // keys with a waiting job and nothing running, oldest first
    std::size_t running_ = 0;
};

}  // namespace ktricks
