// Probing with libavformat: streams decide, never the file name.
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

extern "C" {
#include <libavutil/pixdesc.h>
}

#include <cstring>

#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "tvfs/av.hpp"

namespace ktricks::tvfs {

std::string av_message(int error) {
    char text[AV_ERROR_MAX_STRING_SIZE] = {};
    av_strerror(error, text, sizeof(text));
    return text;
}

InputPtr open_input(const std::string& path) {
    AVFormatContext* raw = nullptr;
    int status = avformat_open_input(&raw, path.c_str(), nullptr, nullptr);
    // A missing or unreadable file is the system's error; anything else is the bytes' fault.
    if (status == AVERROR(ENOENT) || status == AVERROR(EACCES) || status == AVERROR(EISDIR) ||
        status == AVERROR(EPERM))
        throw_error(AVUNERROR(status), "open", path);
    if (status < 0) throw DataError(fmt::format("{}: {}", printable(path), av_message(status)));
    InputPtr input(raw);
    status = avformat_find_stream_info(input.get(), nullptr);
    if (status < 0) throw DataError(fmt::format("{}: {}", printable(path), av_message(status)));
    return input;
}

namespace {

// MP4 top-level boxes in order: is moov before mdat? A TV (and minidlna) reading over HTTP needs it first.
bool moov_first(const std::string& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return true;
    std::uint64_t offset = 0;
    for (int boxes = 0; boxes < 64; ++boxes) {
        unsigned char header[16];
        if (::pread(fd.get(), header, sizeof(header), static_cast<off_t>(offset)) < 8) return true;
        std::uint64_t size =
            (std::uint64_t{header[0]} << 24) | (header[1] << 16) | (header[2] << 8) | header[3];
        if (size == 1) {
            size = 0;
            for (int i = 8; i < 16; ++i) size = (size << 8) | header[i];
        }
        if (std::memcmp(header + 4, "moov", 4) == 0) return true;
        if (std::memcmp(header + 4, "mdat", 4) == 0) return false;
        if (size < 8) return true;
        offset += size;
    }
    return true;
}

// The stream's ISO 639-2 language tag, "" if untagged ("und" is untagged too).
std::string language(const AVStream* stream) {
    const AVDictionaryEntry* tag = av_dict_get(stream->metadata, "language", nullptr, 0);
    if (!tag || !tag->value || std::strcmp(tag->value, "und") == 0) return "";
    std::string value = tag->value;
    if (value.size() > 8) value.resize(8);  // a tag is a short code; keep --explain and the cache sane
    return value;
}

}  // namespace

MediaInfo probe(const std::string& path) {
    static const bool quiet = [] {
        av_log_set_level(AV_LOG_FATAL);  // a damaged file is reported once, by us, not by each demuxer
        return true;
    }();
    (void)quiet;
    auto input = open_input(path);
    MediaInfo media;
    media.container = input->iformat->name;
    if (input->duration > 0) media.duration = static_cast<double>(input->duration) / AV_TIME_BASE;
    for (unsigned i = 0; i < input->nb_streams; ++i) {
        const AVStream* stream = input->streams[i];
        const AVCodecParameters* par = stream->codecpar;
        if (stream->disposition & AV_DISPOSITION_ATTACHED_PIC) continue;
        const char* codec = avcodec_get_name(par->codec_id);
        const char* profile = avcodec_profile_name(par->codec_id, par->profile);
        if (par->codec_type == AVMEDIA_TYPE_VIDEO && !media.video) {
            VideoStream v;
            v.index = static_cast<int>(i);
            v.codec = codec;
            v.profile = profile ? profile : "";
            v.level = par->level > 0 ? par->level : 0;
            if (par->codec_id == AV_CODEC_ID_HEVC && v.level > 0) v.level /= 3;  // HEVC stores 30 * level
            auto* descriptor = av_pix_fmt_desc_get(static_cast<AVPixelFormat>(par->format));
            if (descriptor) {
                v.pix_fmt = descriptor->name;
                v.bit_depth = descriptor->comp[0].depth;
            }
            v.width = par->width;
            v.height = par->height;
            AVRational rate = stream->avg_frame_rate.num > 0 ? stream->avg_frame_rate : stream->r_frame_rate;
            if (rate.num > 0 && rate.den > 0) {
                v.fps = av_q2d(rate);
                v.fps_num = rate.num;
                v.fps_den = rate.den;
            }
            v.interlaced = par->field_order != AV_FIELD_PROGRESSIVE && par->field_order != AV_FIELD_UNKNOWN;
            if (v.width <= 0 || v.height <= 0)
                throw DataError(fmt::format("{}: video stream without a size", printable(path)));
            media.video = v;
        } else if (par->codec_type == AVMEDIA_TYPE_AUDIO) {
            AudioStream a;
            a.index = static_cast<int>(i);
            a.codec = codec;
            a.profile = profile ? profile : "";
            a.channels = par->ch_layout.nb_channels;
            a.sample_rate = par->sample_rate;
            a.language = language(stream);
            a.default_track = stream->disposition & AV_DISPOSITION_DEFAULT;
            if (a.channels > 0 && a.sample_rate > 0) media.audio.push_back(a);
        } else if (par->codec_type == AVMEDIA_TYPE_SUBTITLE) {
            SubtitleStream s;
            s.index = static_cast<int>(i);
            s.codec = codec;
            s.language = language(stream);
            s.default_track = stream->disposition & AV_DISPOSITION_DEFAULT;
            const AVCodecDescriptor* descriptor = avcodec_descriptor_get(par->codec_id);
            s.text = descriptor && (descriptor->props & AV_CODEC_PROP_TEXT_SUB);
            media.subtitles.push_back(s);
        }
    }
    if (media.container.starts_with("mov,mp4")) media.faststart = moov_first(path);
    return media;
}

}  // namespace ktricks::tvfs
