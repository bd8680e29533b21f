// `ktricks serve --jail`: handoff's supervisor (zero-downtime reloads, LISTEN_FDS) with every
// generation started inside a jail. The two tricks meet only here, through handoff's
// customize_spawn hook and jail::Sandbox::apply.
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "cli/jail_options.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/handoff.hpp"
#include "ktricks/jail.hpp"

namespace ktricks::cli {

void add_jail_to_serve(CLI::App& serve, bool& jail, JailFlags& flags) {
    auto* jail_flag = serve.add_flag(
        "--jail", jail,
        "Run every generation in a jail: empty network namespace, new mount/IPC/UTS/PID namespaces "
        "(NOTIFY_SOCKET is relayed by the jail's init; with --init=false --ready notify becomes tcp)");
    serve.add_flag("--loopback", flags.loopback, "With --jail: bring lo up inside")->needs(jail_flag);
    serve
        .add_flag("--readonly{true}", flags.readonly,
                  "With --jail: read-only root view, private tmpfs /tmp (default on)")
        ->needs(jail_flag);
    serve.add_option("--bind", flags.binds, "With --jail: SRC[:DST] mounted read-write inside")
        ->allow_extra_args(false)
        ->needs(jail_flag);
    serve.add_option("--writable", flags.writable, "With --jail: PATH kept writable (same as --bind PATH)")
        ->allow_extra_args(false)
        ->needs(jail_flag);
    serve.add_option("--user", flags.user, "With --jail: UID[:GID] or NAME[:GROUP] to run CMD as")
        ->needs(jail_flag);
    serve
        .add_flag("--userns{true}", flags.user_namespace,
                  "With --jail: a user namespace also as root (default on)")
        ->needs(jail_flag);
    serve.add_option("--cap", flags.capabilities, "With --jail: keep this capability (default: none)")
        ->allow_extra_args(false)
        ->needs(jail_flag);
    serve.add_flag("--host-dev", flags.host_dev, "With --jail: the host's /dev instead of the minimal one")
        ->needs(jail_flag);
    serve
        .add_flag("--no-new-privs{true}", flags.no_new_privs, "With --jail: PR_SET_NO_NEW_PRIVS (default on)")
        ->needs(jail_flag);
    serve.add_option("--seccomp", flags.seccomp, "With --jail: default (deny list) or off")
        ->check(CLI::IsMember({"default", "off"}))
        ->needs(jail_flag);
    serve
        .add_flag("--seccomp-deny-socket", flags.seccomp_deny_socket,
                  "With --jail: socket() only for AF_UNIX")
        ->needs(jail_flag);
    serve.add_flag("--init{true}", flags.init, "With --jail: an init as pid 1 (default on)")
        ->needs(jail_flag);
    serve
        .add_option("--broker", flags.broker,
                    "With --jail: unix socket path inside every generation's jail where it may ask for "
                    "more listeners ($KTRICKS_BROKER); a later generation asking for the same address "
                    "gets the same socket")
        ->needs(jail_flag);
    serve
        .add_option("--allow", flags.allow,
                    "With --jail: what the broker, and an intercepted bind() to no --listen address, may "
                    "be granted (tcp://0.0.0.0:8000-8100, udp6://*:53)")
        ->allow_extra_args(false)
        ->needs(jail_flag);
    serve
        .add_flag("--intercept-bind{true}", flags.intercept_bind,
                  "With --jail: a bind() inside to a --listen address gets serve's listener (unmodified "
                  "servers that bind their own port reload without losing a queued connection); other "
                  "inet binds get what --allow grants or EACCES (default on)")
        ->needs(jail_flag);
}

void apply_jail(handoff::ServeOptions& options, const JailFlags& flags) {
    jail::GenerationJails::Options jail_options;
    jail_options.sandbox = flags.sandbox();
    jail_options.allow = flags.allow_rules();
    jail_options.intercept_bind = flags.intercept_bind;
    auto jails = std::make_shared<jail::GenerationJails>(jail_options);
    // serve's own listeners are the first LISTEN_FDS (adopted ones, then --listen, in order); the
    // fd store and the probe listener come after them and are never handed to a bind().
    std::vector<SocketAddress> asked;
    for (const auto& listener : options.adopted) asked.push_back(SocketAddress::of_socket(listener.fd.get()));
    for (const auto& spec : options.listen) asked.push_back(spec.address);
    // NOTIFY_SOCKET is an abstract name of serve's network namespace, out of the jail's reach. With
    // the jail's init, a socket made here (so in serve's namespace) and connected to that name is
    // handed to the init, which relays what CMD sends to an abstract name of the jail's own.
    // Without an init there is no one to relay: --ready notify becomes tcp.
    bool relay = flags.init;
    if (!relay && options.ready.kind == handoff::ReadyCheck::Kind::notify)
        options.ready.kind = handoff::ReadyCheck::Kind::tcp;
    auto previous = options.customize_spawn;
    // The relay socket of the generation being spawned: the child has its copy once spawned, ours
    // is closed when the next generation's replaces it.
    auto relay_socket = std::make_shared<Fd>();
    options.customize_spawn = [jails, asked, previous, relay, relay_socket](SpawnOptions& spawn) {
        if (previous) previous(spawn);
        int relay_fd = -1;
        auto notify = std::find_if(spawn.set_env.begin(), spawn.set_env.end(), [](const std::string& entry) {
            return entry.starts_with("NOTIFY_SOCKET=@");
        });
        if (relay && notify != spawn.set_env.end()) {
            SocketAddress target =
                SocketAddress::parse("unix:" + notify->substr(std::strlen("NOTIFY_SOCKET=")));
            *relay_socket = Fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
            if (!*relay_socket) throw_errno("socket", "(NOTIFY_SOCKET relay)");
            if (::connect(relay_socket->get(), target.sockaddr_ptr(), target.length()) < 0)
                throw_errno("connect", target.to_string());
            *notify = std::string("NOTIFY_SOCKET=") + jail::Sandbox::notify_name;
            relay_fd = relay_socket->get();
        }
        std::vector<jail::GenerationJails::Listener> listeners;
        for (std::size_t i = 0; i < asked.size() && i < spawn.pass_fds.size(); ++i)
            listeners.push_back({spawn.pass_fds[i], asked[i]});
        jails->prepare(spawn, listeners, relay_fd);
    };
    options.on_spawned = [jails](EventLoop& loop, pid_t) { return jails->watch(loop); };
}

}  // namespace ktricks::cli
