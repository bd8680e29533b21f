// ktricks jail: argument parsing for the network jail (library: ktricks/jail.hpp).
#include <grp.h>
#include <pwd.h>
#include <signal.h>

#include <fmt/format.h>

#include <charconv>
#include <memory>

#include "cli/common.hpp"
#include "cli/jail_options.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/jail.hpp"

namespace ktricks::cli {
namespace {

std::optional<unsigned> number(std::string_view text) {
    unsigned value = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || error != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

}  // namespace

void JailFlags::add_to(CLI::App& sub) {
    sub.add_flag("--loopback", loopback, "Bring lo up inside the jail (it reaches only the jail itself)");
    sub.add_flag(
           "--readonly{true}", readonly,
           "Read-only view of every mount, with a private tmpfs on /tmp (default on; --readonly=false for a writable root)")
        ->capture_default_str();
    sub.add_option("--bind", binds,
                   "SRC[:DST]: mount SRC read-write at DST (which must exist) inside the jail")
        ->allow_extra_args(false);
    sub.add_option("--writable", writable,
                   "PATH: keep PATH writable inside the read-only jail (same as --bind PATH)")
        ->allow_extra_args(false);
    sub.add_option(
        "--user", user,
        "UID[:GID] or NAME[:GROUP]: run CMD as this user inside (the same uid outside; default root inside, nobody outside)");
    sub.add_flag(
           "--userns{true}", user_namespace,
           "A user namespace also when started as root (default on; --userns=false keeps the host's root, for trusted commands only)")
        ->capture_default_str();
    sub.add_option(
           "--cap", capabilities,
           "NAME: keep this capability (e.g. CAP_NET_BIND_SERVICE); by default every capability set is empty")
        ->allow_extra_args(false);
    sub.add_flag(
        "--host-dev", host_dev,
        "The host's /dev instead of the minimal one (null zero full random urandom tty, private pts and shm)");
    sub.add_flag("--no-new-privs{true}", no_new_privs,
                 "Set PR_SET_NO_NEW_PRIVS (default on; --no-new-privs=false to keep setuid working)")
        ->capture_default_str();
    sub.add_option(
           "--seccomp", seccomp,
           "default: deny module loading, kexec, the mount family, namespaces, ptrace, bpf, keyctl, perf_event_open, "
           "userfaultfd, open_by_handle_at ... with EPERM; off: no filter")
        ->check(CLI::IsMember({"default", "off"}))
        ->capture_default_str();
    sub.add_flag(
        "--seccomp-deny-socket", seccomp_deny_socket,
        "Make socket() of every family except AF_UNIX (and io_uring_setup) fail with EPERM inside the jail");
    sub.add_flag(
           "--init{true}", init,
           "A small init is pid 1 (reaps orphans, forwards signals, exits with CMD's status) unless CMD is one "
           "(tini, dumb-init, systemd ...); default on, --init=false makes CMD pid 1")
        ->capture_default_str();
    sub.add_option("--hostname", hostname, "Host name inside the jail")->capture_default_str();
    sub.add_option("--broker", broker,
                   "Unix socket path inside the jail where CMD may ask for more listeners ($KTRICKS_BROKER)");
    sub.add_option("--allow", allow,
                   "What the broker, and an intercepted bind() to no --listen address, may be granted, "
                   "e.g. tcp://0.0.0.0:8000-8100, udp6://*:53")
        ->allow_extra_args(false);
    sub.add_flag("--intercept-bind{true}", intercept_bind,
                 "A bind() inside to a --listen address gets that host listener instead (unmodified "
                 "servers); other inet binds get what --allow grants or fail with EACCES (default on; "
                 "--intercept-bind=false leaves bind() to the empty namespace)")
        ->capture_default_str();
}

bool JailFlags::given() const {
    return loopback || !readonly || !binds.empty() || !writable.empty() || !user.empty() || !user_namespace ||
           !capabilities.empty() || host_dev || !no_new_privs || seccomp != "default" ||
           seccomp_deny_socket || !init || !broker.empty() || !allow.empty() || hostname != "jail" ||
           !intercept_bind;
}

jail::SandboxOptions JailFlags::sandbox() const {
    jail::SandboxOptions options;
    options.loopback = loopback;
    options.readonly = readonly;
    options.user_namespace = user_namespace;
    options.host_dev = host_dev;
    options.no_new_privs = no_new_privs;
    options.seccomp = seccomp != "off";
    options.seccomp_deny_socket = seccomp_deny_socket;
    options.init = init;
    options.hostname = hostname;
    for (const auto& text : binds) options.binds.push_back(jail::SandboxOptions::parse_bind(text));
    for (const auto& path : writable) {
        if (path.empty() || path[0] != '/')
            throw InputError(fmt::format("--writable \"{}\": must be an absolute path", path));
        if (first_control_byte(path) >= 0)
            throw InputError(fmt::format("--writable \"{}\": contains a control byte", printable(path)));
        options.binds.push_back({path, path});
    }
    for (const auto& name : capabilities)
        options.capabilities.push_back(jail::SandboxOptions::parse_capability(name));
    if (!broker.empty()) options.broker_path = broker;
    if (!user.empty()) {
        auto colon = user.find(':');
        std::string name = user.substr(0, colon);
        if (auto uid = number(name)) {
            options.uid = *uid;
        } else if (passwd* entry = ::getpwnam(name.c_str())) {
            options.uid = entry->pw_uid;
            options.gid = entry->pw_gid;
        } else {
            throw InputError(
                fmt::format("--user {}: no such user (give a number or a name from /etc/passwd)", user));
        }
        if (colon != std::string::npos) {
            std::string group = user.substr(colon + 1);
            if (auto gid = number(group)) options.gid = *gid;
            else if (::group* entry = ::getgrnam(group.c_str()))
                options.gid = entry->gr_gid;
            else
                throw InputError(fmt::format("--user {}: no such group \"{}\"", user, group));
        }
    }
    return options;
}

std::vector<jail::AllowRule> JailFlags::allow_rules() const {
    std::vector<jail::AllowRule> rules;
    for (const auto& text : allow) rules.push_back(jail::AllowRule::parse(text));
    return rules;
}

namespace {

struct Options {
    std::vector<std::string> listen;
    std::vector<std::string> command;
    JailFlags flags;
    int into = 0;
    std::string socket = "/run/ktricks-inbox.sock";
    bool quiet = false;
};

int run_jail(const Options& options) {
    std::vector<SocketAddress> addresses;
    for (const auto& text : options.listen) addresses.push_back(SocketAddress::parse(text));
    if (options.into) {
        if (!options.command.empty() || options.flags.given())
            throw InputError(
                "--into hands sockets to a running process: it takes only --listen and --socket");
        if (addresses.empty()) throw InputError("--into needs at least one --listen ADDR");
        for (const auto& address : addresses) {
            auto bound = jail::hand_into(options.into, address, options.socket);
            fmt::print("{}\n", bound.to_string());
        }
        return 0;
    }
    jail::RunOptions run;
    run.listen = std::move(addresses);
    run.command = options.command;
    run.sandbox = options.flags.sandbox();
    run.allow = options.flags.allow_rules();
    run.verbose = !options.quiet;
    run.intercept_bind = options.flags.intercept_bind;
    if (run.listen.empty() && !run.sandbox.broker_path && run.allow.empty())
        throw InputError("nothing to serve: give at least one --listen ADDR (or a --broker or --allow)");
    jail::Jail jailed(run);  // listeners bound, sandbox ready
    // Signals arriving while the child starts must wait for it, not kill us: blocked (signalfd)
    // before it exists; Child unblocks them in the child.
    EventLoop loop;
    loop.add_signals(
        {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH},
        [&jailed](const signalfd_siginfo& info) { jailed.signal(static_cast<int>(info.ssi_signo)); });
    jailed.start(loop, [&loop](ExitStatus) { loop.stop(); });
    loop.run();
    return jailed.status()->shell_status();
}

}  // namespace

Subcommand add_jail(CLI::App& app) {
    auto options = std::make_shared<Options>();
    auto* sub = add_subcommand(app, "jail");
    sub->add_option(
           "--listen", options->listen,
           "Bind ADDR here and pass it in (LISTEN_FDS, fds 3, 4, ... in order): tcp://HOST:PORT, tcp6://[ADDR]:PORT, "
           "udp://..., unix:/path, unix:@name")
        ->allow_extra_args(false);
    options->flags.add_to(*sub);
    sub->add_option("--into", options->into,
                    "Hand the --listen sockets to the running process PID (e.g. in a container) instead")
        ->check(CLI::PositiveNumber);
    sub->add_option("--socket", options->socket,
                    "With --into: the target's inbox, a unix socket path as the target sees it")
        ->capture_default_str();
    sub->add_flag("--quiet", options->quiet, "Do not report bound sockets and broker decisions on stderr");
    sub->add_option("command", options->command, "CMD [ARGS...]");
    sub->footer(
        "Inside: new network (only lo, down unless --loopback), mount, IPC, UTS, PID and user namespaces; root inside is\n"
        "nobody outside, no capabilities, read-only root with a private /tmp, minimal /dev, seccomp deny list, no-new-privs,\n"
        "an init as pid 1 and CMD as pid 2 with LISTEN_FDS=N LISTEN_PID=2 (pid 1 with --init=false).\n"
        "Its own connect() fails with ENETUNREACH.\n"
        "Exit status: CMD's own (128+N if killed by signal N); 127/126 if CMD cannot be found/executed; 64 bad usage.\n"
        "Examples:\n"
        "  ktricks jail --listen tcp://0.0.0.0:8080 --user nobody -- ./socket-activated-server\n"
        "  ktricks jail --listen tcp://127.0.0.1:8000 -- python3 -m http.server 8000 --bind 127.0.0.1\n"
        "  ktricks jail --listen udp://0.0.0.0:5353 --seccomp-deny-socket -- ./dns-server\n"
        "  ktricks jail --listen tcp://0.0.0.0:8000 --broker /tmp/broker.sock --allow 'tcp://0.0.0.0:8000-8100' -- ./server\n"
        "  ktricks jail --into $(pidof server) --socket /run/inbox.sock --listen tcp://0.0.0.0:9000");
    return {sub, [options] { return run_jail(*options); }};
}

}  // namespace ktricks::cli
