// The watcher: netlink sockets, the state cache, rules, debounce, scripts, recording and replay.
#include <fcntl.h>
#include <linux/cn_proc.h>
#include <linux/genetlink.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/magic.h>
#include <linux/nl80211.h>
#include <linux/rtnetlink.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "ktricks/core/child.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/runner.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/netlink.hpp"
#include "ktricks/netwatch.hpp"
#include "netwatch/decode.hpp"
#include "netwatch/dispatcher.hpp"
#include "netwatch/record.hpp"
#include "netwatch/state.hpp"

namespace ktricks::netwatch {
namespace {

using Clock = std::chrono::steady_clock;

const char* opposite(const std::string& type) {
    static const std::pair<const char*, const char*> pairs[] = {
        {"link-up", "link-down"},      {"link-add", "link-remove"}, {"addr-add", "addr-remove"},
        {"route-add", "route-remove"}, {"online", "offline"},       {"wifi-connect", "wifi-disconnect"}};
    for (auto [a, b] : pairs) {
        if (type == a) return b;
        if (type == b) return a;
    }
    return nullptr;
}

}  // namespace

class Watcher::Impl {
public:
    Impl(EventLoop& loop, WatchOptions options, Callbacks callbacks)
        : loop_(loop),
          options_(std::move(options)),
          callbacks_(std::move(callbacks)),
          runner_(loop_, {.concurrency = options_.exec_concurrency, .script_stdout = options_.script_stdout},
                  [this](const JobReport& report) { reported(report); }) {}
    ~Impl() { stop(); }

    void start();
    void stop() noexcept;
    bool idle() const noexcept { return !runner_.busy() && debounced_.empty() && held_.empty(); }
    bool wifi() const noexcept { return nl80211_events_.has_value(); }
    std::vector<std::string> namespaces() const {
        std::vector<std::string> names;
        for (const auto& ns : namespaces_) names.push_back(ns->name);
        return names;
    }
    std::string describe_state() const {
        std::string text;
        for (const auto& ns : namespaces_)
            text += (ns->name.empty() ? std::string() : "netns " + ns->name + "\n") + ns->state.describe();
        return text;
    }

private:
    // One watched network namespace: its own rtnetlink socket and cache. The first is ours.
    struct Namespace {
        std::string name;  // "" for our own (unless it has a name in /run/netns); "pid:N" if unnamed
        Fd fd;             // the namespace, for opening sockets inside it; empty for our own
        netlink::NetnsId id;
        // Unnamed (found through a process): a pidfd of one process in it, readable once that
        // process is gone; then another process is looked for, and without one it is dropped.
        bool unnamed = false;
        Fd pidfd;
        EventLoop::SourceId pid_source = 0;
        std::optional<netlink::Socket> rtnl;
        State state;
        EventLoop::SourceId resync_retry = 0;
        EventLoop::SourceId source = 0;
    };
    static std::vector<std::unique_ptr<Namespace>> own_namespace() {
        std::vector<std::unique_ptr<Namespace>> list;
        list.push_back(std::make_unique<Namespace>());
        return list;
    }
    void add_named_namespaces();
    // --all-netns follows /run/netns: namespaces named after start-up are added, deleted ones dropped.
    void watch_netns_folder();
    void netns_folder_changed();
    void add_namespace_later(const std::string& name, int attempt);
    void start_namespace(Namespace& ns, bool initial);
    void forget(Namespace& ns) noexcept;
    // Namespaces without a name (docs/netwatch.md "Namespaces"): found by a /proc scan at start-up,
    // then through the proc connector (exec, fork) and rtnetlink nsid events.
    bool watched(const netlink::NetnsId& id) const;
    void follow_processes();
    void read_processes();
    void process_seen(pid_t pid);
    void scan_processes(bool initial);
    void add_unnamed(pid_t pid, bool initial);
    void anchor_exited(Namespace& ns);
    void cannot_enter(const std::string& what, const std::system_error& error);
    std::optional<netlink::ProcConnector> processes_;
    EventLoop::SourceId processes_source_ = 0;
    bool denied_logged_ = false;
    EventLoop::SourceId scan_timer_ = 0;
    Fd netns_watch_;
    EventLoop::SourceId netns_source_ = 0;
    int netns_folder_wd_ = -1;                                // /run/netns, once it exists
    std::map<std::string, EventLoop::SourceId> netns_retry_;  // named, not yet a namespace
    State& state_of(const std::string& netns);
    netlink::Socket open_socket(Namespace& ns, int protocol);
    // rtnetlink
    void open_rtnl(Namespace& ns);
    State dump_rtnl(Namespace& ns);
    void read_rtnl(Namespace& ns);
    void resync(Namespace& ns, Clock::time_point when);
    // nl80211
    void open_nl80211();
    std::optional<Wifi> query_wifi(int ifindex, const std::string& bssid_hint);
    void dump_wifi(State& into);
    void read_nl80211();
    // A disconnect held back for the roam window (per interface index).
    struct HeldDisconnect {
        Clock::time_point when;
        EventLoop::SourceId timer = 0;
    };
    std::map<int, HeldDisconnect> held_;
    void release_disconnect(int ifindex, std::vector<NetEvent>& events, Clock::time_point* when = nullptr);
    void drop_held_disconnects() noexcept;
    // events
    void emit(std::vector<NetEvent>& events);
    void handle(const NetEvent& event, Clock::time_point when);
    void run_rule(std::size_t index, const NetEvent& event, Clock::time_point when);
    void reported(const JobReport& report);
    void replay();

    EventLoop& loop_;
    const WatchOptions options_;
    const Callbacks callbacks_;
    Runner runner_;
    EventLoop::SourceId nl80211_source_ = 0;
    std::vector<std::unique_ptr<Namespace>> namespaces_ = own_namespace();
    State& state_ = namespaces_.front()->state;  // our own namespace (wifi, replay)
    std::optional<netlink::Socket> nl80211_events_, nl80211_query_;
    int nl80211_id_ = 0;
    std::optional<Recorder> recorder_;
    std::optional<Dispatcher> dispatcher_;
    Fd lease_watch_;  // inotify on the DHCP clients' lease folders (dispatcher only)
    EventLoop::SourceId lease_source_ = 0;
    void watch_leases();
    struct Pending {
        NetEvent event;
        Clock::time_point when;
        EventLoop::SourceId timer = 0;
    };
    std::map<std::pair<std::size_t, std::string>, Pending> debounced_;
};

netlink::Socket Watcher::Impl::open_socket(Namespace& ns, int protocol) {
    if (!ns.fd) return netlink::Socket::open(protocol);
    return netlink::open_in_netns(ns.fd.get(), ns.name, protocol);
}

State& Watcher::Impl::state_of(const std::string& netns) {
    for (auto& ns : namespaces_)
        if (ns->name == netns) return ns->state;
    return state_;
}

// --all-netns: every namespace named in /run/netns (as `ip netns add` makes them) gets its own
// subscribed socket, opened inside it, and its own cache. That is what NETLINK_LISTEN_ALL_NSID
// cannot give: it forwards other namespaces' events to one socket, but a dump (for the initial
// state and for resync after an overrun) only ever covers the socket's own namespace.
void Watcher::Impl::add_named_namespaces() {
    for (const auto& name : netlink::list_netns()) {
        auto id = netlink::netns_id("/run/netns/" + name);
        if (!id) continue;
        if (*id == namespaces_.front()->id) {
            // We run inside a named namespace: tag our own events with its name.
            namespaces_.front()->name = name;
            state_.netns = name;
            continue;
        }
        if (watched(*id)) continue;  // a second name of one already watched
        auto ns = std::make_unique<Namespace>();
        ns->name = name;
        ns->state.netns = name;
        try {
            ns->fd = netlink::open_netns(name);
        } catch (const std::system_error& error) {
            log_warning("skipping namespace {}: {}", name, error.what());
            continue;
        }
        ns->id = netlink::netns_id(ns->fd.get()).value_or(*id);
        ns->state.netns_inode = ns->id.ino;
        namespaces_.push_back(std::move(ns));
    }
}

// inotify on /run/netns (on /run until `ip netns` first creates it). Any change there compares
// the names with the watched namespaces, which also covers a queue overflow and renames.
void Watcher::Impl::watch_netns_folder() {
    netns_watch_ = Fd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!netns_watch_) throw_errno("inotify_init1", "/run/netns");
    if (::inotify_add_watch(netns_watch_.get(), "/run", IN_CREATE | IN_ONLYDIR) < 0)
        throw_errno("inotify_add_watch", "/run");
    netns_folder_wd_ = ::inotify_add_watch(netns_watch_.get(), "/run/netns",
                                           IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR);
    netns_source_ = loop_.add_fd(netns_watch_.get(), EPOLLIN, [this](std::uint32_t) {
        alignas(inotify_event) char buffer[4096];
        bool changed = false;
        while (::read(netns_watch_.get(), buffer, sizeof buffer) > 0) changed = true;
        if (changed) netns_folder_changed();
    });
}

void Watcher::Impl::netns_folder_changed() {
    if (netns_folder_wd_ < 0)
        netns_folder_wd_ =
            ::inotify_add_watch(netns_watch_.get(), "/run/netns",
                                IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR);
    auto names = netlink::list_netns();
    std::set<std::string> present(names.begin(), names.end());
    // Deleted: close our socket and handle, so the namespace itself can go away.
    for (auto it = std::next(namespaces_.begin()); it != namespaces_.end();) {
        Namespace& ns = **it;
        if (ns.unnamed || present.count(ns.name)) {
            ++it;
            continue;
        }
        forget(ns);
        log_info("network namespace {} was deleted; no longer watched", ns.name);
        it = namespaces_.erase(it);
    }
    for (auto it = netns_retry_.begin(); it != netns_retry_.end();) {
        if (present.count(it->first)) {
            ++it;
            continue;
        }
        loop_.remove(it->second);
        it = netns_retry_.erase(it);
    }
    for (const auto& name : names) {
        bool known = netns_retry_.count(name) > 0;
        for (const auto& ns : namespaces_)
            if (ns->name == name) known = true;
        if (!known) add_namespace_later(name, 0);
    }
}

// `ip netns add` creates the file first and bind-mounts the namespace onto it a moment later
// (no inotify event for that): wait until it is an nsfs file, for at most 2 s.
void Watcher::Impl::add_namespace_later(const std::string& name, int attempt) {
    netns_retry_.erase(name);
    std::string path = "/run/netns/" + name;
    struct statfs fs;
    if (::statfs(path.c_str(), &fs) < 0) return;  // gone again
    if (static_cast<unsigned long>(fs.f_type) != NSFS_MAGIC) {
        if (attempt >= 40) {
            log_warning("{} is not a network namespace after 2 s; ignored", printable(path));
            return;
        }
        netns_retry_[name] = loop_.add_timer(
            std::chrono::milliseconds(50), [this, name, attempt] { add_namespace_later(name, attempt + 1); });
        return;
    }
    auto id = netlink::netns_id(path);
    if (!id || *id == namespaces_.front()->id) return;  // gone again, or a new name for our own
    for (auto& known : namespaces_) {
        if (known->id != *id) continue;
        if (known->unnamed) {
            // Seen through a process first (`ip netns add` + `ip netns exec` race the bind mount):
            // from now on it goes by its name and lives as long as the name.
            log_info("network namespace {} (inode {}) is now named {}", known->name, id->ino, name);
            loop_.remove(known->pid_source);
            known->pid_source = 0;
            known->pidfd.reset();
            known->unnamed = false;
            known->name = name;
            known->state.netns = name;
        }
        return;
    }
    auto ns = std::make_unique<Namespace>();
    ns->name = name;
    ns->state.netns = name;
    try {
        ns->fd = netlink::open_netns(name);
        ns->id = netlink::netns_id(ns->fd.get()).value_or(*id);
        ns->state.netns_inode = ns->id.ino;
        start_namespace(*ns, false);
    } catch (const std::system_error& error) {
        log_warning("cannot watch new network namespace {}: {}", name, error.what());
        return;
    }
    log_info("watching new network namespace {}", name);
    namespaces_.push_back(std::move(ns));
    read_rtnl(*namespaces_.back());
}

void Watcher::Impl::forget(Namespace& ns) noexcept {
    loop_.remove(ns.source);
    loop_.remove(ns.resync_retry);
    loop_.remove(ns.pid_source);
    ns.source = ns.resync_retry = ns.pid_source = 0;
}

bool Watcher::Impl::watched(const netlink::NetnsId& id) const {
    return std::any_of(namespaces_.begin(), namespaces_.end(), [&](const auto& ns) { return ns->id == id; });
}

// The proc connector only sends in the initial network namespace (its kernel socket lives there and
// netlink multicast stays within one namespace; elsewhere the listen request gets ECONNREFUSED), so
// when we run inside another one the socket is opened in the initial one: that of pid 1, or of
// kthreadd (pid 2, a kernel thread, always there) where pid 1 hides its namespaces from us.
void Watcher::Impl::follow_processes() {
    try {
        auto ours = namespaces_.front()->id;
        std::string initial;
        for (const char* path : {"/proc/1/ns/net", "/proc/2/ns/net"})
            if (auto id = netlink::netns_id(path)) {
                if (*id != ours) initial = path;
                break;
            }
        if (!initial.empty()) {
            Fd initial_fd = netlink::open_netns(initial);
            std::optional<netlink::ProcConnector> connector;
            netlink::run_in_netns(initial_fd.get(), initial,
                                  [&] { connector.emplace(netlink::ProcConnector::open(1u << 20)); });
            processes_ = std::move(connector);
        } else {
            processes_.emplace(netlink::ProcConnector::open(1u << 20));
        }
    } catch (const std::system_error& error) {
        log_warning(
            "--all-netns: cannot follow new processes ({}): a namespace without a name that "
            "appears later is found only when it gets an nsid here (a veth moved into it)",
            error.what());
        return;
    }
    processes_source_ = loop_.add_fd(processes_->fd(), EPOLLIN, [this](std::uint32_t) { read_processes(); });
}

// exec: `unshare -n CMD`, `ip netns exec`, runc and systemd all exec once the namespace exists.
// fork: a clone(CLONE_NEWNET) child has its namespace when the event is sent. Each is one stat.
void Watcher::Impl::read_processes() {
    while (processes_) {
        std::vector<pid_t> seen;
        auto result = processes_->receive([&](const netlink::ProcEvent& event) {
            if (event.what == proc_event::PROC_EVENT_EXEC ||
                (event.what == proc_event::PROC_EVENT_FORK && event.pid == event.tgid))
                seen.push_back(event.tgid);
        });
        if (result == netlink::Received::would_block) return;
        if (result == netlink::Received::overrun) scan_processes(false);  // lost events: look at all
        for (pid_t pid : seen) process_seen(pid);
    }
}

void Watcher::Impl::process_seen(pid_t pid) {
    auto id = netlink::netns_id(fmt::format("/proc/{}/ns/net", pid));
    if (!id || watched(*id)) return;  // gone already, hidden, or known: the common case
    add_unnamed(pid, false);
}

void Watcher::Impl::scan_processes(bool initial) {
    for (const auto& space : netlink::process_namespaces())
        if (!watched(space.id)) add_unnamed(space.pid, initial);
}

void Watcher::Impl::cannot_enter(const std::string& what, const std::system_error& error) {
    int code = error.code().value();
    if (code == EPERM || code == EACCES) {
        // Once: without CAP_SYS_ADMIN every other namespace says the same.
        if (!denied_logged_)
            log_warning("--all-netns: cannot watch network namespace {} (and others like it): {}", what,
                        error.what());
        denied_logged_ = true;
        return;
    }
    // It went away between being seen and being entered: nothing to watch.
    log_line(LogLevel::debug,
             fmt::format("network namespace {} vanished before it was watched: {}", what, error.what()));
}

// The namespace of process `pid`, unless it is already watched. The pidfd is taken first and the
// process checked alive after the namespace is opened: so a pid reused meanwhile cannot hand us
// another process's namespace. The namespace fd is held while watched; it (like the rtnetlink socket
// inside) keeps the namespace alive, which is why it is dropped when its last process is gone.
void Watcher::Impl::add_unnamed(pid_t pid, bool initial) {
    std::string label = fmt::format("pid:{}", pid);
    try {
        Fd pidfd = open_pidfd(pid);
        std::string path = fmt::format("/proc/{}/ns/net", pid);
        Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) throw_errno("open", path);
        if (::syscall(SYS_pidfd_send_signal, pidfd.get(), 0, nullptr, 0) < 0)
            throw_errno("pidfd_send_signal", label);
        auto id = netlink::netns_id(fd.get());
        if (!id) throw_errno("fstat", path);
        if (watched(*id)) return;
        for (const auto& name : netlink::list_netns())
            if (netlink::netns_id("/run/netns/" + name) == id) return;  // /run/netns's watch adds it
        auto ns = std::make_unique<Namespace>();
        ns->name = label;
        ns->unnamed = true;
        ns->id = *id;
        ns->fd = std::move(fd);
        ns->pidfd = std::move(pidfd);
        ns->state.netns = label;
        ns->state.netns_inode = id->ino;
        start_namespace(*ns, initial);
        Namespace* raw = ns.get();
        ns->pid_source =
            loop_.add_fd(ns->pidfd.get(), EPOLLIN, [this, raw](std::uint32_t) { anchor_exited(*raw); });
        if (!initial) log_info("watching new network namespace {} (inode {})", label, id->ino);
        namespaces_.push_back(std::move(ns));
        if (!initial) read_rtnl(*raw);
    } catch (const std::system_error& error) {
        cannot_enter(label, error);
    }
}

// The process we knew in an unnamed namespace is gone: another one keeps it watched (under its
// first label, which stays stable); without one it is dropped, closing our socket and fd so the
// kernel can free it. A namespace kept only by a bind mount outside /run/netns or an open fd is
// dropped too: we could not tell when it dies, since our own socket would keep it alive.
void Watcher::Impl::anchor_exited(Namespace& ns) {
    loop_.remove(ns.pid_source);
    ns.pid_source = 0;
    ns.pidfd.reset();
    for (const auto& space : netlink::process_namespaces()) {
        if (space.id != ns.id) continue;
        Fd pidfd;
        try {
            pidfd = open_pidfd(space.pid);
        } catch (const std::system_error&) {
            break;  // it exited meanwhile
        }
        // Still in it after the pidfd was taken: the pidfd is of a process in this namespace.
        if (netlink::netns_id(fmt::format("/proc/{}/ns/net", space.pid)) != ns.id) break;
        ns.pidfd = std::move(pidfd);
        Namespace* raw = &ns;
        ns.pid_source =
            loop_.add_fd(ns.pidfd.get(), EPOLLIN, [this, raw](std::uint32_t) { anchor_exited(*raw); });
        return;
    }
    // Logged once everything of it is closed: the line promises that nothing of ours pins it.
    std::string line = fmt::format("network namespace {} (inode {}) has no process left; no longer watched",
                                   ns.name, ns.id.ino);
    forget(ns);
    auto it =
        std::find_if(namespaces_.begin(), namespaces_.end(), [&](const auto& p) { return p.get() == &ns; });
    if (it != namespaces_.end()) namespaces_.erase(it);
    log_line(LogLevel::info, line);
}

// Subscribes, dumps and starts reading. What a namespace that appeared after start-up already
// holds is reported as ordinary events: it happened while netwatch was running.
void Watcher::Impl::start_namespace(Namespace& ns, bool initial) {
    open_rtnl(ns);
    State fresh = dump_rtnl(ns);
    std::vector<NetEvent> events;
    ns.state.resync(fresh, events, {.initial = initial, .resync = false});
    if (options_.initial || !initial) emit(events);
    ns.source = loop_.add_fd(ns.rtnl->fd(), EPOLLIN, [this, raw = &ns](std::uint32_t) { read_rtnl(*raw); });
}

void Watcher::Impl::open_rtnl(Namespace& ns) {
    ns.rtnl.emplace(open_socket(ns, NETLINK_ROUTE));
    auto& socket = *ns.rtnl;
    // Subscribe before dumping: a change between dump and subscription would otherwise be lost.
    for (auto [group, name] : {std::pair{RTNLGRP_LINK, "link"},
                               {RTNLGRP_IPV4_IFADDR, "ipv4-ifaddr"},
                               {RTNLGRP_IPV6_IFADDR, "ipv6-ifaddr"},
                               {RTNLGRP_IPV4_ROUTE, "ipv4-route"},
                               {RTNLGRP_IPV6_ROUTE, "ipv6-route"}})
        socket.subscribe(group, name);
    // A namespace that gets an nsid here (a veth or other link crossing into it) may be one that
    // no exec or fork revealed: each RTM_NEWNSID triggers one /proc scan.
    if (options_.all_netns) socket.subscribe(RTNLGRP_NSID, "nsid");
    socket.set_receive_buffer(options_.receive_buffer > 0 ? static_cast<std::size_t>(options_.receive_buffer)
                                                          : 8u << 20);
    socket.set_nonblocking();
}

State Watcher::Impl::dump_rtnl(Namespace& ns) {
    // A second socket for the dump, so the subscription's queued events are not interleaved with
    // dump replies; they are applied afterwards, and applying an event the dump already reflects
    // changes nothing.
    auto socket = open_socket(ns, NETLINK_ROUTE);
    State fresh;
    fresh.netns = ns.name;
    // Only our own namespace is recorded: a replay has one cache.
    Recorder* recorder = ns.fd ? nullptr : (recorder_ ? &*recorder_ : nullptr);
    if (recorder) recorder->begin_dump();
    auto collect = [&](const nlmsghdr& message) {
        if (recorder) recorder->message(Record::dump, message);
        std::vector<NetEvent> ignored;
        fresh.apply(decode_rtnl(&message), ignored);
        return true;
    };
    netlink::DumpOptions restart;
    for (auto [type, family, header_size, what] :
         {std::tuple{RTM_GETLINK, AF_UNSPEC, sizeof(ifinfomsg), "dump links"},
          std::tuple{RTM_GETADDR, AF_UNSPEC, sizeof(ifaddrmsg), "dump addresses"},
          std::tuple{RTM_GETROUTE, AF_UNSPEC, sizeof(rtmsg), "dump routes"}}) {
        netlink::Request request(type, 0);
        // Every family header starts with its family byte; the rest is zero.
        std::array<unsigned char, sizeof(ifinfomsg)> header{};
        header[0] = static_cast<unsigned char>(family);
        std::memcpy(mnl_nlmsg_put_extra_header(request.header(), header_size), header.data(), header_size);
        socket.dump(request, collect, what, restart);
    }
    if (nl80211_query_ && !ns.fd) dump_wifi(fresh);
    if (recorder) recorder->end_dump();
    return fresh;
}

void Watcher::Impl::read_rtnl(Namespace& ns) {
    while (true) {
        auto when = Clock::now();
        std::vector<NetEvent> events;
        bool new_nsid = false;
        auto result = ns.rtnl->receive([&](const nlmsghdr& message) {
            if (message.nlmsg_type == RTM_NEWNSID) {
                new_nsid = true;
                return true;
            }
            if (recorder_ && !ns.fd) recorder_->message(Record::event, message);
            ns.state.apply(decode_rtnl(&message), events);
            return true;
        });
        if (result == netlink::Received::would_block) return;
        // An overrun may have taken an RTM_NEWNSID with it: scan as well.
        if (new_nsid || (options_.all_netns && result == netlink::Received::overrun)) {
            // After this batch: the scan may add namespaces (and must not reallocate under `ns`'s
            // caller); handled on the next loop turn.
            if (!scan_timer_)
                scan_timer_ = loop_.add_timer(std::chrono::nanoseconds(1), [this] {
                    scan_timer_ = 0;
                    scan_processes(false);
                });
        }
        if (result == netlink::Received::overrun) {
            if (recorder_ && !ns.fd) recorder_->overrun();
            resync(ns, when);
        }
        for (auto& event : events) handle(event, when);
    }
}

void Watcher::Impl::resync(Namespace& ns, Clock::time_point when) {
    // The kernel dropped events: the only truth left is a fresh dump.
    loop_.remove(ns.resync_retry);
    ns.resync_retry = 0;
    // What is still queued predates the dump about to be taken, and the messages after it are
    // the ones that were dropped: applied after the dump, the stale ones would undo it. Every
    // message queued from here on is newer than this point, so applying those afterwards converges.
    int drained = 0;
    while (ns.rtnl->receive([&](const nlmsghdr&) { return ++drained, true; }) !=
           netlink::Received::would_block) {}
    State fresh;
    try {
        fresh = dump_rtnl(ns);
    } catch (const std::system_error& error) {
        // Under a storm of changes a dump can be interrupted again and again (NLM_F_DUMP_INTR);
        // keep applying events and try again shortly, never give up on the cache silently.
        log_warning("resync after overrun: {}; retrying", error.what());
        ns.resync_retry =
            loop_.add_timer(std::chrono::milliseconds(200), [this, &ns] { resync(ns, Clock::now()); });
        return;
    }
    std::vector<NetEvent> events;
    ns.state.resync(fresh, events, {.initial = false, .resync = true});
    NetEvent note;
    note.type = "resync";
    note.netns = ns.name;
    note.resync = true;
    note.fields["reason"] = "netlink receive buffer overrun (ENOBUFS)";
    note.fields["changes"] = events.size();
    events.insert(events.begin(), note);
    for (auto& event : events) handle(event, when);
}

void Watcher::Impl::open_nl80211() {
    if (!options_.wifi) return;
    try {
        auto events = netlink::Socket::open(NETLINK_GENERIC);
        auto family = netlink::resolve_family(events, "nl80211");
        nl80211_id_ = family.id;
        events.subscribe(family.group("mlme"), "nl80211 mlme");
        events.set_receive_buffer(1u << 20);
        events.set_nonblocking();
        nl80211_events_.emplace(std::move(events));
        nl80211_query_.emplace(netlink::Socket::open(NETLINK_GENERIC));
    } catch (const std::system_error&) {
        // No cfg80211 in this kernel (or the module is not loaded): no wifi events, the rest works.
        nl80211_events_.reset();
        nl80211_query_.reset();
    }
}

// What systemd-networkd does: the SSID from NL80211_CMD_GET_INTERFACE (cfg80211 reports the
// current SSID of a connected station there), the rest from the BSS we are associated with in
// the scan results (NL80211_CMD_GET_SCAN), which also has the SSID in its information elements.
std::optional<Wifi> Watcher::Impl::query_wifi(int ifindex, const std::string& bssid_hint) {
    Wifi wifi;
    wifi.index = ifindex;
    wifi.bssid = bssid_hint;
    bool station = false;
    try {
        netlink::Request request(static_cast<std::uint16_t>(nl80211_id_), 0);
        request.put_header(genlmsghdr{NL80211_CMD_GET_INTERFACE, 0, 0});
        mnl_attr_put_u32(request.header(), NL80211_ATTR_IFINDEX, static_cast<std::uint32_t>(ifindex));
        nl80211_query_->transact(
            request,
            [&](const nlmsghdr& message) {
                if (recorder_) recorder_->message(Record::wifi_query, message);
                if (auto decoded = decode_nl80211(&message)) {
                    station = decoded->iftype == NL80211_IFTYPE_STATION ||
                              decoded->iftype == NL80211_IFTYPE_P2P_CLIENT;
                    wifi.ssid = decoded->ssid;
                    if (decoded->freq) wifi.freq = decoded->freq;
                }
                return true;
            },
            "nl80211 get interface");
        netlink::Request scan(static_cast<std::uint16_t>(nl80211_id_), 0);
        scan.put_header(genlmsghdr{NL80211_CMD_GET_SCAN, 0, 0});
        mnl_attr_put_u32(scan.header(), NL80211_ATTR_IFINDEX, static_cast<std::uint32_t>(ifindex));
        nl80211_query_->dump(
            scan,
            [&](const nlmsghdr& message) {
                if (recorder_) recorder_->message(Record::wifi_query, message);
                auto decoded = decode_nl80211(&message);
                if (!decoded || !decoded->bss_associated) return true;
                if (wifi.bssid.empty()) wifi.bssid = decoded->bss_bssid;
                if (decoded->bss_bssid != wifi.bssid) return true;
                if (wifi.ssid.empty()) wifi.ssid = decoded->bss_ssid;
                if (decoded->bss_freq) wifi.freq = decoded->bss_freq;
                wifi.signal = decoded->bss_signal;
                return true;
            },
            "nl80211 get scan");
    } catch (const std::system_error&) {
        return std::nullopt;  // the interface went away meanwhile
    }
    if (!station || wifi.bssid.empty()) return std::nullopt;
    return wifi;
}

void Watcher::Impl::dump_wifi(State& into) {
    std::vector<int> stations;
    try {
        netlink::Request request(static_cast<std::uint16_t>(nl80211_id_), 0);
        request.put_header(genlmsghdr{NL80211_CMD_GET_INTERFACE, 0, 0});
        nl80211_query_->dump(
            request,
            [&](const nlmsghdr& message) {
                auto decoded = decode_nl80211(&message);
                if (decoded && decoded->iftype == NL80211_IFTYPE_STATION && decoded->ifindex)
                    stations.push_back(decoded->ifindex);
                return true;
            },
            "nl80211 dump interfaces");
    } catch (const std::system_error&) {
        return;
    }
    for (int index : stations)
        if (auto wifi = query_wifi(index, {})) into.wifi[index] = *wifi;
}

// Roaming between access points of one SSID. Drivers that roam on their own (full-MAC) send
// NL80211_CMD_ROAM. With mac80211 the supplicant roams itself: when it authenticates with the new
// AP, mac80211 first drops the old one and reports that as a local DISCONNECT with reason 1
// (WLAN_REASON_UNSPECIFIED, "disconnect from AP ... for new auth to ..."), then CONNECT follows
// after the authentication and association frames. So such a disconnect is held back for
// roam_window: a connect to the same SSID on that interface within it is one wifi-roam (old and new
// BSSID); anything else releases the disconnect. Every other disconnect (the supplicant leaving or
// stopping: reason 3; beacon loss: 4; the AP sending us away: by_ap) is reported at once.
void Watcher::Impl::release_disconnect(int ifindex, std::vector<NetEvent>& events, Clock::time_point* when) {
    auto it = held_.find(ifindex);
    if (it == held_.end()) return;
    loop_.remove(it->second.timer);
    if (when) *when = it->second.when;
    held_.erase(it);
    Change change;
    change.kind = Change::Kind::wifi_disconnect;
    change.wifi.index = ifindex;
    if (recorder_) recorder_->wifi(change);
    state_.apply(change, events);
}

void Watcher::Impl::drop_held_disconnects() noexcept {
    for (auto& [index, held] : held_) loop_.remove(held.timer);
    held_.clear();
}

void Watcher::Impl::read_nl80211() {
    while (true) {
        auto when = Clock::now();
        std::vector<Nl80211Message> messages;
        auto result = nl80211_events_->receive([&](const nlmsghdr& message) {
            if (message.nlmsg_type != nl80211_id_) return true;
            if (recorder_) recorder_->message(Record::wifi_event, message);
            if (auto decoded = decode_nl80211(&message)) messages.push_back(*decoded);
            return true;
        });
        if (result == netlink::Received::would_block) return;
        std::vector<NetEvent> events;
        if (result == netlink::Received::overrun) {
            // The dump is the truth: a held disconnect is either still true there or superseded.
            drop_held_disconnects();
            State fresh = state_;
            fresh.wifi.clear();
            dump_wifi(fresh);
            state_.resync(fresh, events, {.initial = false, .resync = true});
        }
        for (const auto& message : messages) {
            Change change;
            change.wifi.index = message.ifindex;
            switch (message.command) {
                case NL80211_CMD_CONNECT:
                case NL80211_CMD_ROAM: {
                    if (message.status && *message.status != 0) continue;  // a failed attempt
                    auto wifi = query_wifi(message.ifindex, message.mac);
                    if (!wifi) continue;
                    if (held_.count(message.ifindex)) {
                        auto old = state_.wifi.find(message.ifindex);
                        if (old != state_.wifi.end() && old->second.ssid == wifi->ssid) {
                            loop_.remove(held_[message.ifindex].timer);
                            held_.erase(message.ifindex);  // a roam: the cached old BSS stays as old_bssid
                        } else {
                            release_disconnect(message.ifindex, events);
                        }
                    }
                    change.kind = message.command == NL80211_CMD_ROAM ? Change::Kind::wifi_roam
                                                                      : Change::Kind::wifi_connect;
                    change.wifi = *wifi;
                    break;
                }
                case NL80211_CMD_DISCONNECT: {
                    release_disconnect(message.ifindex, events);
                    bool may_roam = !message.by_ap && message.reason == 1;
                    if (may_roam && options_.roam_window.count() > 0 && state_.wifi.count(message.ifindex)) {
                        int index = message.ifindex;
                        held_[index] = {when, loop_.add_timer(options_.roam_window, [this, index] {
                                            std::vector<NetEvent> released;
                                            auto at = Clock::now();
                                            release_disconnect(index, released, &at);
                                            for (auto& event : released) handle(event, at);
                                        })};
                        continue;
                    }
                    change.kind = Change::Kind::wifi_disconnect;
                    break;
                }
                default: continue;
            }
            if (recorder_) recorder_->wifi(change);
            state_.apply(change, events);
        }
        for (auto& event : events) handle(event, when);
    }
}

void Watcher::Impl::emit(std::vector<NetEvent>& events) {
    auto now = Clock::now();
    for (auto& event : events) handle(event, now);
}

void Watcher::Impl::handle(const NetEvent& event, Clock::time_point when) {
    if (callbacks_.on_event) callbacks_.on_event(event);
    for (std::size_t i = 0; i < options_.rules.size(); ++i) {
        const Rule& rule = options_.rules[i];
        auto key = std::pair{i, event.netns + "/" + event.iface};
        if (rule.debounce.count() > 0) {
            auto pending = debounced_.find(key);
            // The opposite event cancels a pending one: a link that went down and came back within
            // the quiet period never settled down.
            if (pending != debounced_.end()) {
                const char* reverse = opposite(pending->second.event.type);
                if (reverse && event.type == reverse && !rule.matches(event)) {
                    loop_.remove(pending->second.timer);
                    debounced_.erase(pending);
                    continue;
                }
            }
        }
        if (!rule.matches(event)) continue;
        if (rule.debounce.count() == 0) {
            run_rule(i, event, when);
            continue;
        }
        auto& pending = debounced_[key];
        loop_.remove(pending.timer);
        pending.event = event;
        pending.when = when;
        pending.timer = loop_.add_timer(rule.debounce, [this, key, i] {
            auto it = debounced_.find(key);
            if (it == debounced_.end()) return;
            Pending settled = std::move(it->second);
            debounced_.erase(it);
            run_rule(i, settled.event, settled.when);
        });
    }
    if (dispatcher_)
        dispatcher_->handle(event, state_of(event.netns), when, runner_, options_.dry_run,
                            callbacks_.on_dry_run, options_.exec_timeout);
}

// DHCP clients write their lease files next to the address change (dhclient after it), and NetworkManager's
// dhcp4-change means "the lease changed": so the dispatcher also looks when a lease file is rewritten.
void Watcher::Impl::watch_leases() {
    auto folders = dispatcher_->lease_directories();
    if (folders.empty()) return;
    lease_watch_ = Fd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!lease_watch_) throw_errno("inotify_init1", "DHCP lease folders");
    for (const auto& folder : folders)
        if (::inotify_add_watch(lease_watch_.get(), folder.c_str(),
                                IN_CLOSE_WRITE | IN_MOVED_TO | IN_MODIFY) < 0)
            log_warning("cannot watch {} for DHCP leases: {}", printable(folder), std::strerror(errno));
    lease_source_ = loop_.add_fd(lease_watch_.get(), EPOLLIN, [this](std::uint32_t) {
        alignas(inotify_event) char buffer[4096];
        bool changed = false;
        while (::read(lease_watch_.get(), buffer, sizeof buffer) > 0) changed = true;
        if (changed)
            dispatcher_->leases_changed(state_, Clock::now(), runner_, options_.dry_run,
                                        callbacks_.on_dry_run, options_.exec_timeout);
    });
}

void Watcher::Impl::run_rule(std::size_t index, const NetEvent& event, Clock::time_point when) {
    const Rule& rule = options_.rules[index];
    std::string label =
        fmt::format("{} ({} {})", rule.name, event.type, event.iface.empty() ? "-" : event.iface);
    if (options_.dry_run) {
        if (callbacks_.on_dry_run)
            callbacks_.on_dry_run(fmt::format("would run {}: {}", label, rule.command));
        return;
    }
    Job job;
    job.key = fmt::format("{}/{}/{}", index, event.netns, event.iface);
    job.argv = {"/bin/sh", "-c", rule.command};
    if (rule.in_netns && !event.netns.empty()) {
        std::string target = "/run/netns/" + event.netns;
        // An unnamed one through the fd we hold: no pid that could be reused meanwhile.
        for (const auto& ns : namespaces_)
            if (ns->unnamed && ns->name == event.netns)
                target = fmt::format("/proc/{}/fd/{}", ::getpid(), ns->fd.get());
        job.argv = {"nsenter", "--net=" + target, "/bin/sh", "-c", rule.command};
    }
    job.env = event.environment();
    job.env.push_back("KTRICKS_RULE=" + rule.name);
    job.input = event.to_event().to_line();
    job.timeout = rule.timeout.value_or(options_.exec_timeout);
    job.label = label;
    job.event_time = when;
    runner_.submit(std::move(job));
}

void Watcher::Impl::reported(const JobReport& report) {
    if (callbacks_.on_script_end) callbacks_.on_script_end(report);
}

void Watcher::Impl::replay() {
    Player player(options_.replay_file);
    std::optional<State> fresh;
    bool first_dump = true;
    while (auto record = player.next()) {
        std::vector<NetEvent> events;
        switch (record->kind) {
            case Record::dump_begin: fresh.emplace(); break;
            case Record::dump:
                if (fresh) {
                    std::vector<NetEvent> ignored;
                    fresh->apply(decode_rtnl(record->message()), ignored);
                }
                break;
            case Record::dump_end:
                if (!fresh) break;
                state_.resync(*fresh, events, {.initial = first_dump, .resync = !first_dump});
                if (first_dump && !options_.initial) events.clear();
                first_dump = false;
                fresh.reset();
                break;
            case Record::event: state_.apply(decode_rtnl(record->message()), events); break;
            case Record::wifi_change: state_.apply(record->change, events); break;
            default: break;
        }
        emit(events);
        // Let scripts start and finish between records, without waiting.
        loop_.run_once(std::chrono::milliseconds(0));
    }
}

void Watcher::Impl::start() {
    if (options_.nm_dirs || !options_.dispatcher_dirs.empty()) {
        std::vector<std::string> folders;
        if (options_.nm_dirs) folders = Dispatcher::networkmanager_directories();
        for (const auto& folder : options_.dispatcher_dirs) {
            // Given folders must exist; NetworkManager's own may be absent.
            Dispatcher check({folder}, false);
            folders.push_back(folder);
        }
        dispatcher_.emplace(std::move(folders), true);
    }
    if (!options_.replay_file.empty()) {
        replay();
        return;
    }
    if (!options_.record_file.empty()) recorder_.emplace(options_.record_file);
    if (options_.all_netns) {
        namespaces_.front()->id = netlink::netns_id("/proc/self/ns/net").value_or(netlink::NetnsId{});
        if (::geteuid() != 0)
            log_warning(
                "--all-netns as a normal user: only namespaces this user may enter are watched "
                "(setns needs CAP_SYS_ADMIN there), and new processes are not followed (the proc "
                "connector needs CAP_NET_ADMIN)");
        // Watched before the first list is taken: a namespace named meanwhile is not missed.
        watch_netns_folder();
        add_named_namespaces();
        // Followed before the /proc scan below, for the same reason.
        if (::geteuid() == 0) follow_processes();
    }
    open_nl80211();
    start_namespace(*namespaces_.front(), true);
    // Another namespace we may not enter (a normal user) or that went away is skipped, not fatal.
    for (auto it = std::next(namespaces_.begin()); it != namespaces_.end();) {
        try {
            start_namespace(**it, true);
            ++it;
        } catch (const std::system_error& error) {
            cannot_enter((*it)->name, error);
            forget(**it);
            it = namespaces_.erase(it);
        }
    }
    if (options_.all_netns) scan_processes(true);
    if (dispatcher_) watch_leases();
    if (nl80211_events_)
        nl80211_source_ =
            loop_.add_fd(nl80211_events_->fd(), EPOLLIN, [this](std::uint32_t) { read_nl80211(); });
    // Messages that arrived during the dumps are waiting; apply them now.
    for (auto& ns : namespaces_) read_rtnl(*ns);
    if (nl80211_events_) read_nl80211();
}

void Watcher::Impl::stop() noexcept {
    for (auto& ns : namespaces_) forget(*ns);
    loop_.remove(processes_source_);
    processes_source_ = 0;
    processes_.reset();
    loop_.remove(scan_timer_);
    scan_timer_ = 0;
    loop_.remove(nl80211_source_);
    nl80211_source_ = 0;
    drop_held_disconnects();
    loop_.remove(lease_source_);
    lease_source_ = 0;
    loop_.remove(netns_source_);
    netns_source_ = 0;
    for (auto& [name, timer] : netns_retry_) loop_.remove(timer);
    netns_retry_.clear();
    for (auto& [key, pending] : debounced_) loop_.remove(pending.timer);
    debounced_.clear();
    runner_.stop();
}

Watcher::Watcher(EventLoop& loop, WatchOptions options, Callbacks callbacks)
    : impl_(std::make_unique<Impl>(loop, std::move(options), std::move(callbacks))) {}
Watcher::~Watcher() = default;
void Watcher::start() { impl_->start(); }
void Watcher::stop() noexcept { impl_->stop(); }
bool Watcher::idle() const noexcept { return impl_->idle(); }
bool Watcher::wifi() const noexcept { return impl_->wifi(); }
std::vector<std::string> Watcher::namespaces() const { return impl_->namespaces(); }
std::string Watcher::describe_state() const { return impl_->describe_state(); }

}  // namespace ktricks::netwatch
