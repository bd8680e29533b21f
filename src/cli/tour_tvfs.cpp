// Tour stop "tvfs": two generated clips (one TV-ready, one not), mounted; the decisions, a
// transcoded file read through the mount with its time to first byte, checked with ffprobe.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "cli/tour.hpp"
#include "ktricks/core/child.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/tvfs.hpp"

namespace ktricks::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) { return std::chrono::duration<double, std::milli>(Clock::now() - start).count(); }

bool run_quiet(std::vector<std::string> argv, std::chrono::seconds timeout = std::chrono::seconds(30)) {
    SpawnOptions spawn;
    spawn.argv = std::move(argv);
    Fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    spawn.stdin_fd = spawn.stdout_fd = spawn.stderr_fd = null.get();
    auto child = Child::spawn(spawn);
    auto status = child.wait(timeout);
    return status && status->shell_status() == 0;
}

bool mounted(const std::string& path) {
    std::ifstream mounts("/proc/self/mountinfo");
    for (std::string line; std::getline(mounts, line);)
        if (line.find(" " + path + " ") != std::string::npos && line.find("fuse.tvfs") != std::string::npos) return true;
    return false;
}

void run_stop(TourLog& log) {
    auto root = fs::temp_directory_path() / fmt::format("ktricks-tour-tvfs-{}", ::getpid());
    struct Cleanup {
        fs::path root;
        ~Cleanup() {
            if (mounted((root / "tv").string())) run_quiet({"fusermount3", "-u", "-z", (root / "tv").string()});
            std::error_code ignored;
            fs::remove_all(root, ignored);
        }
    } cleanup{root};
    fs::create_directories(root / "videos");
    fs::create_directories(root / "tv");
    auto videos = (root / "videos").string();
    const std::string source = "-f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 -t 6";
    log.say("Generating two 6 s clips with ffmpeg: ready.mp4 (H.264+AAC, faststart) and phone.mkv (HEVC 10-bit + Opus).");
    if (!run_quiet({"sh", "-c", fmt::format("cd {} && ffmpeg -v error -nostdin -y {} -c:v libx264 -preset ultrafast -pix_fmt yuv420p "
                                            "-c:a aac -movflags +faststart ready.mp4 && ffmpeg -v error -nostdin -y {} -c:v libx265 "
                                            "-preset ultrafast -pix_fmt yuv420p10le -x265-params log-level=none -c:a libopus phone.mkv",
                                            videos, source, source)}))
        return log.failed("ffmpeg could not generate the clips");
    for (const auto& name : {"ready.mp4", "phone.mkv"}) {
        auto media = tvfs::probe(videos + "/" + name);
        auto decision = tvfs::decide(media, tvfs::builtin_profile("tv"));
        log.say(fmt::format("{} -> {} ({}): {}", name, tvfs::output_name(name, decision), tvfs::to_string(decision.action),
                            decision.reasons.empty() ? "" : decision.reasons.front()));
    }

    auto mountpoint = (root / "tv").string();
    SpawnOptions spawn;
    spawn.argv = {fs::read_symlink("/proc/self/exe").string(), "tvfs", videos, mountpoint, "-f", "--cache", (root / "cache").string()};
    Fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    spawn.stdout_fd = spawn.stderr_fd = null.get();
    auto start = Clock::now();
    auto daemon = Child::spawn(spawn);
    while (!mounted(mountpoint) && ms_since(start) < 10000) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (!mounted(mountpoint)) return log.failed("tvfs did not mount within 10 s");
    log.measured("mount", format_ms(ms_since(start)));
    std::string listing;
    for (const auto& entry : fs::directory_iterator(mountpoint))
        listing += fmt::format(" {} ({} bytes)", entry.path().filename().string(), entry.file_size());
    log.say("ls " + mountpoint + ":" + listing);

    auto path = mountpoint + "/phone.ts";
    struct stat st{};
    ::stat(path.c_str(), &st);
    Fd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    char buffer[65536];
    start = Clock::now();
    auto n = ::read(file.get(), buffer, sizeof(buffer));
    log.measured("time to first byte (cold transcode)", format_ms(ms_since(start)));
    std::uint64_t total = n > 0 ? static_cast<std::uint64_t>(n) : 0;
    while ((n = ::read(file.get(), buffer, sizeof(buffer))) > 0) total += static_cast<std::uint64_t>(n);
    double whole = ms_since(start);
    log.measured("whole file", fmt::format("{} ({:.1f}x realtime)", format_ms(whole), 6000.0 / whole));
    log.say(fmt::format("st_size {} bytes, read {} bytes: {}", st.st_size, total, total == static_cast<std::uint64_t>(st.st_size) ? "equal" : "DIFFERENT"));
    if (total != static_cast<std::uint64_t>(st.st_size)) log.failed("bytes read differ from st_size");
    if (run_quiet({"sh", "-c", fmt::format("ffprobe -v error -select_streams v -show_entries stream=codec_name -of csv=p=0 {} | grep -qx h264 && "
                                           "ffmpeg -v error -nostdin -i {} -f null - 2>&1 | (! grep -q .)", path, path)}))
        log.say("ffprobe: H.264 + AAC in MPEG-TS; ffmpeg decodes it without one error.");
    else
        log.failed("ffprobe/ffmpeg rejected phone.ts");
    file = Fd();
    start = Clock::now();
    if (!run_quiet({"fusermount3", "-u", mountpoint})) return log.failed("fusermount3 -u failed");
    auto status = daemon.wait(std::chrono::seconds(10));
    log.measured("unmount", format_ms(ms_since(start)));
    if (!status || status->shell_status() != 0) log.failed("tvfs did not exit cleanly after fusermount3 -u");
}

}  // namespace

TourStop tvfs_tour_stop() {
    return {"tvfs", "a FUSE filesystem that shows every video as one the TV plays",
            []() -> std::optional<std::string> {
                if (::access("/dev/fuse", R_OK | W_OK) != 0) return "no /dev/fuse";
                for (auto program : {"ffmpeg", "ffprobe", "fusermount3"}) try {
                        find_program(program);
                    } catch (const std::exception&) {
                        return fmt::format("{} is not installed", program);
                    }
                return std::nullopt;
            },
            run_stop};
}

}  // namespace ktricks::cli
