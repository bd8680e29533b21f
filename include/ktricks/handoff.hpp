// handoff: replace a server without closing its listening sockets, and move live connections.
//
// A socket is a kernel object, not a property of a process: a descriptor for it can be inherited
// across exec, sent over a unix socket (SCM_RIGHTS) or taken from another process (pidfd_getfd).
// Every copy refers to the same open file description, so the accept queue survives any one
// holder's exit. The supervisor always keeps its own copy of every listener; a generation that dies
// never takes a queued connection with it.
//
// Three nouns:
//   - Supervisor: a zero-downtime supervisor (`ktricks serve`). Binds (or adopts) listeners, runs a command with them
//                 (systemd's LISTEN_FDS protocol or an adapter), waits for readiness (NOTIFY_SOCKET
//                 READY=1 or another check), and on reload starts a new generation before retiring
//                 the old one. A failing new generation is rolled back; the old one keeps serving.
//   - takeover(): pidfd_getfd's the listeners of a running process that knows nothing of this,
//                 starts the command under a Supervisor, and retires the old process without losing a
//                 request it already accepted.
//   - Upgrader:   for a C++ server run under `serve --handoff`: inherit listeners, say ready, and
//                 hand established connections (with an opaque state blob) to the successor.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ktricks/core/child.hpp"
#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/core/socket_address.hpp"

namespace ktricks::handoff {

using std::chrono::milliseconds;

// `--listen [NAME=]ADDR`: an address to bind and the name it gets in LISTEN_FDNAMES.
struct ListenSpec {
    std::string name;  // empty: no name given
    SocketAddress address;
    // Throws InputError: "NAME=ADDR" with NAME of [A-Za-z0-9_.-] (systemd's rule: no ':'), or ADDR.
    static ListenSpec parse(std::string_view text);
};

// A listening socket the supervisor holds (its own copy; generations get duplicates via exec).
struct Listener {
    std::string name;
    Fd fd;
    std::string describe() const;  // "tcp://127.0.0.1:8080" or "web=tcp://127.0.0.1:8080"
};

// When a new generation counts as ready (`--ready`).
//
// `http` and `connect` go through the generation's private probe listener (see ServeOptions::probe):
// they prove that the new generation's own code accepts (connect) or answers (http), not merely that
// the shared listener exists. With them, READY=1 from the generation is reported and not trusted.
struct ReadyCheck {
    enum class Kind { notify, tcp, exec, delay, http, connect } kind = Kind::notify;
    std::string command;  // exec: run by /bin/sh -c, ready when it exits 0 (retried every 100 ms)
    milliseconds delay{0};
    std::string path;  // http: the request target, e.g. "/health"
    int status = 0;    // http: the status that counts as ready; 0: any status below 500
    // "notify", "tcp", "exec:CMD", "delay:MS", "http:PATH[=STATUS]", "connect". Throws InputError.
    static ReadyCheck parse(std::string_view text);
    bool uses_probe() const noexcept { return kind == Kind::http || kind == Kind::connect; }
};

// The name of the probe listener in LISTEN_FDNAMES.
inline constexpr std::string_view probe_name = "ktricks-probe";

// How the listeners are announced to the command (`--protocol`).
enum class Protocol { systemd, nginx, einhorn, gunicorn };
Protocol parse_protocol(std::string_view text);  // throws InputError
// The environment entries ("KEY=VALUE") announcing `count` descriptors at 3.. in `protocol`'s
// convention. systemd's LISTEN_FDS/LISTEN_PID are set by Child::spawn (LISTEN_PID is only known
// after fork); this returns LISTEN_FDNAMES for it. gunicorn reads GUNICORN_FD only when
// GUNICORN_PID is set too: `parent` is the pid it gets (serve's own).
std::vector<std::string> protocol_environment(Protocol protocol, const std::vector<std::string>& names,
                                              pid_t parent = 0);

// `--server`: what a known server needs, in one word. Fields left empty by the caller's own flags
// are filled from the preset; ServerPreset::apply never overrides what the user set explicitly.
enum class Server { nginx, gunicorn, lighttpd, uwsgi, systemd };
Server parse_server(std::string_view text);  // throws InputError
struct ServerPreset {
    Protocol protocol = Protocol::systemd;
    int drain_signal = SIGTERM;
    ReadyCheck ready;
    bool nonblocking_listeners = false;    // nginx assumes O_NONBLOCK on inherited listeners
    std::vector<std::string> environment;  // "KEY=VALUE" the server needs (uWSGI's graceful TERM)
};
ServerPreset server_preset(Server server);
struct ServeOptions {
    std::vector<std::string> command;
    std::vector<ListenSpec> listen;  // bound by the Supervisor
    std::vector<Listener> adopted;   // already-open listeners (takeover), announced before `listen`
    ReadyCheck ready;
    milliseconds ready_timeout{30'000};
    int drain_signal = SIGTERM;
    milliseconds drain_timeout{30'000};
    std::optional<std::string> control_path;  // unix socket for `ktricks reload`; "@name" is abstract
    Protocol protocol = Protocol::systemd;
    // Each generation as pid 1 of its own PID namespace: when its init dies (SIGKILL through
    // PR_SET_PDEATHSIG when serve dies, even by SIGKILL) the kernel kills every process in it. Falls
    // back to a plain child (event "pid-namespace-unavailable") where CLONE_NEWPID is refused. The
    // command must handle its drain signal: pid 1 ignores signals it has no handler for.
    bool pid_namespace = false;
    // Set O_NONBLOCK on the listeners (a flag of the open file description, so every generation
    // sees it): for servers that assume it on inherited sockets (nginx).
    bool nonblocking_listeners = false;
    std::vector<std::string> environment;  // extra "KEY=VALUE" for every generation
    // TCP listeners serve binds: a socket per generation in one SO_REUSEPORT group, with a reuseport
    // program sending new connections only to the newest ready generation, so a retired one is
    // drained only once it has nothing unread (see supervisor.cpp). Needs CAP_BPF+CAP_NET_ADMIN;
    // without them (event "steering-unavailable"), or when false (`--shared-listeners`), every
    // generation shares serve's one socket.
    bool steer = true;
    // The private probe listener each generation gets as its last LISTEN_FDS entry, named
    // "ktricks-probe" (`--probe`); used by the http and connect readiness checks. Default
    // tcp://127.0.0.1:0 (a fresh port per generation). A unix path is rebound for each generation.
    std::optional<SocketAddress> probe;
    // `--pid-file`: serve writes the serving generation's pid here (as seen from serve's namespace)
    // at every switch, and removes it when it ends.
    std::optional<std::string> pid_file;
    std::optional<std::string> zerg_path;  // also act as a uWSGI zerg server on this unix socket
    bool handoff = false;                  // give generations KTRICKS_HANDOFF_FD (see Upgrader)
    // Hook for wrappers (e.g. a jail): called for every generation with its SpawnOptions fully
    // prepared (argv, pass_fds = listeners at 3.., LISTEN_* / adapter env, NOTIFY_SOCKET,
    // new_process_group). It may rewrite argv (a prefix such as a sandbox launcher that execs the
    // rest with the fds and environment untouched), add env or keep_fds. It must keep pass_fds and
    // listen_fds_env as they are, and the process it makes spawn must be, or exec, the process that
    // LISTEN_PID names: LISTEN_PID is filled in with the pid Child::spawn forks.
    std::function<void(SpawnOptions&)> customize_spawn;
    // The other half of that hook: called for every generation right after it was spawned, on the
    // supervisor's thread, with the supervisor's event loop and the generation's pid, so a wrapper
    // can watch its own per-generation descriptors there (the jail's broker socket and bind()
    // interception). What it returns is kept as long as the generation is, and destroyed (on the
    // same thread, before the loop) once the generation has exited or was given up.
    std::function<std::shared_ptr<void>(EventLoop& loop, pid_t pid)> on_spawned;
    // Lifecycle events (source "serve"): listening, started, ready, status, reload, rollback,
    // draining, drained, exited, fdstore, refused, zerg. Called on the supervisor's thread.
    std::function<void(const Event&)> on_event;
    // Called once, on the supervisor's thread, when the first generation is ready (takeover retires
    // the old process from here; it may start a thread).
    std::function<void(pid_t first_generation)> on_first_ready;
};

// The first generation exited or timed out before it was ready: nothing was ever served.
class GenerationFailed : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The supervisor, as a component on the caller's EventLoop. It never touches signals: the caller maps
// them (`ktricks serve` maps SIGHUP to reload() and SIGTERM/SIGINT to stop()).
//   EventLoop loop;
//   handoff::Supervisor supervisor(loop, options);      // binds or adopts the listeners
//   supervisor.start([&] { loop.stop(); });
//   loop.run();
//   return supervisor.result();
class Supervisor {
public:
    // Binds the listeners and the control/zerg sockets; nothing is started yet. Throws InputError
    // for a missing command or listener, std::system_error if a socket cannot be bound.
    Supervisor(EventLoop& loop, ServeOptions options);
    Supervisor(Supervisor&&) noexcept;
    Supervisor& operator=(Supervisor&&) noexcept;
    // Removes its sources from the loop; generations still running are killed (SIGKILL) and reaped.
    ~Supervisor();

    // Starts the first generation. `on_finished` is called once, on the loop, when serve is done:
    // the current generation exited on its own, or stop() drained every generation, or the first
    // generation failed before it was ready. Throws if the first generation cannot be started.
    void start(std::function<void()> on_finished);
    // What SIGHUP means: starts a reload. Returns why it was refused (also sent as event
    // "refused"), e.g. a reload already in progress; nullopt if one started.
    std::optional<std::string> reload();
    // What SIGTERM/SIGINT mean: every generation gets the drain signal, SIGKILL after the drain
    // timeout; result() is then 0. Idempotent.
    void stop();
    // After on_finished: the current generation's status if it exited on its own, 0 after stop().
    // Throws GenerationFailed if the first generation exited or timed out before it was ready.
    ExitStatus result() const;

private:
    class Impl;
    std::unique_ptr<Impl> impl_;
};

// `ktricks reload`: asks the serve behind `control_path` to reload and waits for the outcome.
struct ReloadResult {
    bool ok = false;
    std::string message;      // why not, when !ok
    unsigned generation = 0;  // the generation now serving
    pid_t pid = 0;
    double ready_ms = 0;  // reload request -> new generation ready
};
ReloadResult request_reload(const std::string& control_path, milliseconds timeout);
// `status` on the control socket: one JSON object (generation, pid, draining, reloading).
std::string request_status(const std::string& control_path, milliseconds timeout);

// `ktricks takeover`.
struct TakeoverOptions {
    pid_t pid = 0;
    std::vector<SocketAddress> listen;  // which of the target's listeners to take (by address)
    std::vector<int> fds;               // ... or by descriptor number; neither: all its listeners
    // Sent to the old process and each of its descendants once none of them holds an accepted
    // connection (they are all stopped then).
    int signal = SIGTERM;
    ServeOptions serve;  // command, readiness, drain settings for what follows
};

// A listening socket found in another process.
struct FoundListener {
    int fd = -1;  // its number in `pid`
    unsigned long inode = 0;
    std::string address;  // as SocketAddress prints it
    pid_t pid = 0;        // the process holding it: the target, or else one of its descendants
};
// The listening sockets (tcp LISTEN, bound udp, listening unix) of `pid` and of its descendants
// (nginx's or gunicorn's workers), each once, from /proc/PID/fd and /proc/PID/net/{tcp,tcp6,udp,
// udp6,unix}. A socket the target itself holds is reported with the target's fd number.
std::vector<FoundListener> find_listeners(pid_t pid);
// `pid` and its descendants, parents before children (from the ppid field of /proc/*/stat).
std::vector<pid_t> process_tree(pid_t pid);
// pidfd_getfd with an error that says why it failed and what to do (kernel too old, target
// non-dumpable, Yama ptrace_scope, other user without CAP_SYS_PTRACE).
Fd take_fd(int pidfd, pid_t pid, int target_fd);
// Takes the listeners and returns a Supervisor that serves with them (not started yet); once its
// first generation is ready, the old process is retired on a thread of its own (see
// docs/handoff.md). Run it like any Supervisor.
Supervisor takeover(EventLoop& loop, TakeoverOptions options);

// ---------------------------------------------------------------------------------------------
// Upgrader: live connections for a server run under `ktricks serve --handoff`.
//
// Lifecycle of one generation:
//   auto up = Upgrader::from_environment();        // listeners; the link to serve and predecessor
//   Fd l = up.listener(addr);                       // inherited, or bound if run standalone
//   ... poll up.inherit_fd(): receive_connection() yields the predecessor's connections + state
//   up.ready();                                     // READY=1: serve may now retire the predecessor
//   ... poll up.upgrade_fd(): when upgrade_requested() is true, stop accepting, then for each
//   connection hand_over(fd, state), then finish() and exit.
// Connections keep their open file description: bytes the client sent meanwhile wait in the socket
// buffer for the successor, and the client never sees a reconnect.
struct Connection {
    Fd fd;
    std::string state;  // the opaque blob the predecessor attached
};

class Upgrader {
public:
    // Reads LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, NOTIFY_SOCKET, KTRICKS_HANDOFF_FD and
    // KTRICKS_HANDOFF_INHERIT_FD and removes them from the environment (our own children must not
    // believe they were meant). Outside serve, there is nothing inherited and every call still works.
    static Upgrader from_environment();

    Upgrader(Upgrader&&) noexcept;
    Upgrader& operator=(Upgrader&&) noexcept;
    ~Upgrader();

    // The inherited listener bound to `address`, or a freshly bound one (close-on-exec).
    Fd listener(const SocketAddress& address);
    // Readable when a predecessor connection arrives (or its end closed); -1 if there is none.
    int inherit_fd() const noexcept;
    // The next handed-over connection; nullopt when none is waiting (non-blocking) or the
    // predecessor is done (then inherit_fd() is closed and returns -1).
    std::optional<Connection> receive_connection();
    // Tells serve we are ready (READY=1 on NOTIFY_SOCKET). Idempotent.
    void ready();
    // Readable when serve asks us to hand over; -1 outside `serve --handoff`.
    int upgrade_fd() const noexcept;
    // Reads the request if there is one. True: stop accepting and hand everything over.
    bool upgrade_requested();
    // Sends one connection (ours is closed afterwards) with its state (at most 64 KiB).
    void hand_over(Fd connection, std::string_view state);
    // Tells the successor nothing more is coming.
    void finish();

private:
    struct State;
    explicit Upgrader(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace ktricks::handoff
