// The tour: one stop per trick, each run live on built-in defaults, each printing what it measured.
// A stop lives next to its trick's CLI (tour_once.cpp beside once.cpp) and uses only public API.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace ktricks::cli {

// What a stop prints: narration, and measurements (label, value) that the tour also collects.
class TourLog {
public:
    void say(const std::string& text);
    void measured(const std::string& label, const std::string& value);
    void failed(const std::string& what);
    bool ok() const noexcept { return failures_ == 0; }

private:
    int failures_ = 0;
};

struct TourStop {
    std::string name;     // for --only
    std::string title;    // one line for --list
    // Why the stop cannot run here (not root, a kernel feature missing), or nullopt.
    std::function<std::optional<std::string>()> unavailable;
    // Runs the stop; failures are reported through TourLog::failed (or by throwing).
    std::function<void(TourLog&)> run;
};

TourStop once_tour_stop();

// handoff
TourStop handoff_tour_stop();

// jail
TourStop jail_tour_stop();

// netlink: sockets, procwatch
TourStop sockets_tour_stop();

// netwatch
TourStop netwatch_tour_stop();

// mysql-watch
TourStop mysql_watch_tour_stop();

// tvfs
TourStop tvfs_tour_stop();


// Median and percentile of a sample, and a duration printed with a sensible unit ("0.42 ms").
double percentile(std::vector<double> values, double fraction);
std::string format_ms(double milliseconds);

}  // namespace ktricks::cli
