// The jail's sandbox flags, shared by `ktricks jail` and `ktricks serve --jail`.
#pragma once

#include "cli/cli11.hpp"

#include <string>
#include <vector>

#include "ktricks/jail.hpp"

namespace ktricks::handoff {
struct ServeOptions;
}

namespace ktricks::cli {

struct JailFlags {
    bool loopback = false;
    bool readonly = true;
    std::vector<std::string> binds;
    std::vector<std::string> writable;
    std::string user;
    bool user_namespace = true;
    std::vector<std::string> capabilities;
    bool host_dev = false;
    bool no_new_privs = true;
    std::string seccomp = "default";
    bool seccomp_deny_socket = false;
    bool init = true;
    std::string hostname = "jail";
    std::string broker;
    std::vector<std::string> allow;
    bool intercept_bind = true;

    // --loopback --readonly --bind --writable --user --userns --cap --host-dev --no-new-privs --seccomp
    // --seccomp-deny-socket --init --hostname --broker --allow --intercept-bind
    void add_to(CLI::App& sub);
    bool given() const;                    // any of them set
    jail::SandboxOptions sandbox() const;  // throws InputError
    std::vector<jail::AllowRule> allow_rules() const;
};

// `ktricks serve --jail [jail flags]`: the flags on serve's command line ...
void add_jail_to_serve(CLI::App& serve, bool& jail, JailFlags& flags);
// ... and every generation spawned through handoff's customize_spawn hook, inside a fresh jail,
// with its broker socket and bind() interception watched through the on_spawned hook
// (jail::GenerationJails). NOTIFY_SOCKET is an abstract name in serve's network namespace, out of
// the jail's reach: the jail's init relays it (with --init=false, --ready notify becomes tcp).
void apply_jail(handoff::ServeOptions& options, const JailFlags& flags);

}  // namespace ktricks::cli
