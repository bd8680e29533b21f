#include "cli/common.hpp"

#include <fmt/format.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>

#include "ktricks/core/error.hpp"
#include "ktricks/core/service.hpp"

namespace ktricks::cli {

int report_error(std::string_view subcommand, const std::exception& error) {
    fmt::print(stderr, "ktricks {}: {}\n", subcommand, error.what());
    return exit_status_for(error);
}

void add_exec_flags(CLI::App* sub, ExecFlags& flags) {
    sub->add_option("--exec-timeout", flags.timeout,
                    "Kill a script (its whole process group: SIGTERM, SIGKILL 1 s later) after SECONDS")
        ->capture_default_str();
    sub->add_option(
           "--exec-concurrency", flags.concurrency,
           "At most N scripts at once; scripts for one key (rule and interface, table, pid) run in order")
        ->capture_default_str();
}

std::chrono::milliseconds exec_timeout(const ExecFlags& flags) {
    return std::chrono::milliseconds(parse_seconds_ms("--exec-timeout", flags.timeout));
}

void log_script_end(const JobReport& report) {
    if (report.failed()) log_warning("{}", report.describe());
}

long long parse_seconds_ms(std::string_view flag, const std::string& text) {
    char* end = nullptr;
    double seconds = std::strtod(text.c_str(), &end);
    if (text.empty() || *end || !std::isfinite(seconds) || seconds < 0 || seconds > 1e9)
        throw InputError(fmt::format("{}=\"{}\": expected a number of seconds, like 2 or 0.5", flag, text));
    return round_to_ms(seconds).count();
}

std::vector<std::string> helper_paths(std::string_view program, std::string* self) {
    // Relative to this binary: computed by CMake from the install directories, and the build tree.
    static constexpr const char* helper_dirs[] = {KTRICKS_LIBEXEC_FROM_BINDIR, "libexec/ktricks"};
    char path[4096];
    ssize_t length = ::readlink("/proc/self/exe", path, sizeof path - 1);
    if (length <= 0) throw_errno("readlink", "/proc/self/exe");
    std::string own(path, static_cast<std::size_t>(length));
    if (self) *self = own;
    std::string own_dir = own.substr(0, own.rfind('/'));
    std::vector<std::string> paths;
    for (const char* dir : helper_dirs) paths.push_back(fmt::format("{}/{}/{}", own_dir, dir, program));
    return paths;
}

}  // namespace ktricks::cli
