// The persistent probe cache: one JSON object per source file, keyed by its path, and valid while
// the file's size and mtime match (private to tvfs).
#pragma once

#include <nlohmann/json.hpp>

#include "tvfs/av.hpp"

namespace ktricks::tvfs {

struct Entry {
    std::int64_t size = 0, mtime_ns = 0;
    MediaInfo media;
    Decision decision;
    Layout layout;
};

// fps_num/fps_den came later. An entry written before loads with 0/0 there instead of making the whole
// file unreadable (and every file probed again): it is complete, and only a layout uses them.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(VideoStream, index, codec, profile, level, bit_depth, pix_fmt,
                                                width, height, fps, fps_num, fps_den, interlaced)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AudioStream, index, codec, profile, channels, sample_rate, language,
                                   default_track)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SubtitleStream, index, codec, language, default_track, text)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Segment, start, end, offset, bytes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Layout, action, size, segments, fps_num, fps_den, width, height,
                                   video_kbps)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Decision, action, reasons, audio_streams, sidecar_subtitle, kept_subtitles,
                                   extension)

inline void to_json(nlohmann::json& json, const MediaInfo& media) {
    json = {{"container", media.container},
            {"faststart", media.faststart},
            {"duration", media.duration},
            {"audio", media.audio},
            {"subtitles", media.subtitles}};
    json["video"] = media.video ? nlohmann::json::array({*media.video}) : nlohmann::json::array();
}
inline void from_json(const nlohmann::json& json, MediaInfo& media) {
    json.at("container").get_to(media.container);
    json.at("faststart").get_to(media.faststart);
    json.at("duration").get_to(media.duration);
    json.at("audio").get_to(media.audio);
    json.at("subtitles").get_to(media.subtitles);
    media.video.reset();
    if (!json.at("video").empty()) media.video = json.at("video").at(0).get<VideoStream>();
}

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Entry, size, mtime_ns, media, decision, layout)

}  // namespace ktricks::tvfs
