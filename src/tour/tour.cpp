// ktricks tour: runs every trick live and prints what it measured.
#include "tour/tour.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "ktricks/core/error.hpp"
#include "tour/support.hpp"

namespace ktricks::tour {

// One per trick, each defined in its stop_*.cpp.
TourStop once_stop();
TourStop handoff_stop();
TourStop jail_stop();
TourStop sockets_stop();
TourStop netwatch_stop();
TourStop mysql_watch_stop();
TourStop tvfs_stop();

namespace {

std::vector<TourStop> all_stops() {
    return {once_stop(),     handoff_stop(),     jail_stop(), sockets_stop(),
            netwatch_stop(), mysql_watch_stop(), tvfs_stop()};
}

bool wanted(const Options& options, const TourStop& stop) {
    return options.only.empty() ||
           std::find(options.only.begin(), options.only.end(), stop.name) != options.only.end();
}

}  // namespace

int run(const Options& options) {
    auto stops = all_stops();
    if (options.list) {
        for (const auto& stop : stops) fmt::print("{:<12} {}\n", stop.name, stop.title);
        return 0;
    }
    for (const auto& name : options.only)
        if (std::none_of(stops.begin(), stops.end(), [&](const TourStop& stop) { return stop.name == name; }))
            throw InputError(fmt::format("--only {}: no such stop (see ktricks tour --list)", name));

    int ran = 0, passed = 0, skipped = 0;
    for (const auto& stop : stops) {
        if (!wanted(options, stop)) continue;
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
        log.print_kept();
        if (log.ok()) ++passed;
        fmt::print("  {}\n\n", log.ok() ? "ok" : "stop failed");
    }
    fmt::print("tour: {} stop{} ran, {} passed, {} failed, {} skipped\n", ran, ran == 1 ? "" : "s", passed,
               ran - passed, skipped);
    return ran == passed ? 0 : 1;
}

}  // namespace ktricks::tour
