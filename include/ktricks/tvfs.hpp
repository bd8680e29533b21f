// tvfs: a FUSE filesystem that mirrors a folder of videos so that every file is one the TV plays.
//
// Each source file is probed (streams, never the extension) and decided against a Profile:
//   pass_through     the TV plays it: the very same bytes
//   remux            streams fine, container wrong: faststart MP4, packets copied
//   audio_transcode  video fine, audio not: video copied, audio to AAC, segmented MPEG-TS
//   full_transcode   H.264 + AAC encoded by the FFmpeg libraries, segmented MPEG-TS
//   skip             not a playable video (corrupt, no video stream, a still image)
// Sizes are exact from the first stat: a remux's size comes from a dry run of the MP4 muxer over the
// source packets, a transcode is a sequence of fixed-duration segments each padded with MPEG-TS null
// packets to a byte size fixed in advance (so an offset also names a time: seeking is cheap).
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ktricks {
class EventLoop;
}

namespace ktricks::tvfs {

struct VideoStream {
    int index = -1;
    std::string codec;    // FFmpeg codec name: h264, hevc, vp9, mpeg2video ...
    std::string profile;  // "High", "Main 10" ... ("" unknown)
    int level = 0;        // codec level times ten for H.264/HEVC (41 = 4.1), 0 unknown
    int bit_depth = 8;
    std::string pix_fmt;  // yuv420p, yuv420p10le ...
    int width = 0, height = 0;
    double fps = 0;
    bool interlaced = false;
    int fps_num = 0, fps_den = 0;  // fps exactly (30000/1001), 0/0 unknown; last, for aggregate init
};

struct AudioStream {
    int index = -1;
    std::string codec;    // aac, ac3, opus, dts ...
    std::string profile;  // "LC", "HE-AAC" ...
    int channels = 0;
    int sample_rate = 0;
    std::string language;        // ISO 639-2 from the container ("eng"), "" untagged
    bool default_track = false;  // the container's default disposition
};

struct SubtitleStream {
    int index = -1;
    std::string codec;  // subrip, ass, mov_text, webvtt, hdmv_pgs_subtitle, dvb_subtitle, dvd_subtitle
    std::string language;
    bool default_track = false;
    bool text = false;  // text (made into the NAME.srt sidecar) rather than pictures
};

struct MediaInfo {
    std::string container;  // FFmpeg demuxer name: "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "mpegts"
    bool faststart = true;  // MP4 only: moov before mdat (a TV reading over HTTP needs it)
    double duration = 0;    // seconds
    std::optional<VideoStream> video;  // the first video stream
    std::vector<AudioStream> audio;
    std::vector<SubtitleStream> subtitles;
};

// Opens and probes FILE with libavformat; throws DataError naming the file if it is not media.
MediaInfo probe(const std::string& path);

struct Profile {
    std::string name;
    std::string description;
    std::string source;                      // where the limits come from (a spec URL)
    std::vector<std::string> containers;     // passed through as is: mp4, mpegts, matroska, webm
    std::vector<std::string> video_codecs;   // h264, hevc, vp9, av1, mpeg2video
    std::vector<std::string> h264_profiles;  // empty = any
    int max_h264_level = 41;
    int max_hevc_level = 51;
    int max_bit_depth = 8;
    int max_width = 1920, max_height = 1080;
    double max_fps = 30;
    bool interlaced = false;
    std::vector<std::string> audio_codecs;  // aac, ac3, eac3, mp3, opus
    int max_channels = 2;
    std::vector<int> sample_rates;  // empty = any
    // What a transcode produces (always H.264 + AAC-LC in MPEG-TS).
    int video_kbps = 6000;  // for 1080p; scaled by pixel count for smaller output
    int audio_kbps = 160;
    std::string preset = "veryfast";

    std::string describe() const;  // the limits, one line each
};

const Profile& builtin_profile(std::string_view name);  // throws InputError for an unknown name
std::vector<std::string> builtin_profile_names();
// A user profile in TOML (see docs/tvfs.md); `origin` names it in errors. Missing keys inherit `tv`.
// Throws DataError "ORIGIN:LINE:COLUMN: problem" or "ORIGIN: problem" for bad contents.
Profile parse_profile(std::string_view toml_text, std::string_view origin);
// A built-in name (InputError if unknown), or the path of a TOML file (DataError for bad contents).
Profile load_profile(const std::string& name_or_path);

enum class Action { pass_through, remux, audio_transcode, full_transcode, skip };
std::string_view to_string(Action action);

struct Decision {
    Action action = Action::skip;
    std::vector<std::string> reasons;  // why, one line each ("video: hevc not in profile tv (h264)")
    // Every audio stream, in output order: the source's default track first, then source order.
    // A remux copies them all (it is chosen only when every one fits the profile); a transcode
    // makes each one AAC-LC stereo 48 kHz. Each keeps its language tag.
    std::vector<int> audio_streams;
    // The text subtitle stream shown as the sidecar NAME.srt beside a converted output (-1 none):
    // the default one, else the first.
    int sidecar_subtitle = -1;
    // Picture subtitle streams copied into the output (a remux to MP4 can carry VobSub).
    std::vector<int> kept_subtitles;
    std::string extension;  // of the output: "" pass-through, ".mp4" remux, ".ts" transcodes
};

// Pure: the same MediaInfo and Profile always give the same Decision.
Decision decide(const MediaInfo& media, const Profile& profile);
// The name in the mount: clip.mkv -> clip.mp4 (remux) or clip.ts (transcode); pass-through keeps it.
std::string output_name(std::string_view source_name, const Decision& decision);
// The sidecar beside output name SHOWN: clip.ts -> clip.srt.
std::string sidecar_name(std::string_view shown);
// `ktricks tvfs --explain`: the streams, the decision and its reasons, as printed lines.
std::string explain(const std::string& path, const MediaInfo& media, const Decision& decision);

struct MountOptions {
    std::string source, mountpoint;
    std::string profile = "tv";  // a built-in name or a TOML file
    std::string cache_dir;       // default: $XDG_CACHE_HOME/ktricks-tvfs or /var/cache/ktricks-tvfs
    std::uint64_t cache_size = 4ull << 30;
    std::vector<std::string> fuse_options;  // each as given to -o
    double grace_seconds = 2;               // transcoder threads stop this long after the last close
};

// A mounted tvfs. The constructor mounts; start() serves requests on a pool of threads of its own,
// whose signals are all blocked; the destructor stops serving and unmounts. It never daemonizes and
// never touches signal handlers or stdout: that is the program's business (ktricks tvfs does it).
class Mount {
public:
    // Checks SRC and MNT, loads the profile and the caches and mounts MNT (requests wait until
    // start()). Paths are made absolute first. Throws InputError naming a bad directory or
    // profile, std::system_error when /dev/fuse cannot be used, std::runtime_error if mounting fails.
    explicit Mount(const MountOptions& options);
    ~Mount();
    Mount(const Mount&) = delete;
    Mount& operator=(const Mount&) = delete;

    // Serves until stop(). If the filesystem goes away first (fusermount3 -u), `on_end` runs on
    // LOOP with nullptr, or with the error that ended serving. Also keeps the cache under its limit
    // as outputs close (a timer on LOOP).
    void start(EventLoop& loop, std::function<void(std::exception_ptr)> on_end);
    // Stops serving: reads waiting for a segment fail, threads are joined. Idempotent.
    void stop();

    const std::string& source() const noexcept;      // canonical
    const std::string& mountpoint() const noexcept;  // absolute
    const Profile& profile() const noexcept;

private:
    friend class SourceWatch;
    struct State;
    std::unique_ptr<State> state_;
};

// inotify on every directory of a mount's source: a file added, removed, replaced or changed shows
// up in the mount at once (the kernel's caches of the old names are invalidated), and `on_change`
// runs on LOOP after each batch of changes (ktricks tvfs --dlna restarts minidlna then).
class SourceWatch {
public:
    SourceWatch(EventLoop& loop, Mount& mount, std::function<void()> on_change = {});
    ~SourceWatch();
    SourceWatch(const SourceWatch&) = delete;
    SourceWatch& operator=(const SourceWatch&) = delete;

    // Watches SRC and every directory below it (and those created later). Throws std::system_error.
    void start();
    void stop();  // idempotent

private:
    struct State;
    std::unique_ptr<State> state_;
};

// "4G", "500M", "1048576" -> bytes; throws InputError.
std::uint64_t parse_size(std::string_view text);

}  // namespace ktricks::tvfs
