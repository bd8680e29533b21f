#include "ktricks/core/runner.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>

#include "ktricks/core/error.hpp"

namespace ktricks {

using Clock = std::chrono::steady_clock;

Event JobReport::to_event(std::string_view source) const {
    Event event(source, timed_out ? "script-timeout" : failed() ? "script-failed" : "script-done");
    event.set("script", label).set("latency_ms", latency.count()).set("duration_ms", duration.count());
    if (!error.empty()) event.set("error", error);
    else
        event.set("status", status.to_string());
    return event;
}

std::string JobReport::describe() const {
    if (!error.empty()) return fmt::format("{}: {}", label, error);
    if (timed_out)
        return fmt::format("{}: timed out after {} ms, killed ({})", label, duration.count(),
                           status.to_string());
    return fmt::format("{}: {}", label, status.to_string());
}

struct Runner::Running {
    Job job;
    std::optional<Child> child;
    EventLoop::SourceId exit_source = 0, timeout_source = 0, kill_source = 0;
    Clock::time_point started;
    bool timed_out = false;
};

Runner::Runner(EventLoop& loop, RunnerOptions options, std::function<void(const JobReport&)> report)
    : loop_(loop), options_(options), report_(std::move(report)) {}

Runner::~Runner() { stop(); }

void Runner::stop() noexcept {
    for (auto& [key, queue] : queues_) {
        queue.waiting.clear();
        if (!queue.running) continue;
        auto& running = *queue.running;
        loop_.remove(running.exit_source);
        loop_.remove(running.timeout_source);
        loop_.remove(running.kill_source);
        // The group, not only the shell: `sh -c 'a | b'` leaves a and b running otherwise.
        // Child's destructor then kills and reaps the leader.
        if (running.child && running.child->running()) ::kill(-running.child->pid(), SIGKILL);
    }
    queues_.clear();
    ready_.clear();
    running_ = 0;
}

std::size_t Runner::busy() const noexcept {
    std::size_t count = 0;
    for (const auto& [key, queue] : queues_) count += queue.waiting.size() + (queue.running ? 1 : 0);
    return count;
}

std::size_t Runner::running() const noexcept { return running_; }

bool Runner::runs(pid_t pid) const noexcept {
    return std::any_of(queues_.begin(), queues_.end(), [pid](const auto& entry) {
        return entry.second.running && entry.second.running->child &&
               entry.second.running->child->pid() == pid;
    });
}

void Runner::submit(Job job) {
    std::string key = job.key;
    auto& queue = queues_[key];
    bool was_idle = !queue.running && queue.waiting.empty();
    queue.waiting.push_back(std::move(job));
    if (was_idle) ready_.push_back(key);
    pump();
}

void Runner::pump() {
    while (!ready_.empty() && (options_.concurrency == 0 || running_ < options_.concurrency)) {
        std::string key = std::move(ready_.front());
        ready_.pop_front();
        auto it = queues_.find(key);
        if (it == queues_.end()) continue;
        auto& queue = it->second;
        while (!queue.waiting.empty() && !start(key, queue)) {}
        if (!queue.running && queue.waiting.empty()) queues_.erase(it);
    }
}

// Starts the first waiting job of `queue`; false (after reporting) if it could not be started.
bool Runner::start(const std::string& key, Queue& queue) {
    auto running = std::make_unique<Running>();
    running->job = std::move(queue.waiting.front());
    queue.waiting.pop_front();
    const Job& job = running->job;
    try {
        Fd input(::memfd_create("ktricks-event", MFD_CLOEXEC));
        if (!input) throw_errno("memfd_create", "event input");
        if (!job.input.empty() && ::write(input.get(), job.input.data(), job.input.size()) < 0)
            throw_errno("write", "event input");
        ::lseek(input.get(), 0, SEEK_SET);
        SpawnOptions spawn;
        spawn.argv = job.argv;
        spawn.inherit_env = [ktricks = job.inherit_ktricks_env](std::string_view name) {
            return name == "PATH" || (ktricks && name.starts_with("KTRICKS_"));
        };
        spawn.working_directory = job.working_directory;
        spawn.set_env = job.env;
        spawn.stdin_fd = input.get();
        if (options_.script_stdout >= 0) spawn.stdout_fd = options_.script_stdout;
        spawn.new_process_group = true;
        running->started = Clock::now();
        running->child.emplace(Child::spawn(spawn));
    } catch (const std::exception& error) {
        JobReport report;
        report.label = job.label;
        report.key = key;
        report.error = error.what();
        report_(report);
        return false;
    }
    Running* raw = running.get();
    raw->exit_source = loop_.add_child(raw->child->pidfd(), [this, key] { finished(key); });
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
    ++running_;
    return true;
}

void Runner::finished(const std::string& key) {
    auto it = queues_.find(key);
    if (it == queues_.end() || !it->second.running) return;
    auto& queue = it->second;
    auto running = std::move(queue.running);
    --running_;
    loop_.remove(running->exit_source);
    loop_.remove(running->timeout_source);
    loop_.remove(running->kill_source);
    JobReport report;
    report.label = running->job.label;
    report.key = key;
    report.pid = running->child->pid();
    report.status = running->child->wait().value_or(ExitStatus{});
    // A script killed for its timeout may leave children that ignored SIGTERM; they go with it.
    if (running->timed_out) ::kill(-report.pid, SIGKILL);
    report.timed_out = running->timed_out;
    report.latency =
        std::chrono::duration_cast<std::chrono::milliseconds>(running->started - running->job.event_time);
    report.duration = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - running->started);
    if (queue.waiting.empty()) queues_.erase(it);
    else
        ready_.push_back(key);
    report_(report);
    pump();
}

}  // namespace ktricks
