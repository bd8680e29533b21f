// ktricks, the front door: the light subcommands are built in; a heavy one (subcommands.hpp names its
// helper) is exec'd from libexec/ktricks/ before anything is parsed, so its libraries never load here.
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/common.hpp"
#include "cli/subcommands.hpp"
#include "ktricks/core/error.hpp"

namespace {

using namespace ktricks;

// Replaces this process with the helper PROGRAM, passing ARGV unchanged. Returns only on failure.
int exec_helper(const cli::SubcommandInfo& info, char** argv) {
    std::string self;
    std::vector<std::string> paths;
    try {
        paths = cli::helper_paths(info.helper, &self);
    } catch (const std::exception& error) {
        fmt::print(stderr, "ktricks {}: {}\n", info.name, error.what());
        return exit_code::unavailable;
    }
    // The helpers (the tour in particular) start further subcommands through the front door.
    ::setenv("KTRICKS_PROGRAM", self.c_str(), 1);
    std::vector<std::string> tried;
    int first_error = 0;
    for (const auto& path : paths) {
        ::execv(path.c_str(), argv);
        if (!first_error || first_error == ENOENT) first_error = errno;
        tried.push_back(path);
    }
    fmt::print(stderr, "ktricks {}: cannot run its helper program {} (tried {}): {}\n", info.name,
               info.helper, fmt::join(tried, ", "), std::strerror(first_error));
    return exit_code::unavailable;
}

}  // namespace

int main(int argc, char** argv) {
    using namespace ktricks::cli;
    if (argc > 1)
        if (const auto* info = find_subcommand(argv[1]); info && !info->helper.empty())
            return exec_helper(*info, argv);

    static const Registration built_in[] = {
#define KTRICKS_BUILT_IN(id, name, summary) {name, add_##id},
#define KTRICKS_HELPER(id, name, summary, program)
#include "cli/subcommands.def"
#undef KTRICKS_BUILT_IN
#undef KTRICKS_HELPER
    };
    return run(argc, argv, built_in, true);
}
