// The serve() state machine.
//
// Generations: at most one `pending` (started, not yet ready), one `current` (serving) and any
// number `draining` (told to stop, given drain_timeout). A reload makes a pending generation; when
// it is ready it becomes current and the old current drains. If it exits or times out first, it is
// killed and the current one never noticed (rollback).
//
// Invariant: serve holds its own descriptor for every listener for its whole life, so the
// listening socket (one open file description shared by every generation) and its accept queue
// outlive any generation. A connection queued while the old generation exits is accepted by the
// new one; nothing is reset.
//
// Each generation is started in its own process group (so a whole generation, workers included,
// can be killed), with PR_SET_PDEATHSIG=SIGKILL, its own NOTIFY_SOCKET (an autobound abstract
// datagram socket, so a message always names its generation whatever process inside it sent it).
// PR_SET_PDEATHSIG reaches only the direct child; its workers would survive a SIGKILLed serve. With
// pid_namespace the direct child is pid 1 of a new PID namespace, and the kernel kills every process
// of a namespace whose init dies: then nothing of a generation outlives serve.
//
// Steering (TCP listeners serve binds itself, where the kernel lets serve load a reuseport program):
// every generation gets its own listening socket, bound to the same address with SO_REUSEPORT, and
// a reuseport program sends every new connection to the socket of the newest *ready* generation
// (steering.hpp). The switch is one map update, made when the new generation passes its readiness
// check; before that, and after a rollback, the old generation's socket still gets everything. A
// retired generation therefore gets no new connection at all; serve waits until its socket's accept
// queue is empty and every connection its process tree holds has had its request read (bounded by
// quiesce_limit), and only then sends the drain signal. That closes the race the shared socket has
// by construction: a server told to stop gracefully while it still accepts closes connections it
// has just accepted and not yet read as idle (nginx's ngx_close_idle_connections on QUIT), losing
// their requests. When a retired socket closes, whatever is still queued on it is migrated by the
// kernel to the current socket (the program is a select-or-migrate one), not reset.
// Unix and UDP listeners, adopted listeners (takeover) and serve without the privilege to load the
// program (event "steering-unavailable") keep the shared socket described above.
//
// Readiness through the probe: each generation also gets a listener of its own ("ktricks-probe",
// the last LISTEN_FDS entry). Nobody else accepts on it, so a connection accepted there, or an HTTP
// answer read from it, came from the new generation's code, not from its predecessor.
#include <fcntl.h>
#include <linux/sockios.h>
#include <linux/tcp.h>  // the kernel's tcp_info (glibc's lacks tcpi_bytes_received)
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <list>
#include <map>
#include <memory>
#include <span>

#include "handoff/proc_sockets.hpp"
#include "handoff/protocol.hpp"
#include "handoff/steering.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/proc.hpp"
#include "ktricks/core/scm_rights.hpp"

namespace ktricks::handoff {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t max_stored_fds = 512;
constexpr std::size_t max_control_clients = 64;
// How long a retired generation may keep connections whose request it has not read yet (a client
// that connected and sends nothing) before it gets the drain signal anyway.
constexpr milliseconds quiesce_limit{2000};

double ms_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::string describe_status(const ExitStatus& status) { return status.to_string(); }

struct StoredFd {
    std::string name;
    Fd fd;
};

struct Generation {
    unsigned number = 0;
    std::optional<Child> child;
    pid_t pid = 0;
    Fd notify;
    Fd channel;        // serve's end of the handoff channel (with --handoff)
    Fd successor_end;  // the socket on which connections reach this generation from its predecessor
    bool handoff_capable = false;
    bool drain_sent = false;
    Clock::time_point started, retired;
    EventLoop::SourceId exit_source = 0, notify_source = 0, channel_source = 0;
    std::vector<EventLoop::SourceId> sources;  // readiness checks and timers
    std::optional<Child> health;               // a running exec: readiness check
    bool pid_namespace = false;                // pid 1 of its own PID namespace
    // The probe listener (serve's copy, closed once the generation is ready) and one probe attempt.
    Fd probe;
    std::optional<SocketAddress> probe_address;
    Fd probe_connection;
    EventLoop::SourceId probe_source = 0;
    Clock::time_point probe_started;
    bool probe_sent = false;
    std::string probe_response, probe_last;  // bytes read so far; how the last attempt ended
    std::shared_ptr<void> attachment;        // what ServeOptions::on_spawned returned
    // Steered listeners: serve's copy of this generation's own socket, by listener index (empty
    // where the listener is shared). While the generation is current, its socket is in listeners_
    // instead; it comes back here when the generation is retired.
    std::vector<Fd> own;
    EventLoop::SourceId quiesce_source = 0;
};

// Replaces `path` with one line, the pid, atomically (readers never see an empty file).
void write_pid_file(const std::string& path, pid_t pid) {
    std::string temporary = path + ".ktricks-tmp";
    Fd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) throw_errno("open", temporary);
    std::string text = fmt::format("{}\n", pid);
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
        throw_errno("write", temporary);
    fd.reset();
    if (::rename(temporary.c_str(), path.c_str()) < 0) throw_errno("rename", path);
}

struct ControlClient {
    Fd fd;
    std::string input;
    EventLoop::SourceId source = 0;
};

// A unix socket address from a --control / --zerg argument: "@name" is abstract, anything else a path.
SocketAddress control_address(const std::string& path) {
    if (path.starts_with("@")) return SocketAddress::unix_abstract(path.substr(1));
    return SocketAddress::unix_path(path);
}

// Before binding a unix socket at a filesystem `path`: a socket file nobody accepts on (left by a
// serve that was SIGKILLed, which had no chance to remove it) is removed; a live socket is
// EADDRINUSE naming `who` answers on it; any other kind of file is an InputError. The connect
// attempt cannot disturb a live server: it is refused at once unless something listens there.
void replace_stale_socket_file(const std::string& path, const char* flag, const char* who) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return;
    if (!S_ISSOCK(st.st_mode))
        throw InputError(fmt::format("{} {}: exists and is not a socket", flag, printable(path)));
    auto address = SocketAddress::unix_path(path);
    Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), address.sockaddr_ptr(), address.length()) == 0)
        throw_error(EADDRINUSE, "bind", fmt::format("{} ({} answers on it)", printable(path), who));
    ::unlink(path.c_str());
}

// Binds a unix stream socket at `path`. A socket file left by a dead serve (nobody accepts on it)
// is replaced; a live one is an error.
Fd bind_control_socket(const std::string& path, const char* flag) {
    auto address = control_address(path);
    if (!path.starts_with("@")) replace_stale_socket_file(path, flag, "another serve");
    Fd fd = bind_socket(address, BindOptions{.backlog = 64});
    if (!path.starts_with("@")) ::chmod(path.c_str(), 0600);
    set_nonblocking(fd.get());
    return fd;
}

bool peer_allowed(int fd) {
    ucred cred{};
    socklen_t length = sizeof(cred);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) < 0) return false;
    return cred.uid == 0 || cred.uid == ::geteuid();
}

}  // namespace

class Supervisor::Impl {
public:
    Impl(EventLoop& loop, ServeOptions options) : o_(std::move(options)), loop_(loop) {}
    // Every source this supervisor added goes with it: the caller's loop outlives it. Generations
    // still running are killed and reaped by Child's destructor.
    ~Impl() {
        for (auto& [fd, client] : clients_) loop_.remove(client->source);
        for (auto* g : {pending_.get(), current_.get()})
            if (g) forget(*g);
        for (auto& g : draining_) forget(*g);
        for (auto id : {control_source_, zerg_source_, stop_timer_}) loop_.remove(id);
        for (const auto& path : unlink_at_exit_) ::unlink(path.c_str());
        if (o_.pid_file) ::unlink(o_.pid_file->c_str());
    }

    void bind();
    void start(std::function<void()> on_finished);
    std::optional<std::string> reload();
    void stop();
    ExitStatus result() const;

private:
    void emit(Event event) {
        if (o_.on_event) o_.on_event(event);
    }
    Event event(std::string_view name, const Generation* g = nullptr) {
        Event e("serve", name);
        if (g) e.set("generation", g->number).set("pid", g->pid);
        return e;
    }

    void bind_listeners();
    int first_stream_listener() const;
    std::unique_ptr<Generation> start_generation();
    void watch_readiness(Generation& g);
    void probe_tick(Generation& g);
    void probe_io(Generation& g, std::uint32_t events);
    void probe_reset(Generation& g, std::string outcome);
    Fd bind_probe();
    void on_notify(Generation& g);
    void on_channel(Generation& g);
    void on_exit(Generation& g);
    void become_ready(Generation& g);
    void fail_pending(const std::string& reason);
    void retire(Generation& g);
    void send_drain(Generation& g, bool quiet);
    bool quiet(Generation& g);
    bool steering() const {
        return std::any_of(steering_.begin(), steering_.end(), [](const auto& s) { return s.has_value(); });
    }
    void forget(Generation& g);
    std::optional<std::string> reload_now();
    void begin_stop();
    void maybe_finish();
    void kill_group(Generation& g, int signal_number);
    void answer_waiters(const ReloadResult& result);
    void on_control_accept();
    void on_control_input(int fd);
    void close_client(int fd);
    void on_zerg_accept();
    std::string status_json() const;

    ServeOptions o_;
    EventLoop& loop_;
    std::function<void()> on_finished_;
    bool started_ = false, finished_ = false;
    EventLoop::SourceId control_source_ = 0, zerg_source_ = 0, stop_timer_ = 0;
    std::vector<Listener> listeners_;
    // By listener index: the reuseport steering of a TCP listener serve bound itself, if available.
    std::vector<std::optional<detail::ReuseportSteering>> steering_;
    std::size_t adopted_count_ = 0;    // listeners_[0, adopted_count_) were adopted (takeover)
    std::vector<Fd> retired_sockets_;  // adopted sockets steered away from, kept till the end
    std::vector<StoredFd> fdstore_;
    std::unique_ptr<Generation> pending_, current_;
    std::list<std::unique_ptr<Generation>> draining_;
    unsigned next_number_ = 1;
    Clock::time_point reload_started_;
    bool stopping_ = false, first_ready_done_ = false;
    std::optional<ExitStatus> result_, last_exit_;
    std::optional<std::string> fatal_;
    Fd control_, zerg_;
    std::map<int, std::unique_ptr<ControlClient>> clients_;
    std::vector<int> reload_waiters_;
    std::vector<std::string> unlink_at_exit_;
    bool pid_namespace_refused_ = false;
};

void Supervisor::Impl::bind_listeners() {
    listeners_ = std::move(o_.adopted);
    adopted_count_ = listeners_.size();
    steering_.resize(adopted_count_);
    // An adopted TCP listener (takeover) was bound without SO_REUSEPORT, but the kernel checks the
    // flag only when another socket binds: set now, it lets generation 1's own socket join it in a
    // new group (start_generation), and the program then steers away from the old server too.
    for (std::size_t i = 0; i < adopted_count_ && o_.steer; ++i) {
        const int fd = listeners_[i].fd.get();
        try {
            auto address = SocketAddress::of_socket(fd);
            if (address.family() == AF_UNIX || address.transport() != SocketAddress::Transport::tcp) continue;
        } catch (const std::exception&) {
            continue;
        }
        int on = 1;
        if (::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) < 0) continue;
        try {
            steering_[i] = detail::ReuseportSteering::create();
        } catch (const std::system_error& error) {
            int off = 0;
            ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &off, sizeof(off));
            Event e("serve", "steering-unavailable");
            e.set("listener", listeners_[i].describe()).set("error", error.what());
            emit(std::move(e));
        }
    }
    for (const auto& spec : o_.listen) {
        // A unix:/path listener's file is serve's, like the socket: a stale one is replaced, and it
        // is removed when serve ends (the socket, held by serve, lives until then, whatever the
        // generations do). A generation that unlinks it cuts new clients off: gunicorn 20.1 does so
        // on exit unless it got its sockets through LISTEN_FDS (arbiter.stop), as --server gunicorn does.
        const bool path = spec.address.family() == AF_UNIX && !spec.address.is_abstract();
        const std::string file = path ? spec.address.to_string().substr(5) : std::string();
        if (path) replace_stale_socket_file(file, "--listen", "a live server");
        std::optional<detail::ReuseportSteering> steering;
        if (o_.steer && spec.address.family() != AF_UNIX &&
            spec.address.transport() == SocketAddress::Transport::tcp) {
            try {
                steering = detail::ReuseportSteering::create();
            } catch (const std::system_error& error) {
                Event e("serve", "steering-unavailable");
                e.set("listener", spec.address.to_string()).set("error", error.what());
                e.set("consequence",
                      "generations share one listening socket: a generation told to drain may still "
                      "accept, and close unread what it accepted last");
                emit(std::move(e));
            }
        }
        listeners_.push_back(
            {spec.name, bind_socket(spec.address, BindOptions{.reuse_port = steering.has_value()})});
        if (steering) {
            steering->attach(listeners_.back().fd.get());
            steering->steer_to(listeners_.back().fd.get());
        }
        steering_.resize(listeners_.size());
        steering_.back() = std::move(steering);
        if (path) unlink_at_exit_.push_back(file);
    }
    steering_.resize(listeners_.size());
    if (listeners_.empty()) throw InputError("nothing to listen on: give at least one --listen ADDR");
    if (o_.nonblocking_listeners)
        for (const auto& listener : listeners_) set_nonblocking(listener.fd.get());
    Event e = event("listening");
    std::vector<std::string> described;
    for (const auto& listener : listeners_) described.push_back(listener.describe());
    e.set("listeners", described);
    emit(std::move(e));
}

int Supervisor::Impl::first_stream_listener() const {
    for (const auto& listener : listeners_)
        if (SocketAddress::of_socket(listener.fd.get()).socket_type() == SOCK_STREAM)
            return listener.fd.get();
    throw InputError("--ready=tcp connects to the first stream listener, and every --listen is udp");
}

std::unique_ptr<Generation> Supervisor::Impl::start_generation() {
    auto g = std::make_unique<Generation>();
    g->number = next_number_++;

    g->notify = Fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!g->notify) throw_errno("socket(AF_UNIX, SOCK_DGRAM)", "NOTIFY_SOCKET");
    // Binding with only the family asks the kernel for a fresh abstract name (autobind): no file to
    // clean up, no name to collide with.
    sockaddr_un autobind{};
    autobind.sun_family = AF_UNIX;
    if (::bind(g->notify.get(), reinterpret_cast<sockaddr*>(&autobind), sizeof(sa_family_t)) < 0)
        throw_errno("bind", "NOTIFY_SOCKET (autobind)");
    std::string notify_name = SocketAddress::of_socket(g->notify.get()).to_string().substr(5);  // "@xxxxx"

    SpawnOptions spawn;
    spawn.argv = o_.command;
    std::vector<std::string> names;
    g->own.resize(listeners_.size());
    for (std::size_t i = 0; i < listeners_.size(); ++i) {
        const auto& listener = listeners_[i];
        const bool adopted = i < adopted_count_;
        if (steering_[i] && (g->number > 1 || adopted)) {
            // A socket of its own in the listener's reuseport group: the program sends it nothing
            // until become_ready points the group at it. listeners_ holds the current socket,
            // bound to the concrete address (a port 0 was resolved by the first bind).
            try {
                g->own[i] =
                    bind_socket(SocketAddress::of_socket(listener.fd.get()), BindOptions{.reuse_port = true});
                // An adopted listener's group exists only now: steer it to the old server first.
                if (g->number == 1) {
                    steering_[i]->attach(g->own[i].get());
                    steering_[i]->steer_to(listener.fd.get());
                }
            } catch (const std::system_error& error) {
                if (g->number > 1) throw;
                // The old server's socket belongs to another uid, say: share it as before.
                g->own[i].reset();
                steering_[i].reset();
                Event e("serve", "steering-unavailable");
                e.set("listener", listener.describe()).set("error", error.what());
                emit(std::move(e));
            }
        }
        if (g->own[i]) {
            if (o_.nonblocking_listeners) set_nonblocking(g->own[i].get());
            spawn.pass_fds.push_back(g->own[i].get());
        } else {
            spawn.pass_fds.push_back(listener.fd.get());
        }
        names.push_back(listener.name);
    }
    for (const auto& stored : fdstore_) {
        spawn.pass_fds.push_back(stored.fd.get());
        names.push_back(stored.name);
    }
    Fd child_channel, child_inherit;
    if (o_.ready.uses_probe()) {
        g->probe = bind_probe();
        g->probe_address = SocketAddress::of_socket(g->probe.get());
        spawn.pass_fds.push_back(g->probe.get());
        names.emplace_back(probe_name);
    }
    const int announced = static_cast<int>(spawn.pass_fds.size());
    if (o_.handoff) {
        int pair[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
            throw_errno("socketpair", "handoff channel");
        g->channel = Fd(pair[0]);
        child_channel = Fd(pair[1]);
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
            throw_errno("socketpair", "handoff inherit");
        g->successor_end = Fd(pair[0]);
        child_inherit = Fd(pair[1]);
        spawn.pass_fds.push_back(child_channel.get());
        spawn.pass_fds.push_back(child_inherit.get());
        spawn.set_env.push_back(fmt::format("KTRICKS_HANDOFF_FD={}", 3 + announced));
        spawn.set_env.push_back(fmt::format("KTRICKS_HANDOFF_INHERIT_FD={}", 3 + announced + 1));
    } else {
        spawn.unset_env = {"KTRICKS_HANDOFF_FD", "KTRICKS_HANDOFF_INHERIT_FD"};
    }
    spawn.listen_fds_env = o_.protocol == Protocol::systemd;
    spawn.listen_fds_count = announced;
    if (o_.protocol != Protocol::systemd)
        for (const char* key : {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"})
            spawn.unset_env.emplace_back(key);
    for (auto& entry : protocol_environment(o_.protocol, names, ::getpid()))
        spawn.set_env.push_back(std::move(entry));
    for (const auto& entry : o_.environment) spawn.set_env.push_back(entry);
    spawn.set_env.push_back("NOTIFY_SOCKET=" + notify_name);
    spawn.set_env.push_back(fmt::format("KTRICKS_SERVE_GENERATION={}", g->number));
    spawn.new_process_group = true;
    spawn.parent_death_signal = SIGKILL;
    if (o_.customize_spawn) o_.customize_spawn(spawn);
    const bool hook_pid_namespace = spawn.clone_flags & CLONE_NEWPID;
    if (o_.pid_namespace && !pid_namespace_refused_) spawn.clone_flags |= CLONE_NEWPID;

    g->started = Clock::now();
    try {
        g->child.emplace(Child::spawn(spawn));
    } catch (const std::system_error& error) {
        // Without CAP_SYS_ADMIN (or in a namespace nested too deep) CLONE_NEWPID is refused: run
        // the generation as a plain child and say that its workers can now outlive a killed serve.
        int code = error.code().value();
        if (!(spawn.clone_flags & CLONE_NEWPID) || hook_pid_namespace ||
            (code != EPERM && code != EINVAL && code != ENOSPC && code != EUSERS))
            throw;
        pid_namespace_refused_ = true;
        spawn.clone_flags &= ~CLONE_NEWPID;
        Event e("serve", "pid-namespace-unavailable");
        e.set("error", error.what());
        e.set("consequence",
              "generations run as plain children: if serve is SIGKILLed, their own children survive");
        emit(std::move(e));
        g->child.emplace(Child::spawn(spawn));
    }
    g->pid_namespace = spawn.clone_flags & CLONE_NEWPID;
    g->pid = g->child->pid();

    if (o_.on_spawned) g->attachment = o_.on_spawned(loop_, g->pid);
    Generation* raw = g.get();
    g->exit_source = loop_.add_child(g->child->pidfd(), [this, raw] { on_exit(*raw); });
    g->notify_source =
        loop_.add_fd(g->notify.get(), EPOLLIN, [this, raw](std::uint32_t) { on_notify(*raw); });
    if (g->channel)
        g->channel_source =
            loop_.add_fd(g->channel.get(), EPOLLIN, [this, raw](std::uint32_t) { on_channel(*raw); });
    Event e = event("started", raw);
    e.set("command", shell_join(o_.command));
    if (g->pid_namespace) e.set("pid_namespace", true);
    if (g->probe_address) e.set("probe", g->probe_address->to_string());
    emit(std::move(e));
    return g;
}

Fd Supervisor::Impl::bind_probe() {
    SocketAddress address = o_.probe.value_or(SocketAddress::parse("tcp://127.0.0.1:0"));
    if (address.transport() == SocketAddress::Transport::udp)
        throw InputError(fmt::format("--probe {}: the probe must be a stream socket", address.to_string()));
    if (address.family() == AF_UNIX && !address.is_abstract()) {
        // Each generation gets a fresh socket at the same path (a server's configuration can name
        // only one path): the previous generation keeps its own socket, reachable through its fd.
        std::string path = address.to_string().substr(5);
        struct stat st {};
        if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
    }
    Fd fd = bind_socket(address, BindOptions{.backlog = 16});
    if (o_.nonblocking_listeners) set_nonblocking(fd.get());
    return fd;
}

void Supervisor::Impl::probe_reset(Generation& g, std::string outcome) {
    if (g.probe_source) loop_.remove(std::exchange(g.probe_source, 0));
    g.probe_connection.reset();
    g.probe_sent = false;
    g.probe_response.clear();
    if (!outcome.empty()) g.probe_last = std::move(outcome);
}

// Every 100 ms: start one probe attempt unless one is under way (an attempt gets 2 s).
void Supervisor::Impl::probe_tick(Generation& g) {
    if (g.probe_connection) {
        if (o_.ready.kind == ReadyCheck::Kind::connect && g.probe_sent) {
            // serve holds the probe listener too: it is readable while a connection waits in its
            // accept queue, and ours is the only one that can be there. Judged a tick after the
            // handshake completed, so the kernel has long queued it: empty now means accepted.
            pollfd queue{g.probe.get(), POLLIN, 0};
            if (::poll(&queue, 1, 0) == 0) {
                probe_reset(g, "");
                become_ready(g);
                return;
            }
        }
        if (Clock::now() - g.probe_started < std::chrono::seconds(2)) return;
        probe_reset(g, o_.ready.kind == ReadyCheck::Kind::connect ? "the connection was never accepted"
                                                                  : "no answer within 2 s");
    }
    const SocketAddress& address = *g.probe_address;
    Fd fd(::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return;
    if (::connect(fd.get(), address.sockaddr_ptr(), address.length()) < 0 && errno != EINPROGRESS &&
        errno != EAGAIN) {
        g.probe_last = fmt::format("connect: {}", std::strerror(errno));
        return;
    }
    g.probe_connection = std::move(fd);
    g.probe_started = Clock::now();
    Generation* raw = &g;
    g.probe_source = loop_.add_fd(g.probe_connection.get(), EPOLLIN | EPOLLOUT | EPOLLRDHUP,
                                  [this, raw](std::uint32_t events) { probe_io(*raw, events); });
}

void Supervisor::Impl::probe_io(Generation& g, std::uint32_t events) {
    if (o_.ready.kind == ReadyCheck::Kind::connect) {
        if (events & EPOLLERR) return probe_reset(g, "connect failed");
        // Established (or already closed by whoever accepted it): probe_tick looks at the accept
        // queue. Nothing more to wait for here, and a level-triggered HUP would spin.
        g.probe_sent = true;
        loop_.remove(std::exchange(g.probe_source, 0));
        return;
    }
    if ((events & EPOLLOUT) && !g.probe_sent) {
        std::string request = fmt::format(
            "GET {} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: ktricks-serve-probe\r\n"
            "Connection: close\r\n\r\n",
            o_.ready.path);
        if (::send(g.probe_connection.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
            static_cast<ssize_t>(request.size()))
            return probe_reset(g, fmt::format("send: {}", std::strerror(errno)));
        g.probe_sent = true;
        loop_.modify_fd(g.probe_source, EPOLLIN | EPOLLRDHUP);
    }
    if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) return;
    char buffer[512];
    ssize_t got = ::recv(g.probe_connection.get(), buffer, sizeof(buffer), MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (got > 0) g.probe_response.append(buffer, static_cast<std::size_t>(std::min<ssize_t>(got, 512)));
    if (g.probe_response.find('\n') == std::string::npos && got > 0 && g.probe_response.size() < 512) return;
    int status = detail::parse_http_status(g.probe_response);
    bool good = status != 0 && (o_.ready.status ? status == o_.ready.status : status < 500);
    if (good) {
        probe_reset(g, "");
        become_ready(g);
        return;
    }
    probe_reset(g, status ? fmt::format("GET {} answered {}", o_.ready.path, status)
                   : got < 0
                       ? fmt::format("recv: {}", std::strerror(errno))
                       : fmt::format("GET {}: the connection closed without an HTTP answer", o_.ready.path));
}

void Supervisor::Impl::watch_readiness(Generation& g) {
    Generation* raw = &g;
    g.sources.push_back(loop_.add_timer(o_.ready_timeout, [this, raw] {
        std::string reason =
            fmt::format("not ready within {} ms (--ready-timeout)", o_.ready_timeout.count());
        if (raw->probe_address) {
            reason += fmt::format("; the probe {} ", raw->probe_address->to_string());
            reason +=
                raw->probe_last.empty() ? std::string("was never answered") : "failed: " + raw->probe_last;
            reason +=
                " (the server must serve every inherited socket, or name the probe in its configuration: "
                "--probe unix:PATH and e.g. nginx's `listen unix:PATH;`)";
        }
        fail_pending(reason);
    }));
    switch (o_.ready.kind) {
        case ReadyCheck::Kind::notify: break;
        case ReadyCheck::Kind::http:
        case ReadyCheck::Kind::connect:
            g.sources.push_back(loop_.add_timer(
                std::chrono::milliseconds(10), [this, raw] { probe_tick(*raw); },
                std::chrono::milliseconds(100)));
            break;
        case ReadyCheck::Kind::delay:
            g.sources.push_back(loop_.add_timer(o_.ready.delay, [this, raw] { become_ready(*raw); }));
            break;
        case ReadyCheck::Kind::tcp: {
            // Weak: the listener is shared, so the kernel completes the handshake whoever will
            // accept; this only shows that the socket exists and is not full. The first *stream*
            // listener: a datagram socket's connect() succeeds without anybody answering.
            auto address = SocketAddress::of_socket(first_stream_listener());
            g.sources.push_back(loop_.add_timer(
                std::chrono::milliseconds(20),
                [this, raw, address] {
                    Fd probe(::socket(address.family(), address.socket_type() | SOCK_CLOEXEC, 0));
                    if (probe && ::connect(probe.get(), address.sockaddr_ptr(), address.length()) == 0)
                        become_ready(*raw);
                },
                std::chrono::milliseconds(50)));
            break;
        }
        case ReadyCheck::Kind::exec:
            g.sources.push_back(loop_.add_timer(
                std::chrono::milliseconds(1),
                [this, raw] {
                    if (raw->health) return;  // the last check is still running
                    SpawnOptions check;
                    check.argv = {"/bin/sh", "-c", o_.ready.command};
                    check.set_env.push_back(fmt::format("KTRICKS_SERVE_PID={}", raw->pid));
                    check.parent_death_signal = SIGKILL;
                    raw->health.emplace(Child::spawn(check));
                    raw->sources.push_back(loop_.add_child(raw->health->pidfd(), [this, raw] {
                        auto status = raw->health->wait();
                        raw->health.reset();
                        if (status && !status->signaled && status->code == 0) become_ready(*raw);
                    }));
                },
                std::chrono::milliseconds(100)));
            break;
    }
}

void Supervisor::Impl::on_notify(Generation& g) {
    while (true) {
        std::array<std::byte, 4096> buffer;
        ReceivedMessage message;
        try {
            message = recv_fds(g.notify.get(), buffer, max_fds_per_message);
        } catch (const std::system_error& error) {
            if (error.code().value() == EAGAIN || error.code().value() == EWOULDBLOCK) return;
            // One bad datagram (too many fds) is logged and dropped; the generation goes on.
            Event e = event("notify-error", &g);
            e.set("error", error.what());
            emit(std::move(e));
            continue;
        }
        auto parsed = detail::parse_notify({reinterpret_cast<const char*>(buffer.data()), message.size});
        if (parsed.status) {
            Event e = event("status", &g);
            e.set("status", *parsed.status);
            emit(std::move(e));
        }
        if (parsed.fdstore_remove && parsed.fdname)
            std::erase_if(fdstore_, [&](const StoredFd& s) { return s.name == *parsed.fdname; });
        if (parsed.fdstore && !message.fds.empty()) {
            std::string name = parsed.fdname.value_or("stored");
            std::size_t kept = 0;
            for (auto& fd : message.fds)
                if (fdstore_.size() < max_stored_fds) {
                    fdstore_.push_back({name, std::move(fd)});
                    ++kept;
                }
            Event e = event("fdstore", &g);
            e.set("name", name).set("count", kept).set("dropped", message.fds.size() - kept);
            emit(std::move(e));
        }
        if (parsed.stopping) emit(event("stopping", &g));
        if (parsed.ready && &g == pending_.get() && o_.ready.uses_probe()) emit(event("notified-ready", &g));
        if (parsed.ready && &g == pending_.get() && o_.ready.kind == ReadyCheck::Kind::notify) {
            become_ready(g);
            return;  // g may be retired below us only on a later event; keep this one simple
        }
    }
}

void Supervisor::Impl::on_channel(Generation& g) {
    char buffer[64];
    ssize_t got = ::recv(g.channel.get(), buffer, sizeof(buffer), MSG_DONTWAIT);
    if (got > 0 && std::string_view(buffer, static_cast<std::size_t>(got)) == detail::hello_message) {
        g.handoff_capable = true;
        return;
    }
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
        loop_.remove(std::exchange(g.channel_source, 0));  // closed by the generation: stop watching
        g.handoff_capable = false;
    }
}

void Supervisor::Impl::forget(Generation& g) {
    for (auto id : {g.exit_source, g.notify_source, g.channel_source, g.probe_source, g.quiesce_source})
        loop_.remove(id);
    g.probe_source = g.quiesce_source = 0;
    for (auto id : g.sources) loop_.remove(id);
    g.sources.clear();
}

void Supervisor::Impl::kill_group(Generation& g, int signal_number) {
    // The whole group, even when the leader is gone: workers it forked may still hold connections.
    // The kernel never hands out a pid that is still some group's id, so this cannot hit strangers.
    if (g.pid > 0 && ::kill(-g.pid, signal_number) == 0) return;
    if (g.child && g.child->running()) g.child->signal(signal_number);
}

void Supervisor::Impl::become_ready(Generation& g) {
    if (&g != pending_.get()) return;
    // Readiness timers and checks go; the exit watcher and the notify socket stay.
    for (auto id : g.sources) loop_.remove(id);
    g.sources.clear();
    g.health.reset();
    probe_reset(g, "");
    g.probe.reset();  // the generation keeps its own copy; serve needs it no more

    double ready_ms = ms_since(g.number == 1 ? g.started : reload_started_);
    Event e = event("ready", &g);
    e.set("ready_ms", ready_ms);
    emit(std::move(e));

    // The switch: from here on every new connection goes to g's sockets. If the kernel refuses,
    // nothing was switched and the old generation keeps serving.
    try {
        for (std::size_t i = 0; i < listeners_.size(); ++i)
            if (steering_[i] && g.own[i]) steering_[i]->steer_to(g.own[i].get());
    } catch (const std::system_error& error) {
        for (std::size_t i = 0; i < listeners_.size(); ++i)
            if (steering_[i] && g.own[i]) steering_[i]->steer_to(listeners_[i].fd.get());
        fail_pending(fmt::format("could not steer new connections to it: {}", error.what()));
        return;
    }
    std::unique_ptr<Generation> old = std::move(current_);
    for (std::size_t i = 0; i < listeners_.size(); ++i) {
        if (!g.own[i]) continue;
        Fd previous = std::exchange(listeners_[i].fd, std::move(g.own[i]));
        if (old) old->own[i] = std::move(previous);  // closes with the old generation
        // An adopted socket: the old server (takeover) still holds it; it gets nothing more.
        else
            retired_sockets_.push_back(std::move(previous));
    }
    current_ = std::move(pending_);
    if (old) {
        if (old->handoff_capable && current_->successor_end) {
            std::array<int, 1> fds{current_->successor_end.get()};
            try {
                send_fds(old->channel.get(), std::as_bytes(std::span(detail::upgrade_message)), fds);
            } catch (const std::exception&) {
                old->handoff_capable = false;  // it closed its channel: fall back to the drain signal
            }
        }
        retire(*old);
        draining_.push_back(std::move(old));
    }
    current_->successor_end.reset();  // connections reach it only from the predecessor it was given to
    if (o_.pid_file) {
        try {
            write_pid_file(*o_.pid_file, current_->pid);
        } catch (const std::exception& error) {
            Event failed("serve", "pid-file-error");
            failed.set("error", error.what());
            emit(std::move(failed));
        }
    }
    answer_waiters({true, "", current_->number, current_->pid, ready_ms});
    if (!first_ready_done_) {
        first_ready_done_ = true;
        if (o_.on_first_ready) o_.on_first_ready(current_->pid);
    }
}

void Supervisor::Impl::retire(Generation& g) {
    g.retired = Clock::now();
    const bool steered = std::any_of(g.own.begin(), g.own.end(), [](const Fd& fd) { return bool(fd); });
    if (g.handoff_capable || !steered) return send_drain(g, false);
    // It gets no new connection any more; the drain signal waits until it has nothing unread.
    Generation* raw = &g;
    g.quiesce_source = loop_.add_timer(
        milliseconds(1),
        [this, raw] {
            if (raw->drain_sent) {
                loop_.remove(std::exchange(raw->quiesce_source, 0));
                return;
            }
            const bool done = quiet(*raw);
            if (!done && Clock::now() - raw->retired < std::min(quiesce_limit, o_.drain_timeout)) return;
            loop_.remove(std::exchange(raw->quiesce_source, 0));
            send_drain(*raw, done);
        },
        milliseconds(10));
}

// Whether a retired generation g may get its drain signal without losing a request: its steered
// sockets' accept queues are empty (nothing can be added: the program sends it nothing), and every
// TCP connection its process tree holds on them has received bytes and has none unread. What is
// left is a request it has read and is answering (a graceful stop finishes those) or an idle
// keep-alive connection (the residual race in docs/handoff.md).
bool Supervisor::Impl::quiet(Generation& g) {
    std::vector<detail::ProcSocket> sockets;
    for (const auto& fd : g.own) {
        if (!fd) continue;
        tcp_info info{};
        socklen_t length = sizeof(info);
        // On a listener, tcpi_unacked is the accept queue's length (sk_ack_backlog).
        if (::getsockopt(fd.get(), IPPROTO_TCP, TCP_INFO, &info, &length) == 0 && info.tcpi_unacked > 0)
            return false;
        detail::ProcSocket listener;
        listener.kind = detail::ProcSocket::Kind::tcp;
        listener.local = SocketAddress::of_socket(fd.get()).to_string();
        listener.listening = true;
        sockets.push_back(std::move(listener));
    }
    for (pid_t pid : process_tree(g.pid)) {
        Fd pidfd;
        try {
            pidfd = open_pidfd(pid);
        } catch (const std::system_error&) {
            continue;  // exited meanwhile
        }
        for (const auto& connection : detail::held_connections(pid, pidfd.get(), sockets)) {
            tcp_info info{};
            socklen_t length = sizeof(info);
            if (::getsockopt(connection.fd.get(), IPPROTO_TCP, TCP_INFO, &info, &length) < 0) continue;
            if (info.tcpi_state != 1) continue;  // not TCP_ESTABLISHED: the client has closed or is closing
            int unread = 0;
            if (info.tcpi_bytes_received == 0) return false;  // accepted, its request not yet here
            if (::ioctl(connection.fd.get(), SIOCINQ, &unread) == 0 && unread > 0) return false;
        }
    }
    return true;
}

void Supervisor::Impl::send_drain(Generation& g, bool quiet) {
    Event e = event("draining", &g);
    if (std::any_of(g.own.begin(), g.own.end(), [](const Fd& fd) { return bool(fd); }))
        e.set("quiesce_ms", ms_since(g.retired)).set("quiet", quiet);
    if (g.handoff_capable) {
        e.set("how", "handoff");
    } else {
        e.set("how",
              fmt::format("signal {}", sigabbrev_np(o_.drain_signal) ? sigabbrev_np(o_.drain_signal) : "?"));
        if (g.child->signal(o_.drain_signal)) g.drain_sent = true;
    }
    e.set("drain_timeout_ms", o_.drain_timeout.count());
    emit(std::move(e));
    Generation* raw = &g;
    g.sources.push_back(loop_.add_timer(o_.drain_timeout, [this, raw] {
        Event killed = event("drain-timeout", raw);
        killed.set("action", "SIGKILL to its process group");
        emit(std::move(killed));
        kill_group(*raw, SIGKILL);
    }));
}

void Supervisor::Impl::fail_pending(const std::string& reason) {
    std::unique_ptr<Generation> g = std::move(pending_);
    if (!g) return;
    forget(*g);
    kill_group(*g, SIGKILL);
    // The first generation has nothing to roll back to: that is a failed start, not a reload.
    Event e = event(current_ || g->number > 1 ? "rollback" : "failed", g.get());
    e.set("reason", reason);
    if (current_) e.set("serving", current_->number);
    emit(std::move(e));
    answer_waiters({false,
                    fmt::format("generation {} (pid {}) {}; {}", g->number, g->pid, reason,
                                current_ ? fmt::format("generation {} (pid {}) keeps serving",
                                                       current_->number, current_->pid)
                                         : std::string("nothing is serving")),
                    current_ ? current_->number : 0, current_ ? current_->pid : 0, 0});
    if (!current_) {
        if (!result_) result_ = last_exit_;
        if (g->number == 1)
            fatal_ = fmt::format("{}: generation 1 (pid {}) {}", shell_join(o_.command), g->pid, reason);
        begin_stop();
    }
    g.reset();  // Child's destructor reaps the killed process
    maybe_finish();
}

void Supervisor::Impl::on_exit(Generation& g) {
    auto status = g.child->wait();
    last_exit_ = status;
    if (&g == pending_.get()) {
        fail_pending(fmt::format("{} before it was ready", describe_status(*status)));
        return;
    }
    forget(g);
    if (&g == current_.get()) {
        Event e = event("exited", &g);
        e.set("status", describe_status(*status)).set("exit_status", status->shell_status());
        emit(std::move(e));
        current_.reset();
        if (!stopping_ && !pending_) {
            result_ = status;
            begin_stop();
        }
    } else {
        Event e = event("drained", &g);
        e.set("status", describe_status(*status)).set("drain_ms", ms_since(g.retired));
        emit(std::move(e));
        draining_.remove_if([&](const std::unique_ptr<Generation>& d) { return d.get() == &g; });
    }
    maybe_finish();
}

std::optional<std::string> Supervisor::Impl::reload_now() {
    if (stopping_) return std::string("serve is stopping");
    if (pending_)
        return fmt::format(
            "a reload is already in progress: generation {} (pid {}) started {:.0f} ms ago and is not "
            "ready yet; try again once it is",
            pending_->number, pending_->pid, ms_since(pending_->started));
    reload_started_ = Clock::now();
    Event e("serve", "reload");
    e.set("generation", next_number_);
    emit(std::move(e));
    try {
        pending_ = start_generation();
        watch_readiness(*pending_);
    } catch (const std::exception& error) {
        pending_.reset();
        Event rollback("serve", "rollback");
        rollback.set("reason", error.what());
        emit(std::move(rollback));
        return fmt::format(
            "{}; {}", error.what(),
            current_ ? fmt::format("generation {} keeps serving", current_->number) : "nothing is serving");
    }
    return std::nullopt;
}

void Supervisor::Impl::begin_stop() {
    if (stopping_) return;
    stopping_ = true;
    emit(Event("serve", "stopping"));
    auto drain = [&](Generation& g) {
        if (g.quiesce_source) {  // retired, waiting to be quiet: serve is stopping, so no more waiting
            loop_.remove(std::exchange(g.quiesce_source, 0));
            if (!g.drain_sent) send_drain(g, false);
        }
        if (!g.drain_sent && g.child && g.child->signal(o_.drain_signal)) g.drain_sent = true;
    };
    if (pending_) drain(*pending_);
    if (current_) drain(*current_);
    for (auto& g : draining_) drain(*g);
    stop_timer_ = loop_.add_timer(o_.drain_timeout, [this] {
        stop_timer_ = 0;
        if (pending_) kill_group(*pending_, SIGKILL);
        if (current_) kill_group(*current_, SIGKILL);
        for (auto& g : draining_) kill_group(*g, SIGKILL);
    });
    answer_waiters({false, "serve is stopping", 0, 0, 0});
    maybe_finish();
}

void Supervisor::Impl::maybe_finish() {
    if (!stopping_ && !pending_ && !current_) {
        result_ = last_exit_;
        begin_stop();
        return;
    }
    if (stopping_ && !pending_ && !current_ && draining_.empty() && !finished_) {
        finished_ = true;
        loop_.remove(std::exchange(stop_timer_, 0));
        if (on_finished_) on_finished_();
    }
}

void Supervisor::Impl::answer_waiters(const ReloadResult& result) {
    std::string answer = detail::reload_answer(result);
    for (int fd : std::exchange(reload_waiters_, {})) {
        if (!clients_.count(fd)) continue;
        (void)::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        close_client(fd);
    }
}

std::string Supervisor::Impl::status_json() const {
    nlohmann::ordered_json status;
    status["ok"] = true;
    status["generation"] = current_ ? current_->number : 0;
    status["pid"] = current_ ? current_->pid : 0;
    status["reloading"] = pending_ != nullptr;
    std::vector<pid_t> draining;
    for (const auto& g : draining_) draining.push_back(g->pid);
    status["draining"] = draining;
    std::vector<std::string> listeners;
    for (const auto& listener : listeners_) listeners.push_back(listener.describe());
    status["listeners"] = listeners;
    status["fdstore"] = fdstore_.size();
    return status.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

void Supervisor::Impl::close_client(int fd) {
    auto it = clients_.find(fd);
    if (it == clients_.end()) return;
    loop_.remove(it->second->source);
    clients_.erase(it);
}

void Supervisor::Impl::on_control_accept() {
    while (true) {
        Fd client(::accept4(control_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!client) return;  // EAGAIN, or a client that vanished: nothing to do
        if (!peer_allowed(client.get()) || clients_.size() >= max_control_clients) continue;
        int fd = client.get();
        auto entry = std::make_unique<ControlClient>();
        entry->fd = std::move(client);
        entry->source = loop_.add_fd(fd, EPOLLIN, [this, fd](std::uint32_t) { on_control_input(fd); });
        clients_.emplace(fd, std::move(entry));
    }
}

void Supervisor::Impl::on_control_input(int fd) {
    auto& client = *clients_.at(fd);
    char buffer[512];
    ssize_t got = ::recv(fd, buffer, sizeof(buffer), 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (got <= 0) {
        std::erase(reload_waiters_, fd);
        close_client(fd);
        return;
    }
    client.input.append(buffer, static_cast<std::size_t>(got));
    auto newline = client.input.find('\n');
    if (newline == std::string::npos) {
        if (client.input.size() > 256) close_client(fd);
        return;
    }
    auto reply = [&](const std::string& text) {
        (void)::send(fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        close_client(fd);
    };
    try {
        switch (detail::parse_control_request(std::string_view(client.input).substr(0, newline))) {
            case detail::ControlRequest::status: reply(status_json()); return;
            case detail::ControlRequest::reload:
                if (auto refused = reload_now()) {
                    Event e("serve", "refused");
                    e.set("reason", *refused);
                    emit(std::move(e));
                    reply(detail::reload_answer(
                        {false, *refused, current_ ? current_->number : 0, current_ ? current_->pid : 0, 0}));
                    return;
                }
                reload_waiters_.push_back(fd);
                return;
        }
    } catch (const InputError& error) {
        nlohmann::json answer{{"ok", false}, {"error", error.what()}};
        reply(answer.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    }
}

void Supervisor::Impl::on_zerg_accept() {
    while (true) {
        Fd client(::accept4(zerg_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!client) return;
        if (!peer_allowed(client.get())) continue;
        std::vector<int> fds;
        for (const auto& listener : listeners_) fds.push_back(listener.fd.get());
        std::string greeting = detail::zerg_greeting(static_cast<int>(fds.size()));
        try {
            send_fds(client.get(), std::as_bytes(std::span(greeting)), fds);
            ucred cred{};
            socklen_t length = sizeof(cred);
            ::getsockopt(client.get(), SOL_SOCKET, SO_PEERCRED, &cred, &length);
            Event e("serve", "zerg");
            e.set("pid", cred.pid).set("listeners", fds.size());
            emit(std::move(e));
        } catch (const std::exception& error) {
            Event e("serve", "zerg-error");
            e.set("error", error.what());
            emit(std::move(e));
        }
    }
}

void Supervisor::Impl::bind() {
    if (o_.command.empty()) throw InputError("missing command: ktricks serve --listen ADDR -- CMD [ARGS...]");
    // uWSGI zerg instances take the listeners once, whenever they connect, and are no generation:
    // steered away from, they would get nothing after the next reload. They share the socket.
    if (o_.zerg_path) o_.steer = false;
    bind_listeners();
    if (o_.ready.kind == ReadyCheck::Kind::tcp) first_stream_listener();  // fail before anything starts
    if (o_.control_path) {
        control_ = bind_control_socket(*o_.control_path, "--control");
        if (!o_.control_path->starts_with("@")) unlink_at_exit_.push_back(*o_.control_path);
        control_source_ =
            loop_.add_fd(control_.get(), EPOLLIN, [this](std::uint32_t) { on_control_accept(); });
    }
    if (o_.zerg_path) {
        zerg_ = bind_control_socket(*o_.zerg_path, "--zerg");
        if (!o_.zerg_path->starts_with("@")) unlink_at_exit_.push_back(*o_.zerg_path);
        zerg_source_ = loop_.add_fd(zerg_.get(), EPOLLIN, [this](std::uint32_t) { on_zerg_accept(); });
    }
}

void Supervisor::Impl::start(std::function<void()> on_finished) {
    if (started_) throw std::logic_error("handoff::Supervisor::start called twice");
    started_ = true;
    on_finished_ = std::move(on_finished);
    reload_started_ = Clock::now();
    pending_ = start_generation();
    watch_readiness(*pending_);
}

std::optional<std::string> Supervisor::Impl::reload() {
    if (!started_) return std::string("serve has not started");
    auto refused = reload_now();
    if (refused) {
        Event e("serve", "refused");
        e.set("reason", *refused);
        emit(std::move(e));
    }
    return refused;
}

void Supervisor::Impl::stop() {
    if (!started_ || stopping_) return;
    result_ = ExitStatus{};
    begin_stop();
}

ExitStatus Supervisor::Impl::result() const {
    if (fatal_) throw GenerationFailed(*fatal_);
    return result_.value_or(ExitStatus{});
}

Supervisor::Supervisor(EventLoop& loop, ServeOptions options)
    : impl_(std::make_unique<Impl>(loop, std::move(options))) {
    impl_->bind();
}
Supervisor::Supervisor(Supervisor&&) noexcept = default;
Supervisor& Supervisor::operator=(Supervisor&&) noexcept = default;
Supervisor::~Supervisor() = default;
void Supervisor::start(std::function<void()> on_finished) { impl_->start(std::move(on_finished)); }
std::optional<std::string> Supervisor::reload() { return impl_->reload(); }
void Supervisor::stop() { impl_->stop(); }
ExitStatus Supervisor::result() const { return impl_->result(); }

}  // namespace ktricks::handoff
