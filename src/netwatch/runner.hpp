// Runs scripts for events without ever blocking the caller (the netlink reader).
//
// Jobs go into named queues ("rule 2/eth0"); a queue runs one job at a time, in submission order,
// and queues run in parallel. Each script is a Child watched through its pidfd on the event loop;
// its input (the event JSON) is a memfd, so a script that never reads stdin cannot stall us on a
// full pipe. Past its timeout a script gets SIGTERM, and SIGKILL a second later.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ktricks/core/child.hpp"
#include "ktricks/core/event_loop.hpp"

namespace ktricks::netwatch {

struct Job {
    std::string queue;                 // jobs of one queue run one after another
    std::vector<std::string> argv;
    std::vector<std::string> env;      // added to our environment
    std::string input;                 // the script's stdin
    std::chrono::milliseconds timeout{60000};
    std::string label;                 // "rule 2 (link-up veth0)" for reports
    std::chrono::steady_clock::time_point event_time;  // when the event was read
};

struct JobReport {
    std::string label;
    std::string queue;
    ExitStatus status;
    bool timed_out = false;
    std::string error;                 // the script could not be started
    std::chrono::milliseconds latency{0};   // event read -> script started
    std::chrono::milliseconds duration{0};  // script started -> ended
};

class Runner {
public:
    Runner(EventLoop& loop, int script_stdout, std::function<void(const JobReport&)> report);
    ~Runner();
    Runner(const Runner&) = delete;
    Runner& operator=(const Runner&) = delete;

    void submit(Job job);
    // Number of jobs running or waiting.
    std::size_t busy() const noexcept;

private:
    struct Running;
    struct Queue {
        std::deque<Job> waiting;
        std::unique_ptr<Running> running;
    };
    void start_next(const std::string& name);
    void finished(const std::string& name, bool timed_out);

    EventLoop& loop_;
    int script_stdout_;
    std::function<void(const JobReport&)> report_;
    std::map<std::string, Queue> queues_;
};

}  // namespace ktricks::netwatch
