// Tour stop "tvfs": two generated clips (one TV-ready, one not), mounted; the decisions, a
// transcoded file read through the mount with its time to first byte, checked with ffprobe.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "ktricks/core/child.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/tvfs.hpp"
#include "tour/support.hpp"

namespace ktricks::tour {
namespace {

namespace fs = std::filesystem;
constexpr auto program_timeout = std::chrono::seconds(30);

bool mounted(const std::string& path) {
    std::ifstream mounts("/proc/self/mountinfo");
    for (std::string line; std::getline(mounts, line);)
        if (line.find(" " + path + " ") != std::string::npos && line.find("fuse.tvfs") != std::string::npos)
            return true;
    return false;
}

// Unmounts (lazily) whatever is still mounted at `path` on destruction, so that the TempDir
// declared before it can remove the tree instead of descending into a live mount.
struct LazyUnmount {
    std::string path;
    ~LazyUnmount() {
        try {
            if (mounted(path)) run_quiet({"fusermount3", "-u", "-z", path}, program_timeout);
        } catch (...) {}
    }
};

void run_stop(TourLog& log) {
    TempDir root("tvfs");
    OutputLog output(log, root / "programs.log");
    fs::create_directories(root / "videos");
    fs::create_directories(root / "tv");
    LazyUnmount unmount{(root / "tv").string()};
    auto videos = (root / "videos").string();
    const std::string source =
        "-f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 -t 6";
    log.say(
        "Generating two 6 s clips with ffmpeg: ready.mp4 (H.264+AAC, faststart) and phone.mkv (HEVC 10-bit + Opus).");
    if (!run_quiet(
            {"sh", "-c",
             fmt::format(
                 "cd {} && ffmpeg -v error -nostdin -y {} -c:v libx264 -preset ultrafast -pix_fmt yuv420p "
                 "-c:a aac -movflags +faststart ready.mp4 && ffmpeg -v error -nostdin -y {} -c:v libx265 "
                 "-preset ultrafast -pix_fmt yuv420p10le -x265-params log-level=none -c:a libopus phone.mkv",
                 videos, source, source)},
            program_timeout, output.path()))
        return log.failed("ffmpeg could not generate the clips");
    for (const auto& name : {"ready.mp4", "phone.mkv"}) {
        auto media = tvfs::probe(videos + "/" + name);
        auto decision = tvfs::decide(media, tvfs::builtin_profile("tv"));
        log.say(fmt::format("{} -> {} ({}): {}", name, tvfs::output_name(name, decision),
                            tvfs::to_string(decision.action),
                            decision.reasons.empty() ? "" : decision.reasons.front()));
    }

    auto mountpoint = unmount.path;
    SpawnOptions spawn;
    spawn.argv = {ktricks_program(), "tvfs", videos, mountpoint, "-f", "--cache", (root / "cache").string()};
    auto start = Clock::now();
    auto daemon = spawn_quiet(spawn, output.path());
    if (!wait_for([&] { return mounted(mountpoint); }, std::chrono::seconds(10)))
        return log.failed("tvfs did not mount within 10 s");
    log.measured("mount", format_ms(ms_since(start)));
    std::string listing;
    for (const auto& entry : fs::directory_iterator(mountpoint))
        listing += fmt::format(" {} ({} bytes)", entry.path().filename().string(), entry.file_size());
    log.say("ls " + mountpoint + ":" + listing);

    auto path = mountpoint + "/phone.ts";
    struct stat st {};
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
    log.say(fmt::format("st_size {} bytes, read {} bytes: {}", st.st_size, total,
                        total == static_cast<std::uint64_t>(st.st_size) ? "equal" : "DIFFERENT"));
    if (total != static_cast<std::uint64_t>(st.st_size)) log.failed("bytes read differ from st_size");
    // Each claim of the line below is checked: the codecs and container ffprobe reads, then a full
    // decode by ffmpeg that prints nothing at -v error. ffprobe lists an MPEG-TS stream twice (under
    // its program and on its own): hence sort -u.
    if (run_quiet({"sh", "-c",
                   fmt::format("test \"$(ffprobe -v error -show_entries stream=codec_name:format=format_name "
                               "-of default=nw=1:nk=1 {} | sort -u | tr '\\n' ' ')\" = 'aac h264 mpegts ' && "
                               "ffmpeg -v error -nostdin -i {} -f null - 2>&1 | (! grep .)",
                               path, path)},
                  program_timeout, output.path()))
        log.say("ffprobe: H.264 + AAC in MPEG-TS; ffmpeg decodes it without one error.");
    else
        log.failed("ffprobe/ffmpeg rejected phone.ts");
    file = Fd();
    start = Clock::now();
    if (!run_quiet({"fusermount3", "-u", mountpoint}, program_timeout, output.path()))
        return log.failed("fusermount3 -u failed");
    auto status = daemon.wait(std::chrono::seconds(10));
    log.measured("unmount", format_ms(ms_since(start)));
    if (!status || status->shell_status() != 0) log.failed("tvfs did not exit cleanly after fusermount3 -u");
}

}  // namespace

TourStop tvfs_stop() {
    return {"tvfs", "a FUSE filesystem that shows every video as one the TV plays",
            []() -> std::optional<std::string> {
                if (::access("/dev/fuse", R_OK | W_OK) != 0) return "no /dev/fuse";
                for (auto program : {"ffmpeg", "ffprobe", "fusermount3"})
                    if (!find_program(program)) return fmt::format("{} is not installed", program);
                return std::nullopt;
            },
            run_stop};
}

}  // namespace ktricks::tour
