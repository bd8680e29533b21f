#include "cli/common.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>

#include "ktricks/core/error.hpp"

namespace ktricks::cli {

int report_error(std::string_view subcommand, const std::exception& error) {
    fmt::print(stderr, "ktricks {}: {}\n", subcommand, error.what());
    return exit_status_for(error);
}

long long parse_seconds_ms(std::string_view flag, const std::string& text) {
    char* end = nullptr;
    double seconds = std::strtod(text.c_str(), &end);
    if (text.empty() || *end || !std::isfinite(seconds) || seconds < 0 || seconds > 1e9)
        throw InputError(fmt::format("{}=\"{}\": expected a number of seconds, like 2 or 0.5", flag, text));
    return std::llround(seconds * 1000);
}

}  // namespace ktricks::cli
