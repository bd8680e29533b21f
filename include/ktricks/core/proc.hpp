// Reading /proc/PID: what `ps` would say about a process that we found through the kernel.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace ktricks {

// argv of a process from /proc/PID/cmdline; nullopt if it is gone or unreadable, an empty vector
// for kernel threads and zombies.
std::optional<std::vector<std::string>> process_command_line(pid_t pid);
// argv joined by spaces, with arguments containing spaces or quotes single-quoted like a shell, and
// control bytes shown as \xNN (see printable).
std::string shell_join(const std::vector<std::string>& argv);

}  // namespace ktricks
