// `ktricks serve --jail`: handoff's supervisor (zero-downtime reloads, LISTEN_FDS) with every
// generation started inside a jail. The two tricks meet only here, through handoff's
// customize_spawn hook and jail::Sandbox::apply.
#include <memory>

#include "cli/jail_options.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/handoff.hpp"
#include "ktricks/jail.hpp"

namespace ktricks::cli {

void add_jail_to_serve(CLI::App& serve, bool& jail, JailFlags& flags) {
    auto* jail_flag = serve.add_flag("--jail", jail,
                   "Run every generation in a jail: empty network namespace, new mount/IPC/UTS/PID namespaces "
                   "(--ready notify becomes tcp)");
    serve.add_flag("--loopback", flags.loopback, "With --jail: bring lo up inside")->needs(jail_flag);
    serve.add_flag("--readonly{true}", flags.readonly, "With --jail: read-only root view, private tmpfs /tmp (default on)")->needs(jail_flag);
    serve.add_option("--bind", flags.binds, "With --jail: SRC[:DST] mounted read-write inside")->allow_extra_args(false)->needs(jail_flag);
    serve.add_option("--writable", flags.writable, "With --jail: PATH kept writable (same as --bind PATH)")->allow_extra_args(false)->needs(jail_flag);
    serve.add_option("--user", flags.user, "With --jail: UID[:GID] or NAME[:GROUP] to run CMD as")->needs(jail_flag);
    serve.add_flag("--userns{true}", flags.user_namespace, "With --jail: a user namespace also as root (default on)")->needs(jail_flag);
    serve.add_option("--cap", flags.capabilities, "With --jail: keep this capability (default: none)")->allow_extra_args(false)->needs(jail_flag);
    serve.add_flag("--host-dev", flags.host_dev, "With --jail: the host's /dev instead of the minimal one")->needs(jail_flag);
    serve.add_flag("--no-new-privs{true}", flags.no_new_privs, "With --jail: PR_SET_NO_NEW_PRIVS (default on)")->needs(jail_flag);
    serve.add_option("--seccomp", flags.seccomp, "With --jail: default (deny list) or off")
        ->check(CLI::IsMember({"default", "off"}))
        ->needs(jail_flag);
    serve.add_flag("--seccomp-deny-socket", flags.seccomp_deny_socket, "With --jail: socket() only for AF_UNIX")->needs(jail_flag);
    serve.add_flag("--init{true}", flags.init, "With --jail: an init as pid 1 (default on)")->needs(jail_flag);
}

void apply_jail(handoff::ServeOptions& options, const JailFlags& flags) {
    auto sandbox = std::make_shared<jail::Sandbox>(jail::Sandbox::prepare(flags.sandbox()));
    if (options.ready.kind == handoff::ReadyCheck::Kind::notify) options.ready.kind = handoff::ReadyCheck::Kind::tcp;
    auto previous = options.customize_spawn;
    options.customize_spawn = [sandbox, previous](SpawnOptions& spawn) {
        if (previous) previous(spawn);
        sandbox->apply(spawn);
    };
}

}  // namespace ktricks::cli
