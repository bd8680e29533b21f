// What every tour stop shares: how it reports (TourLog), what it is (TourStop), and the plumbing of a
// live demonstration: a scratch directory, waiting with a deadline, quiet child processes, and the
// front door to spawn for a subcommand. A stop that needs one of these jobs uses this one.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ktricks/core/child.hpp"

namespace ktricks::tour {

using Clock = std::chrono::steady_clock;

// What a stop prints: narration, measurements, failures; and evidence shown only if it failed.
class TourLog {
public:
    void say(const std::string& text);
    void measured(const std::string& label, const std::string& value);
    void failed(const std::string& what);
    bool ok() const noexcept { return failures_ == 0; }

    // A line printed after the stop's result only if the stop failed (a server's last log lines).
    void keep_if_failed(std::string line);
    // Prints the kept lines if the stop failed, and forgets them. The runner calls it.
    void print_kept();

private:
    int failures_ = 0;
    std::vector<std::string> kept_;
};

struct TourStop {
    std::string name;   // for --only
    std::string title;  // one line for --list; a claim here must be one the stop checks
    // Why the stop cannot run here (not root, a program missing), or nullopt.
    std::function<std::optional<std::string>()> unavailable;
    // Runs the stop; failures are reported through TourLog::failed (or by throwing).
    std::function<void(TourLog&)> run;
};

// Interpolated percentile of a sample (0.5: the median, 1.0: the maximum); 0 for an empty sample.
double percentile(std::vector<double> values, double fraction);
// A duration in milliseconds with a sensible unit: "42.0 µs", "0.42 ms", "420 ms".
std::string format_ms(double milliseconds);

template <class Rep, class Period>
double to_ms(std::chrono::duration<Rep, Period> duration) {
    return std::chrono::duration<double, std::milli>(duration).count();
}
inline double ms_since(Clock::time_point start) { return to_ms(Clock::now() - start); }

// A fresh private directory, /tmp/ktricks-tour-LABEL-XXXXXX (mkdtemp: mode 0700, a name nobody
// else can have taken), removed with everything in it on destruction. Anything mounted inside must
// be unmounted first: declare the unmounting guard after the TempDir.
class TempDir {
public:
    explicit TempDir(std::string_view label);
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& path() const noexcept { return path_; }
    std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

private:
    std::filesystem::path path_;
};

// The file third-party programs' stdout and stderr go to (MariaDB's warnings, python's request
// log, ffmpeg), so the tour prints only what it measured. On destruction its last lines are handed
// to the TourLog, which shows them only if the stop failed: declare it after the TempDir holding it.
class OutputLog {
public:
    OutputLog(TourLog& log, std::filesystem::path path);
    ~OutputLog();
    OutputLog(const OutputLog&) = delete;
    OutputLog& operator=(const OutputLog&) = delete;

    const std::filesystem::path& path() const noexcept { return path_; }

private:
    TourLog& log_;
    std::filesystem::path path_;
};

// Polls `condition` every 2 ms until it holds (true) or `timeout` has passed (false).
bool wait_for(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed). Another
// process could take it in between: good enough for a demonstration, not for a service.
std::uint16_t free_port();

// Child::spawn with the standard descriptors that `options` leaves unset (-1) made quiet: stdin
// from /dev/null, stdout and stderr appended to `output`, or to /dev/null if `output` is empty.
Child spawn_quiet(SpawnOptions options, const std::filesystem::path& output = {});
// Runs argv quietly (as spawn_quiet) to the end; true if it exited with status 0 within `timeout`.
// A child still running at the deadline is killed.
bool run_quiet(std::vector<std::string> argv, std::chrono::milliseconds timeout,
               const std::filesystem::path& output = {});

// Full path of an installed program: PATH first, then the sbin directories a user's PATH often
// lacks (mariadbd, ip); nullopt if it is not installed.
std::optional<std::string> find_program(const std::string& name);

// The front door to spawn for a subcommand (`ktricks once ...`). The tour runs as a helper program
// exec'd by the front door, so /proc/self/exe is the helper, not `ktricks`: the front door sets
// $KTRICKS_PROGRAM to its own absolute path before it execs a helper. Without it, `ktricks` on
// PATH. Throws std::runtime_error if neither exists.
std::string ktricks_program();

}  // namespace ktricks::tour
