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

// Where the helpers are, relative to this binary: the installed layout (bin/ → libexec/ktricks/,
// computed by CMake from the install directories) and the build tree (build/ → build/libexec/ktricks/).
constexpr const char* helper_dirs[] = {KTRICKS_LIBEXEC_FROM_BINDIR, "libexec/ktricks"};

// Replaces this process with the helper PROGRAM, passing ARGV unchanged. Returns only on failure.
int exec_helper(const cli::SubcommandInfo& info, char** argv) {
    char self[4096];
    ssize_t length = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (length <= 0) {
        fmt::print(stderr, "ktricks {}: readlink /proc/self/exe: {}\n", info.name, std::strerror(errno));
        return exit_code::unavailable;
    }
    self[length] = '\0';
    // The helpers (the tour in particular) start further subcommands through the front door.
    ::setenv("KTRICKS_PROGRAM", self, 1);
    std::string own_dir(self, std::string(self).rfind('/'));
    std::vector<std::string> tried;
    int first_error = 0;
    for (const char* dir : helper_dirs) {
        std::string path = fmt::format("{}/{}/{}", own_dir, dir, info.helper);
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
