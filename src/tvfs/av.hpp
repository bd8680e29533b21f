// RAII for the FFmpeg objects tvfs uses, and the output layouts (private to tvfs).
#pragma once

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
}

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ktricks/tvfs.hpp"

namespace ktricks::tvfs {

struct InputCloser {
    void operator()(AVFormatContext* context) const noexcept { avformat_close_input(&context); }
};
using InputPtr = std::unique_ptr<AVFormatContext, InputCloser>;
struct CodecCloser {
    void operator()(AVCodecContext* context) const noexcept { avcodec_free_context(&context); }
};
using CodecPtr = std::unique_ptr<AVCodecContext, CodecCloser>;
struct PacketFree {
    void operator()(AVPacket* packet) const noexcept { av_packet_free(&packet); }
};
using PacketPtr = std::unique_ptr<AVPacket, PacketFree>;
struct FrameFree {
    void operator()(AVFrame* frame) const noexcept { av_frame_free(&frame); }
};
using FramePtr = std::unique_ptr<AVFrame, FrameFree>;

// "av_read_frame FILE: Invalid data found when processing input"
std::string av_message(int error);
InputPtr open_input(const std::string& path);

// One output segment: [start, end) seconds of the source timeline, a fixed byte size.
struct Segment {
    double start = 0, end = 0;
    std::uint64_t offset = 0, bytes = 0;
};

// How an output file is laid out; computed at the first stat and kept in the probe cache.
struct Layout {
    Action action = Action::skip;
    std::uint64_t size = 0;
    std::vector<Segment> segments;  // transcodes only
    int fps_num = 0, fps_den = 1;   // full transcode output frame rate
    int width = 0, height = 0;      // full transcode output size
    int video_kbps = 0;
};

// Part of every output cache key: bump it when the bytes an output is made of change (2: every
// audio track, language tags; 3: budgets filled to within 3.5%).
inline constexpr int output_format = 3;

// Seconds of output per transcoded segment: also the fixed closed GOP and the seek granularity.
inline constexpr double segment_seconds = 2.0;

// A remux to a faststart MP4, streamed: the file is HEAD followed by mdat's payload exactly as a
// plain (not faststart) run of libavformat's MP4 muxer writes it.
struct RemuxPlan {
    std::string head;                 // ftyp + moov (chunk offsets shifted) + placeholder + mdat header
    std::uint64_t payload_start = 0;  // where the payload starts in the plain muxer's output
    std::uint64_t payload_bytes = 0;
    std::uint64_t size() const { return head.size() + payload_bytes; }  // the exact file size
};
// A dry run of the plain muxer over the packets (no file written; reads the whole source once).
RemuxPlan remux_plan(const std::string& path, const Decision& decision);
// The real plain run: hands PAYLOAD each piece of mdat's payload (OFFSET within the payload, in
// order) as the muxer writes it, and throws if the run differs from PLAN (a non-deterministic
// muxer) or PAYLOAD throws (its exception, e.g. to stop).
void stream_remux(
    const std::string& path, const Decision& decision, const RemuxPlan& plan,
    const std::function<void(std::uint64_t offset, const std::uint8_t* data, std::size_t size)>& payload);
// libavformat's own `+faststart` remux into the file OUT, in full: the reference the streamed
// remux is checked against (tvfs_asan_check), not used by the mount.
void remux(const std::string& path, const Decision& decision, const std::string& out);
// Subtitle stream INDEX of PATH as SubRip text (the NAME.srt sidecar): decoded by libavcodec (SRT,
// ASS, mov_text, WebVTT ...), encoded by its SubRip encoder, muxed by libavformat's srt muxer, on
// the output's timeline: REBASE (transcodes) subtracts the source's start time as the segments
// do; a remux keeps the source's times, as its MP4 does. Deterministic: its size is always exact.
std::string subtitle_srt(const std::string& path, int index, bool rebase);
// Segments and their byte budgets; for audio-only transcodes this reads the video packet index.
Layout transcode_layout(const std::string& path, const MediaInfo& media, const Decision& decision,
                        const Profile& profile);
// Segment k's bytes, exactly layout.segments[k].bytes long (MPEG-TS, null-packet padded).
std::string produce_segment(const std::string& path, const MediaInfo& media, const Decision& decision,
                            const Profile& profile, const Layout& layout, std::size_t k);

}  // namespace ktricks::tvfs
