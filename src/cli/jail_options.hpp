// The jail's sandbox flags, shared by `ktricks jail` and `ktricks serve --jail`.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "ktricks/jail.hpp"

namespace ktricks::cli {

struct JailFlags {
    bool loopback = false;
    bool readonly = false;
    std::vector<std::string> binds;
    std::string user;
    bool no_new_privs = true;
    bool seccomp_deny_socket = false;
    std::string hostname = "jail";
    std::string broker;
    std::vector<std::string> allow;

    // --loopback --readonly --bind --user --no-new-privs --seccomp-deny-socket --hostname --broker --allow
    void add_to(CLI::App& sub);
    bool given() const;  // any of them set
    jail::SandboxOptions sandbox() const;  // throws InputError
    std::vector<jail::AllowRule> allow_rules() const;
};

}  // namespace ktricks::cli
