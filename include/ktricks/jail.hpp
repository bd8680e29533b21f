// jail: a server in an empty network namespace, serving only the sockets handed to it.
//
// A socket belongs to the network namespace it was created in, for its whole life, whoever holds
// it. So the listeners are bound here, in the caller's namespace, and the server runs in a fresh
// network namespace that has nothing but a loopback device (down unless asked): it accepts and
// answers clients on the sockets it was given, with their real addresses, at native speed, but
// any connection of its own fails with ENETUNREACH. It also gets new mount, IPC, UTS, PID and
// user namespaces, and by default (SandboxOptions) no capabilities, a read-only root, a minimal
// /dev, a seccomp deny list and an init as pid 1.
//
// The sockets arrive with systemd's LISTEN_FDS protocol (sd_listen_fds(3)): fds 3, 4, ... in the
// order given, LISTEN_FDS=N and LISTEN_PID = the command's pid (2 under the jail's init, 1 with
// init off). The init forwards the supervisor's signals and reaps orphans; without it the
// supervisor outside, because the kernel drops signals that pid 1 of a namespace does not handle,
// turns a forwarded terminating signal the command does not catch into SIGKILL. Descendants the
// command leaves behind die with the jail (the kernel kills a PID namespace when its pid 1 exits).
// A server that binds its own port instead gets the same listener (RunOptions::intercept_bind).
//
// More listeners at run time: with a broker, the command can ask for a socket on a unix socket
// inside the jail ($KTRICKS_BROKER); the supervisor binds it outside if an allow-list rule
// matches and passes it with SCM_RIGHTS, or answers with the reason it refused.
#pragma once

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
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/core/socket_address.hpp"

namespace ktricks::jail {

// One --allow rule: SCHEME://HOST:PORT[-PORT], e.g. tcp://0.0.0.0:8000-8100, udp6://[::1]:53,
// tcp://*:9000 (any IPv4 host), tcp6://*:443. Unix sockets are never granted by the broker.
class AllowRule {
public:
    // Throws InputError naming the text and what is wrong.
    static AllowRule parse(std::string_view text);
    bool allows(const SocketAddress& address) const noexcept;
    std::string to_string() const;

private:
    SocketAddress::Transport transport_ = SocketAddress::Transport::tcp;
    int family_ = 0;
    std::optional<SocketAddress> host_;  // nullopt: any host of the family
    std::uint16_t first_port_ = 0, last_port_ = 0;
};

// The isolation around the command; also what `serve --jail` applies to every generation.
// Every default is the safe choice; each has an explicit opt-out.
struct SandboxOptions {
    bool loopback = false;  // bring `lo` up inside (127.0.0.1 reaches the jail only)
    bool readonly = true;   // read-only view of every mount; private tmpfs on /tmp
    struct Bind {
        std::string source, target;  // target must exist; mounted read-write
    };
    std::vector<Bind> binds;   // also --writable PATH (= PATH:PATH)
    std::optional<uid_t> uid;  // the uid (and gid) CMD runs as inside the jail
    std::optional<gid_t> gid;
    // A user namespace also when started as root: the jail's uid (root by default) is the host's
    // `uid` when one is given, else nobody (65534); the jail holds no capability over the host or
    // over its own namespaces, which the host's root created and owns.
    bool user_namespace = true;
    std::vector<int>
        capabilities;  // kept in every set (bounding, permitted, effective, inheritable, ambient); default none
    bool host_dev = false;             // the host's /dev instead of a minimal one
    bool no_new_privs = true;          // PR_SET_NO_NEW_PRIVS: setuid binaries gain nothing
    bool seccomp = true;               // the default deny list (default_denied_syscalls())
    bool seccomp_deny_socket = false;  // socket() of any family but AF_UNIX fails with EPERM
    bool init = true;                  // a small init is pid 1 unless CMD is an init itself (looks_like_init)
    std::string hostname = "jail";
    std::optional<std::string> broker_path;  // where the broker socket appears inside the jail
    // Parses --bind SRC[:DST]; throws InputError.
    static Bind parse_bind(std::string_view text);
    // Parses --cap NAME (CAP_NET_BIND_SERVICE, net_bind_service, or a number); throws InputError.
    static int parse_capability(std::string_view text);
};

// The syscalls the default seccomp filter answers with EPERM (names as libseccomp spells them),
// plus clone() with any CLONE_NEW* flag (EPERM) and clone3() (ENOSYS, so libc falls back to clone).
const std::vector<std::string>& default_denied_syscalls();
// Whether `program` (argv[0]) is an init that reaps and forwards signals by itself (tini, dumb-init,
// catatonit, systemd, s6-svscan, runit, init).
bool looks_like_init(std::string_view program);

// A prepared sandbox: options checked, the seccomp program compiled, the kernel's support checked.
// apply() turns a SpawnOptions into one that starts the command inside the jail.
class Sandbox {
public:
    // Throws InputError for bad options and std::system_error if the kernel lacks what they need.
    static Sandbox prepare(const SandboxOptions& options);
    Sandbox(Sandbox&&) noexcept;
    Sandbox& operator=(Sandbox&&) noexcept;
    ~Sandbox();

    // Sets clone_flags and setup_in_child (and KTRICKS_BROKER when there is a broker). `broker_fd`
    // is an unbound AF_UNIX SOCK_SEQPACKET socket the child binds at broker_path (or -1). With
    // `notify_fd` (one end of an AF_UNIX socketpair, or -1), bind() inside the jail is sent to a
    // seccomp user-notification listener whose fd the child sends there with SCM_RIGHTS.
    // With `notify_relay_fd` (a datagram socket connected to a supervisor's NOTIFY_SOCKET, made in
    // the supervisor's namespace) and the init on, the jail's init binds `notify_name` (abstract, in
    // the jail's own network namespace) and relays every datagram CMD sends there to it: CMD's
    // NOTIFY_SOCKET should then be `notify_name`. Data only; descriptors in a message are dropped.
    // Set spawn.parent_death_signal first: the jail's pid 1 sets it again once its credentials are
    // final (changing them clears it), so that the whole jail dies with the caller, even SIGKILLed.
    void apply(SpawnOptions& spawn, int broker_fd = -1, int notify_fd = -1, int notify_relay_fd = -1) const;
    static constexpr const char* notify_name = "@ktricks-jail-notify";
    const SandboxOptions& options() const noexcept;

    struct State;  // defined in src/jail/sandbox.cpp

private:
    explicit Sandbox(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

class Grants;  // the allow-list and the sockets granted so far (src/jail/grants.hpp)

// The supervisor side of a broker: answers requests arriving on the broker socket. A granted
// socket is kept and the same one is handed out again for a later request of the same address
// (port 0 excepted): a reloaded server's next generation gets its predecessor's very socket.
class Broker {
public:
    // Creates the socket that Sandbox::apply binds inside the jail. With `verbose`, each grant and
    // refusal is one line on stderr.
    explicit Broker(std::vector<AllowRule> allow, bool verbose = true);
    Broker(Broker&&) noexcept;
    Broker& operator=(Broker&&) noexcept;
    ~Broker();
    int socket_fd() const noexcept;
    // A new broker socket (for another jail: the next generation of `serve --jail`) that shares
    // this one's allow-list and granted sockets.
    Broker sibling() const;
    // Watches the socket on `loop` (call once the child has been spawned, so it is bound) until
    // stop(). `loop` must outlive the watching.
    void serve(EventLoop& loop);
    void stop() noexcept;
    std::shared_ptr<Grants> grants() const;
    // The answer to one request text, with the socket granted (if any). Exposed for tests.
    struct Answer {
        std::string reply;  // "ok ADDRESS" or "refused REASON"
        Fd socket;
    };
    Answer answer(std::string_view request) const;

private:
    struct State;
    explicit Broker(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

// `ktricks jail --listen ... -- CMD`.
struct RunOptions {
    std::vector<SocketAddress> listen;
    std::vector<std::string> command;
    SandboxOptions sandbox;
    // What the broker may grant; with intercept_bind, also what an intercepted bind() that matches
    // no --listen address may get (bound here, installed like a listener) instead of EACCES.
    std::vector<AllowRule> allow;
    bool verbose = true;  // say on stderr what was bound and granted
    // bind() inside the jail to an inet address that matches a --listen address gets that host
    // listener in place of its own socket (seccomp user notification); other inet binds get what
    // the allow-list grants, or fail with EACCES. The listeners are also passed with LISTEN_FDS, so
    // both kinds of server work.
    bool intercept_bind = true;
};

// `ktricks jail` as a component on the caller's loop. It never touches signals; the CLI forwards
// TERM, INT, HUP, QUIT, USR1, USR2 and WINCH with signal().
class Jail {
public:
    // Prepares the sandbox and the broker and binds every address (in our namespace). Nothing
    // runs yet.
    explicit Jail(const RunOptions& options);
    Jail(Jail&&) noexcept;
    Jail& operator=(Jail&&) noexcept;
    // A jail still running is killed: its pid 1 by SIGKILL, and with it its whole PID namespace.
    ~Jail();

    // Starts the command in the jail and answers the broker and the bind interceptor on `loop`.
    // `on_exit` is called once, on the loop, with how the command ended (if it was SIGKILLed in
    // place of an uncaught forwarded signal, as if killed by that signal). If this process dies,
    // even by SIGKILL, the kernel kills the jail's pid 1 (PR_SET_PDEATHSIG) and with it every
    // process of the jail's PID namespace.
    void start(EventLoop& loop, std::function<void(ExitStatus)> on_exit);
    // Forwards a signal to the jail's pid 1. The kernel drops a signal that pid 1 of a PID
    // namespace has no handler for, so a terminating one it does not handle is sent as SIGKILL.
    // False if the command is not running.
    bool signal(int signal_number);
    // How the command ended; nullopt while it runs.
    std::optional<ExitStatus> status() const;

private:
    struct State;
    std::unique_ptr<State> state_;
};

// `serve --jail`: every generation of a reloaded server in a fresh jail (handoff's customize_spawn
// hook calls prepare(), its on_spawned hook watch()). The generations share the listeners a bind()
// is intercepted to and one broker policy with the sockets it granted, so a generation that binds
// or asks for the same address as its predecessor gets the very same socket: nothing is refused
// with EADDRINUSE and no connection waiting in the queue is lost at the switch. Each generation has
// its own broker socket (at broker_path in its own jail) and its own seccomp listener.
class GenerationJails {
public:
    struct Options {
        SandboxOptions sandbox;
        std::vector<AllowRule> allow;  // for the broker and for intercepted binds (RunOptions::allow)
        bool intercept_bind = true;    // as RunOptions::intercept_bind
        bool verbose = true;
    };
    // Throws as Sandbox::prepare.
    explicit GenerationJails(const Options& options);
    GenerationJails(const GenerationJails&) = delete;
    GenerationJails& operator=(const GenerationJails&) = delete;
    ~GenerationJails();
    struct Listener {
        int fd;               // the supervisor's listener; must outlive every generation
        SocketAddress asked;  // as given on the command line (port 0: a bind to any port matches)
    };
    // Before each spawn (after the supervisor filled `spawn` in): the jail, a fresh broker socket
    // and seccomp listener pair. `notify_relay_fd` as in Sandbox::apply.
    void prepare(SpawnOptions& spawn, const std::vector<Listener>& listeners, int notify_relay_fd = -1);
    // Right after the spawn prepare() was for: answers that generation's broker requests and its
    // bind() notifications on `loop` until the returned handle is destroyed (on `loop`'s thread,
    // before `loop`).
    std::shared_ptr<void> watch(EventLoop& loop);

private:
    struct State;
    std::unique_ptr<State> state_;
};

// ---- Inside the jail (or in any process that wants sockets handed to it) ----

// The broker refused a request; what() is its reason.
class RefusedError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Asks the broker at `broker_path` ($KTRICKS_BROKER if empty) for a listener on `address`;
// returns it (close-on-exec). Throws RefusedError with the broker's reason, std::system_error if
// the broker cannot be reached, InputError if neither path nor $KTRICKS_BROKER is set.
Fd request_listener(const SocketAddress& address, std::string_view broker_path = {},
                    std::chrono::milliseconds timeout = std::chrono::seconds(5));

// A unix socket (SOCK_SEQPACKET) on which a process accepts listeners handed to it from outside
// its network namespace by `ktricks jail --into PID --listen ADDR --socket PATH`.
class Inbox {
public:
    struct Handed {
        Fd socket;
        SocketAddress address;  // as bound outside
    };
    // Binds `path` (replacing a stale socket file).
    static Inbox bind(const std::string& path);
    int fd() const noexcept { return socket_.get(); }
    // Waits for the next handed socket (blocking), acknowledges it and returns it.
    Handed receive();

private:
    explicit Inbox(Fd socket) : socket_(std::move(socket)) {}
    Fd socket_;
};

// Binds `address` here and hands it to the process `pid` through its inbox at `path` as seen by
// that process (reached through /proc/PID/root, so it works across mount namespaces). Returns the
// bound address. Throws RefusedError if the target refused it, std::system_error otherwise.
SocketAddress hand_into(pid_t pid, const SocketAddress& address, const std::string& path,
                        std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace ktricks::jail
