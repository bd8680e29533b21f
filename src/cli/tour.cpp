// ktricks tour: runs every trick live and prints what it measured.
#include "cli/tour.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "cli/common.hpp"
#include "ktricks/core/error.hpp"

namespace ktricks::cli {

void TourLog::say(const std::string& text) { fmt::print("  {}\n", text); }
void TourLog::measured(const std::string& label, const std::string& value) { fmt::print("  > {}: {}\n", label, value); }
void TourLog::failed(const std::string& what) {
    ++failures_;
    fmt::print("  FAILED: {}\n", what);
}

double percentile(std::vector<double> values, double fraction) {
    if (values.empty()) return 0;
    std::sort(values.begin(), values.end());
    double position = fraction * static_cast<double>(values.size() - 1);
    auto low = static_cast<std::size_t>(std::floor(position));
    auto high = static_cast<std::size_t>(std::ceil(position));
    return values[low] + (values[high] - values[low]) * (position - static_cast<double>(low));
}

std::string format_ms(double milliseconds) {
    if (milliseconds < 0.01) return fmt::format("{:.1f} µs", milliseconds * 1000);
    if (milliseconds < 10) return fmt::format("{:.2f} ms", milliseconds);
    return fmt::format("{:.0f} ms", milliseconds);
}

namespace {

std::vector<TourStop> all_stops() {
    std::vector<TourStop> stops;
    stops.push_back(once_tour_stop());

    // handoff
    stops.push_back(handoff_tour_stop());

    // jail
    stops.push_back(jail_tour_stop());

    // netlink: sockets, procwatch
    stops.push_back(sockets_tour_stop());

    // netwatch
    stops.push_back(netwatch_tour_stop());

    // mysql-watch
    stops.push_back(mysql_watch_tour_stop());

    // tvfs
    stops.push_back(tvfs_tour_stop());

    return stops;
}

struct TourOptions {
    bool list = false;
    std::vector<std::string> only;
};

int run_tour(const TourOptions& options) {
    auto stops = all_stops();
    if (options.list) {
        for (const auto& stop : stops) fmt::print("{:<12} {}\n", stop.name, stop.title);
        return 0;
    }
    for (const auto& wanted : options.only)
        if (std::none_of(stops.begin(), stops.end(), [&](const TourStop& s) { return s.name == wanted; }))
            throw InputError(fmt::format("--only {}: no such stop (see ktricks tour --list)", wanted));

    int ran = 0, passed = 0, skipped = 0;
    for (const auto& stop : stops) {
        if (!options.only.empty() && std::find(options.only.begin(), options.only.end(), stop.name) == options.only.end())
            continue;
        fmt::print("== {}: {}\n", stop.name, stop.title);
        if (auto reason = stop.unavailable ? stop.unavailable() : std::nullopt) {
            fmt::print("  skipped: {}\n\n", *reason);
            ++skipped;
            continue;
        }
        ++ran;
        TourLog log;
        try {
            stop.run(log);
        } catch (const std::exception& error) {
            log.failed(error.what());
        }
        if (log.ok()) ++passed;
        fmt::print("  {}\n\n", log.ok() ? "ok" : "stop failed");
    }
    fmt::print("tour: {} stop{} ran, {} passed, {} failed, {} skipped\n", ran, ran == 1 ? "" : "s", passed, ran - passed,
               skipped);
    return ran == passed ? 0 : 1;
}

}  // namespace

Subcommand add_tour(CLI::App& app) {
    auto options = std::make_shared<TourOptions>();
    auto* sub = app.add_subcommand("tour", "Run every trick live on built-in defaults and print what it measured");
    sub->add_flag("--list", options->list, "List the stops and exit");
    sub->add_option("--only", options->only, "Run only this stop (repeatable)");
    sub->footer("Examples:\n"
                "  ktricks tour                       # every stop\n"
                "  ktricks tour --only once --only handoff\n"
                "Exit status: 0 if every stop that ran succeeded, 1 otherwise; skipped stops say why.");
    return {sub, [options] { return run_tour(*options); }};
}

}  // namespace ktricks::cli
