// ktricks tour: argument parsing for the tour (src/tour/).
#include <memory>

#include "cli/common.hpp"
#include "tour/tour.hpp"

namespace ktricks::cli {

Subcommand add_tour(CLI::App& app) {
    auto options = std::make_shared<tour::Options>();
    auto* sub = add_subcommand(app, "tour");
    sub->add_flag("--list", options->list, "List the stops and exit");
    sub->add_option("--only", options->only, "Run only this stop (repeatable)");
    sub->footer(
        "Examples:\n"
        "  ktricks tour                       # every stop\n"
        "  ktricks tour --only once --only handoff\n"
        "Exit status: 0 if every stop that ran succeeded, 1 otherwise; skipped stops say why.");
    return {sub, [options] { return tour::run(*options); }};
}

}  // namespace ktricks::cli
