#include "tour/support.hpp"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/core/socket_address.hpp"

namespace ktricks::tour {

void TourLog::say(const std::string& text) { fmt::print("  {}\n", text); }
void TourLog::measured(const std::string& label, const std::string& value) {
    fmt::print("  > {}: {}\n", label, value);
}
void TourLog::failed(const std::string& what) {
    ++failures_;
    fmt::print("  FAILED: {}\n", what);
}
void TourLog::keep_if_failed(std::string line) { kept_.push_back(std::move(line)); }
void TourLog::print_kept() {
    if (!ok())
        for (const auto& line : kept_) fmt::print("  | {}\n", line);
    kept_.clear();
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

TempDir::TempDir(std::string_view label) {
    std::string pattern =
        (std::filesystem::temp_directory_path() / fmt::format("ktricks-tour-{}-XXXXXX", label)).string();
    if (!::mkdtemp(pattern.data())) throw_errno("mkdtemp", pattern);
    path_ = pattern;
}

TempDir::~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
}

OutputLog::OutputLog(TourLog& log, std::filesystem::path path) : log_(log), path_(std::move(path)) {
    std::ofstream create(path_, std::ios::trunc);
}

OutputLog::~OutputLog() {
    constexpr std::size_t tail = 15;
    try {
        std::ifstream file(path_);
        std::deque<std::string> last;
        for (std::string line; std::getline(file, line);) {
            last.push_back(printable(line));
            if (last.size() > tail) last.pop_front();
        }
        if (last.empty()) return;
        log_.keep_if_failed(fmt::format("last lines of {}:", path_.filename().string()));
        for (auto& line : last) log_.keep_if_failed(std::move(line));
    } catch (...) {
        // A destructor may run during unwinding: the evidence is lost, the stop's own failure is not.
    }
}

bool wait_for(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    while (true) {
        if (condition()) return true;
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

std::uint16_t free_port() {
    Fd probe = bind_socket(SocketAddress::parse("tcp://127.0.0.1:0"));
    return SocketAddress::of_socket(probe.get()).port();
}

Child spawn_quiet(SpawnOptions options, const std::filesystem::path& output) {
    Fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!null) throw_errno("open", "/dev/null");
    Fd out;
    if (!output.empty()) {
        out = Fd(::open(output.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
        if (!out) throw_errno("open", output.string());
    }
    int sink = out ? out.get() : null.get();
    if (options.stdin_fd < 0) options.stdin_fd = null.get();
    if (options.stdout_fd < 0) options.stdout_fd = sink;
    if (options.stderr_fd < 0) options.stderr_fd = sink;
    return Child::spawn(options);
}

bool run_quiet(std::vector<std::string> argv, std::chrono::milliseconds timeout,
               const std::filesystem::path& output) {
    SpawnOptions options;
    options.argv = std::move(argv);
    auto status = spawn_quiet(std::move(options), output).wait(timeout);
    return status && status->shell_status() == 0;
}

std::optional<std::string> find_program(const std::string& name) {
    try {
        return ktricks::find_program(name);
    } catch (const SpawnError&) {}
    for (const char* dir : {"/usr/local/sbin", "/usr/sbin", "/sbin"})
        if (auto path = std::filesystem::path(dir) / name; ::access(path.c_str(), X_OK) == 0)
            return path.string();
    return std::nullopt;
}

std::string ktricks_program() {
    if (const char* program = ::getenv("KTRICKS_PROGRAM"); program && *program) return program;
    if (auto found = find_program("ktricks")) return *found;
    throw std::runtime_error(
        "cannot find the ktricks front door: KTRICKS_PROGRAM is not set (run the tour as `ktricks tour`) and "
        "there is no ktricks on PATH");
}

}  // namespace ktricks::tour
