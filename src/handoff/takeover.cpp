// takeover(): adopt the listeners of a process that never offered them, then retire it.
//
// pidfd_getfd(2) (Linux 5.6) duplicates a descriptor of another process into ours: the same open
// file description, as if it had been passed over SCM_RIGHTS. It needs the permission of
// PTRACE_MODE_ATTACH_REALCREDS: same uid and a dumpable target, or CAP_SYS_PTRACE; Yama's
// ptrace_scope can narrow that further.
//
// Retiring a server that knows nothing of draining (python3 -m http.server dies on SIGTERM with
// whatever it accepted) without losing a request: stop it (SIGSTOP), so it accepts nothing more
// and its accept queue, shared with our new generation, is served by that one alone; look in its
// /proc/PID/fd for connections to our listeners. None: it owes nobody an answer, so send the signal
// while it is stopped (a fatal default-action signal kills a stopped process) and SIGCONT. Some: let
// it run a moment (SIGCONT) to finish them and look again, until --drain-timeout, then signal it
// anyway and report the connections it took with it.
//
// A server is often a tree: nginx's master holds the listeners and its workers accept. Everything
// above applies to the whole tree (the target and its descendants): listeners are looked for in
// every process, every process is stopped and searched for accepted connections, and every one
// gets the signal while stopped. Looking at the master alone reported "0 lost" while its workers
// took requests with them.
#include <fcntl.h>
#include <linux/tcp.h>  // the kernel's tcp_info
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "handoff/proc_sockets.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/proc.hpp"
#include "ktricks/handoff.hpp"

namespace ktricks::handoff {
namespace {

using Clock = std::chrono::steady_clock;

using detail::read_all;

bool have_cap_sys_ptrace() {
    auto caps = process_status_field(::getpid(), "CapEff");
    if (!caps || caps->empty()) return false;
    unsigned long long bits = std::stoull(*caps, nullptr, 16);
    return bits & (1ULL << 19);  // CAP_SYS_PTRACE
}

std::optional<uid_t> process_uid(pid_t pid) {
    auto uids = process_status_field(pid, "Uid");
    if (!uids || uids->empty()) return std::nullopt;
    std::istringstream fields(*uids);
    uid_t real = 0, effective = 0;
    fields >> real >> effective;
    return effective;
}

std::string kernel_release() {
    utsname name{};
    ::uname(&name);
    return name.release;
}

// Why pidfd_getfd said EPERM, and what to do about it. The kernel says only "no"; each cause leaves
// a trace we can read.
std::string explain_eperm(pid_t pid) {
    std::string yama = read_all("/proc/sys/kernel/yama/ptrace_scope");
    int scope = yama.empty() ? 0 : std::atoi(yama.c_str());
    bool privileged = have_cap_sys_ptrace();
    if (scope == 3)
        return "kernel.yama.ptrace_scope is 3: no process may take another's descriptors until reboot; start the "
               "server under `ktricks serve` instead";
    if (scope == 2 && !privileged)
        return "kernel.yama.ptrace_scope is 2: only a process with CAP_SYS_PTRACE may do this; run takeover as root";
    auto target_uid = process_uid(pid);
    if (target_uid && *target_uid != ::geteuid() && !privileged)
        return fmt::format(
            "pid {} runs as uid {} and we are uid {} without CAP_SYS_PTRACE; run takeover as uid {} or as root",
            pid, *target_uid, ::geteuid(), *target_uid);
    if (scope == 1 && !privileged)
        return "kernel.yama.ptrace_scope is 1: only an ancestor may take descriptors; run takeover as root (CAP_SYS_PTRACE) "
               "or set `sysctl kernel.yama.ptrace_scope=0`";
    // A process that changed credentials (dropped root, setuid) is non-dumpable: its /proc files
    // then belong to root, and only CAP_SYS_PTRACE gets in.
    struct stat st {};
    if (::stat(fmt::format("/proc/{}/fd", pid).c_str(), &st) == 0 && target_uid && st.st_uid != *target_uid)
        return fmt::format(
            "pid {} is not dumpable (it changed its credentials, e.g. dropped root, or called "
            "prctl(PR_SET_DUMPABLE, 0)); run takeover as root",
            pid);
    return "permission denied (needs the same uid and a dumpable target, or CAP_SYS_PTRACE); run takeover as root";
}

char process_state(pid_t pid) {
    std::string stat = read_all(fmt::format("/proc/{}/stat", pid));
    auto paren = stat.rfind(')');  // the command name may contain spaces and parentheses
    if (paren == std::string::npos || paren + 2 >= stat.size()) return '?';
    return stat[paren + 2];
}

bool send_signal(int pidfd, int signal_number) {
    return ::syscall(SYS_pidfd_send_signal, pidfd, signal_number, nullptr, 0) == 0;
}

bool exited(int pidfd, milliseconds within) {
    pollfd p{pidfd, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(within.count())) == 1;
}

// pidfds of the processes of a tree, opened once each (a pidfd never names a recycled pid).
class TreeHandles {
public:
    TreeHandles(pid_t root, int root_pidfd) : root_(root), root_pidfd_(root_pidfd) {}
    // The tree as it is now, with a pidfd for each process still there.
    std::vector<std::pair<pid_t, int>> current() {
        std::vector<std::pair<pid_t, int>> members;
        for (pid_t pid : process_tree(root_)) {
            if (pid == root_) {
                members.emplace_back(pid, root_pidfd_);
                continue;
            }
            auto it = pidfds_.find(pid);
            if (it == pidfds_.end()) {
                try {
                    it = pidfds_.emplace(pid, open_pidfd(pid)).first;
                } catch (const std::exception&) {
                    continue;  // exited meanwhile
                }
            }
            members.emplace_back(pid, it->second.get());
        }
        return members;
    }

private:
    pid_t root_;
    int root_pidfd_;
    std::map<pid_t, Fd> pidfds_;
};

struct Retirement {
    pid_t pid;
    int pidfd;
    int signal_number;
    milliseconds drain_timeout;
    std::vector<detail::ProcSocket> listeners;
    std::function<void(const Event&)> on_event;
    std::vector<Fd> queues;  // our copies of the adopted TCP listeners, to read their accept queues
};

// Connections waiting in the accept queue of one of the adopted TCP listeners (TCP_INFO on a
// listener: tcpi_unacked is the queue's length).
bool queued(const std::vector<Fd>& listeners) {
    for (const auto& fd : listeners) {
        tcp_info info{};
        socklen_t length = sizeof(info);
        if (::getsockopt(fd.get(), IPPROTO_TCP, TCP_INFO, &info, &length) == 0 && info.tcpi_unacked > 0)
            return true;
    }
    return false;
}

void retire(const Retirement& r) {
    auto emit = [&](Event e) {
        if (r.on_event) r.on_event(e);
    };
    auto start = Clock::now();
    auto deadline = start + r.drain_timeout;
    int attempts = 0;
    std::vector<std::string> held;
    TreeHandles handles(r.pid, r.pidfd);
    std::vector<std::pair<pid_t, int>> tree;
    auto resume = [&] {
        // Descendants first: a master resumed first could hand work to a worker still stopped.
        for (auto it = tree.rbegin(); it != tree.rend(); ++it) send_signal(it->second, SIGCONT);
    };
    while (true) {
        ++attempts;
        // The target first, so that it forks no new worker while we collect the others.
        if (!send_signal(r.pidfd, SIGSTOP)) break;  // gone already
        tree = handles.current();
        for (const auto& [pid, pidfd] : tree)
            if (pid != r.pid) send_signal(pidfd, SIGSTOP);
        // The fd tables are stable only once every thread of every process has stopped.
        for (const auto& member : tree)
            for (int i = 0; i < 1000; ++i) {
                char state = process_state(member.first);
                if (state == 'T' || state == 't' || state == '?' || state == 'Z') break;
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        held.clear();
        for (const auto& [pid, pidfd] : tree) {
            try {
                for (auto& connection : detail::held_connections(pid, pidfd, r.listeners))
                    held.push_back(std::move(connection.remote));
            } catch (const std::exception&) {
                // it exited meanwhile
            }
        }
        // Serve steers new connections to the new generation's own socket (supervisor.cpp), so what
        // is queued on the adopted one is the old server's alone to accept. It must be empty when the
        // signal is sent: a server with a handler for it may return from epoll_wait with the listener
        // readable and accept once more before it looks at its exit flag, and close that connection
        // unread (nginx's workers on TERM did).
        if ((held.empty() && !queued(r.queues)) || Clock::now() >= deadline) break;
        resume();
        // Let it run a little longer each time: on a busy machine its threads may need a while to be
        // scheduled at all, and every stop delays its clients again.
        std::this_thread::sleep_for(
            std::chrono::milliseconds(std::min(20 << std::min(attempts - 1, 4), 200)));
    }
    // Every process of the tree gets the signal while stopped: it is dequeued before any of their
    // code runs again, so a worker cannot accept one more connection on its way out.
    for (const auto& [pid, pidfd] : tree) send_signal(pidfd, r.signal_number);
    if (tree.empty()) send_signal(r.pidfd, r.signal_number);
    resume();
    send_signal(r.pidfd, SIGCONT);
    bool gone = exited(r.pidfd, std::chrono::milliseconds(5000));
    Event e("takeover", held.empty() ? "retired" : "retired-with-loss");
    e.set("pid", r.pid).set("signal", sigabbrev_np(r.signal_number) ? sigabbrev_np(r.signal_number) : "?");
    e.set("processes", tree.size());
    e.set("attempts", attempts)
        .set("ms", std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    e.set("lost_connections", held.size()).set("exited", gone);
    if (queued(r.queues)) e.set("queued_on_old_listener", true);
    if (!held.empty()) e.set("lost", held);
    emit(std::move(e));
}

}  // namespace

std::vector<pid_t> process_tree(pid_t root) {
    std::multimap<pid_t, pid_t> children;
    for (pid_t pid : process_ids()) {
        std::string stat = read_all(fmt::format("/proc/{}/stat", pid));
        auto paren = stat.rfind(')');  // the command name may contain spaces and parentheses
        if (paren == std::string::npos || paren + 4 >= stat.size()) continue;
        pid_t parent = std::atoi(stat.c_str() + paren + 4);  // ") S PPID"
        children.emplace(parent, pid);
    }
    std::vector<pid_t> tree{root};
    for (std::size_t i = 0; i < tree.size() && tree.size() < 65536; ++i) {
        auto [from, to] = children.equal_range(tree[i]);
        for (auto it = from; it != to; ++it) tree.push_back(it->second);
    }
    return tree;
}

std::vector<FoundListener> find_listeners(pid_t pid) {
    // One look at the network namespace's tables (the tree shares the target's, as servers do).
    auto sockets = detail::proc_sockets(pid);
    std::vector<FoundListener> found;
    std::set<unsigned long> seen;
    for (pid_t member : process_tree(pid)) {
        std::map<unsigned long, int> inodes;
        try {
            inodes = detail::socket_inodes(member);
        } catch (const std::system_error&) {
            if (member == pid) throw;  // the target itself must be readable
            continue;                  // a descendant that exited meanwhile
        }
        std::vector<FoundListener> mine;
        for (const auto& socket : sockets) {
            auto it = inodes.find(socket.inode);
            if (!socket.listening || it == inodes.end() || !seen.insert(socket.inode).second) continue;
            mine.push_back({it->second, socket.inode, socket.local, member});
        }
        std::sort(mine.begin(), mine.end(), [](const auto& a, const auto& b) { return a.fd < b.fd; });
        found.insert(found.end(), mine.begin(), mine.end());
    }
    return found;
}

Fd take_fd(int pidfd, pid_t pid, int target_fd) {
    int fd = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, target_fd, 0));
    if (fd >= 0) return Fd(fd);  // pidfd_getfd always sets FD_CLOEXEC on the new descriptor
    std::string object = fmt::format("fd {} of pid {}", target_fd, pid);
    switch (errno) {
        case ENOSYS:
            throw_error(
                ENOSYS, "pidfd_getfd",
                fmt::format(
                    "{}: needs Linux 5.6 or newer (this is {}); upgrade the kernel, or start the server "
                    "under `ktricks serve` so that no takeover is needed",
                    object, kernel_release()));
        case EPERM: throw_error(EPERM, "pidfd_getfd", fmt::format("{}: {}", object, explain_eperm(pid)));
        case EBADF:
            throw_error(EBADF, "pidfd_getfd",
                        fmt::format("{}: no such descriptor (closed meanwhile?)", object));
        case ESRCH: throw_error(ESRCH, "pidfd_getfd", fmt::format("{}: the process exited", object));
        default: throw_errno("pidfd_getfd", object);
    }
}

Supervisor takeover(EventLoop& loop, TakeoverOptions options) {
    if (options.pid <= 0) throw InputError("--pid: expected a process id");
    if (options.pid == ::getpid()) throw InputError("--pid: that is this process");
    Fd pidfd;
    try {
        pidfd = open_pidfd(options.pid);
    } catch (const std::system_error& error) {
        if (error.code().value() == ESRCH)
            throw_error(ESRCH, "takeover", fmt::format("pid {}: no such process", options.pid));
        throw;
    }
    std::vector<FoundListener> found;
    try {
        found = find_listeners(options.pid);
    } catch (const std::system_error& error) {
        if (error.code().value() != EACCES && error.code().value() != EPERM) throw;
        throw_error(EPERM, "takeover",
                    fmt::format("pid {}: cannot read /proc/{}/fd: {}", options.pid, options.pid,
                                explain_eperm(options.pid)));
    }
    auto describe_found = [&] {
        std::string list;
        for (const auto& f : found)
            list += fmt::format(
                "{}fd {} {}{}", list.empty() ? "" : ", ", f.fd, f.address,
                f.pid == options.pid ? std::string() : fmt::format(" (in its descendant pid {})", f.pid));
        return list.empty() ? std::string("none") : list;
    };
    std::vector<FoundListener> chosen;
    for (int fd : options.fds) {
        auto it = std::find_if(found.begin(), found.end(),
                               [&](const auto& f) { return f.fd == fd && f.pid == options.pid; });
        if (it == found.end())
            throw InputError(fmt::format("--fd {}: pid {} has no listening socket at fd {} (it has: {})", fd,
                                         options.pid, fd, describe_found()));
        chosen.push_back(*it);
    }
    for (const auto& address : options.listen) {
        auto it = std::find_if(found.begin(), found.end(),
                               [&](const auto& f) { return f.address == address.to_string(); });
        if (it == found.end())
            throw InputError(fmt::format("--listen {}: pid {} does not listen there (it has: {})",
                                         address.to_string(), options.pid, describe_found()));
        chosen.push_back(*it);
    }
    if (options.fds.empty() && options.listen.empty()) chosen = found;
    if (chosen.empty())
        throw InputError(fmt::format("pid {} has no listening socket to take over", options.pid));

    // Owned by the supervisor's on_first_ready hook, so it lives as long as the supervisor; the
    // retiring thread (if it started) is joined when the supervisor goes.
    struct Retiring {
        Fd pidfd;
        Retirement retirement;
        std::jthread thread;
    };
    auto retiring = std::make_shared<Retiring>();
    retiring->pidfd = std::move(pidfd);
    retiring->retirement = {options.pid,
                            retiring->pidfd.get(),
                            options.signal,
                            options.serve.drain_timeout,
                            {},
                            options.serve.on_event,
                            {}};
    auto& retirement = retiring->retirement;
    std::set<unsigned long> taken;
    std::map<pid_t, Fd> holders;  // pidfds of descendants that hold a listener the target does not
    for (const auto& listener : chosen) {
        if (!taken.insert(listener.inode).second) continue;  // asked for twice
        int holder = retiring->pidfd.get();
        if (listener.pid != options.pid) {
            auto it = holders.find(listener.pid);
            if (it == holders.end()) it = holders.emplace(listener.pid, open_pidfd(listener.pid)).first;
            holder = it->second.get();
        }
        Fd adopted = take_fd(holder, listener.pid, listener.fd);
        if (listener.address.starts_with("tcp")) {
            Fd copy(::fcntl(adopted.get(), F_DUPFD_CLOEXEC, 3));
            if (!copy) throw_errno("fcntl(F_DUPFD_CLOEXEC)", listener.address);
            retiring->retirement.queues.push_back(std::move(copy));
        }
        options.serve.adopted.push_back({"", std::move(adopted)});
        detail::ProcSocket socket;
        socket.inode = listener.inode;
        socket.local = listener.address;
        socket.listening = true;
        socket.kind = listener.address.starts_with("unix:") ? detail::ProcSocket::Kind::unix_stream
                      : listener.address.starts_with("udp") ? detail::ProcSocket::Kind::udp
                                                            : detail::ProcSocket::Kind::tcp;
        retirement.listeners.push_back(socket);
        if (options.serve.on_event) {
            Event e("takeover", "adopted");
            e.set("pid", listener.pid).set("fd", listener.fd).set("address", listener.address);
            options.serve.on_event(e);
        }
    }

    options.serve.on_first_ready = [retiring,
                                    chained = std::move(options.serve.on_first_ready)](pid_t first) {
        if (chained) chained(first);
        Retiring* raw = retiring.get();
        raw->thread = std::jthread([raw] { retire(raw->retirement); });
    };
    return Supervisor(loop, std::move(options.serve));
}

}  // namespace ktricks::handoff
