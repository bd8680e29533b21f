// Producing outputs whose size is known before the first byte.
//
// Remux: the MP4 muxer is deterministic, so a dry run of a plain (not faststart) remux over the
// source packets into a sink that keeps only the boxes around mdat's payload gives the faststart
// head (ftyp + moov with shifted chunk offsets, mp4_boxes.hpp) and the exact size; the real run
// then streams the payload behind that head as the muxer writes it, and is checked against the
// dry run at its end.
//
// Transcodes: the output is a sequence of segments of fixed duration. Each segment is a pure
// function of (source, profile, k): the source is sought, decoded, and encoded by a fresh encoder
// (so every segment starts with an IDR: a closed GOP) into a fresh MPEG-TS muxer, then padded with
// null packets (PID 0x1FFF, which every demuxer discards) up to a byte budget fixed from the
// segment's duration and the nominal rates; the video rate is corrected (deterministically) until
// the segment fills its budget to within 3.5%. An offset therefore names a segment, a segment
// names a time, and a segment produced twice (after cache eviction) has the same bytes.
#include <fmt/format.h>

extern "C" {
#include <libavcodec/bsf.h>
#include <libavfilter/avfilter.h>
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libavutil/audio_fifo.h>
#include <libavutil/channel_layout.h>
#include <libswresample/swresample.h>
}

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "ktricks/core/error.hpp"
#include "tvfs/av.hpp"
#include "tvfs/continuity.hpp"
#include "tvfs/mp4_boxes.hpp"

namespace ktricks::tvfs {
namespace {

constexpr int ts_packet = 188;
constexpr int audio_rate = 48000;
// AAC frames encoded before a segment's first kept packet and after its last (see open_audio);
// the source is sought further back than the pre-roll, so its decoder has settled too.
constexpr int audio_preroll = 64, audio_postroll = 2;

void check(int status, std::string_view call, const std::string& object) {
    if (status < 0)
        throw std::runtime_error(fmt::format("{} {}: {}", call, printable(object), av_message(status)));
}

struct OutputCloser {
    void operator()(AVFormatContext* context) const noexcept {
        if (!context) return;
        // A sink of ours (AVFMT_FLAG_CUSTOM_IO) is freed by its owner, maybe already; a file is ours to close.
        if (context->pb && !(context->flags & AVFMT_FLAG_CUSTOM_IO)) avio_closep(&context->pb);
        avformat_free_context(context);
    }
};
using OutputPtr = std::unique_ptr<AVFormatContext, OutputCloser>;

// The seek of a sink T with members `position` and `size` (an AVIOContext seek callback).
template <typename T>
std::int64_t seek_in(T* self, std::int64_t offset, int whence) {
    if (whence & AVSEEK_SIZE) return self->size;
    switch (whence & ~AVSEEK_FORCE) {
        case SEEK_SET: self->position = offset; break;
        case SEEK_CUR: self->position += offset; break;
        case SEEK_END: self->position = self->size + offset; break;
        default: return AVERROR(EINVAL);
    }
    return self->position;
}

// A seekable sink: counts (dry run) or collects (segments) what a muxer writes.
struct Sink {
    std::string* data = nullptr;  // null: count only
    std::int64_t position = 0, size = 0;
    static int write(void* opaque, std::uint8_t* buffer, int length) {
        auto* self = static_cast<Sink*>(opaque);
        if (self->data) {
            if (static_cast<std::int64_t>(self->data->size()) < self->position + length)
                self->data->resize(static_cast<std::size_t>(self->position + length));
            std::memcpy(self->data->data() + self->position, buffer, static_cast<std::size_t>(length));
        }
        self->position += length;
        self->size = std::max(self->size, self->position);
        return length;
    }
    static std::int64_t seek(void* opaque, std::int64_t offset, int whence) {
        return seek_in(static_cast<Sink*>(opaque), offset, whence);
    }
};

struct AvioFree {
    void operator()(AVIOContext* context) const noexcept {
        if (context) av_freep(&context->buffer);
        avio_context_free(&context);
    }
};
using AvioPtr = std::unique_ptr<AVIOContext, AvioFree>;

AvioPtr sink_avio(Sink& sink, bool seekable) {
    auto* buffer = static_cast<unsigned char*>(av_malloc(65536));
    AVIOContext* avio =
        avio_alloc_context(buffer, 65536, 1, &sink, nullptr, &Sink::write, seekable ? &Sink::seek : nullptr);
    if (!avio) {
        av_free(buffer);
        throw std::bad_alloc();
    }
    if (!seekable) avio->seekable = 0;
    return AvioPtr(avio);
}

std::vector<int> kept_streams(const Decision& decision, const AVFormatContext* input) {
    std::vector<int> streams;
    for (unsigned i = 0; i < input->nb_streams; ++i) {
        auto type = input->streams[i]->codecpar->codec_type;
        if (input->streams[i]->disposition & AV_DISPOSITION_ATTACHED_PIC) continue;
        if (type == AVMEDIA_TYPE_VIDEO && streams.empty()) streams.push_back(static_cast<int>(i));
    }
    streams.insert(streams.end(), decision.audio_streams.begin(), decision.audio_streams.end());
    streams.insert(streams.end(), decision.kept_subtitles.begin(), decision.kept_subtitles.end());
    return streams;
}

// An output stream keeps its source's language; the first audio stream is the default one.
void copy_tags(const AVStream* from, AVStream* to, bool first_audio) {
    if (const AVDictionaryEntry* tag = av_dict_get(from->metadata, "language", nullptr, 0))
        av_dict_set(&to->metadata, "language", tag->value, 0);
    if (to->codecpar->codec_type == AVMEDIA_TYPE_AUDIO)
        to->disposition = first_audio ? AV_DISPOSITION_DEFAULT : 0;
}

// What the MP4 muxer writes in a plain (not faststart) remux, split three ways by position: the bytes
// before mdat's payload (ftyp, placeholder, mdat header; kept, including the trailer's size patch),
// the payload (handed to `payload` if set, else only counted) and everything from payload_end on
// (moov; kept). The limits are set once known: payload_start after the header is written,
// payload_end before the trailer (a dry run) or from the plan (the streamed run).
struct RemuxSink {
    std::int64_t payload_start = INT64_MAX, payload_end = INT64_MAX;
    std::string header, tail;
    std::function<void(std::uint64_t offset, const std::uint8_t* data, std::size_t size)> payload;
    std::int64_t position = 0, size = 0;
    std::exception_ptr error;  // what `payload` threw: rethrown once the muxer has failed

    static void put(std::string& to, std::int64_t at, const std::uint8_t* data, std::int64_t n) {
        // moov is a few MB for hours of video; more means the muxer seeked somewhere unexpected
        if (at < 0 || at + n > (std::int64_t{1} << 30))
            throw std::runtime_error("remux: unexpected muxer write");
        if (static_cast<std::int64_t>(to.size()) < at + n) to.resize(static_cast<std::size_t>(at + n));
        std::memcpy(to.data() + at, data, static_cast<std::size_t>(n));
    }
    static int write(void* opaque, std::uint8_t* buffer, int length) {
        auto* self = static_cast<RemuxSink*>(opaque);
        try {
            std::int64_t at = self->position, left = length;
            const std::uint8_t* data = buffer;
            auto advance = [&](std::int64_t n) {
                at += n;
                data += n;
                left -= n;
            };
            if (left > 0 && at < self->payload_start) {
                auto n = std::min(left, self->payload_start - at);
                put(self->header, at, data, n);
                advance(n);
            }
            if (left > 0 && at < self->payload_end) {
                auto n = std::min(left, self->payload_end - at);
                if (self->payload)
                    self->payload(static_cast<std::uint64_t>(at - self->payload_start), data,
                                  static_cast<std::size_t>(n));
                advance(n);
            }
            if (left > 0) put(self->tail, at - self->payload_end, data, left);
        } catch (...) {
            self->error = std::current_exception();
            return AVERROR(EIO);
        }
        self->position += length;
        self->size = std::max(self->size, self->position);
        return length;
    }
    static std::int64_t seek(void* opaque, std::int64_t offset, int whence) {
        return seek_in(static_cast<RemuxSink*>(opaque), offset, whence);
    }
};

// Copies the kept streams' packets into an MP4 muxer writing to PB (a sink of ours) or, with PB
// null, to the file OUT. AFTER_HEADER runs once the header is written; BEFORE_TRAILER once every
// packet is written (the interleaving queue flushed).
void mux_remux(const std::string& path, const Decision& decision, AVIOContext* pb, const std::string& out,
               bool faststart, const std::function<void(AVFormatContext*)>& after_header,
               const std::function<void(AVFormatContext*)>& before_trailer) {
    auto input = open_input(path);
    auto streams = kept_streams(decision, input.get());
    AVFormatContext* raw = nullptr;
    check(avformat_alloc_output_context2(&raw, nullptr, "mp4", pb ? nullptr : out.c_str()),
          "avformat_alloc_output_context2", out);
    OutputPtr output(raw);
    if (pb) {
        output->pb = pb;
        output->flags |= AVFMT_FLAG_CUSTOM_IO;
    } else {
        check(avio_open(&output->pb, out.c_str(), AVIO_FLAG_WRITE), "open", out);
    }
    std::vector<int> map(input->nb_streams, -1);
    bool first_audio = true;
    for (int index : streams) {
        AVStream* stream = avformat_new_stream(output.get(), nullptr);
        check(avcodec_parameters_copy(stream->codecpar, input->streams[index]->codecpar),
              "avcodec_parameters_copy", path);
        stream->codecpar->codec_tag = 0;
        stream->time_base = input->streams[index]->time_base;
        copy_tags(input->streams[index], stream, first_audio);
        if (stream->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) first_audio = false;
        map[static_cast<std::size_t>(index)] = stream->index;
    }
    AVDictionary* options = nullptr;
    if (faststart) av_dict_set(&options, "movflags", "+faststart", 0);
    int status = avformat_write_header(output.get(), &options);
    av_dict_free(&options);
    check(status, "avformat_write_header", pb ? path : out);
    if (after_header) after_header(output.get());
    PacketPtr packet(av_packet_alloc());
    while ((status = av_read_frame(input.get(), packet.get())) >= 0) {
        int target = map[static_cast<std::size_t>(packet->stream_index)];
        if (target < 0) {
            av_packet_unref(packet.get());
            continue;
        }
        av_packet_rescale_ts(packet.get(), input->streams[packet->stream_index]->time_base,
                             output->streams[target]->time_base);
        packet->stream_index = target;
        packet->pos = -1;
        check(av_interleaved_write_frame(output.get(), packet.get()), "av_interleaved_write_frame", path);
    }
    if (status != AVERROR_EOF) check(status, "av_read_frame", path);
    check(av_interleaved_write_frame(output.get(), nullptr), "av_interleaved_write_frame", path);
    if (before_trailer) before_trailer(output.get());
    check(av_write_trailer(output.get()), "av_write_trailer", pb ? path : out);
    if (pb) {
        avio_flush(pb);
        output->pb = nullptr;
    } else {
        avio_closep(&output->pb);
    }
}

// A plain remux into SINK; a failure of the sink's payload callback is rethrown as itself.
void plain_remux(const std::string& path, const Decision& decision, RemuxSink& sink,
                 const std::function<void(AVFormatContext*)>& after_header,
                 const std::function<void(AVFormatContext*)>& before_trailer) {
    auto* buffer = static_cast<unsigned char*>(av_malloc(65536));
    AVIOContext* raw =
        avio_alloc_context(buffer, 65536, 1, &sink, nullptr, &RemuxSink::write, &RemuxSink::seek);
    if (!raw) {
        av_free(buffer);
        throw std::bad_alloc();
    }
    AvioPtr avio(raw);
    try {
        mux_remux(path, decision, avio.get(), "", false, after_header, before_trailer);
    } catch (...) {
        if (sink.error) std::rethrow_exception(sink.error);
        throw;
    }
}
// Output frame rate of a full transcode: the source's RATE (VideoStream::fps_num/fps_den), halved while
// above the profile (60 -> 30); 25 fps when the container gives none.
AVRational output_rate(AVRational rate, const Profile& profile) {
    if (rate.num <= 0 || rate.den <= 0 || av_q2d(rate) > 240) rate = AVRational{25, 1};
    double limit = std::min(profile.max_fps, 30.0);
    while (av_q2d(rate) > limit + 0.01) rate = av_mul_q(rate, AVRational{1, 2});
    if (av_q2d(rate) < 10) rate = AVRational{25, 1};
    return av_inv_q(av_inv_q(rate));  // reduced
}

std::uint64_t round_up_packets(double bytes) {
    return static_cast<std::uint64_t>(std::ceil(bytes / ts_packet)) * ts_packet;
}

// TS bytes of ES elementary-stream bytes in PES packets of `units` access units: payload 184 of 188,
// a PES header (19 bytes: PTS and DTS), an adaptation field (8: PCR or random access) and, averaged, half a
// packet of stuffing at the end of each.
double ts_bytes(double es, double units) {
    return es * ts_packet / 184.0 + units * (27 + 92) * ts_packet / 184.0;
}

// What a segment carries besides its elementary streams: PAT+PMT every 0.1 s and SDT every second (the
// muxer's defaults), and on average 7.5 packets per PID that continue_counters() adds.
double table_bytes(double seconds, std::size_t pids) {
    return (seconds * 11 * 2 + 2 + 7.5 * double(pids + 3)) * ts_packet;
}

// The TS bytes of SECONDS of AAC at KBPS, every track: FFmpeg's mpegts muxer writes each AAC frame as
// its own PES packet (7 bytes of ADTS header, 14 of PES header, 2 of adaptation field) and stuffs the
// rest of its last TS packet, so a frame costs whole packets: at 128 kb/s 341 bytes, 2 packets; at
// 160 kb/s 427, 3 (measured: 188 and 282 packets per 2 s). FFmpeg's AAC encoder keeps each frame close
// to its share (160 kb/s: 406-473 bytes); a frame that spills into one more packet is absorbed by the
// video (full transcodes) or lowers the audio rate of that segment a little (audio-only, see
// produce_segment). Two frames more: a segment's first and last may be partial, segment 0 also
// carries the priming frame.
double audio_ts_bytes(double seconds, int kbps, std::size_t tracks) {
    double frames = seconds * audio_rate / 1024 + 2, frame_bytes = kbps * 1000.0 / 8 * 1024 / audio_rate;
    return frames * std::ceil((frame_bytes + 23) / 184) * ts_packet * double(tracks);
}

// The H.264 bytes x264 makes of SECONDS at KBPS: with its buffer 90% full at the start it spends about
// R x (t + 0.1 s), the IDR frame taking from the buffer (measured 1.04-1.05 x R x 2 s on testsrc2 and
// VP9 sources).
double nominal_video_bytes(double seconds, int kbps) { return kbps * 1000.0 / 8 * (seconds + 0.1); }

// A full transcode's segment budget is the nominal size of SECONDS (FRAMES video frames) at the video and
// audio rates: not a bound but a target, which produce_segment() makes the video fill to within
// full_fill of it (see there).
std::uint64_t transcode_budget(double seconds, double frames, int video_kbps, int audio_kbps,
                               std::size_t tracks) {
    double video = nominal_video_bytes(seconds, video_kbps);
    double bytes = ts_bytes(video, frames) + audio_ts_bytes(seconds, audio_kbps, tracks) +
                   table_bytes(seconds, 1 + tracks);
    return round_up_packets(bytes);
}

}  // namespace

RemuxPlan remux_plan(const std::string& path, const Decision& decision) {
    RemuxSink sink;
    plain_remux(
        path, decision, sink,
        [&](AVFormatContext* output) {
            avio_flush(output->pb);
            sink.payload_start = sink.position;
        },
        [&](AVFormatContext* output) {
            avio_flush(output->pb);
            sink.payload_end = sink.size;  // all packets are out: the trailer writes moov from here
        });
    auto mdat = parse_plain_header(sink.header);
    auto payload_end = static_cast<std::int64_t>(mdat.payload_start + mdat.payload_bytes);
    if (static_cast<std::int64_t>(mdat.payload_start) != sink.payload_start ||
        payload_end < sink.payload_end ||
        payload_end - sink.payload_end > static_cast<std::int64_t>(sink.tail.size()))
        throw DataError(fmt::format("{}: the MP4 muxer's mdat is not where it wrote it", printable(path)));
    RemuxPlan plan;
    plan.head = faststart_head(sink.header, std::string_view(sink.tail).substr(
                                                static_cast<std::size_t>(payload_end - sink.payload_end)));
    plan.payload_start = mdat.payload_start;
    plan.payload_bytes = mdat.payload_bytes;
    return plan;
}

void stream_remux(const std::string& path, const Decision& decision, const RemuxPlan& plan,
                  const std::function<void(std::uint64_t, const std::uint8_t*, std::size_t)>& payload) {
    RemuxSink sink;
    sink.payload_start = static_cast<std::int64_t>(plan.payload_start);
    sink.payload_end = static_cast<std::int64_t>(plan.payload_start + plan.payload_bytes);
    std::uint64_t streamed = 0;
    sink.payload = [&](std::uint64_t offset, const std::uint8_t* data, std::size_t size) {
        // The plain muxer writes mdat front to back: a write anywhere else means it is not the run
        // the plan was made from.
        if (offset != streamed) throw DataError(fmt::format("{}: remux wrote out of order", printable(path)));
        payload(offset, data, size);
        streamed += size;
    };
    plain_remux(path, decision, sink,
                [&](AVFormatContext* output) {
                    avio_flush(output->pb);
                    if (sink.position != sink.payload_start)
                        throw DataError(
                            fmt::format("{}: the remux's header differs from its dry run", printable(path)));
                },
                {});
    // Deterministic muxer: the same header, payload length and moov as the dry run, or the head
    // already served does not describe these bytes (the caller drops them).
    if (streamed != plan.payload_bytes || faststart_head(sink.header, sink.tail) != plan.head)
        throw DataError(fmt::format("{}: the remux differs from its dry run", printable(path)));
}

void remux(const std::string& path, const Decision& decision, const std::string& out) {
    mux_remux(path, decision, nullptr, out, true, {}, {});
}

Layout transcode_layout(const std::string& path, const MediaInfo& media, const Decision& decision,
                        const Profile& profile) {
    Layout layout;
    layout.action = decision.action;
    if (!media.video) throw DataError(fmt::format("{}: no video stream", printable(path)));
    if (decision.action == Action::full_transcode) {
        // The probe's rate, not a second open of the file: that was half of a cold listing's work.
        // (0/0, a rate the container does not give, becomes 25 fps there as it always did.)
        AVRational rate = output_rate(AVRational{media.video->fps_num, media.video->fps_den}, profile);
        layout.fps_num = rate.num;
        layout.fps_den = rate.den;
        double scale = std::min({1.0, 1920.0 / media.video->width, 1080.0 / media.video->height,
                                 double(profile.max_width) / media.video->width,
                                 double(profile.max_height) / media.video->height});
        layout.width = std::max(16, static_cast<int>(std::lround(media.video->width * scale / 2)) * 2);
        layout.height = std::max(16, static_cast<int>(std::lround(media.video->height * scale / 2)) * 2);
        double pixels = double(layout.width) * layout.height / (1920.0 * 1080.0);
        layout.video_kbps = std::max(300, static_cast<int>(profile.video_kbps * pixels));
        // Segments of a whole number of frames, so every frame time is exact.
        auto frames_per_segment = static_cast<std::int64_t>(std::lround(segment_seconds * av_q2d(rate)));
        auto total_frames = static_cast<std::int64_t>(std::ceil(media.duration * av_q2d(rate) - 1e-6));
        std::uint64_t offset = 0;
        for (std::int64_t first = 0, frames = 0; first < total_frames; first += frames) {
            frames = std::min(frames_per_segment, total_frames - first);
            // A tail under a quarter of a segment joins the one before: its IDR frame alone would be
            // most of its budget, or leave most of it as padding.
            if (total_frames - first - frames < frames_per_segment / 4) frames = total_frames - first;
            Segment segment;
            segment.start = double(first) / av_q2d(rate);
            segment.end = double(first + frames) / av_q2d(rate);
            double seconds = segment.end - segment.start;
            segment.bytes = transcode_budget(seconds, double(frames), layout.video_kbps, profile.audio_kbps,
                                             decision.audio_streams.size());
            segment.offset = offset;
            offset += segment.bytes;
            layout.segments.push_back(segment);
        }
        layout.size = offset;
        return layout;
    }
    // Audio-only: the video packets are copied, so segments start at the source's keyframes (the
    // first keyframe at least segment_seconds after the previous start) and their budgets count the
    // actual video packet bytes, read once from the packet index.
    auto input = open_input(path);
    const AVStream* video = input->streams[media.video->index];
    double start_time = input->start_time != AV_NOPTS_VALUE ? double(input->start_time) / AV_TIME_BASE : 0;
    struct Run {
        double start;
        double video_ts_bytes = 0;  // the copied packets as TS packets (ts_bytes, exact per packet)
    };
    std::vector<Run> runs;
    PacketPtr packet(av_packet_alloc());
    int extradata = video->codecpar->extradata_size;
    int status;
    while ((status = av_read_frame(input.get(), packet.get())) >= 0) {
        if (packet->stream_index == media.video->index) {
            std::int64_t ts = packet->pts != AV_NOPTS_VALUE ? packet->pts : packet->dts;
            double t = ts == AV_NOPTS_VALUE ? 0 : ts * av_q2d(video->time_base) - start_time;
            bool key = packet->flags & AV_PKT_FLAG_KEY;
            if (runs.empty() || (key && t >= runs.back().start + segment_seconds - 1e-3))
                runs.push_back(Run{runs.empty() ? 0.0 : t});
            // Each packet is one PES: its header and adaptation field (27 bytes), the access unit delimiter
            // the muxer adds (7), the parameter sets before a keyframe, in whole TS packets.
            double es = packet->size + 34 + (key ? extradata + 64 : 0);
            runs.back().video_ts_bytes += std::ceil(es / 184) * ts_packet;
        }
        av_packet_unref(packet.get());
    }
    if (runs.empty()) throw DataError(fmt::format("{}: no video packets", printable(path)));
    std::uint64_t offset = 0;
    for (std::size_t i = 0; i < runs.size(); ++i) {
        Segment segment;
        segment.start = runs[i].start;
        segment.end =
            i + 1 < runs.size() ? runs[i + 1].start : std::max(media.duration, runs[i].start + 0.001);
        double seconds = segment.end - segment.start;
        auto tracks = decision.audio_streams.size();
        segment.bytes =
            round_up_packets(runs[i].video_ts_bytes + audio_ts_bytes(seconds, profile.audio_kbps, tracks) +
                             table_bytes(seconds, 1 + tracks));
        segment.offset = offset;
        offset += segment.bytes;
        layout.segments.push_back(segment);
    }
    layout.size = offset;
    return layout;
}

namespace {

struct GraphFree {
    void operator()(AVFilterGraph* graph) const noexcept { avfilter_graph_free(&graph); }
};
struct SwrFree {
    void operator()(SwrContext* swr) const noexcept { swr_free(&swr); }
};
struct FifoFree {
    void operator()(AVAudioFifo* fifo) const noexcept { av_audio_fifo_free(fifo); }
};
struct BsfFree {
    void operator()(AVBSFContext* bsf) const noexcept { av_bsf_free(&bsf); }
};

CodecPtr open_decoder(const AVStream* stream, const std::string& path) {
    const AVCodec* codec = avcodec_find_decoder(stream->codecpar->codec_id);
    if (!codec)
        throw DataError(fmt::format("{}: no decoder for {}", printable(path),
                                    avcodec_get_name(stream->codecpar->codec_id)));
    CodecPtr context(avcodec_alloc_context3(codec));
    check(avcodec_parameters_to_context(context.get(), stream->codecpar), "avcodec_parameters_to_context",
          path);
    context->pkt_timebase = stream->time_base;
    context->thread_count = 2;
    check(avcodec_open2(context.get(), codec, nullptr), "avcodec_open2", path);
    return context;
}

// One audio track of a segment: its decoder, resampler and AAC encoder, and where it stands.
struct AudioTrack {
    int index = -1;  // the source stream
    CodecPtr decoder, encoder;
    std::unique_ptr<SwrContext, SwrFree> swr;
    std::unique_ptr<AVAudioFifo, FifoFree> fifo;
    AVStream* out = nullptr;
    std::int64_t written = 0;    // samples sent to the encoder, from audio_feed_first_
    std::int64_t position = -1;  // the next decoded sample's time, in samples (-1: none yet)
    std::int64_t packets = 0;    // packets the encoder made
    bool done = false;
};

// One segment's production state; everything is created fresh per segment (see the file comment).
class SegmentJob {
public:
    SegmentJob(const std::string& path, const MediaInfo& media, const Decision& decision,
               const Profile& profile, const Layout& layout, const Segment& segment, double rate_scale)
        : path_(path),
          media_(media),
          decision_(decision),
          profile_(profile),
          layout_(layout),
          segment_(segment),
          rate_scale_(rate_scale) {}

    // The H.264 bytes the encoder made (after run()).
    std::uint64_t video_bytes() const { return video_bytes_; }

    std::string run() {
        input_ = open_input(path_);
        start_time_ = input_->start_time != AV_NOPTS_VALUE ? double(input_->start_time) / AV_TIME_BASE : 0;
        copy_video_ = decision_.action == Action::audio_transcode;
        video_in_ = input_->streams[media_.video->index];
        open_output();
        if (!copy_video_) open_video();
        open_audio();
        // Seek early: what comes before the segment primes the decoders and the audio encoder (see
        // open_audio) and is dropped; copied video starts at the segment's own keyframe anyway.
        double target = segment_.start + start_time_ - (copy_video_ ? 2.0 : 1.5);
        if (segment_.start > 0)
            av_seek_frame(input_.get(), -1, static_cast<std::int64_t>(std::max(0.0, target) * AV_TIME_BASE),
                          AVSEEK_FLAG_BACKWARD);
        demux();
        check(av_write_trailer(output_.get()), "av_write_trailer", path_);
        avio_flush(avio_.get());
        return std::move(data_);
    }

private:
    void open_output() {
        AVFormatContext* raw = nullptr;
        check(avformat_alloc_output_context2(&raw, nullptr, "mpegts", nullptr),
              "avformat_alloc_output_context2", path_);
        output_.reset(raw);
        sink_.data = &data_;
        avio_ = sink_avio(sink_, false);
        output_->pb = avio_.get();
        output_->flags |= AVFMT_FLAG_CUSTOM_IO;
        // Segments are muxed separately but play as one stream: timestamps must not be re-based.
        output_->avoid_negative_ts = AVFMT_AVOID_NEG_TS_DISABLED;
    }

    void open_video() {
        decoder_ = open_decoder(video_in_, path_);
        const AVCodec* codec = avcodec_find_encoder_by_name("libx264");
        if (!codec) codec = avcodec_find_encoder(AV_CODEC_ID_H264);
        if (!codec) throw std::runtime_error("no H.264 encoder in this FFmpeg build");
        encoder_.reset(avcodec_alloc_context3(codec));
        auto* e = encoder_.get();
        rate_ = AVRational{layout_.fps_num, layout_.fps_den};
        e->width = layout_.width;
        e->height = layout_.height;
        e->pix_fmt = AV_PIX_FMT_YUV420P;
        e->time_base = av_inv_q(rate_);
        e->framerate = rate_;
        e->sample_aspect_ratio = AVRational{1, 1};
        frames_ = static_cast<std::int64_t>(std::lround((segment_.end - segment_.start) * av_q2d(rate_)));
        first_frame_ = static_cast<std::int64_t>(std::lround(segment_.start * av_q2d(rate_)));
        e->gop_size =
            static_cast<int>(std::max<std::int64_t>(frames_, std::lround(segment_seconds * av_q2d(rate_))));
        e->keyint_min = e->gop_size;
        // No B-frames: DTS == PTS, so decode timestamps stay monotonic across independent segments.
        e->max_b_frames = 0;
        // VBV (maxrate = bufsize = the rate; x264 starts the buffer 90% full): the IDR frame that
        // opens each segment spends what the buffer holds, and the rate stays steady within the segment.
        // The segment's total is held to its budget by produce_segment() re-encoding at a corrected rate.
        // (Without VBV, x264's average-rate control starts each 2 s encode from its default QP: the
        // IDR frames came out at 37-39 dB PSNR instead of 42-52, the whole clip 0.75 dB worse.)
        auto bits = static_cast<std::int64_t>(layout_.video_kbps * 1000.0 * rate_scale_);
        e->bit_rate = bits;
        e->rc_max_rate = bits;
        e->rc_buffer_size = static_cast<int>(bits);
        // One thread: with VBV, x264 makes different bytes from run to run with 2 threads (frame or
        // slice threads: 3 runs of the same 4 segments gave 3 different outputs; its VBV planning reads
        // the sizes of frames other threads are still encoding), and a segment made again must have the
        // same bytes. Without VBV it is repeatable with threads, but see above. The worker makes two
        // segments at once instead (segments.cpp).
        e->thread_count = 1;
        av_opt_set(e->priv_data, "preset", profile_.preset.c_str(), 0);
        av_opt_set(e->priv_data, "profile", "high", 0);
        av_opt_set(e->priv_data, "level", "4.1", 0);
        av_opt_set(e->priv_data, "x264-params", "scenecut=0:open-gop=0:repeat-headers=1:nal-hrd=none", 0);
        check(avcodec_open2(e, codec, nullptr), "avcodec_open2 libx264", path_);
        video_out_ = avformat_new_stream(output_.get(), nullptr);
        check(avcodec_parameters_from_context(video_out_->codecpar, e), "avcodec_parameters_from_context",
              path_);
        video_out_->time_base = AVRational{1, 90000};

        // Deinterlace (yadif, only frames flagged interlaced), scale and convert to 8-bit 4:2:0.
        graph_.reset(avfilter_graph_alloc());
        graph_->nb_threads = 1;
        auto args =
            fmt::format("video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}", decoder_->width,
                        decoder_->height, static_cast<int>(decoder_->pix_fmt), video_in_->time_base.num,
                        video_in_->time_base.den, std::max(1, decoder_->sample_aspect_ratio.num),
                        std::max(1, decoder_->sample_aspect_ratio.den));
        check(avfilter_graph_create_filter(&source_, avfilter_get_by_name("buffer"), "in", args.c_str(),
                                           nullptr, graph_.get()),
              "buffer", path_);
        check(avfilter_graph_create_filter(&sink_filter_, avfilter_get_by_name("buffersink"), "out", nullptr,
                                           nullptr, graph_.get()),
              "buffersink", path_);
        AVFilterInOut* outputs = avfilter_inout_alloc();
        AVFilterInOut* inputs = avfilter_inout_alloc();
        outputs->name = av_strdup("in");
        outputs->filter_ctx = source_;
        inputs->name = av_strdup("out");
        inputs->filter_ctx = sink_filter_;
        auto chain = fmt::format("{}scale={}:{}:flags=bicubic,format=yuv420p,setsar=1",
                                 media_.video->interlaced ? "yadif=deint=interlaced," : "", layout_.width,
                                 layout_.height);
        int status = avfilter_graph_parse_ptr(graph_.get(), chain.c_str(), &inputs, &outputs, nullptr);
        avfilter_inout_free(&inputs);
        avfilter_inout_free(&outputs);
        check(status, "avfilter_graph_parse_ptr", chain);
        check(avfilter_graph_config(graph_.get(), nullptr), "avfilter_graph_config", chain);
    }

    // One encoder per audio track (all AAC-LC stereo 48 kHz), in the decision's order, each
    // keeping its source's language; the first is the default track.
    void open_audio() {
        // Audio segments sit on a global grid of 1024-sample AAC frames, so consecutive segments'
        // packets tile the timeline with neither gap nor overlap.
        auto grid = [](double seconds) { return std::llround(seconds * audio_rate) / 1024 * 1024; };
        bool last = &segment_ == &layout_.segments.back();
        audio_first_ = grid(segment_.start);
        audio_end_ = last ? std::llround(segment_.end * audio_rate) : grid(segment_.end);
        // Gapless: an AAC packet is an MDCT over 2048 samples, and the decoder overlap-adds each
        // packet's first half onto the previous packet's second half; the aliasing of the two
        // cancels only if both packets were encoded from the same signal. So the encoder is fed
        // from audio_preroll frames before the segment to audio_postroll frames after it, and only
        // the packets of [audio_first_, audio_end_) are kept: at a boundary the decoder joins two
        // packets made from the same signal, as in one encode. The pre-roll is long because
        // FFmpeg's AAC encoder adapts its quantizer slowly: with 8 frames the first packets after a
        // boundary were still coarser (a chirp's residual 17x its surroundings), with 32 one
        // boundary of three was 7x; with 64 the kept packets decode like a continuous encode's.
        // Grid-aligned, so the segment's first kept packet is the same frame a continuous encode
        // would make there, and deterministic (same input, same encoder), so a segment made again
        // has the same bytes.
        audio_feed_first_ = std::max<std::int64_t>(0, audio_first_ - audio_preroll * 1024);
        audio_feed_end_ = last ? audio_end_ : audio_end_ + audio_postroll * 1024;
        for (int index : decision_.audio_streams) {
            auto track = std::make_unique<AudioTrack>();
            track->index = index;
            open_track(*track, tracks_.empty());
            tracks_.push_back(std::move(track));
        }
    }

    void open_track(AudioTrack& track, bool first) {
        const AVStream* stream = input_->streams[track.index];
        track.decoder = open_decoder(stream, path_);
        const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_AAC);
        track.encoder.reset(avcodec_alloc_context3(codec));
        auto* e = track.encoder.get();
        e->sample_rate = audio_rate;
        av_channel_layout_default(&e->ch_layout, 2);
        e->sample_fmt = AV_SAMPLE_FMT_FLTP;
        // An audio-only transcode's only rate to lower if a segment overshoots (see produce_segment).
        e->bit_rate =
            static_cast<std::int64_t>(profile_.audio_kbps * 1000.0 * (copy_video_ ? rate_scale_ : 1.0));
        e->time_base = AVRational{1, audio_rate};
        e->profile = FF_PROFILE_AAC_LOW;
        check(avcodec_open2(e, codec, nullptr), "avcodec_open2 aac", path_);
        track.out = avformat_new_stream(output_.get(), nullptr);
        check(avcodec_parameters_from_context(track.out->codecpar, e), "avcodec_parameters_from_context",
              path_);
        track.out->time_base = AVRational{1, 90000};
        copy_tags(stream, track.out, first);
        SwrContext* swr = nullptr;
        AVChannelLayout stereo{};
        av_channel_layout_default(&stereo, 2);
        // Zeroed: av_channel_layout_copy() first uninits its destination, and an uninitialised one
        // whose stack garbage read as AV_CHANNEL_ORDER_CUSTOM had its garbage u.map freed (heap
        // corruption in the daemon that depended on what the stack held before; issue 19).
        AVChannelLayout in_layout{};
        if (track.decoder->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC)
            av_channel_layout_default(&in_layout, track.decoder->ch_layout.nb_channels);
        else
            av_channel_layout_copy(&in_layout, &track.decoder->ch_layout);
        check(swr_alloc_set_opts2(&swr, &stereo, AV_SAMPLE_FMT_FLTP, audio_rate, &in_layout,
                                  track.decoder->sample_fmt, track.decoder->sample_rate, 0, nullptr),
              "swr_alloc_set_opts2", path_);
        av_channel_layout_uninit(&in_layout);
        track.swr.reset(swr);
        check(swr_init(swr), "swr_init", path_);
        track.fifo.reset(av_audio_fifo_alloc(AV_SAMPLE_FMT_FLTP, 2, 4096));
    }

    void write_header_once() {
        if (header_written_) return;
        AVDictionary* options = nullptr;
        av_dict_set(&options, "mpegts_flags", "+resend_headers", 0);
        int status = avformat_write_header(output_.get(), &options);
        av_dict_free(&options);
        check(status, "avformat_write_header", path_);
        header_written_ = true;
    }

    void demux() {
        if (copy_video_) {
            video_out_ = avformat_new_stream(output_.get(), nullptr);
            check(avcodec_parameters_copy(video_out_->codecpar, video_in_->codecpar),
                  "avcodec_parameters_copy", path_);
            video_out_->codecpar->codec_tag = 0;
            video_out_->time_base = AVRational{1, 90000};
            const char* filter = nullptr;
            const auto* par = video_in_->codecpar;
            if (par->codec_id == AV_CODEC_ID_H264 && par->extradata_size > 0 && par->extradata[0] == 1)
                filter = "h264_mp4toannexb";
            if (par->codec_id == AV_CODEC_ID_HEVC && par->extradata_size > 0 && par->extradata[0] == 1)
                filter = "hevc_mp4toannexb";
            if (filter) {
                AVBSFContext* bsf = nullptr;
                check(av_bsf_alloc(av_bsf_get_by_name(filter), &bsf), "av_bsf_alloc", filter);
                bsf_.reset(bsf);
                check(avcodec_parameters_copy(bsf->par_in, video_in_->codecpar), "avcodec_parameters_copy",
                      filter);
                bsf->time_base_in = video_in_->time_base;
                check(av_bsf_init(bsf), "av_bsf_init", filter);
            }
            // An audio stream was added before the video one in open_audio(); TS does not care.
        }
        write_header_once();
        PacketPtr packet(av_packet_alloc());
        bool video_done = false;
        std::size_t audio_left = tracks_.size();
        bool started_copy = false;
        int status;
        while (!(video_done && audio_left == 0) &&
               (status = av_read_frame(input_.get(), packet.get())) >= 0) {
            if (packet->stream_index == media_.video->index && !video_done) {
                if (copy_video_) video_done = copy_packet(packet.get(), started_copy);
                else
                    video_done = decode_video(packet.get());
            } else {
                for (auto& track : tracks_)
                    if (packet->stream_index == track->index && !track->done &&
                        (track->done = decode_audio(*track, packet.get())))
                        --audio_left;
            }
            av_packet_unref(packet.get());
        }
        if (!copy_video_ && !video_done) decode_video(nullptr);
        if (!copy_video_) finish_video();
        for (auto& track : tracks_) finish_audio(*track);
    }

    // Copies the packets of [segment start keyframe, next segment's keyframe); true when done.
    bool copy_packet(AVPacket* packet, bool& started) {
        std::int64_t ts = packet->pts != AV_NOPTS_VALUE ? packet->pts : packet->dts;
        double t = ts == AV_NOPTS_VALUE ? 0 : ts * av_q2d(video_in_->time_base) - start_time_;
        bool key = packet->flags & AV_PKT_FLAG_KEY;
        if (!started) {
            if (!(key && (segment_.start == 0 || t >= segment_.start - 1e-3))) return false;
            started = true;
        } else if (key && t >= segment_.end - 1e-3) {
            return true;
        }
        auto offset = static_cast<std::int64_t>(std::llround(start_time_ / av_q2d(video_in_->time_base)));
        if (packet->pts != AV_NOPTS_VALUE) packet->pts -= offset;
        if (packet->dts != AV_NOPTS_VALUE) packet->dts -= offset;
        auto write = [&](AVPacket* p) {
            av_packet_rescale_ts(p, video_in_->time_base, video_out_->time_base);
            p->stream_index = video_out_->index;
            p->pos = -1;
            check(av_interleaved_write_frame(output_.get(), p), "av_interleaved_write_frame", path_);
        };
        if (!bsf_) {
            write(packet);
            return false;
        }
        check(av_bsf_send_packet(bsf_.get(), packet), "av_bsf_send_packet", path_);
        PacketPtr filtered(av_packet_alloc());
        while (av_bsf_receive_packet(bsf_.get(), filtered.get()) >= 0) write(filtered.get());
        return false;
    }

    // Decodes, filters and feeds the encoder; true once the segment's frames are all covered.
    bool decode_video(const AVPacket* packet) {
        int status = avcodec_send_packet(decoder_.get(), packet);
        if (status < 0 && status != AVERROR_EOF) return false;  // a damaged packet: skip it, keep going
        FramePtr frame(av_frame_alloc());
        while (avcodec_receive_frame(decoder_.get(), frame.get()) >= 0) {
            std::int64_t ts = frame->best_effort_timestamp;
            double t =
                ts == AV_NOPTS_VALUE ? last_video_time_ : ts * av_q2d(video_in_->time_base) - start_time_;
            last_video_time_ = t;
            frame->pts = ts;
            if (t < segment_.start - 1.0) {
                av_frame_unref(frame.get());
                continue;
            }
            if (av_buffersrc_add_frame(source_, frame.get()) < 0) {
                av_frame_unref(frame.get());
                continue;
            }
            drain_filter();
            if (t >= segment_.end + 0.5) return true;
        }
        if (!packet) {
            if (av_buffersrc_add_frame(source_, nullptr) < 0) return false;
            drain_filter();
        }
        return false;
    }

    void drain_filter() {
        FramePtr filtered(av_frame_alloc());
        while (av_buffersink_get_frame(sink_filter_, filtered.get()) >= 0) {
            if (!held_)
                held_.reset(
                    av_frame_clone(filtered.get()));  // the first picture also covers any gap before it
            double t = filtered->pts == AV_NOPTS_VALUE
                           ? last_video_time_
                           : filtered->pts * av_q2d(av_buffersink_get_time_base(sink_filter_)) - start_time_;
            // Constant frame rate: output frame n shows the latest source frame at or before its time.
            while (next_ < frames_ && double(first_frame_ + next_) / av_q2d(rate_) + 0.5 / av_q2d(rate_) < t)
                emit(held_.get());
            held_.reset(av_frame_clone(filtered.get()));
            av_frame_unref(filtered.get());
        }
    }

    void emit(AVFrame* frame) {
        if (!frame) {
            ++next_;  // nothing decoded yet for this time: the frame is skipped (the source starts later)
            return;
        }
        FramePtr copy(av_frame_clone(frame));
        copy->pts = first_frame_ + next_;
        copy->pict_type = next_ == 0 ? AV_PICTURE_TYPE_I : AV_PICTURE_TYPE_NONE;
        copy->key_frame = next_ == 0;
        ++next_;
        encode_video(copy.get());
    }

    void finish_video() {
        while (next_ < frames_ && held_) emit(held_.get());
        encode_video(nullptr);
    }

    void encode_video(const AVFrame* frame) {
        check(avcodec_send_frame(encoder_.get(), frame), "avcodec_send_frame libx264", path_);
        PacketPtr packet(av_packet_alloc());
        while (avcodec_receive_packet(encoder_.get(), packet.get()) >= 0) {
            av_packet_rescale_ts(packet.get(), encoder_->time_base, video_out_->time_base);
            video_bytes_ += static_cast<std::uint64_t>(packet->size);
            packet->stream_index = video_out_->index;
            check(av_interleaved_write_frame(output_.get(), packet.get()), "av_interleaved_write_frame",
                  path_);
        }
    }

    bool decode_audio(AudioTrack& track, const AVPacket* packet) {
        if (avcodec_send_packet(track.decoder.get(), packet) < 0) return false;
        FramePtr frame(av_frame_alloc());
        const AVStream* stream = input_->streams[track.index];
        while (avcodec_receive_frame(track.decoder.get(), frame.get()) >= 0) {
            if (track.position < 0) {
                std::int64_t ts = frame->best_effort_timestamp;
                double t =
                    ts == AV_NOPTS_VALUE ? segment_.start : ts * av_q2d(stream->time_base) - start_time_;
                track.position = std::llround(t * audio_rate);
            }
            int capacity = swr_get_out_samples(track.swr.get(), frame->nb_samples);
            FramePtr converted(av_frame_alloc());
            converted->format = AV_SAMPLE_FMT_FLTP;
            av_channel_layout_default(&converted->ch_layout, 2);
            converted->sample_rate = audio_rate;
            converted->nb_samples = capacity;
            check(av_frame_get_buffer(converted.get(), 0), "av_frame_get_buffer", path_);
            int got = swr_convert(track.swr.get(), converted->data, capacity,
                                  const_cast<const std::uint8_t**>(frame->extended_data), frame->nb_samples);
            av_frame_unref(frame.get());
            if (got <= 0) continue;
            take_audio(track, converted.get(), got);
            if (track.position >= audio_feed_end_) return true;
        }
        return false;
    }

    // Places converted samples on the encoder's timeline [audio_feed_first_, audio_feed_end_):
    // before it dropped, after it ignored, a gap in the source filled with silence.
    void take_audio(AudioTrack& track, AVFrame* converted, int count) {
        std::int64_t start = track.position;
        track.position += count;
        std::int64_t skip = std::clamp<std::int64_t>(audio_feed_first_ - start, 0, count);
        std::int64_t fifo_end = audio_feed_first_ + track.written + av_audio_fifo_size(track.fifo.get());
        if (start + skip > fifo_end && fifo_end >= audio_feed_first_)
            pad_silence(track, start + skip - fifo_end);
        std::int64_t end = std::min<std::int64_t>(count, audio_feed_end_ - start);
        if (end <= skip) return;
        void* planes[2] = {converted->data[0] + skip * 4, converted->data[1] + skip * 4};
        av_audio_fifo_write(track.fifo.get(), planes, static_cast<int>(end - skip));
        encode_audio_frames(track, false);
    }

    void pad_silence(AudioTrack& track, std::int64_t count) {
        std::vector<float> zeros(
            static_cast<std::size_t>(std::min<std::int64_t>(count, audio_feed_end_ - audio_feed_first_)),
            0.0f);
        void* planes[2] = {zeros.data(), zeros.data()};
        av_audio_fifo_write(track.fifo.get(), planes, static_cast<int>(zeros.size()));
    }

    void encode_audio_frames(AudioTrack& track, bool flush) {
        const int frame_size = track.encoder->frame_size;
        auto* fifo = track.fifo.get();
        while (av_audio_fifo_size(fifo) >= frame_size || (flush && av_audio_fifo_size(fifo) > 0)) {
            int count = std::min(frame_size, av_audio_fifo_size(fifo));
            FramePtr frame(av_frame_alloc());
            frame->format = AV_SAMPLE_FMT_FLTP;
            av_channel_layout_default(&frame->ch_layout, 2);
            frame->sample_rate = audio_rate;
            frame->nb_samples = count;
            check(av_frame_get_buffer(frame.get(), 0), "av_frame_get_buffer", path_);
            av_audio_fifo_read(fifo, reinterpret_cast<void**>(frame->data), count);
            frame->pts = audio_feed_first_ + track.written;
            track.written += count;
            send_audio(track, frame.get());
        }
        if (flush) send_audio(track, nullptr);
    }

    void send_audio(AudioTrack& track, const AVFrame* frame) {
        check(avcodec_send_frame(track.encoder.get(), frame), "avcodec_send_frame aac", path_);
        PacketPtr packet(av_packet_alloc());
        while (avcodec_receive_packet(track.encoder.get(), packet.get()) >= 0) {
            // The encoder's first packet is its priming frame (1024 samples of delay), so packet i
            // carries time feed_first + (i - 1) * 1024. Kept: the packets of [first, end), and in
            // segment 0 the priming packet too (the decoder needs it for the first samples).
            auto index = track.packets++;
            std::int64_t pts = audio_feed_first_ + (index - 1) * 1024;
            if (pts < (audio_first_ == 0 ? -1024 : audio_first_) || pts >= audio_end_) {
                av_packet_unref(packet.get());
                continue;
            }
            packet->pts = packet->dts = pts;
            packet->duration = 1024;
            av_packet_rescale_ts(packet.get(), track.encoder->time_base, track.out->time_base);
            packet->stream_index = track.out->index;
            check(av_interleaved_write_frame(output_.get(), packet.get()), "av_interleaved_write_frame",
                  path_);
        }
    }

    void finish_audio(AudioTrack& track) {
        // A source whose audio ends early: silence to the segment's end keeps A/V lengths equal.
        std::int64_t have = audio_feed_first_ + track.written + av_audio_fifo_size(track.fifo.get());
        if (have < audio_feed_end_) pad_silence(track, audio_feed_end_ - have);
        encode_audio_frames(track, true);
    }

    const std::string& path_;
    const MediaInfo& media_;
    const Decision& decision_;
    const Profile& profile_;
    const Layout& layout_;
    const Segment& segment_;
    double rate_scale_;
    std::uint64_t video_bytes_ = 0;
    InputPtr input_;
    OutputPtr output_;
    Sink sink_;
    std::string data_;
    AvioPtr avio_;
    bool header_written_ = false;
    bool copy_video_ = false;
    double start_time_ = 0;
    const AVStream* video_in_ = nullptr;
    AVStream* video_out_ = nullptr;
    CodecPtr decoder_, encoder_;
    std::vector<std::unique_ptr<AudioTrack>> tracks_;
    std::unique_ptr<AVFilterGraph, GraphFree> graph_;
    AVFilterContext* source_ = nullptr;
    AVFilterContext* sink_filter_ = nullptr;
    std::unique_ptr<AVBSFContext, BsfFree> bsf_;
    AVRational rate_{25, 1};
    std::int64_t frames_ = 0, first_frame_ = 0, next_ = 0;
    FramePtr held_;
    double last_video_time_ = 0;
    std::int64_t audio_first_ = 0, audio_end_ = 0;
    std::int64_t audio_feed_first_ = 0, audio_feed_end_ = 0;
};

}  // namespace

// A full transcode's segment is accepted once its padding is at most this share of its budget.
constexpr double full_fill = 0.965;
// ... and re-encoded aiming at this share (between full_fill and 1: room for the encoder's error).
constexpr double fill_target = 0.985;
constexpr int max_passes = 4;

std::string produce_segment(const std::string& path, const MediaInfo& media, const Decision& decision,
                            const Profile& profile, const Layout& layout, std::size_t k) {
    const Segment& segment = layout.segments.at(k);
    auto make = [&](double scale, std::uint64_t* video_bytes) {
        SegmentJob job(path, media, decision, profile, layout, segment, scale);
        std::string data = job.run();
        if (data.size() % ts_packet != 0)
            throw std::runtime_error(fmt::format("{}: MPEG-TS output not packet aligned", printable(path)));
        continue_counters(data);  // counters run on from the segment before (continuity.hpp)
        if (video_bytes) *video_bytes = job.video_bytes();
        return data;
    };
    std::optional<std::string> best;  // the largest encode that fits
    if (decision.action == Action::full_transcode) {
        // The budget is the nominal size (transcode_budget), so the video rate is corrected until the
        // segment fills it: encode, measure, scale the rate by what the video should have been, at
        // most max_passes times; the largest result that fits is kept. Every step depends only on
        // the results before it, so the segment is still a pure function of (source, profile, k).
        // The first pass aims at the middle of the accepted window [full_fill, 1], not at its top:
        // at the nominal rate x264 lands within about 3% either side of the budget, so aiming at
        // the top sent half the segments over it and through a second pass (11 of 15 on
        // bench/tvfs.sh's movie).
        double video_share =  // as TS bytes
            nominal_video_bytes(segment.end - segment.start, layout.video_kbps) * ts_packet / 184.0;
        double scale =
            std::clamp(1.0 - (1.0 - (full_fill + 1) / 2) * double(segment.bytes) / video_share, 0.5, 1.0);
        for (int pass = 0; pass < max_passes; ++pass) {
            std::uint64_t video = 0;
            std::string data = make(scale, &video);
            auto made = double(data.size());
            if (data.size() <= segment.bytes && (!best || data.size() > best->size())) best = std::move(data);
            if (best && best->size() >= full_fill * double(segment.bytes)) break;
            if (video == 0) break;
            // The bytes the video should change by, as elementary-stream bytes.
            double wanted = double(video) + (fill_target * double(segment.bytes) - made) * 184 / ts_packet;
            double next =
                std::clamp(scale * std::max(wanted, 0.1 * double(video)) / double(video), 0.05, 4.0);
            if (std::abs(next - scale) < 0.002 * scale) break;
            scale = next;
        }
    }
    // The safety net: lower rates until it fits. An audio-only transcode's only rate is its audio's
    // (the video is copied), lowered in small steps: its budget holds the nominal rate plus 3%.
    static const std::vector<double> full_scales = {0.7, 0.45, 0.25},
                                     audio_scales = {1.0, 0.95, 0.9, 0.8, 0.6, 0.4};
    for (double scale : decision.action == Action::full_transcode ? full_scales : audio_scales) {
        if (best) break;
        std::string data = make(scale, nullptr);
        if (data.size() <= segment.bytes) best = std::move(data);
    }
    if (!best)
        throw std::runtime_error(
            fmt::format("{}: segment {} does not fit its {} byte budget", printable(path), k, segment.bytes));
    // Null packets: PID 0x1FFF, payload only, continuity counter ignored by every demuxer.
    static const std::string null_packet = [] {
        std::string packet(ts_packet, '\xff');
        packet[0] = 0x47;
        packet[1] = 0x1f;
        packet[2] = '\xff';
        packet[3] = 0x10;
        return packet;
    }();
    best->reserve(segment.bytes);
    while (best->size() < segment.bytes) *best += null_packet;
    return std::move(*best);
}

std::string subtitle_srt(const std::string& path, int index, bool rebase) {
    auto input = open_input(path);
    if (index < 0 || index >= static_cast<int>(input->nb_streams) ||
        input->streams[index]->codecpar->codec_type != AVMEDIA_TYPE_SUBTITLE)
        throw DataError(fmt::format("{}: stream {} is not a subtitle stream", printable(path), index));
    for (unsigned i = 0; i < input->nb_streams; ++i)
        if (static_cast<int>(i) != index) input->streams[i]->discard = AVDISCARD_ALL;
    const AVStream* stream = input->streams[index];
    CodecPtr decoder = open_decoder(stream, path);
    const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_SUBRIP);
    if (!codec) throw std::runtime_error("no SubRip encoder in this FFmpeg build");
    CodecPtr encoder(avcodec_alloc_context3(codec));
    encoder->time_base = AVRational{1, 1000};
    if (decoder->subtitle_header_size > 0) {  // the ASS styles the events refer to
        encoder->subtitle_header = static_cast<std::uint8_t*>(av_mallocz(decoder->subtitle_header_size + 1));
        if (!encoder->subtitle_header) throw std::bad_alloc();
        std::memcpy(encoder->subtitle_header, decoder->subtitle_header, decoder->subtitle_header_size);
        encoder->subtitle_header_size = decoder->subtitle_header_size;
    }
    check(avcodec_open2(encoder.get(), codec, nullptr), "avcodec_open2 srt", path);
    AVFormatContext* raw = nullptr;
    check(avformat_alloc_output_context2(&raw, nullptr, "srt", nullptr), "avformat_alloc_output_context2",
          path);
    OutputPtr output(raw);
    std::string data;
    Sink sink;
    sink.data = &data;
    AvioPtr avio = sink_avio(sink, false);
    output->pb = avio.get();
    output->flags |= AVFMT_FLAG_CUSTOM_IO;
    AVStream* out = avformat_new_stream(output.get(), nullptr);
    check(avcodec_parameters_from_context(out->codecpar, encoder.get()), "avcodec_parameters_from_context",
          path);
    out->time_base = encoder->time_base;
    check(avformat_write_header(output.get(), nullptr), "avformat_write_header srt", path);
    std::int64_t start = rebase && input->start_time != AV_NOPTS_VALUE ? input->start_time : 0;
    std::vector<std::uint8_t> text(1 << 20);
    PacketPtr packet(av_packet_alloc());
    int status;
    while ((status = av_read_frame(input.get(), packet.get())) >= 0) {
        if (packet->stream_index != index) {
            av_packet_unref(packet.get());
            continue;
        }
        AVSubtitle subtitle{};
        int got = 0;
        int used = avcodec_decode_subtitle2(decoder.get(), &subtitle, &got, packet.get());
        av_packet_unref(packet.get());
        if (used < 0 || !got) continue;  // a damaged event: skipped, as the decoder would
        std::unique_ptr<AVSubtitle, void (*)(AVSubtitle*)> owned(&subtitle, avsubtitle_free);
        if (subtitle.num_rects == 0 || subtitle.pts == AV_NOPTS_VALUE) continue;
        // As ffmpeg does: the display offsets folded into the time, a duration from the end.
        std::int64_t at = subtitle.pts +
                          av_rescale_q(subtitle.start_display_time, AVRational{1, 1000}, AV_TIME_BASE_Q) -
                          start;
        std::int64_t length = subtitle.end_display_time > subtitle.start_display_time
                                  ? subtitle.end_display_time - subtitle.start_display_time
                                  : 0;
        subtitle.end_display_time = static_cast<std::uint32_t>(length);
        subtitle.start_display_time = 0;
        int size =
            avcodec_encode_subtitle(encoder.get(), text.data(), static_cast<int>(text.size()), &subtitle);
        if (size <= 0) continue;  // nothing SubRip can say (an empty or a drawing-only event)
        PacketPtr event(av_packet_alloc());
        check(av_new_packet(event.get(), size), "av_new_packet", path);
        std::memcpy(event->data, text.data(), static_cast<std::size_t>(size));
        event->pts = event->dts = av_rescale_q(std::max<std::int64_t>(0, at), AV_TIME_BASE_Q, out->time_base);
        event->duration = av_rescale_q(length, AVRational{1, 1000}, out->time_base);
        event->stream_index = out->index;
        check(av_write_frame(output.get(), event.get()), "av_write_frame srt", path);
    }
    if (status != AVERROR_EOF) check(status, "av_read_frame", path);
    check(av_write_trailer(output.get()), "av_write_trailer srt", path);
    avio_flush(avio.get());
    output->pb = nullptr;
    return data;
}

}  // namespace ktricks::tvfs
