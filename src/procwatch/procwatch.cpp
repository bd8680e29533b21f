// procwatch: the proc connector's events (subscribed and decoded by netlink::ProcConnector), named
// and filtered.
#include "ktricks/procwatch.hpp"

#include <fnmatch.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <pwd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "ktricks/core/error.hpp"
#include "ktricks/core/proc.hpp"
#include "ktricks/netlink.hpp"

namespace ktricks::procwatch {

const char* to_string(EventType type) noexcept {
    switch (type) {
        case EventType::fork: return "fork";
        case EventType::exec: return "exec";
        case EventType::uid: return "uid";
        case EventType::gid: return "gid";
        case EventType::sid: return "sid";
        case EventType::ptrace: return "ptrace";
        case EventType::comm: return "comm";
        case EventType::coredump: return "coredump";
        case EventType::exit: return "exit";
    }
    return "?";
}

std::optional<EventType> parse_event_type(std::string_view name) {
    for (auto type : {EventType::fork, EventType::exec, EventType::uid, EventType::gid, EventType::sid,
                      EventType::ptrace, EventType::comm, EventType::coredump, EventType::exit})
        if (name == to_string(type)) return type;
    return std::nullopt;
}

namespace {

// The netlink layer's event in procwatch's terms; nullopt for a type procwatch does not report.
std::optional<ProcessEvent> convert(netlink::ProcEvent raw) {
    ProcessEvent out;
    switch (raw.what) {
        case proc_event::PROC_EVENT_FORK: out.type = EventType::fork; break;
        case proc_event::PROC_EVENT_EXEC: out.type = EventType::exec; break;
        case proc_event::PROC_EVENT_UID: out.type = EventType::uid; break;
        case proc_event::PROC_EVENT_GID: out.type = EventType::gid; break;
        case proc_event::PROC_EVENT_SID: out.type = EventType::sid; break;
        case proc_event::PROC_EVENT_PTRACE: out.type = EventType::ptrace; break;
        case proc_event::PROC_EVENT_COMM: out.type = EventType::comm; break;
        case proc_event::PROC_EVENT_COREDUMP: out.type = EventType::coredump; break;
        case proc_event::PROC_EVENT_EXIT: out.type = EventType::exit; break;
        default: return std::nullopt;
    }
    out.timestamp_ns = raw.timestamp_ns;
    out.cpu = raw.cpu;
    out.pid = raw.pid;
    out.tgid = raw.tgid;
    out.parent_pid = raw.parent_pid;
    out.parent_tgid = raw.parent_tgid;
    out.uid = raw.uid;
    out.euid = raw.euid;
    out.tracer_pid = raw.tracer_pid;
    out.tracer_tgid = raw.tracer_tgid;
    out.exit_code = raw.exit_code;
    out.exit_signal = raw.exit_signal;
    out.comm = std::move(raw.comm);
    return out;
}

}  // namespace

std::optional<ProcessEvent> decode(const nlmsghdr& message) {
    auto raw = netlink::decode_proc_event(message);
    return raw ? convert(std::move(*raw)) : std::nullopt;
}

namespace {

std::optional<std::string> read_comm(pid_t pid) {
    std::ifstream file(fmt::format("/proc/{}/comm", pid));
    std::string line;
    if (!file || !std::getline(file, line)) return std::nullopt;
    return line;
}

std::optional<std::uint32_t> read_uid(pid_t pid) {
    auto uids = process_status_field(pid, "Uid");  // real, effective, saved, filesystem
    if (!uids) return std::nullopt;
    return static_cast<std::uint32_t>(std::strtoul(uids->c_str(), nullptr, 10));
}

std::string user_name(std::uint32_t uid) {
    static std::unordered_map<std::uint32_t, std::string> cache;
    if (auto found = cache.find(uid); found != cache.end()) return found->second;
    passwd entry{}, *result = nullptr;
    char buffer[4096];
    ::getpwuid_r(uid, &entry, buffer, sizeof(buffer), &result);
    return cache[uid] = result ? result->pw_name : "";
}

// What we last knew of each live process, so its exit can still be named. Bounded: entries are
// dropped at exit, and the table is cleared if it ever grows past a limit (a lost exit event).
struct Remembered {
    std::vector<std::string> command;
    std::string comm;
    std::optional<std::uint32_t> uid;
};

class Memory {
public:
    Remembered* find(pid_t pid) {
        auto found = table_.find(pid);
        return found == table_.end() ? nullptr : &found->second;
    }
    void put(pid_t pid, Remembered value) {
        if (table_.size() > 100000) table_.clear();
        table_[pid] = std::move(value);
    }
    void forget(pid_t pid) { table_.erase(pid); }

private:
    std::unordered_map<pid_t, Remembered> table_;
};

Enrichment enrich(const ProcessEvent& event, Memory& memory) {
    Enrichment out;
    pid_t pid = event.tgid;
    if (event.type != EventType::exit) {
        auto comm = read_comm(event.thread() ? event.pid : pid);
        auto command = process_command_line(pid);
        auto uid = read_uid(pid);
        if (comm && command && uid) {
            out.readable = true;
            out.comm = *comm;
            out.command = *command;
            out.uid = uid;
            if (!event.thread()) memory.put(pid, {out.command, out.comm, out.uid});
        }
    }
    if (!out.readable)
        if (Remembered* known = memory.find(pid)) {
            out.command = known->command;
            out.comm = known->comm;
            out.uid = known->uid;
        }
    if (event.type == EventType::exit && !event.thread()) memory.forget(pid);
    if (out.uid) out.user = user_name(*out.uid);
    return out;
}

bool matches(const Options& options, const ProcessEvent& event, const Enrichment& enrichment) {
    if (!options.threads && event.thread()) return false;
    if (!options.events.empty() &&
        std::find(options.events.begin(), options.events.end(), event.type) == options.events.end())
        return false;
    if (!options.comm_glob.empty()) {
        std::string comm = event.type == EventType::comm ? event.comm : enrichment.comm;
        if (::fnmatch(options.comm_glob.c_str(), comm.c_str(), 0) != 0) return false;
    }
    if (options.uid && (!enrichment.uid || *enrichment.uid != *options.uid)) return false;
    return true;
}

}  // namespace

Event to_event(const ProcessEvent& event, const Enrichment& enrichment) {
    Event line("procwatch", to_string(event.type));
    line.set("pid", event.tgid);
    if (event.thread()) line.set("tid", event.pid);
    if (event.parent_tgid) line.set("ppid", event.parent_tgid);
    if (event.type == EventType::exit) {
        if (event.killed_by()) line.set("signal", event.killed_by());
        else
            line.set("exit_code", event.exit_status());
    }
    if (event.type == EventType::uid || event.type == EventType::gid)
        line.set("real", event.uid).set("effective", event.euid);
    if (event.type == EventType::ptrace) line.set("tracer", event.tracer_tgid);
    if (event.type == EventType::comm) line.set("new_comm", printable(event.comm));
    line.set("comm", printable(enrichment.comm)).set("command", enrichment.command);
    if (enrichment.uid) line.set("uid", *enrichment.uid).set("user", enrichment.user);
    line.set("readable", enrichment.readable);
    return line;
}

class Watcher::Impl {
public:
    Impl(EventLoop& loop, Options options, Callbacks callbacks)
        : loop_(loop), options_(std::move(options)), callbacks_(std::move(callbacks)) {}
    ~Impl() { stop(); }

    void start() {
        socket_.emplace(netlink::ProcConnector::open(options_.receive_buffer));
        source_ = loop_.add_fd(socket_->fd(), EPOLLIN, [this](std::uint32_t) { read(); });
    }

    void stop() noexcept {
        loop_.remove(source_);
        source_ = 0;
        // Closing the socket is the unsubscription: the kernel counts listeners per socket.
        socket_.reset();
    }

private:
    void read() {
        while (socket_) {
            auto received = socket_->receive([&](const netlink::ProcEvent& raw) {
                auto event = convert(raw);
                if (!event) return;
                // Our own children's events (and their descendants') would feed back into --exec.
                auto ignored = [&](pid_t pid) {
                    return descendants_.count(pid) || (callbacks_.ignore && callbacks_.ignore(pid));
                };
                if (event->type == EventType::fork && ignored(event->parent_tgid)) {
                    descendants_.insert(event->tgid);
                    return;
                }
                if (ignored(event->tgid)) {
                    if (event->type == EventType::exit && !event->thread()) descendants_.erase(event->tgid);
                    return;
                }
                Enrichment enrichment = enrich(*event, memory_);
                if (matches(options_, *event, enrichment) && callbacks_.on_event)
                    callbacks_.on_event(*event, enrichment);
            });
            if (received == netlink::Received::would_block) break;
            if (received == netlink::Received::overrun && callbacks_.on_lost) callbacks_.on_lost();
        }
    }

    EventLoop& loop_;
    const Options options_;
    const Callbacks callbacks_;
    std::optional<netlink::ProcConnector> socket_;
    EventLoop::SourceId source_ = 0;
    Memory memory_;
    std::unordered_set<pid_t> descendants_;
};

Watcher::Watcher(EventLoop& loop, Options options, Callbacks callbacks)
    : impl_(std::make_unique<Impl>(loop, std::move(options), std::move(callbacks))) {}
Watcher::~Watcher() = default;
void Watcher::start() { impl_->start(); }
void Watcher::stop() noexcept { impl_->stop(); }

}  // namespace ktricks::procwatch
