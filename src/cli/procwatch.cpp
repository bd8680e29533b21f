// ktricks procwatch: argument parsing for process events (library: ktricks/procwatch.hpp).
#include <signal.h>
#include <unistd.h>

#include <fmt/format.h>

#include <charconv>
#include <memory>

#include "cli/common.hpp"
#include "cli/publish_link.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/proc.hpp"
#include "ktricks/core/runner.hpp"
#include "ktricks/procwatch.hpp"

namespace ktricks::cli {
namespace {

struct ProcwatchOptions {
    std::vector<std::string> events;
    std::string comm;
    std::string uid;
    std::string exec;
    ExecFlags exec_flags;
    bool threads = false;
    bool json = false;
    std::string duration;
    PublishFlags publish;
};

std::string describe(const procwatch::ProcessEvent& event) {
    using procwatch::EventType;
    switch (event.type) {
        case EventType::fork: return fmt::format("parent={}", event.parent_tgid);
        case EventType::exit:
            if (event.killed_by())
                return fmt::format("signal={}{}", event.killed_by(), event.exit_code & 0x80 ? " core" : "");
            return fmt::format("status={}", event.exit_status());
        case EventType::uid: return fmt::format("ruid={} euid={}", event.uid, event.euid);
        case EventType::gid: return fmt::format("rgid={} egid={}", event.uid, event.euid);
        case EventType::ptrace:
            return event.tracer_tgid ? fmt::format("tracer={}", event.tracer_tgid) : std::string("detached");
        case EventType::comm: return fmt::format("comm={}", printable(event.comm));
        case EventType::coredump: return fmt::format("parent={}", event.parent_tgid);
        default: return {};
    }
}

int run_procwatch(const ProcwatchOptions& options) {
    procwatch::Options watch_options;
    for (const auto& list : options.events) {
        std::size_t start = 0;
        while (start <= list.size()) {
            auto comma = list.find(',', start);
            std::string name =
                list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
            auto type = procwatch::parse_event_type(name);
            if (!type)
                throw InputError(
                    fmt::format("--event \"{}\": unknown event (expected fork, exec, exit, uid, gid, sid, "
                                "ptrace, comm, coredump)",
                                printable(name)));
            watch_options.events.push_back(*type);
            if (comma == std::string::npos) break;
            start = comma + 1;
        }
    }
    watch_options.comm_glob = options.comm;
    watch_options.threads = options.threads;
    if (!options.uid.empty()) {
        std::uint32_t uid = 0;
        auto [end, error] = std::from_chars(options.uid.data(), options.uid.data() + options.uid.size(), uid);
        if (error != std::errc() || end != options.uid.data() + options.uid.size())
            throw InputError(fmt::format("--uid \"{}\": expected a numeric uid", printable(options.uid)));
        watch_options.uid = uid;
    }
    std::optional<std::chrono::milliseconds> duration;
    if (!options.duration.empty())
        duration = std::chrono::milliseconds(parse_seconds_ms("--duration", options.duration));
    auto timeout = exec_timeout(options.exec_flags);

    EventLoop loop;
    bool signaled = false;
    loop.add_signals({SIGINT, SIGTERM}, [&](const signalfd_siginfo&) {
        signaled = true;
        loop.stop();
    });
    if (duration) loop.add_timer(*duration, [&] { loop.stop(); });
    Runner runner(loop, {.concurrency = options.exec_flags.concurrency}, log_script_end);
    std::optional<PublishLink> link;
    if (!options.publish.url.empty()) {
        link.emplace(loop, options.publish, "procwatch", false);
        link->start();
    }
    procwatch::Callbacks callbacks;
    callbacks.on_event = [&](const procwatch::ProcessEvent& event, const procwatch::Enrichment& enrichment) {
        Event line = procwatch::to_event(event, enrichment);
        if (link) link->send(line);
        if (options.json) {
            fmt::print("{}", line.to_line());
        } else {
            std::string command = enrichment.command.empty() ? std::string() : shell_join(enrichment.command);
            fmt::print("{} {:<8} pid={} {}{} {}{}\n", format_timestamp(std::chrono::system_clock::now()),
                       procwatch::to_string(event.type), event.tgid,
                       event.thread() ? fmt::format("tid={} ", event.pid) : std::string(), describe(event),
                       enrichment.uid
                           ? fmt::format("user={} ", enrichment.user.empty() ? std::to_string(*enrichment.uid)
                                                                             : enrichment.user)
                           : std::string(),
                       command.empty()
                           ? (enrichment.comm.empty() ? std::string("(gone before it could be read)")
                                                      : "[" + printable(enrichment.comm) + "]")
                           : (enrichment.readable ? command : command + " (remembered; gone now)"));
        }
        std::fflush(stdout);
        if (!options.exec.empty()) {
            Job job;
            // One process's scripts run in the order of its events.
            job.key = std::to_string(event.tgid);
            job.argv = {"/bin/sh", "-c", options.exec};
            job.env = line.environment();
            job.input = line.to_line();
            job.timeout = timeout;
            job.label = fmt::format("--exec for {} of pid {}", procwatch::to_string(event.type), event.tgid);
            runner.submit(std::move(job));
        }
    };
    callbacks.on_lost = [&] {
        if (link) link->send(Event("procwatch", "lost").set("reason", "ENOBUFS"));
        if (options.json) fmt::print("{}", Event("procwatch", "lost").set("reason", "ENOBUFS").to_line());
        else
            fmt::print("{} LOST     events were dropped by the kernel (receive buffer overrun)\n",
                       format_timestamp(std::chrono::system_clock::now()));
        std::fflush(stdout);
    };
    pid_t self = ::getpid();
    pid_t helper = link ? link->helper_pid() : -1;
    callbacks.ignore = [&](pid_t pid) { return pid == self || pid == helper || runner.runs(pid); };
    procwatch::Watcher watcher(loop, watch_options, callbacks);
    watcher.start();
    loop.run();
    watcher.stop();
    // After --duration, scripts already started may finish (5 s at most); after a signal they
    // are killed with their process groups.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!signaled && runner.busy() && std::chrono::steady_clock::now() < deadline)
        loop.run_once(std::chrono::milliseconds(100));
    if (link) return finish_publishing(*link);
    return 0;
}

}  // namespace

Subcommand add_procwatch(CLI::App& app) {
    auto options = std::make_shared<ProcwatchOptions>();
    auto* sub = add_subcommand(app, "procwatch");
    sub->add_option("--event", options->events,
                    "Only these events: fork,exec,exit,uid,gid,sid,ptrace,comm,coredump")
        ->delimiter(',');
    sub->add_option("--comm", options->comm, "Only processes whose comm matches this glob");
    sub->add_option("--uid", options->uid, "Only processes with this real uid");
    sub->add_option(
        "--exec", options->exec,
        "Run this shell command for each matching event (env: KTRICKS_EVENT, KTRICKS_PID, KTRICKS_PPID, "
        "KTRICKS_COMM, KTRICKS_COMMAND, KTRICKS_EXIT_CODE, ...: every --json field; the JSON on stdin)");
    add_exec_flags(sub, options->exec_flags);
    sub->add_flag("--threads", options->threads, "Also thread creation and exit");
    sub->add_flag("--json", options->json, "One JSON object per event");
    sub->add_option("--duration", options->duration, "Stop after SECONDS");
    add_publish_flags(sub, options->publish);
    sub->footer(
        "Examples:\n"
        "  ktricks procwatch                                  # everything\n"
        "  ktricks procwatch --event exec,exit --comm 'python*' --json\n"
        "  ktricks procwatch --event exit --exec 'logger \"$KTRICKS_COMM exited $KTRICKS_EXIT_CODE\"'\n"
        "Needs root (CAP_NET_ADMIN).\n"
        "Exit status: 0 when stopped by INT/TERM or --duration; 77 without the privilege.");
    return {sub, [options] { return run_procwatch(*options); }};
}

}  // namespace ktricks::cli
