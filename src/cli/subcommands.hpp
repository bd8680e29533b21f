// The subcommand table (from subcommands.def, where the list is written once).
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
#define KTRICKS_BUILT_IN(id, name, summary) {name, summary, ""},
#define KTRICKS_HELPER(id, name, summary, program) {name, summary, program},
#include "cli/subcommands.def"
#undef KTRICKS_BUILT_IN
#undef KTRICKS_HELPER
};

// The entry for NAME, or nullptr.
constexpr const SubcommandInfo* find_subcommand(std::string_view name) {
    for (const auto& info : subcommands)
        if (info.name == name) return &info;
    return nullptr;
}

}  // namespace ktricks::cli
