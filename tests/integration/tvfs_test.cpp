// tvfs on a real FUSE mount: media generated with the ffmpeg command from lavfi sources, read back
// through the mount, checked with ffprobe/ffmpeg; minidlna end to end in a private network namespace.
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "process_helpers.hpp"
#include "tvfs/av.hpp"
#include "tvfs/cache_json.hpp"

namespace ktricks::test {
namespace {

namespace fs = std::filesystem;

bool have(const char* program) {
    return run({"sh", "-c", fmt::format("command -v {} >/dev/null", program)}).status == 0;
}

// Runs COMMAND (sh) in WORK to make test media; throws if it fails.
void generate_media(const std::string& work, const std::string& command) {
    auto result = run({"sh", "-c", command}, in_dir(work), std::chrono::seconds(60));
    if (result.status != 0) throw std::runtime_error("generating test media failed: " + result.describe);
}

// FINAL_DIR, made once per machine and shared by every test process: GENERATE fills a private work
// directory (deterministically), which is then renamed into place. Another test process may win that
// race: fine, its copy is the same.
std::string generated_once(const std::string& final_dir,
                           const std::function<void(const std::string&)>& generate) {
    if (fs::exists(final_dir + "/complete")) return final_dir;
    std::string work = fmt::format("{}.{}", final_dir, ::getpid());
    fs::create_directories(work);
    generate(work);
    write_file(work + "/complete", "");
    std::error_code error;
    fs::rename(work, final_dir, error);
    if (error) fs::remove_all(work, error);
    return final_dir;
}

// The test corpus, generated once per machine (deterministic) and shared by every test process.
const std::string& media_dir() {
    static const std::string dir = generated_once("/tmp/ktricks-tvfs-media-v4", [](const std::string& work) {
        const std::string f = "ffmpeg -v error -nostdin -y";
        const std::string small =
            "-f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000";
        std::vector<std::string> commands = {
            f + " " + small +
                " -t 4 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -ac 2 -movflags +faststart pass.mp4",
            f + " " + small +
                " -t 4 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -ac 2 remux.mkv",
            f + " " + small + " -t 4 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a ac3 -ac 2 ac3.mkv",
            f + " " + small +
                " -t 4 -c:v libx265 -preset ultrafast -pix_fmt yuv420p10le -x265-params log-level=none -c:a aac hevc10.mkv",
            f + " " + small +
                " -t 4 -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 300k -c:a libopus vp9.webm",
            f + " -f lavfi -i testsrc2=size=720x480:rate=30000/1001 -f lavfi -i sine=sample_rate=48000 -t 4 -c:v mpeg2video "
                "-flags +ilme+ildct -top 1 -c:a mp2 interlaced.ts",
            f + " -f lavfi -i testsrc2=size=3840x2160:rate=60 -f lavfi -i sine=sample_rate=48000 -t 1.5 -c:v libx264 -preset ultrafast "
                "-pix_fmt yuv420p -c:a aac uhd60.mp4",
            "printf '1\\n00:00:00,000 --> 00:00:02,000\\nhello\\n' > subs.srt && " + f + " " + small +
                " -i subs.srt -t 4 -map 0 -map 1 -map 2 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -c:s srt subtitled.mkv"
                " && rm subs.srt",
            f + " " + small +
                " -t 24 -c:v libx264 -preset ultrafast -g 50 -pix_fmt yuv420p -c:a libopus long.mkv",
            f + " " + small +
                " -t 24 -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 200k -c:a libopus longvp9.webm",
            "head -c 100000 remux.mkv > damaged.mkv && head -c 50000 /dev/urandom >> damaged.mkv && "
            "head -c 100000 /dev/urandom > garbage.mkv && "
            "head -c 64 pass.mp4 > truncated.mp4 && echo 'not a video' > notes.txt",
        };
        for (const auto& command : commands) {
            generate_media(work, command);
        }
    });
    return dir;
}

std::uint64_t bytes_read(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    char buffer[65536];
    std::uint64_t total = 0;
    while (file.read(buffer, sizeof(buffer)) || file.gcount() > 0)
        total += static_cast<std::uint64_t>(file.gcount());
    return total;
}

std::string read_range(const std::string& path, std::uint64_t offset, std::size_t size) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    std::string data(size, '\0');
    auto n = ::pread(fd.get(), data.data(), size, static_cast<off_t>(offset));
    data.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return data;
}

// The files under a cache directory with their sizes, or nothing when the walk raced with tvfs
// evicting or finishing a file (the caller asks again): a half walk would undercount.
struct CachedFile {
    fs::path path;
    std::uint64_t size;
};
std::optional<std::vector<CachedFile>> cached_files(const std::string& dir) {
    std::vector<CachedFile> files;
    std::error_code error;
    fs::recursive_directory_iterator entry(dir, error);
    for (; !error && entry != fs::recursive_directory_iterator(); entry.increment(error)) {
        if (!entry->is_regular_file(error)) {
            if (error) return std::nullopt;
            continue;
        }
        auto size = entry->file_size(error);
        if (error) return std::nullopt;
        files.push_back({entry->path(), size});
    }
    if (error) return std::nullopt;
    return files;
}

// cached_files(), asked again until one walk sees no file vanish (at most 5 s).
std::vector<CachedFile> settled_cached_files(const std::string& dir) {
    std::optional<std::vector<CachedFile>> files;
    if (!eventually([&] { return (files = cached_files(dir)).has_value(); }, std::chrono::seconds(5), 20ms))
        ADD_FAILURE() << dir << ": files kept vanishing while it was read";
    return files.value_or(std::vector<CachedFile>{});
}

bool is_mounted(const std::string& path) {
    std::ifstream mounts("/proc/self/mountinfo");
    for (std::string line; std::getline(mounts, line);)
        if (line.find(" " + path + " ") != std::string::npos && line.find("fuse.tvfs") != std::string::npos)
            return true;
    return false;
}

// `ktricks tvfs SRC MNT -f`, unmounted (lazily, even after a crash) and killed on destruction.
class Mount {
public:
    Mount(const std::string& source, std::vector<std::string> extra = {})
        : mountpoint_(dir_ / "mnt"), cache_(dir_ / "cache") {
        fs::create_directories(mountpoint_);
        std::vector<std::string> argv = {KTRICKS_BINARY, "tvfs", source,    mountpoint_, "-f",
                                         "--cache",      cache_, "--grace", "0.5"};
        argv.insert(argv.end(), extra.begin(), extra.end());
        process_.emplace(Process::start(argv));
        if (!eventually([&] { return is_mounted(mountpoint_) || !process_->running(); },
                        std::chrono::seconds(10)) ||
            !is_mounted(mountpoint_))
            throw std::runtime_error("tvfs did not mount: " + process_->describe());
    }
    ~Mount() {
        if (is_mounted(mountpoint_)) run({"fusermount3", "-u", "-z", mountpoint_});
    }
    std::string operator/(std::string_view name) const { return mountpoint_ + "/" + std::string(name); }
    const std::string& path() const { return mountpoint_; }
    const std::string& cache() const { return cache_; }
    Process& process() { return *process_; }
    std::set<std::string> names() const {
        std::set<std::string> names;
        for (const auto& entry : fs::directory_iterator(mountpoint_))
            names.insert(entry.path().filename().string());
        return names;
    }
    int segment_threads() const {
        int count = 0;
        std::error_code error;
        for (const auto& task : fs::directory_iterator(fmt::format("/proc/{}/task", process_->pid()), error))
            if (read_file(task.path() / "comm").starts_with("tvfs-segment")) ++count;
        return count;
    }

private:
    TempDir dir_;
    std::string mountpoint_, cache_;
    std::optional<Process> process_;
};

class Tvfs : public ::testing::Test {
protected:
    void SetUp() override {
        if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
        if (!have("ffmpeg") || !have("ffprobe") || !have("fusermount3"))
            GTEST_SKIP() << "needs ffmpeg, ffprobe and fusermount3";
        media_dir();
    }

    nlohmann::json ffprobe(const std::string& path) {
        auto result =
            run({"ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path},
                {}, std::chrono::seconds(30));
        EXPECT_EQ(result.status, 0) << result.describe;
        return nlohmann::json::parse(result.out.empty() ? "{}" : result.out);
    }
    double duration(const std::string& path) {
        return std::stod(ffprobe(path)["format"].value("duration", "0"));
    }
};

TEST_F(Tvfs, ListingShowsOneNamePerPlayableVideoAndSkipsBrokenFiles) {
    Mount mount(media_dir());
    std::set<std::string> expected = {"pass.mp4",      "remux.mp4",     "ac3.ts",     "hevc10.ts",
                                      "vp9.ts",        "interlaced.ts", "uhd60.ts",   "subtitled.mp4",
                                      "subtitled.srt", "long.ts",       "longvp9.ts", "damaged.mp4"};
    EXPECT_EQ(mount.names(), expected);
    // Garbage and a truncated MP4 are skipped with a log line; a damaged MKV is served as far as it reads.
    for (const auto& file : {"garbage.mkv", "truncated.mp4"})
        EXPECT_TRUE(eventually([&] { return mount.process().err().find(file) != std::string::npos; }))
            << mount.process().describe();
    EXPECT_EQ(bytes_read(mount / "damaged.mp4"), fs::file_size(mount / "damaged.mp4"));
}

TEST_F(Tvfs, ExplainNamesTheDecisionAndTheReason) {
    auto cases = std::vector<std::pair<std::string, std::string>>{
        {"pass.mp4", "pass-through"}, {"remux.mkv", "remux"},         {"ac3.mkv", "audio-transcode"},
        {"hevc10.mkv", "transcode"},  {"interlaced.ts", "transcode"}, {"uhd60.mp4", "transcode"}};
    for (const auto& [file, action] : cases) {
        auto result = run({KTRICKS_BINARY, "tvfs", "--explain", media_dir() + "/" + file});
        ASSERT_EQ(result.status, 0) << result.describe;
        EXPECT_NE(result.out.find(": " + action + "\n"), std::string::npos) << result.out;
    }
    auto hevc = run({KTRICKS_BINARY, "tvfs", "--explain", media_dir() + "/hevc10.mkv"});
    EXPECT_NE(hevc.out.find("10-bit > 8-bit"), std::string::npos) << hevc.out;
    auto broken = run({KTRICKS_BINARY, "tvfs", "--explain", media_dir() + "/garbage.mkv"});
    EXPECT_NE(broken.status, 0);
    EXPECT_NE(broken.err.find("garbage.mkv"), std::string::npos) << broken.describe;
}

TEST_F(Tvfs, EveryOutputMeetsTheProfileDecodesCleanlyAndKeepsItsDuration) {
    Mount mount(media_dir());
    std::map<std::string, std::string> sources = {
        {"pass.mp4", "pass.mp4"},  {"remux.mp4", "remux.mkv"},
        {"ac3.ts", "ac3.mkv"},     {"hevc10.ts", "hevc10.mkv"},
        {"vp9.ts", "vp9.webm"},    {"interlaced.ts", "interlaced.ts"},
        {"uhd60.ts", "uhd60.mp4"}, {"subtitled.mp4", "subtitled.mkv"}};
    for (const auto& [shown, source] : sources) {
        SCOPED_TRACE(shown);
        auto path = mount / shown;
        auto info = ffprobe(path);
        bool has_video = false, has_audio = false;
        for (const auto& stream : info["streams"]) {
            if (stream["codec_type"] == "video") {
                has_video = true;
                EXPECT_EQ(stream["codec_name"], "h264");
                EXPECT_EQ(stream["pix_fmt"], "yuv420p");
                EXPECT_LE(stream["width"].get<int>(), 1920);
                EXPECT_LE(stream["height"].get<int>(), 1080);
                EXPECT_LE(stream["level"].get<int>(), 41);
                auto rate = stream["avg_frame_rate"].get<std::string>();
                auto slash = rate.find('/');
                EXPECT_LE(std::stod(rate.substr(0, slash)) / std::stod(rate.substr(slash + 1)), 30.01);
                EXPECT_TRUE(stream.value("field_order", "progressive") == "progressive") << stream.dump();
            } else if (stream["codec_type"] == "audio") {
                has_audio = true;
                EXPECT_EQ(stream["codec_name"], "aac");
                EXPECT_EQ(stream["profile"], "LC");
                EXPECT_LE(stream["channels"].get<int>(), 2);
                EXPECT_EQ(stream["sample_rate"], "48000");
            }
        }
        EXPECT_TRUE(has_video && has_audio) << info.dump();
        EXPECT_NEAR(duration(path), duration(media_dir() + "/" + source), 0.5);
        auto decode = run({"ffmpeg", "-v", "error", "-nostdin", "-i", path, "-f", "null", "-"}, {},
                          std::chrono::seconds(60));
        EXPECT_EQ(decode.status, 0) << decode.describe;
        EXPECT_EQ(decode.err, "") << "decoding " << shown << " reported errors";
    }
}

// No mount needed: the exit status of bad input, decided in one place (exit_status_for). Bad bytes
// in a file (a profile, a medium) are EX_DATAERR 65; a bad word on the command line is EX_USAGE 64.
TEST(TvfsCli, BadProfileOrMediaExit65AndAnUnknownProfileName64) {
    TempDir dir;
    std::string bad_profile = dir / "bad.toml", garbage = dir / "garbage.mkv";
    std::ofstream(bad_profile) << "max_fps = \"fast\"\n";
    std::ofstream(garbage) << std::string(4096, '\x5a');
    auto profile = run({KTRICKS_BINARY, "tvfs", "--profile", bad_profile, "--explain", garbage});
    EXPECT_EQ(profile.status, 65) << profile.describe;
    EXPECT_NE(profile.err.find("bad.toml: `max_fps`"), std::string::npos) << profile.describe;
    auto media = run({KTRICKS_BINARY, "tvfs", "--explain", garbage});
    EXPECT_EQ(media.status, 65) << media.describe;
    EXPECT_NE(media.err.find("garbage.mkv"), std::string::npos) << media.describe;
    auto name = run({KTRICKS_BINARY, "tvfs", "--profile", "betamax", "--explain", garbage});
    EXPECT_EQ(name.status, 64) << name.describe;
    EXPECT_NE(name.err.find("unknown profile"), std::string::npos) << name.describe;
}

TEST_F(Tvfs, SizeFromTheFirstStatEqualsTheBytesReadEveryTime) {
    Mount mount(media_dir());
    for (const auto& name : {"remux.mp4", "ac3.ts", "vp9.ts", "hevc10.ts", "pass.mp4"}) {
        struct stat st {};
        ASSERT_EQ(::stat((mount / name).c_str(), &st), 0)
            << name;  // the very first stat: nothing produced yet
        EXPECT_EQ(bytes_read(mount / name), static_cast<std::uint64_t>(st.st_size)) << name << " first read";
        EXPECT_EQ(bytes_read(mount / name), static_cast<std::uint64_t>(st.st_size)) << name << " second read";
        auto cat = run({"sh", "-c", "cat \"$0\" | wc -c", mount / name});
        EXPECT_EQ(std::stoull(cat.out), static_cast<std::uint64_t>(st.st_size)) << name << " through cat";
    }
}

// Padding in an MPEG-TS output, as docs/tvfs.md defines it: bytes added only to fill a segment's
// budget. Null packets (PID 0x1FFF) and H.264 filler-data NAL units (type 12) in the video PES
// packets; tvfs adds no adaptation-field stuffing to fill a budget (the muxer's stuffing that ends
// a PES packet and continue_counters()' split packets carry the stream, and count as stream).
struct Padding {
    std::uint64_t null_bytes = 0, filler_bytes = 0;
    double percent_of(std::size_t size) const {
        return 100.0 * double(null_bytes + filler_bytes) / double(size);
    }
};

std::uint64_t filler_nal_bytes(const std::string& es) {
    std::uint64_t total = 0;
    auto at = es.find(std::string_view("\0\0\1", 3));
    while (at != std::string::npos && at + 3 < es.size()) {
        auto next = es.find(std::string_view("\0\0\1", 3), at + 3);
        if ((es[at + 3] & 0x1f) == 12) total += (next == std::string::npos ? es.size() : next) - at;
        at = next;
    }
    return total;
}

Padding ts_padding(const std::string& data) {
    Padding padding;
    std::map<int, std::string> video;  // PID -> the elementary stream of its current PES packet
    for (std::size_t at = 0; at + 188 <= data.size(); at += 188) {
        const auto* p = reinterpret_cast<const unsigned char*>(data.data() + at);
        int pid = ((p[1] & 0x1f) << 8) | p[2];
        if (pid == 0x1fff) {
            padding.null_bytes += 188;
            continue;
        }
        int control = (p[3] >> 4) & 3;
        std::size_t offset = 4 + ((control & 2) ? 1 + p[4] : 0);
        if (!(control & 1) || offset >= 188) continue;
        std::string_view payload(data.data() + at + offset, 188 - offset);
        if (p[1] & 0x40) {  // a PES packet starts: an H.264 one (stream id 0xE0..0xEF) is followed
            if (auto found = video.find(pid); found != video.end()) {
                padding.filler_bytes += filler_nal_bytes(found->second);
                video.erase(found);
            }
            if (payload.size() > 9 && payload.substr(0, 3) == std::string_view("\0\0\1", 3) &&
                (static_cast<unsigned char>(payload[3]) & 0xf0) == 0xe0)
                video[pid] = std::string(payload.substr(9 + static_cast<unsigned char>(payload[8])));
        } else if (auto found = video.find(pid); found != video.end()) {
            found->second += payload;
        }
    }
    for (const auto& [pid, es] : video) padding.filler_bytes += filler_nal_bytes(es);
    return padding;
}

// Issue 19: every transcoded output of the corpus (full and audio-only transcodes, 1.5 s to 24 s,
// 160 kB to 3 MB) is at most 5% padding, and still exactly st_size long.
TEST_F(Tvfs, TranscodedOutputsAreAtMost5PercentPaddingAndExactlyTheirSize) {
    Mount mount(media_dir());
    int checked = 0;
    for (const auto& name : mount.names()) {
        if (!name.ends_with(".ts") || name.starts_with("damaged")) continue;
        SCOPED_TRACE(name);
        struct stat st {};
        ASSERT_EQ(::stat((mount / name).c_str(), &st), 0);
        auto data = read_file(mount / name);
        EXPECT_EQ(data.size(), static_cast<std::size_t>(st.st_size));
        auto padding = ts_padding(data);
        double percent = padding.percent_of(data.size());
        RecordProperty(name, fmt::format("{:.2f}", percent));
        std::printf("%s: %zu bytes, %.2f%% padding (null packets %llu, filler NAL units %llu bytes)\n",
                    name.c_str(), data.size(), percent, static_cast<unsigned long long>(padding.null_bytes),
                    static_cast<unsigned long long>(padding.filler_bytes));
        EXPECT_LE(percent, 5.0);
        ++checked;
    }
    EXPECT_GE(checked, 7);  // ac3, hevc10, vp9, interlaced, uhd60, long, longvp9
}

// A still picture with detail (a photo, cover art) fills its budget too: each P-frame refines the
// picture a little more. (A flat one, a text slide or black, cannot: docs/tvfs.md, "Fixed-rate
// segments".)
TEST_F(Tvfs, AStillPictureWithDetailIsAtMost5PercentPadding) {
    TempDir source;
    generate_media(source.path(),
                   "ffmpeg -v error -nostdin -y -f lavfi -i mandelbrot=size=320x240 -frames:v 1 still.png && "
                   "ffmpeg -v error -nostdin -y -loop 1 -framerate 25 -i still.png -f lavfi -i "
                   "sine=frequency=440:sample_rate=48000 -t 6 -c:v libvpx-vp9 -deadline realtime -cpu-used 8 "
                   "-crf 30 -b:v 0 -pix_fmt yuv420p -c:a libopus cover.webm && rm still.png");
    Mount mount(source.path());
    auto data = read_file(mount / "cover.ts");
    struct stat st {};
    ASSERT_EQ(::stat((mount / "cover.ts").c_str(), &st), 0);
    EXPECT_EQ(data.size(), static_cast<std::size_t>(st.st_size));
    double percent = ts_padding(data).percent_of(data.size());
    std::printf("cover.ts: %zu bytes, %.2f%% padding\n", data.size(), percent);
    EXPECT_LE(percent, 5.0);
}

// A segment made again (after an eviction, on another mount) must have the same bytes: a reader may
// hold the segment before it. Five cold mounts, each making vp9.ts whole and the middle of longvp9.ts
// (two segments at once, one x264 thread each; any pass that missed its budget made again too).
TEST_F(Tvfs, SegmentsMadeFiveTimesOnColdMountsHaveTheSameBytes) {
    std::string whole, middle;
    for (int i = 0; i < 5; ++i) {
        SCOPED_TRACE(i);
        Mount mount(media_dir());
        auto a = read_file(mount / "vp9.ts");
        struct stat st {};
        ASSERT_EQ(::stat((mount / "longvp9.ts").c_str(), &st), 0);
        auto b =
            read_range(mount / "longvp9.ts", static_cast<std::uint64_t>(st.st_size) / 2 / 188 * 188, 400000);
        ASSERT_EQ(b.size(), 400000u);
        if (i == 0) {
            whole = a, middle = b;
            continue;
        }
        EXPECT_TRUE(a == whole) << "vp9.ts differs from the first mount's";
        EXPECT_TRUE(b == middle) << "the middle of longvp9.ts differs from the first mount's";
    }
}

// long.ts copies its video (segments at the source's keyframes); longvp9.ts is fully transcoded.
class TvfsSeek : public Tvfs, public ::testing::WithParamInterface<const char*> {};
INSTANTIATE_TEST_SUITE_P(Outputs, TvfsSeek, ::testing::Values("long.ts", "longvp9.ts"));

TEST_P(TvfsSeek, ReadAt80PercentOfAColdFileReturnsQuicklyWithoutTranscodingEverything) {
    Mount mount(media_dir());
    auto path = mount / GetParam();
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    auto start = Clock::now();
    auto data = read_range(path, static_cast<std::uint64_t>(st.st_size) * 8 / 10, 65536);
    auto elapsed = Clock::now() - start;
    EXPECT_EQ(data.size(), 65536u);
    EXPECT_LT(elapsed, std::chrono::seconds(5));
    // A TS packet boundary in this read starts with the sync byte; the data is real MPEG-TS.
    EXPECT_NE(data.find('\x47'), std::string::npos);
    // A metadata reader's head and tail reads (minidlna, a TV) are two more seeks.
    EXPECT_EQ(read_range(path, 0, 65536).size(), 65536u);
    EXPECT_EQ(read_range(path, static_cast<std::uint64_t>(st.st_size) - 4096, 4096).size(), 4096u);
    // Only the segments around those reads were made (plus three of read-ahead), not all 12.
    std::this_thread::sleep_for(std::chrono::seconds(1));  // read-ahead and grace run out
    std::size_t segments = 0;
    for (const auto& file : settled_cached_files(mount.cache() + "/out"))
        if (file.path.extension() == ".ts") ++segments;
    EXPECT_LE(segments, 8u) << "of 12";
    auto probe = run({"ffprobe", "-v", "error", "-show_format", path}, {}, std::chrono::seconds(20));
    EXPECT_EQ(probe.status, 0) << probe.describe;

    // What a TV gets when it jumps to 80%: audio and video start together, at about 80% of the time.
    TempDir cut;
    auto from = static_cast<std::uint64_t>(st.st_size) * 8 / 10 / 188 * 188;
    write_file(
        cut / "tail.ts",
        read_range(path, from, static_cast<std::size_t>(static_cast<std::uint64_t>(st.st_size) - from)));
    auto packets = run({"ffprobe", "-v", "error", "-show_entries", "packet=codec_type,pts_time", "-of",
                        "csv=p=0", cut / "tail.ts"},
                       {}, std::chrono::seconds(20));
    std::optional<double> video, audio;
    for (const auto& line : lines_of(packets.out)) {
        auto comma = line.find(',');
        if (comma == std::string::npos || line.substr(comma + 1) == "N/A") continue;
        double t = std::stod(line.substr(comma + 1));
        if (line.starts_with("video") && !video) video = t;
        if (line.starts_with("audio") && !audio) audio = t;
    }
    ASSERT_TRUE(video && audio) << packets.describe;
    EXPECT_NEAR(*video, *audio, 0.1);
    EXPECT_NEAR(*video - 1.4, 0.8 * 24, 2.5);  // 1.4 s: the MPEG-TS muxer's fixed initial delay
}

// Sources for the audio checks: a 440 Hz sine and a chirp (100 Hz rising 600 Hz a second), both
// lossless (FLAC, so the reference is the exact signal), each with VP9 video (a full transcode) and
// with H.264 keyframes every 2 s (an audio-only transcode). 7 s: four segments, three boundaries.
const std::string& gapless_media_dir() {
    static const std::string dir =
        generated_once("/tmp/ktricks-tvfs-gapless-v1", [](const std::string& work) {
            const std::string f =
                "ffmpeg -v error -nostdin -y -f lavfi -i testsrc2=size=160x120:rate=25 -f lavfi -i ";
            const std::map<std::string, std::string> signals = {
                {"sine", "sine=frequency=440:sample_rate=48000"},
                {"chirp", "aevalsrc=0.5*sin(2*PI*(100*t+300*t*t)):s=48000"}};
            for (const auto& [name, signal] : signals) {
                for (const auto& [mode, video] : std::map<std::string, std::string>{
                         {"full", "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 100k"},
                         {"audio", "-c:v libx264 -preset ultrafast -g 50 -pix_fmt yuv420p"}}) {
                    auto command =
                        fmt::format("{}'{}' -t 7 {} -c:a flac {}-{}.mkv", f, signal, video, name, mode);
                    generate_media(work, command);
                }
            }
        });
    return dir;
}

// The first audio track of PATH decoded by ffmpeg to mono 48 kHz samples.
std::vector<float> decoded_audio(const std::string& path) {
    auto result = run({"ffmpeg", "-v", "error", "-nostdin", "-i", path, "-map", "0:a:0", "-ac", "1", "-ar",
                       "48000", "-f", "f32le", "-"},
                      {}, std::chrono::seconds(60));
    EXPECT_EQ(result.status, 0) << result.describe;
    std::vector<float> samples(result.out.size() / sizeof(float));
    std::memcpy(samples.data(), result.out.data(), samples.size() * sizeof(float));
    return samples;
}

struct Residual {
    double worst_ratio = 0;  // the largest (boundary RMS / RMS around that boundary)
    std::string detail;
};

// Aligns OUT to SOURCE (the lag and gain that fit best), then measures the residual out - source
// as the RMS of 256-sample blocks. For each boundary (a source sample) the loudest block within
// one AAC frame of it is compared with the same measure (the loudest block of 2048 samples)
// around 22 other points within half a second, whose median is "elsewhere": a chirp's residual
// grows with its frequency, so elsewhere is the same stretch of signal.
Residual residual(const std::vector<float>& source, const std::vector<float>& out,
                  const std::vector<std::int64_t>& boundaries) {
    constexpr std::int64_t region = 48000, length = 8192, max_lag = 4096;
    std::int64_t best_lag = 0;
    double best = -1;
    for (std::int64_t lag = -max_lag; lag <= max_lag; ++lag) {
        double dot = 0, energy = 0;
        for (std::int64_t n = region; n < region + length; ++n) {
            auto m = n + lag;
            if (m < 0 || m >= static_cast<std::int64_t>(out.size())) continue;
            dot += double(out[m]) * source[n];
            energy += double(out[m]) * out[m];
        }
        double score = energy > 0 ? dot / std::sqrt(energy) : 0;
        if (score > best) best = score, best_lag = lag;
    }
    auto usable = std::min<std::int64_t>(static_cast<std::int64_t>(source.size()),
                                         static_cast<std::int64_t>(out.size()) - best_lag);
    double dot = 0, energy = 0;
    for (std::int64_t n = 4096; n < usable - 4096; ++n)
        dot += double(out[n + best_lag]) * source[n], energy += double(source[n]) * source[n];
    double gain = energy > 0 ? dot / energy : 1;
    constexpr std::int64_t block = 256;
    auto rms = [&](std::int64_t start) {
        double sum = 0;
        for (std::int64_t n = start; n < start + block; ++n) {
            double r = out[n + best_lag] - gain * source[n];
            sum += r * r;
        }
        return std::sqrt(sum / block);
    };
    auto loudest = [&](std::int64_t centre) {  // -1: outside the usable range
        if (centre - 1024 < 4096 || centre + 1024 > usable - 4096) return -1.0;
        double most = 0;
        for (std::int64_t start = centre - 1024; start < centre + 1024; start += block)
            most = std::max(most, rms(start));
        return most;
    };
    Residual result;
    result.detail = fmt::format("lag {} gain {:.3f}", best_lag, gain);
    for (auto b : boundaries) {
        double at = loudest(b);
        std::vector<double> around;
        for (int j = -11; j <= 11; ++j)
            if (double value = loudest(b + j * 2048); j != 0 && value >= 0) around.push_back(value);
        if (at < 0 || around.empty()) continue;
        std::sort(around.begin(), around.end());
        double elsewhere = around[around.size() / 2];
        double ratio = elsewhere > 0 ? at / elsewhere : 1e9;
        result.worst_ratio = std::max(result.worst_ratio, ratio);
        result.detail += fmt::format("; at {:.3f} s: {:.6f} vs {:.6f} around ({:.2f}x)", b / 48000.0, at,
                                     elsewhere, ratio);
    }
    return result;
}

class TvfsGapless : public Tvfs, public ::testing::WithParamInterface<const char*> {
protected:
    void SetUp() override {
        Tvfs::SetUp();
        if (!IsSkipped()) gapless_media_dir();
    }
};
INSTANTIATE_TEST_SUITE_P(Sources, TvfsGapless,
                         ::testing::Values("sine-full", "chirp-full", "sine-audio", "chirp-audio"));

TEST_P(TvfsGapless, AudioIsContinuousAcrossSegmentBoundariesAndASeekGivesTheSameSamples) {
    Mount mount(gapless_media_dir());
    auto name = std::string(GetParam());
    auto path = mount / (name + ".ts");
    auto source = decoded_audio(gapless_media_dir() + "/" + name + ".mkv");
    auto whole = read_file(path);
    ASSERT_GT(whole.size(), 0u);
    // Both kinds of transcode cut segments every 2 s here (full: fixed; audio-only: the keyframes),
    // and audio segments start on the 1024-sample grid.
    std::vector<std::int64_t> boundaries;
    for (int k = 1; k * 2 < 7; ++k) boundaries.push_back(std::int64_t(k) * 2 * 48000 / 1024 * 1024);
    TempDir scratch;
    write_file(scratch / "whole.ts", whole);
    auto out = decoded_audio(scratch / "whole.ts");
    auto check = residual(source, out, boundaries);
    RecordProperty("residual", check.detail);
    std::printf("%s: %s\n", name.c_str(), check.detail.c_str());
    EXPECT_GT(check.worst_ratio, 0) << check.detail;
    EXPECT_LE(check.worst_ratio, 2.0) << check.detail;

    // A cold mount, read from the middle first: the same bytes, so the same samples.
    Mount cold(gapless_media_dir());
    auto middle = whole.size() / 2 / 188 * 188;
    auto tail = read_range(cold / (name + ".ts"), middle, whole.size() - middle);
    EXPECT_TRUE(tail == whole.substr(middle))
        << "a read from the middle of a cold file differs from a continuous read";
    write_file(scratch / "tail.ts", tail);
    auto from_middle = decoded_audio(scratch / "tail.ts");
    write_file(scratch / "whole-tail.ts", whole.substr(middle));
    EXPECT_TRUE(from_middle == decoded_audio(scratch / "whole-tail.ts"));
}

// VLC's TS demuxer (libdvbpsi) logs "TS discontinuity" for every continuity counter that jumps,
// which some TVs answer by dropping or resyncing; ffmpeg must decode each output without a word.
TEST_F(Tvfs, EveryOutputPlaysInVlcWithoutATsDiscontinuityAndDecodesSilently) {
    if (!have("cvlc")) GTEST_SKIP() << "needs cvlc (vlc-bin, vlc-plugin-base)";
    Mount mount(media_dir());
    TempDir scratch;  // mode 0755, files 0644: readable by VLC's user
    for (const auto& name : mount.names()) {
        // damaged.mp4 is a remux of a damaged source: its decoder errors are the source's.
        if ((!name.ends_with(".ts") && !name.ends_with(".mp4")) || name.starts_with("damaged")) continue;
        SCOPED_TRACE(name);
        auto copy = scratch / name;
        write_file(copy, read_file(mount / name));
        auto decode = run({"ffmpeg", "-v", "error", "-nostdin", "-i", copy, "-f", "null", "-"}, {},
                          std::chrono::seconds(60));
        EXPECT_EQ(decode.status, 0) << decode.describe;
        EXPECT_EQ(decode.err, "");
        // VLC refuses to run as root; it demuxes the whole file into a dummy stream output.
        auto vlc = run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cvlc", "-vv",
                        "--play-and-exit", "--sout", "#dummy", copy},
                       {}, std::chrono::seconds(60));
        EXPECT_EQ(vlc.status, 0) << vlc.describe;
        auto log = vlc.out + vlc.err;
        // The TS demuxer's continuity check ("discontinuity received 0x0 instead of 0x4 (pid=17)")
        // and libdvbpsi's ("TS discontinuity (received 0, expected 4) for PID 17").
        for (const char* complaint : {"TS discontinuity", "discontinuity received"})
            if (auto at = log.find(complaint); at != std::string::npos)
                ADD_FAILURE() << log.substr(at - std::min<std::size_t>(at, 300), 600);
        EXPECT_NE(log.find(name.ends_with(".ts") ? "ts demux" : "mp4 demux"), std::string::npos)
            << "VLC did not demux it";
    }
}

TEST_F(Tvfs, TwoConcurrentReadersGetIdenticalBytesFromOneTranscode) {
    Mount mount(media_dir());
    auto path = mount / "vp9.ts";
    auto reader = [&] { return read_file(path); };
    auto first = std::async(std::launch::async, reader);
    auto second = std::async(std::launch::async, reader);
    auto a = first.get();
    auto b = second.get();
    struct stat st {};
    ::stat(path.c_str(), &st);
    EXPECT_EQ(a.size(), static_cast<std::size_t>(st.st_size));
    EXPECT_TRUE(a == b);
    // Produced once: one cache directory holds segments (the others hold only the faststart heads the
    // listing's probes made for the remuxed files).
    std::set<fs::path> with_segments;
    for (const auto& file : settled_cached_files(mount.cache() + "/out"))
        if (file.path.extension() == ".ts") with_segments.insert(file.path.parent_path());
    EXPECT_EQ(with_segments.size(), 1u);
}

// A remux source big enough that streaming it takes a while: 8 s of 720p H.264 (noise, so it does
// not compress: ~185 MB) + AAC in Matroska.
const std::string& big_remux_dir() {
    static const std::string dir = generated_once("/tmp/ktricks-tvfs-stream-v2", [](const std::string& work) {
        generate_media(work,
                       "ffmpeg -v error -nostdin -y -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i "
                       "sine=frequency=440:sample_rate=48000 -t 8 -vf noise=alls=30:allf=t -c:v libx264 "
                       "-preset ultrafast -qp 14 -pix_fmt yuv420p -c:a aac -ac 2 big.mkv");
    });
    return dir;
}

// (stream index, size, MD5) of every packet, in order per stream: `ffmpeg -c copy -f framemd5`.
std::map<std::string, std::vector<std::string>> packet_digests(const std::string& path) {
    auto result = run(
        {"ffmpeg", "-v", "error", "-nostdin", "-i", path, "-map", "0", "-c", "copy", "-f", "framemd5", "-"},
        {}, std::chrono::seconds(120));
    EXPECT_EQ(result.status, 0) << result.describe;
    std::map<std::string, std::vector<std::string>> streams;
    std::istringstream lines(result.out);
    for (std::string line; std::getline(lines, line);) {
        if (line.empty() || line[0] == '#') continue;
        std::vector<std::string> fields;
        std::istringstream split(line);
        for (std::string field; std::getline(split, field, ',');) fields.push_back(field);
        if (fields.size() == 6) streams[fields[0]].push_back(fields[4] + fields[5]);  // size, hash
    }
    return streams;
}

// Issue 19: a remux's first bytes come at once (its head from the dry run), while the muxer streams
// mdat's payload behind it; the bytes are those of a complete read, and of libavformat's own
// +faststart remux (tvfs_asan_check compares them byte for byte).
TEST_F(Tvfs, RemuxIsStreamedItsHeadReadableAtOnceAndItsBytesTheSameEveryRead) {
    auto source = big_remux_dir();
    Mount mount(source);
    auto path = mount / "big.mp4";
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);  // the probe and its dry run: the head is in the cache
    auto size = static_cast<std::uint64_t>(st.st_size);
    ASSERT_GT(size, 100u << 20);
    auto started = std::chrono::steady_clock::now();
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd) << std::strerror(errno);
    std::string first(65536, '\0');
    ASSERT_EQ(::pread(fd.get(), first.data(), first.size(), 0), 65536);
    auto first_byte = std::chrono::steady_clock::now() - started;
    // The remux is still being written: its cache file holds less than half of the file.
    std::string part;
    for (const auto& dir : fs::directory_iterator(mount.cache() + "/out"))
        if (fs::exists(dir.path() / "remux.mp4.part")) part = dir.path() / "remux.mp4.part";
    ASSERT_NE(part, "") << "no remux being streamed at the first byte";
    std::error_code gone;  // it may complete (and be renamed) meanwhile only if it is very fast
    auto written = fs::file_size(part, gone);
    EXPECT_TRUE(!gone && written < size / 2)
        << written << " of " << size << " bytes written at the first byte";
    // Two concurrent cold readers, waiting for the streamed bytes, then a read of the complete file.
    auto digest = [&] {
        auto r = run({"sha256sum", path}, {}, std::chrono::seconds(120));
        EXPECT_EQ(r.status, 0) << r.describe;
        return r.out.substr(0, 64);
    };
    auto a = std::async(std::launch::async, digest);
    auto b = std::async(std::launch::async, digest);
    auto cold = a.get();
    auto whole = std::chrono::steady_clock::now() - started;
    EXPECT_EQ(cold, b.get());
    EXPECT_TRUE(eventually([&] {
        std::error_code e;
        return fs::file_size(fs::path(part).replace_extension(""), e) == size;
    }));
    EXPECT_EQ(digest(), cold) << "a second read differs from the streamed one";
    EXPECT_EQ(bytes_read(path), size);
    EXPECT_EQ(first, read_range(path, 0, 65536));
    auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
    // Times for the log only: the ordering above is what is asserted (a ratio of times moves with load).
    std::printf("remux of %llu bytes: first 64 KiB after %lld ms, whole file after %lld ms\n",
                static_cast<unsigned long long>(size), static_cast<long long>(ms(first_byte)),
                static_cast<long long>(ms(whole)));
    // What a player sees: ffprobe reads it, every packet equals the source's, a decode is silent.
    auto probed = ffprobe(path);
    EXPECT_EQ(probed["streams"].size(), 2u);
    EXPECT_EQ(packet_digests(path), packet_digests(source + "/big.mkv"));
    auto decode = run({"ffmpeg", "-v", "error", "-nostdin", "-i", path, "-f", "null", "-"}, {},
                      std::chrono::seconds(180));
    EXPECT_EQ(decode.status, 0) << decode.describe;
    EXPECT_EQ(decode.err, "");
}

// The streamed bytes equal libavformat's own +faststart remux of the same packets, byte for byte.
TEST_F(Tvfs, StreamedRemuxIsByteIdenticalToLibavformatsFaststartRemux) {
    auto checker = (fs::path(KTRICKS_BINARY).parent_path() / "tvfs_asan_check").string();
    if (!fs::exists(checker)) GTEST_SKIP() << "tvfs_asan_check is not built (sanitized or fuzz build)";
    std::vector<std::string> argv = {checker, media_dir() + "/remux.mkv", media_dir() + "/subtitled.mkv",
                                     media_dir() + "/damaged.mkv"};
    auto result = run(argv, {}, std::chrono::seconds(100));
    EXPECT_EQ(result.status, 0) << result.describe;
    std::size_t identical = 0;
    for (std::size_t at = 0; (at = result.out.find("streamed = faststart", at)) != std::string::npos; ++at)
        ++identical;
    EXPECT_EQ(identical, 3u) << result.out;
}

TEST_F(Tvfs, ChangesInTheSourceShowUpInTheMount) {
    TempDir source;
    fs::copy_file(media_dir() + "/pass.mp4", source / "one.mp4");
    Mount mount(source.path().string());
    EXPECT_EQ(mount.names(), (std::set<std::string>{"one.mp4"}));
    fs::copy_file(media_dir() + "/remux.mkv", source / "two.mkv.part");
    fs::rename(source / "two.mkv.part", source / "two.mkv");
    EXPECT_TRUE(eventually(
        [&] {
            return mount.names() == std::set<std::string>{"one.mp4", "two.mp4"};
        },
        std::chrono::seconds(5)));
    fs::remove(source / "one.mp4");
    EXPECT_TRUE(eventually([&] { return mount.names() == std::set<std::string>{"two.mp4"}; },
                           std::chrono::seconds(5)));
    // Modified in place: now H.264 + AC-3, so the same source becomes an audio-only transcode.
    fs::copy_file(media_dir() + "/ac3.mkv", source / "two.mkv", fs::copy_options::overwrite_existing);
    EXPECT_TRUE(eventually([&] { return mount.names() == std::set<std::string>{"two.ts"}; },
                           std::chrono::seconds(5)));
    fs::create_directory(source / "sub");
    fs::copy_file(media_dir() + "/ac3.mkv", source / "sub/three.mkv");
    EXPECT_TRUE(eventually([&] { return fs::exists(mount / "sub/three.ts"); }, std::chrono::seconds(5)));
}

TEST_F(Tvfs, NameCollisionsKeepBothFiles) {
    TempDir source;
    fs::copy_file(media_dir() + "/pass.mp4", source / "clip.mp4");
    fs::copy_file(media_dir() + "/remux.mkv", source / "clip.mkv");
    Mount mount(source.path().string());
    EXPECT_EQ(mount.names(), (std::set<std::string>{"clip.mp4", "clip.mkv.mp4"}));
}

// Issue 19: a 255-byte source name shown with a longer extension reads through FUSE, but cp to a
// real file system failed ("File name too long"). Every name is now at most NAME_MAX, shortened
// with a hash suffix that keeps the extension, and copies to tmpfs and ext4 with its bytes.
TEST_F(Tvfs, NamesNeverExceed255BytesAndCopyToTmpfsAndExt4) {
    TempDir source;
    std::string stem;
    for (int i = 0; i < 125; ++i) stem += "\u00e9";  // 250 bytes of 2-byte UTF-8: the cut must not split one
    stem += "a";                                     // 251
    const std::string no_extension(255, 'y');        // shown as y...y.mp4: 259 bytes before shortening
    fs::create_hard_link(media_dir() + "/remux.mkv", source / (stem + ".mkv"));  // 255, collides with:
    fs::create_hard_link(media_dir() + "/pass.mp4", source / (stem + ".mp4"));   // 255, pass-through
    fs::create_hard_link(media_dir() + "/remux.mkv", source / no_extension);
    fs::create_hard_link(media_dir() + "/ac3.mkv", source / (no_extension.substr(4) + ".mkv"));  // -> .ts
    Mount mount(source.path().string());
    auto names = mount.names();
    ASSERT_EQ(names.size(), 4u);
    EXPECT_TRUE(names.count(stem + ".mp4"));  // a pass-through name that fits is kept as it is
    for (const auto& name : names) {
        EXPECT_LE(name.size(), 255u) << name;
        EXPECT_TRUE(name.ends_with(".mp4") || name.ends_with(".ts")) << name;
    }
    // The shortened names are stable: a second mount shows the same ones.
    EXPECT_EQ(Mount(source.path().string()).names(), names);

    // Copy every file to a tmpfs and to an ext4 file system (both of this test's own making).
    TempDir scratch;
    std::vector<std::string> targets;
    auto tmpfs = scratch / "tmpfs";
    fs::create_directories(tmpfs);
    ASSERT_EQ(::mount("tvfs-names", tmpfs.c_str(), "tmpfs", 0, "size=32m"), 0) << std::strerror(errno);
    struct Unmount {
        std::vector<std::string> paths;
        ~Unmount() {
            for (auto& path : paths) ::umount2(path.c_str(), MNT_DETACH);
        }
    } unmount{{tmpfs}};
    targets.push_back(tmpfs);
    auto ext4 = scratch / "ext4";
    fs::create_directories(ext4);
    auto image = tmpfs + "/ext4.img";
    write_file(image, "");
    fs::resize_file(image, 12 << 20);
    auto made = run({"mkfs.ext4", "-q", "-F", image}, {}, std::chrono::seconds(30));
    ASSERT_EQ(made.status, 0) << made.describe;
    auto mounted = run({"mount", "-o", "loop", image, ext4}, {}, std::chrono::seconds(30));
    if (mounted.status == 0) {
        unmount.paths.insert(unmount.paths.begin(), ext4);  // unmounted before the tmpfs under it
        targets.push_back(ext4);
    } else {
        ADD_FAILURE() << "no loop device for the ext4 copy: " << mounted.describe;
    }
    for (const auto& target : targets) {
        for (const auto& name : names) {
            auto copied = run({"cp", mount / name, target + "/"}, {}, std::chrono::seconds(60));
            EXPECT_EQ(copied.status, 0) << target << ": " << copied.describe;
            struct stat shown {};
            ASSERT_EQ(::stat((mount / name).c_str(), &shown), 0) << name;
            std::error_code error;
            EXPECT_EQ(fs::file_size(target + "/" + name, error), static_cast<std::uintmax_t>(shown.st_size))
                << target << "/" << name;
        }
    }
}

TEST_F(Tvfs, CacheSizeLimitIsEnforcedByEvictingTheLeastRecentlyUsed) {
    Mount mount(media_dir(), {"--cache-size", "1M"});
    for (const auto& name : {"ac3.ts", "vp9.ts", "hevc10.ts", "remux.mp4"}) bytes_read(mount / name);
    EXPECT_TRUE(eventually(
        [&] {
            auto files = cached_files(mount.cache() + "/out");  // tvfs is evicting meanwhile
            if (!files) return false;
            std::uint64_t total = 0;
            for (const auto& file : *files) total += file.size;
            return total <= (1u << 20);
        },
        std::chrono::seconds(5)));
    // Evicted outputs are produced again, byte for byte the same size.
    struct stat st {};
    ::stat((mount / "ac3.ts").c_str(), &st);
    EXPECT_EQ(bytes_read(mount / "ac3.ts"), static_cast<std::uint64_t>(st.st_size));
}

TEST_F(Tvfs, AFullCacheDiskIsLoggedAndTheFileIsStillServedWhole) {
    TempDir disk;
    if (::mount("tvfs-test", disk.path().c_str(), "tmpfs", 0, "size=256k") != 0)
        GTEST_SKIP() << "mount tmpfs: " << std::strerror(errno);
    struct Unmount {
        std::string path;
        ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
    } unmount{disk.path().string()};
    TempDir mnt;
    auto process = Process::start(
        {KTRICKS_BINARY, "tvfs", media_dir(), mnt.path(), "-f", "--cache", disk.path(), "--grace", "0.5"});
    ASSERT_TRUE(eventually([&] { return is_mounted(mnt.path()); })) << process.describe();
    struct Fusermount {
        std::string path;
        ~Fusermount() { run({"fusermount3", "-u", "-z", path}); }
    } fusermount{mnt.path()};
    auto path = mnt / "interlaced.ts";  // 1.1 MB of segments for a 256 KiB disk
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(bytes_read(path), static_cast<std::uint64_t>(st.st_size));
    EXPECT_NE(process.err().find("No space left on device"), std::string::npos) << process.describe();
    for (const auto& file : settled_cached_files(disk.path()))
        EXPECT_NE(file.path.extension(), ".part") << file.path;
}

TEST_F(Tvfs, TranscoderThreadsEndAfterTheLastCloseAndSigtermUnmounts) {
    Mount mount(media_dir());
    {
        Fd fd(::open((mount / "long.ts").c_str(), O_RDONLY | O_CLOEXEC));
        char buffer[4096];
        ASSERT_GT(::pread(fd.get(), buffer, sizeof(buffer), 0), 0);
        EXPECT_GE(mount.segment_threads(), 1);
    }
    EXPECT_TRUE(eventually([&] { return mount.segment_threads() == 0; }, std::chrono::seconds(10)));
    mount.process().signal(SIGTERM);
    auto status = mount.process().wait(std::chrono::seconds(10));
    EXPECT_EQ(status, 0) << mount.process().describe();
    EXPECT_FALSE(is_mounted(mount.path()));
}

TEST_F(Tvfs, FusermountUnmountEndsTheDaemon) {
    Mount mount(media_dir());
    bytes_read(mount / "vp9.ts");
    auto result = run({"fusermount3", "-u", mount.path()});
    EXPECT_EQ(result.status, 0) << result.describe;
    EXPECT_EQ(mount.process().wait(std::chrono::seconds(10)), 0) << mount.process().describe();
}

// A full transcode's layout takes the source's frame rate from the probe (fps_num/fps_den) instead
// of opening and probing the source a second time (half of a cold listing's time): the probed rate is
// the one that second open read, so the layout is the one it made. A probe cache entry written
// before those fields existed still loads (with 0/0 there), so an upgrade probes nothing again.
TEST_F(Tvfs, LayoutFromTheProbedFrameRateEqualsTheOneFromReopeningTheSource) {
    using namespace ktricks::tvfs;
    const Profile& profile = builtin_profile("tv");
    int checked = 0;
    for (const auto& entry : fs::directory_iterator(media_dir())) {
        auto path = entry.path().string();
        MediaInfo media;
        try {
            media = probe(path);
        } catch (const std::exception&) {
            continue;  // the corpus's damaged and non-media files
        }
        auto decision = decide(media, profile);
        if (decision.action != Action::full_transcode) continue;
        SCOPED_TRACE(path);
        ASSERT_TRUE(media.video);
        EXPECT_GT(media.video->fps_num, 0);
        EXPECT_GT(media.video->fps_den, 0);
        auto probed = transcode_layout(path, media, decision, profile);
        // What the layout read before: the stream's rate from a second open of the file.
        auto input = open_input(path);
        const AVStream* stream = input->streams[media.video->index];
        AVRational rate = stream->avg_frame_rate.num > 0 ? stream->avg_frame_rate : stream->r_frame_rate;
        MediaInfo reopened_media = media;
        reopened_media.video->fps_num = rate.num;
        reopened_media.video->fps_den = rate.den;
        auto reopened = transcode_layout(path, reopened_media, decision, profile);
        EXPECT_EQ(probed.fps_num, reopened.fps_num);
        EXPECT_EQ(probed.fps_den, reopened.fps_den);
        EXPECT_EQ(probed.size, reopened.size);
        EXPECT_EQ(probed.segments.size(), reopened.segments.size());
        // The cache entry as an earlier version wrote it: no fps_num/fps_den keys.
        auto json = nlohmann::json(*media.video);
        json.erase("fps_num");
        json.erase("fps_den");
        auto old = json.get<VideoStream>();
        EXPECT_EQ(old.fps_num, 0);
        EXPECT_EQ(old.width, media.video->width);
        ++checked;
    }
    EXPECT_GE(checked, 4);  // hevc10, vp9, interlaced, uhd60, longvp9
}

TEST_F(Tvfs, ProbeCacheMakesListing200FilesFastTheSecondTime) {
    TempDir source;
    for (int i = 0; i < 200; ++i)
        fs::create_hard_link(media_dir() + "/remux.mkv", source / fmt::format("clip{:03}.mkv", i));
    TempDir cache;
    auto list = [&] {
        TempDir mnt;
        auto process = Process::start(
            {KTRICKS_BINARY, "tvfs", source.path(), mnt.path(), "-f", "--cache", cache.path()});
        EXPECT_TRUE(eventually([&] { return is_mounted(mnt.path()); }));
        auto start = Clock::now();
        auto result = run({"ls", "-l", mnt.path()}, {}, std::chrono::seconds(60));
        auto elapsed = std::chrono::duration<double>(Clock::now() - start).count();
        EXPECT_EQ(lines_of(result.out).size(), 201u) << result.describe;
        run({"fusermount3", "-u", mnt.path()});
        process.wait(std::chrono::seconds(10));
        return elapsed;
    };
    double cold = list();
    double warm = list();
    EXPECT_LT(warm, 1.0) << "cold " << cold << " s";
    EXPECT_LT(warm, cold);
}

// Issue 19: a listing probes a directory's new files side by side (the daemon logs how: "probed N of
// M files in W s on T threads (S s of probes)"), and every size it shows is exact. Four kinds of
// file (remux, full and audio-only transcode, pass-through), 15 names each.
TEST_F(Tvfs, AListingOfSixtyNewFilesProbesThemInParallelAndEverySizeIsExact) {
    TempDir source;
    const std::vector<std::string> kinds = {"remux.mkv", "vp9.webm", "ac3.mkv", "pass.mp4"};
    for (int i = 0; i < 60; ++i) {
        const auto& kind = kinds[static_cast<std::size_t>(i) % kinds.size()];
        fs::create_hard_link(media_dir() + "/" + kind,
                             source / fmt::format("clip{:02}{}", i, fs::path(kind).extension().string()));
    }
    Mount mount(source.path());
    auto result = run({"ls", "-l", mount.path()}, {}, std::chrono::seconds(120));
    ASSERT_EQ(result.status, 0) << result.describe;
    EXPECT_EQ(lines_of(result.out).size(), 61u) << result.out;  // "total", then one line per file

    std::smatch match;
    auto log = mount.process().err();
    ASSERT_TRUE(std::regex_search(
        log, match, std::regex(R"(probed (\d+) of 60 files in ([0-9.]+) s on (\d+) threads \(([0-9.]+) s)")))
        << log;
    EXPECT_EQ(std::stoi(match[1]), 60);
    double wall = std::stod(match[2]), threads = std::stoi(match[3]), summed = std::stod(match[4]);
    cpu_set_t cpus;
    ASSERT_EQ(::sched_getaffinity(0, sizeof(cpus), &cpus), 0);
    if (CPU_COUNT(&cpus) >= 2) {
        EXPECT_GE(threads, 2) << log;
        // The probes overlapped: their durations add up to well over the time they all took.
        EXPECT_GT(summed, 1.3 * wall) << log;
    }

    // Every size exact: the same source gives the same size under every name, and reading one name
    // of each kind gives exactly that many bytes.
    std::map<std::string, std::uintmax_t> size_of_kind;
    std::map<std::string, std::string> sample_of_kind;
    int files = 0;
    for (const auto& entry : fs::directory_iterator(mount.path())) {
        auto name = entry.path().filename().string();
        auto number = std::stoi(name.substr(4, 2));
        const auto& kind = kinds[static_cast<std::size_t>(number) % kinds.size()];
        auto size = fs::file_size(entry.path());
        ++files;
        if (!size_of_kind.count(kind)) {
            size_of_kind[kind] = size;
            sample_of_kind[kind] = entry.path();
        }
        EXPECT_EQ(size, size_of_kind[kind]) << name;
    }
    EXPECT_EQ(files, 60);
    ASSERT_EQ(sample_of_kind.size(), kinds.size());
    for (const auto& [kind, sample] : sample_of_kind)
        EXPECT_EQ(bytes_read(sample), size_of_kind[kind]) << sample << " (" << kind << ")";
}

// Issue 19: readdir never waits for a transcode. While three long full transcodes keep the CPUs
// busy, new files in the same folder are listed (probed, named, sized) long before they end.
TEST_F(Tvfs, AListingReturnsAtOnceWhileTheFolderIsBeingTranscoded) {
    TempDir source;
    for (int i = 0; i < 3; ++i)
        fs::create_hard_link(media_dir() + "/longvp9.webm", source / fmt::format("long{}.webm", i));
    Mount mount(source.path());
    std::vector<std::future<std::uint64_t>> readers;
    for (int i = 0; i < 3; ++i)
        readers.push_back(std::async(
            std::launch::async, [&mount, i] { return bytes_read(mount / fmt::format("long{}.ts", i)); }));
    ASSERT_TRUE(eventually([&] { return mount.segment_threads() > 0; }, std::chrono::seconds(30)));

    for (int i = 0; i < 10; ++i)
        fs::create_hard_link(media_dir() + "/vp9.webm", source / fmt::format("new{}.webm", i));
    // The source watcher drops the folder's listing; the next readdir names the new files.
    ASSERT_TRUE(eventually([&] { return mount.names().size() == 13; }, std::chrono::seconds(30)));
    auto start = Clock::now();
    auto result = run({"ls", "-l", mount.path()}, {}, std::chrono::seconds(60));
    auto listed = std::chrono::duration<double>(Clock::now() - start).count();
    bool transcoding = readers[0].wait_for(std::chrono::seconds(0)) != std::future_status::ready ||
                       readers[1].wait_for(std::chrono::seconds(0)) != std::future_status::ready ||
                       readers[2].wait_for(std::chrono::seconds(0)) != std::future_status::ready;
    EXPECT_EQ(result.status, 0) << result.describe;
    EXPECT_EQ(lines_of(result.out).size(), 14u) << result.out;
    EXPECT_TRUE(transcoding) << "the listing took " << listed << " s: as long as three transcodes";
    EXPECT_LT(listed, 5.0);
    for (auto& reader : readers) EXPECT_GT(reader.get(), 0u);
}

// The media path (probe, decide, layout, remux, every segment), built with AddressSanitizer, on
// garbage, truncated files and files with damaged bytes in the middle of their streams.
const std::string& tracks_media_dir();

TEST_F(Tvfs, CorruptMediaIsHandledCleanlyUnderAddressSanitizer) {
    auto checker = (fs::path(KTRICKS_BINARY).parent_path() / "tvfs_asan_check").string();
    if (!fs::exists(checker)) GTEST_SKIP() << "tvfs_asan_check is not built (sanitized or fuzz build)";
    TempDir damaged;
    std::vector<std::string> argv = {checker};
    for (const auto& name : {"garbage.mkv", "truncated.mp4", "damaged.mkv", "notes.txt"})
        argv.push_back(media_dir() + "/" + name);
    // Two audio tracks and subtitles (every track's encoder, the SubRip sidecar) too.
    for (const auto& name : {"vp9.webm", "ac3.mkv", "interlaced.ts", "hevc10.mkv", "two.mkv", "ass.mkv"}) {
        // Every 997th byte after the first 4 KiB flipped: headers survive, streams are damaged.
        auto from = std::string(name).find("two") == 0 || std::string(name).find("ass") == 0
                        ? tracks_media_dir()
                        : media_dir();
        auto data = read_file(from + "/" + name);
        for (std::size_t i = 4096; i < data.size(); i += 997) data[i] = static_cast<char>(~data[i]);
        write_file(damaged / name, data);
        argv.push_back(damaged / name);
    }
    ProcessOptions options;
    options.env = {"ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99"};
    auto result = run(argv, options, std::chrono::seconds(100));
    EXPECT_EQ(result.status, 0) << result.describe;
    EXPECT_EQ(result.err.find("AddressSanitizer"), std::string::npos) << result.err;
    EXPECT_NE(result.out.find("garbage.mkv: rejected"), std::string::npos) << result.out;
}

// A film with two audio tracks in different languages and codecs (AAC 440 Hz "eng", MP3 660 Hz at
// 44.1 kHz "fre", the default) and SRT subtitles ("eng"): 4 s, 320x240.
const std::string& tracks_media_dir() {
    static const std::string dir = generated_once("/tmp/ktricks-tvfs-tracks-v2", [](const std::string& work) {
        write_file(
            work + "/subs.srt",
            "1\n00:00:00,500 --> 00:00:02,000\nhello\n\n2\n00:00:02,500 --> 00:00:03,500\n<i>world</i>\n");
        std::string command =
            "ffmpeg -v error -nostdin -y -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i "
            "sine=frequency=440:sample_rate=48000 -f lavfi -i sine=frequency=660:sample_rate=44100 -i subs.srt "
            "-t 4 -map 0 -map 1 -map 2 -map 3 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a:0 aac -ac 2 "
            "-c:a:1 libmp3lame -c:s srt -metadata:s:a:0 language=eng -metadata:s:a:1 language=fre "
            "-metadata:s:s:0 language=eng -disposition:a:0 0 -disposition:a:1 default two.mkv";
        // The same subtitles as ASS, WebVTT and mov_text (an MP4 with moov at the end: a remux).
        for (auto [codec, file] :
             {std::pair{"ass", "ass.mkv"}, {"webvtt", "webvtt.mkv"}, {"mov_text", "movtext.mp4"}})
            command += fmt::format(
                " && ffmpeg -v error -nostdin -y -f lavfi -i testsrc2=size=160x120:rate=25 -f lavfi "
                "-i sine=sample_rate=48000 -i subs.srt -t 4 -map 0 -map 1 -map 2 -c:v libx264 "
                "-preset ultrafast -pix_fmt yuv420p -c:a aac -c:s {} {}",
                codec, file);
        command += " && rm subs.srt";
        generate_media(work, command);
    });
    return dir;
}

// The tone of audio track N of FILE in Hz: zero crossings over its second second, decoded by ffmpeg.
double tone(const std::string& file, int track) {
    auto result =
        run({"ffmpeg", "-v", "error", "-nostdin", "-ss", "1", "-i", file, "-map",
             fmt::format("0:a:{}", track), "-t", "1", "-ac", "1", "-ar", "48000", "-f", "s16le", "-"},
            {}, std::chrono::seconds(30));
    if (result.status != 0 || result.out.size() < 4) return 0;
    std::vector<std::int16_t> samples(result.out.size() / 2);
    std::memcpy(samples.data(), result.out.data(), samples.size() * 2);
    int crossings = 0;
    for (std::size_t i = 1; i < samples.size(); ++i)
        if ((samples[i - 1] < 0) != (samples[i] < 0)) ++crossings;
    return crossings / 2.0 / (double(samples.size()) / 48000);
}

// Every audio track reaches the output with its language, the source's default track first, in the
// remux (MP4, copied), the audio-only transcode and the full transcode (MPEG-TS, AAC each).
TEST_F(Tvfs, EveryAudioTrackKeepsItsLanguageWithTheDefaultFirstInRemuxAndTranscodes) {
    TempDir dir;
    write_file(dir / "hevc-only.toml", "name = \"hevc-only\"\nvideo_codecs = [\"hevc\"]\n");
    struct Case {
        std::string profile, shown, action, first_codec, first_rate;
    };
    std::vector<Case> cases = {{"chromecast", "two.mp4", "remux", "mp3", "44100"},
                               {"tv", "two.ts", "audio-transcode", "aac", "48000"},
                               {dir / "hevc-only.toml", "two.ts", "transcode", "aac", "48000"}};
    for (const auto& c : cases) {
        SCOPED_TRACE(c.profile);
        auto explained = run(
            {KTRICKS_BINARY, "tvfs", "--profile", c.profile, "--explain", tracks_media_dir() + "/two.mkv"});
        ASSERT_EQ(explained.status, 0) << explained.describe;
        EXPECT_NE(explained.out.find(": " + c.action + "\n"), std::string::npos) << explained.out;
        const char* what = c.action == "remux" ? "copied" : "-> AAC-LC stereo 48 kHz";
        EXPECT_NE(explained.out.find(fmt::format("output audio 1: stream 2 mp3 (fre, default) {}", what)),
                  std::string::npos)
            << explained.out;
        EXPECT_NE(explained.out.find(fmt::format("output audio 2: stream 1 aac (eng) {}", what)),
                  std::string::npos)
            << explained.out;

        Mount mount(tracks_media_dir(), {"--profile", c.profile});
        auto path = mount / c.shown;
        auto info = ffprobe(path);
        std::vector<nlohmann::json> audio;
        for (const auto& stream : info["streams"])
            if (stream["codec_type"] == "audio") audio.push_back(stream);
        ASSERT_EQ(audio.size(), 2u) << info.dump();
        EXPECT_EQ(audio[0]["tags"].value("language", ""), "fre") << info.dump();
        EXPECT_EQ(audio[1]["tags"].value("language", ""), "eng") << info.dump();
        EXPECT_EQ(audio[0]["codec_name"], c.first_codec);
        EXPECT_EQ(audio[0]["sample_rate"], c.first_rate);
        EXPECT_EQ(audio[1]["codec_name"], "aac");
        EXPECT_EQ(audio[1]["sample_rate"], "48000");
        if (c.action == "remux") {
            EXPECT_EQ(audio[0]["disposition"]["default"], 1) << info.dump();
            EXPECT_EQ(audio[1]["disposition"]["default"], 0) << info.dump();
        } else {
            EXPECT_EQ(audio[1]["profile"], "LC");
        }
        // The right signal behind each language: fre is the 660 Hz tone, eng the 440 Hz one.
        EXPECT_NEAR(tone(path, 0), 660, 15);
        EXPECT_NEAR(tone(path, 1), 440, 15);
        EXPECT_EQ(bytes_read(path), fs::file_size(path));
        auto decode = run({"ffmpeg", "-v", "error", "-nostdin", "-i", path, "-map", "0", "-f", "null", "-"},
                          {}, std::chrono::seconds(60));
        EXPECT_EQ(decode.status, 0) << decode.describe;
        EXPECT_EQ(decode.err, "") << "decoding " << c.shown << " reported errors";
        EXPECT_NEAR(duration(path), 4.0, 0.5);
    }
}

// Text subtitles (SRT, ASS, WebVTT, mov_text) appear as NAME.srt beside the converted output:
// SubRip text with the source's times, an exact st_size, and ffprobe reads it as subrip.
TEST_F(Tvfs, TextSubtitlesBecomeAnSrtSidecarBesideTheOutput) {
    Mount mount(tracks_media_dir());
    std::set<std::string> expected = {"two.ts",     "two.srt",    "ass.mp4",     "ass.srt",
                                      "webvtt.mp4", "webvtt.srt", "movtext.mp4", "movtext.srt"};
    EXPECT_EQ(mount.names(), expected);
    // The events at 0.5-2.0 s and 2.5-3.5 s of the text, on the output's timeline: the test files'
    // own timelines start 21-25 ms late (ffmpeg shifted them past the AAC/MP3 priming), so the
    // times are checked to 30 ms; the text and the numbering exactly.
    for (auto name : {"two.srt", "ass.srt", "webvtt.srt", "movtext.srt"}) {
        SCOPED_TRACE(name);
        auto text = read_file(mount / name);
        EXPECT_EQ(text.size(), fs::file_size(mount / name));
        std::vector<double> times;
        std::string shape = text;
        for (std::size_t at = 0; (at = shape.find("00:00:0", at)) != std::string::npos; ++at) {
            times.push_back(std::stoi(shape.substr(at + 7, 1)) + std::stoi(shape.substr(at + 9, 3)) / 1000.0);
            shape.replace(at, 12, "T");
        }
        EXPECT_EQ(shape, "1\nT --> T\nhello\n\n2\nT --> T\n<i>world</i>\n\n") << text;
        ASSERT_EQ(times.size(), 4u) << text;
        const double nominal[] = {0.5, 2.0, 2.5, 3.5};
        for (std::size_t i = 0; i < 4; ++i) EXPECT_NEAR(times[i], nominal[i], 0.03) << text;
        auto info = ffprobe(mount / name);
        ASSERT_EQ(info["streams"].size(), 1u) << info.dump();
        EXPECT_EQ(info["streams"][0]["codec_name"], "subrip");
    }
    auto explained = run({KTRICKS_BINARY, "tvfs", "--explain", tracks_media_dir() + "/ass.mkv"});
    EXPECT_NE(explained.out.find("sidecar: ass.srt (subtitle stream 2 as SubRip)"), std::string::npos)
        << explained.out;
}

// A PGS (Blu-ray) subtitle stream as a .sup file, made by hand: FFmpeg has no encoder that makes
// pictures from text, but it reads .sup (its "sup" demuxer), decodes PGS, and encodes VobSub
// (dvdsub) and DVB (dvbsub) pictures from what it decoded. Each segment is "PG", PTS and DTS (90 kHz,
// big-endian 32-bit), its type and its payload size (16-bit). Two display sets on a 320x240 screen:
//   at 0.5 s: PCS 0x16 (320x240, rate 0x10, composition 0, state 0x80 "epoch start", palette 0,
//             one object: id 0 in window 0, not cropped, at 128,200); WDS 0x17 (window 0: 128,200,
//             64x16); PDS 0x14 (palette 0 version 0; entry 1 = Y 235, Cr 128, Cb 128, alpha 255:
//             opaque white); ODS 0x15 (object 0 version 0, first and last fragment 0xC0, data length
//             (24-bit, counts the 4 size bytes), 64x16, run-length lines "00 C0 40 01" (64 pixels of
//             colour 1, 14-bit count) + "00 00" (end of line), 16 times); END 0x80.
//   at 2.0 s: PCS with no object (the picture is cleared), WDS, END.
std::string pgs_sup() {
    auto be = [](std::string& out, std::uint32_t value, int bytes) {
        for (int i = bytes - 1; i >= 0; --i) out += static_cast<char>((value >> (8 * i)) & 0xff);
    };
    auto segment = [&](std::uint32_t pts, int type, const std::string& payload) {
        std::string out = "PG";
        be(out, pts, 4);
        be(out, 0, 4);
        be(out, static_cast<std::uint32_t>(type), 1);
        be(out, static_cast<std::uint32_t>(payload.size()), 2);
        return out + payload;
    };
    auto composition = [&](int number, bool shown) {
        std::string pcs;
        be(pcs, 320, 2), be(pcs, 240, 2), be(pcs, 0x10, 1), be(pcs, static_cast<std::uint32_t>(number), 2);
        be(pcs, shown ? 0x80 : 0, 1), be(pcs, 0, 1), be(pcs, 0, 1), be(pcs, shown ? 1 : 0, 1);
        if (shown) be(pcs, 0, 2), be(pcs, 0, 1), be(pcs, 0, 1), be(pcs, 128, 2), be(pcs, 200, 2);
        return pcs;
    };
    std::string wds;
    be(wds, 1, 1), be(wds, 0, 1), be(wds, 128, 2), be(wds, 200, 2), be(wds, 64, 2), be(wds, 16, 2);
    std::string pds;
    be(pds, 0, 2), be(pds, 1, 1), be(pds, 235, 1), be(pds, 128, 1), be(pds, 128, 1), be(pds, 255, 1);
    std::string rle;
    for (int line = 0; line < 16; ++line) rle += std::string("\x00\xC0\x40\x01\x00\x00", 6);
    std::string ods;
    be(ods, 0, 2), be(ods, 0, 1), be(ods, 0xC0, 1), be(ods, static_cast<std::uint32_t>(rle.size() + 4), 3);
    be(ods, 64, 2), be(ods, 16, 2);
    ods += rle;
    return segment(45000, 0x16, composition(0, true)) + segment(45000, 0x17, wds) +
           segment(45000, 0x14, pds) + segment(45000, 0x15, ods) + segment(45000, 0x80, "") +
           segment(180000, 0x16, composition(1, false)) + segment(180000, 0x17, wds) +
           segment(180000, 0x80, "");
}

// Picture subtitles from subs.sup: PGS copied into an MKV, VobSub and DVB encoded by FFmpeg from the
// decoded PGS (-fix_sub_duration: each picture lasts until the next display set, 1.5 s; else the
// PGS decoder leaves its end open and the MKV's duration becomes 2^32 ms). 4 s, 320x240.
const std::string& pictures_media_dir() {
    static const std::string dir =
        generated_once("/tmp/ktricks-tvfs-pictures-v1", [](const std::string& work) {
            write_file(work + "/subs.sup", pgs_sup());
            const std::string f =
                "ffmpeg -v error -nostdin -y -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i "
                "sine=sample_rate=48000 -fix_sub_duration -i subs.sup -t 4 -map 0 -map 1 -map 2 -c:v libx264 "
                "-preset ultrafast -pix_fmt yuv420p";
            generate_media(work, f + " -c:a aac -c:s copy pgs.mkv && " + f +
                                     " -c:a aac -c:s dvdsub vobsub.mkv && " + f +
                                     " -c:a ac3 -c:s dvbsub dvb.ts && rm subs.sup");
        });
    return dir;
}

// The mean luma (0-255) of the 64x16 rectangle at 128,200 of FILE's frame at SECONDS, its first
// subtitle stream drawn over the video if OVERLAY.
int mean_luma(const std::string& file, double seconds, bool overlay) {
    std::string graph =
        overlay ? "[0:v][0:s]overlay,crop=64:16:128:200,scale=1:1" : "[0:v]crop=64:16:128:200,scale=1:1";
    auto result =
        run({"ffmpeg", "-v", "error", "-nostdin", "-i", file, "-filter_complex", graph, "-ss",
             fmt::format("{}", seconds), "-frames:v", "1", "-pix_fmt", "gray", "-f", "rawvideo", "-"},
            {}, std::chrono::seconds(30));
    EXPECT_EQ(result.status, 0) << result.describe;
    return result.out.size() == 1 ? static_cast<unsigned char>(result.out[0]) : -1;
}

// Issue 19: picture subtitles. VobSub is copied into a remuxed MP4 and still draws its picture there;
// PGS (MP4) and DVB (an MPEG-TS transcode) cannot be carried: the output has no subtitle stream and
// --explain names each as dropped.
TEST_F(Tvfs, PictureSubtitlesVobSubIsKeptInTheMp4PgsAndDvbAreExplainedAsDropped) {
    const auto& source = pictures_media_dir();
    Mount mount(source);
    EXPECT_EQ(mount.names(), (std::set<std::string>{"pgs.mp4", "vobsub.mp4", "dvb.ts"}));
    auto subtitle_codecs = [&](const std::string& file) {
        std::vector<std::string> codecs;
        auto info = ffprobe(file);  // kept: a range-for over a temporary's member would dangle
        for (const auto& stream : info["streams"])
            if (stream.value("codec_type", "") == "subtitle")
                codecs.push_back(stream.value("codec_name", ""));
        return codecs;
    };
    EXPECT_EQ(subtitle_codecs(source + "/vobsub.mkv"), std::vector<std::string>{"dvd_subtitle"});
    EXPECT_EQ(subtitle_codecs(source + "/pgs.mkv"), std::vector<std::string>{"hdmv_pgs_subtitle"});
    EXPECT_EQ(subtitle_codecs(source + "/dvb.ts"), std::vector<std::string>{"dvb_subtitle"});
    for (auto name : {"vobsub.mp4", "pgs.mp4", "dvb.ts"})
        EXPECT_EQ(bytes_read(mount / name), fs::file_size(mount / name)) << name;

    EXPECT_EQ(subtitle_codecs(mount / "vobsub.mp4"), std::vector<std::string>{"dvd_subtitle"});
    // The picture itself: an opaque white 64x16 box at 128,200 from 0.5 s to 2.0 s, nothing after.
    EXPECT_GE(mean_luma(mount / "vobsub.mp4", 1.0, true), 250);
    EXPECT_LT(mean_luma(mount / "vobsub.mp4", 1.0, false), 250) << "the box, not the video, is white";
    EXPECT_NEAR(mean_luma(mount / "vobsub.mp4", 3.0, true), mean_luma(mount / "vobsub.mp4", 3.0, false), 2);

    EXPECT_TRUE(subtitle_codecs(mount / "pgs.mp4").empty());
    EXPECT_TRUE(subtitle_codecs(mount / "dvb.ts").empty());
    for (auto [file, line] :
         {std::pair{"vobsub.mkv",
                    "subtitle stream 2 (no language): dvd_subtitle pictures copied into the MP4"},
          {"pgs.mkv",
           "subtitle stream 2 (no language): hdmv_pgs_subtitle pictures dropped (MP4 cannot carry them)"},
          {"dvb.ts", "dvb_subtitle pictures dropped (the MPEG-TS output cannot carry them)"}}) {
        auto explained = run({KTRICKS_BINARY, "tvfs", "--explain", source + "/" + file});
        EXPECT_EQ(explained.status, 0) << explained.describe;
        EXPECT_NE(explained.out.find(line), std::string::npos) << explained.out;
    }
}

// A ContentDirectory Browse of minidlna's "all videos" container (2$8) on loopback PORT, with
// USER_AGENT if given (minidlna adapts its answer to the client it recognises): the response body.
std::string dlna_browse(int port, const std::string& user_agent = "") {
    std::string body =
        "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" "
        "s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>"
        "<u:Browse xmlns:u=\"urn:schemas-upnp-org:service:ContentDirectory:1\"><ObjectID>2$8</ObjectID>"
        "<BrowseFlag>BrowseDirectChildren</BrowseFlag><Filter>*</Filter><StartingIndex>0</StartingIndex>"
        "<RequestedCount>100</RequestedCount><SortCriteria></SortCriteria></u:Browse></s:Body></s:Envelope>";
    std::vector<std::string> argv = {
        "curl", "-s",
        "-m",   "5",
        "-H",   "Content-Type: text/xml; charset=\"utf-8\"",
        "-H",   "SOAPAction: \"urn:schemas-upnp-org:service:ContentDirectory:1#Browse\""};
    if (!user_agent.empty()) argv.insert(argv.end(), {"-H", "User-Agent: " + user_agent});
    argv.insert(argv.end(), {"--data", body, fmt::format("http://127.0.0.1:{}/ctl/ContentDir", port)});
    return run(argv).out;
}

// The first media item's URL in a Browse LISTING from loopback PORT; empty if there is none.
std::string first_media_item_url(const std::string& listing, int port) {
    auto start = listing.find(fmt::format("http://127.0.0.1:{}/MediaItems/", port));
    if (start == std::string::npos) return {};
    std::string url;
    for (auto i = start; i < listing.size() && listing[i] != '&' && listing[i] != '<'; ++i) url += listing[i];
    return url;
}

// minidlna pairs the sidecar with the video: a Samsung Browse carries sec:CaptionInfoEx and a
// text/srt res, a GET with getCaptionInfo.sec answers CaptionInfo.sec, and that URL serves the
// sidecar's bytes. In a private network namespace (minidlna binds 0.0.0.0).
TEST_F(Tvfs, MinidlnaServesTheSrtSidecarWithTheVideo) {
    if (!have("minidlnad") || !have("curl")) GTEST_SKIP() << "needs minidlnad and curl";
    if (::unshare(CLONE_NEWNET) != 0) GTEST_SKIP() << "unshare(CLONE_NEWNET): " << std::strerror(errno);
    ASSERT_EQ(run({"ip", "link", "set", "lo", "up"}).status, 0);
    TempDir source;
    fs::copy_file(tracks_media_dir() + "/ass.mkv", source / "film.mkv");
    Mount mount(source.path().string(), {"--dlna", "--dlna-port", "8298"});
    auto browse = [] { return dlna_browse(8298, "SEC_HHP_[TV]UE40D6500/1.0 DLNADOC/1.50"); };
    ASSERT_TRUE(eventually([&] { return browse().find("&gt;film&lt;") != std::string::npos; },
                           std::chrono::seconds(30)))
        << browse() << mount.process().describe();
    auto listing = browse();
    EXPECT_NE(listing.find("CaptionInfoEx sec:type=\"srt\"&gt;http://127.0.0.1:8298/Captions/"),
              std::string::npos)
        << listing;
    EXPECT_NE(listing.find("protocolInfo=\"http-get:*:text/srt:*\""), std::string::npos) << listing;
    std::string url = first_media_item_url(listing, 8298);
    ASSERT_FALSE(url.empty()) << listing;
    TempDir download;
    auto head = run({"curl", "-s", "-m", "20", "-D", download / "headers", "-o", download / "body", "-H",
                     "getCaptionInfo.sec: 1", "-H", "Range: bytes=0-187", url},
                    {}, std::chrono::seconds(30));
    ASSERT_EQ(head.status, 0) << head.describe;
    auto headers = read_file(download / "headers");
    auto at = headers.find("CaptionInfo.sec: ");
    ASSERT_NE(at, std::string::npos) << headers;
    auto caption_url = headers.substr(at + 17, headers.find('\r', at) - at - 17);
    // Waits for an answer: one run in five, curl's first fetch of the caption URL failed.
    Result caption;
    EXPECT_TRUE(eventually(
        [&] {
            return (caption = run({"curl", "-sf", "-m", "5", caption_url}, {}, std::chrono::seconds(10)))
                       .status == 0;
        },
        std::chrono::seconds(20)))
        << caption.describe;
    EXPECT_EQ(caption.out, read_file(mount / "film.srt"));
    EXPECT_NE(caption.out.find("hello"), std::string::npos) << caption.out;
}

// minidlna sees MNT, answers a ContentDirectory Browse and serves byte ranges; after a change in SRC
// it is restarted with -r and lists the new item. In a private network namespace (it binds 0.0.0.0).
TEST_F(Tvfs, MinidlnaServesTheMountAndPicksUpChanges) {
    if (!have("minidlnad") || !have("curl")) GTEST_SKIP() << "needs minidlnad and curl";
    if (::unshare(CLONE_NEWNET) != 0) GTEST_SKIP() << "unshare(CLONE_NEWNET): " << std::strerror(errno);
    ASSERT_EQ(run({"ip", "link", "set", "lo", "up"}).status, 0);
    TempDir source;
    fs::copy_file(media_dir() + "/pass.mp4", source / "one.mp4");
    fs::copy_file(media_dir() + "/vp9.webm", source / "two.webm");
    Mount mount(source.path().string(), {"--dlna", "--dlna-port", "8299"});
    auto browse = [] { return dlna_browse(8299); };
    ASSERT_TRUE(eventually(
        [&] {
            auto r = browse();
            return r.find("&gt;one&lt;") != std::string::npos && r.find("&gt;two&lt;") != std::string::npos;
        },
        std::chrono::seconds(30)))
        << browse() << mount.process().describe();
    // The item's URL, then a range request on it.
    auto listing = browse();
    std::string url = first_media_item_url(listing, 8299);
    ASSERT_FALSE(url.empty()) << listing;
    TempDir download;
    auto fetch = run({"curl", "-s", "-m", "20", "-D", download / "headers", "-o", download / "body", "-H",
                      "Range: bytes=0-", url},
                     {}, std::chrono::seconds(30));
    ASSERT_EQ(fetch.status, 0) << fetch.describe;
    auto headers = read_file(download / "headers");
    EXPECT_NE(headers.find("206"), std::string::npos) << headers;
    auto length_at = headers.find("Content-Length: ");
    ASSERT_NE(length_at, std::string::npos) << headers;
    auto length = std::stoull(headers.substr(length_at + 16));
    std::set<std::uint64_t> sizes;
    for (const auto& entry : fs::directory_iterator(mount.path())) sizes.insert(entry.file_size());
    EXPECT_TRUE(sizes.count(length)) << "Content-Length " << length << " is no file's st_size";
    EXPECT_EQ(run({"ffprobe", "-v", "error", download / "body"}).status, 0);

    fs::copy_file(media_dir() + "/ac3.mkv", source / "three.mkv");
    EXPECT_TRUE(eventually([&] { return browse().find("&gt;three&lt;") != std::string::npos; },
                           std::chrono::seconds(30)))
        << browse();
}

}  // namespace
}  // namespace ktricks::test
