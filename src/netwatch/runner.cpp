#include "netwatch/runner.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ktricks/core/error.hpp"

namespace ktricks::netwatch {

using Clock = std::chrono::steady_clock;

struct Runner::Running {
    Job job;
    std::optional<Child> child;
    EventLoop::SourceId exit_source = 0, timeout_source = 0, kill_source = 0;
    Clock::time_point started;
    bool timed_out = false;
};

Runner::Runner(EventLoop& loop, int script_stdout, std::function<void(const JobReport&)> report)
    : loop_(loop), script_stdout_(script_stdout), report_(std::move(report)) {}

Runner::~Runner() {
    for (auto& [name, queue] : queues_) {
        if (!queue.running) continue;
        loop_.remove(queue.running->exit_source);
        loop_.remove(queue.running->timeout_source);
        loop_.remove(queue.running->kill_source);
        // Child's destructor kills and reaps a script still running when we stop.
    }
}

std::size_t Runner::busy() const noexcept {
    std::size_t count = 0;
    for (const auto& [name, queue] : queues_) count += queue.waiting.size() + (queue.running ? 1 : 0);
    return count;
}

void Runner::submit(Job job) {
    std::string name = job.queue;
    auto& queue = queues_[name];
    queue.waiting.push_back(std::move(job));
    if (!queue.running) start_next(name);
}

void Runner::start_next(const std::string& name) {
    auto it = queues_.find(name);
    if (it == queues_.end()) return;
    auto& queue = it->second;
    while (!queue.running && !queue.waiting.empty()) {
        auto running = std::make_unique<Running>();
        running->job = std::move(queue.waiting.front());
        queue.waiting.pop_front();
        const Job& job = running->job;
        try {
            Fd input(::memfd_create("netwatch-event", MFD_CLOEXEC));
            if (!input) throw_errno("memfd_create", "event input");
            if (!job.input.empty() && ::write(input.get(), job.input.data(), job.input.size()) < 0)
                throw_errno("write", "event input");
            ::lseek(input.get(), 0, SEEK_SET);
            SpawnOptions spawn;
            spawn.argv = job.argv;
            spawn.set_env = job.env;
            spawn.stdin_fd = input.get();
            if (script_stdout_ >= 0) spawn.stdout_fd = script_stdout_;
            // Own process group, so the timeout kills what the script started too.
            spawn.new_process_group = true;
            running->started = Clock::now();
            running->child.emplace(Child::spawn(spawn));
        } catch (const std::exception& error) {
            JobReport report;
            report.label = job.label;
            report.queue = name;
            report.error = error.what();
            report_(report);
            continue;
        }
        Running* raw = running.get();
        raw->exit_source = loop_.add_child(raw->child->pidfd(), [this, name] { finished(name, false); });
        raw->timeout_source = loop_.add_timer(job.timeout, [this, raw] {
            raw->timeout_source = 0;
            raw->timed_out = true;
            ::kill(-raw->child->pid(), SIGTERM);
            raw->kill_source = loop_.add_timer(std::chrono::seconds(1), [raw] {
                raw->kill_source = 0;
                ::kill(-raw->child->pid(), SIGKILL);
            });
        });
        queue.running = std::move(running);
    }
}

void Runner::finished(const std::string& name, bool) {
    auto& queue = queues_[name];
    if (!queue.running) return;
    auto running = std::move(queue.running);
    loop_.remove(running->exit_source);
    loop_.remove(running->timeout_source);
    loop_.remove(running->kill_source);
    JobReport report;
    report.label = running->job.label;
    report.queue = name;
    report.status = running->child->wait().value_or(ExitStatus{});
    report.timed_out = running->timed_out;
    report.latency = std::chrono::duration_cast<std::chrono::milliseconds>(running->started - running->job.event_time);
    report.duration = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - running->started);
    report_(report);
    start_next(name);
    if (queue.waiting.empty() && !queue.running) queues_.erase(name);
}

}  // namespace ktricks::netwatch
