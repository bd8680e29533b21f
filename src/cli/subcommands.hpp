// The subcommands of `ktricks`, written once, in the order of `ktricks --help`.
//
// Light subcommands are built into the front door (`ktricks`); the heavy ones live in helper programs
// in libexec/ktricks/ that the front door execs, so that `ktricks once` never maps FFmpeg, libfuse or
// libmariadb (docs/architecture.md). A helper registers only its own subcommand, with the same summary.
#pragma once

#include <string_view>

namespace ktricks::cli {

struct SubcommandInfo {
    std::string_view name;     // as typed: "mysql-watch"
    std::string_view summary;  // the one line of `ktricks --help`
    std::string_view helper;   // empty: built into the front door; else the libexec program that has it
};

inline constexpr SubcommandInfo subcommands[] = {
    {"once", "Run a command at most once at a time: a lock on an abstract unix socket", ""},
    {"serve", "Run a server on sockets it inherits, and replace it without dropping a connection", ""},
    {"reload", "Ask a running `ktricks serve --control PATH` to reload, and wait for the outcome", ""},
    {"takeover", "Adopt the listening sockets of a running server (pidfd_getfd) and replace it", ""},
    {"jail", "Run a server in an empty network namespace, serving only the sockets handed to it", ""},
    {"sockets", "ss, but faster and scriptable: list sockets through sock_diag netlink", ""},
    {"procwatch", "Every fork, exec and exit as it happens, from the kernel's proc connector", ""},
    {"netwatch", "Run scripts on network events (link, address, route, wifi): no polling", ""},
    {"mysql-watch", "Report which MySQL/MariaDB tables changed, by watching the data directory with inotify",
     "ktricks-mysql-watch"},
    {"tvfs", "Mount a folder of videos so that every file plays on a TV (FUSE + FFmpeg)", "ktricks-tvfs"},
    {"tour", "Run every trick live on built-in defaults and print what it measured", "ktricks-tour"},
};

// The entry for NAME, or nullptr.
constexpr const SubcommandInfo* find_subcommand(std::string_view name) {
    for (const auto& info : subcommands)
        if (info.name == name) return &info;
    return nullptr;
}

}  // namespace ktricks::cli
