// What every subcommand file shares: registration with the top-level app, and the mapping from a
// library exception to one stderr line and an exit status. The front door (main.cpp) and each helper
// program (helper_main.cpp) link the same files; see subcommands.hpp for which is where.
#pragma once

#include "cli/cli11.hpp"

#include <chrono>
#include <exception>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/runner.hpp"

namespace ktricks::cli {

// The work a parsed subcommand does; returns the process exit status.
using Action = std::function<int()>;

struct Subcommand {
    CLI::App* app;
    Action action;
};

// add_ID registers subcommand ID (subcommands.def) with APP and returns what running it does.
#define KTRICKS_BUILT_IN(id, name, summary) Subcommand add_##id(CLI::App& app);
#define KTRICKS_HELPER(id, name, summary, program) Subcommand add_##id(CLI::App& app);
#include "cli/subcommands.def"
#undef KTRICKS_BUILT_IN
#undef KTRICKS_HELPER

// app.add_subcommand(NAME) with the summary from the subcommand table (subcommands.hpp).
CLI::App* add_subcommand(CLI::App& app, std::string_view name);

// A subcommand this program has built in: its name and the function that registers it.
struct Registration {
    std::string_view name;
    Subcommand (*add)(CLI::App&);
};

// The whole of a `ktricks` process after routing: builds the top-level app with BUILT_IN registered
// (and, when LIST_OTHERS, the table's remaining subcommands listed for --help only), parses ARGV, runs
// the chosen subcommand and returns the exit status. Usage errors are one line and exit 64.
int run(int argc, char** argv, std::span<const Registration> built_in, bool list_others);

// Prints "ktricks SUBCOMMAND: what" and returns the exit status for the exception.
int report_error(std::string_view subcommand, const std::exception& error);

// --exec-timeout and --exec-concurrency: the same two flags for every watcher that runs scripts
// through the core Runner (netwatch, mysql-watch, procwatch).
struct ExecFlags {
    std::string timeout = "60";
    std::size_t concurrency = 8;
};
void add_exec_flags(CLI::App* sub, ExecFlags& flags);
std::chrono::milliseconds exec_timeout(const ExecFlags& flags);
// What a subcommand does with a script's end unless it prints it: a warning if it failed.
void log_script_end(const JobReport& report);

// Where the helper PROGRAM (libexec/ktricks/PROGRAM) may be, relative to this binary, in the order to
// try: the installed layout (bin/ -> libexec/ktricks/) and the build tree (build/libexec/ktricks/).
// `self` receives this binary's own path. Throws std::system_error if /proc/self/exe is unreadable.
std::vector<std::string> helper_paths(std::string_view program, std::string* self = nullptr);

// Seconds as given on the command line ("2", "0.5") to milliseconds; throws InputError naming the flag.
long long parse_seconds_ms(std::string_view flag, const std::string& text);

}  // namespace ktricks::cli
