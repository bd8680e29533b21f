// The decision: pure functions of (MediaInfo, Profile). Every check that fails adds one reason, so
// `--explain` can say exactly why a file is converted.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "ktricks/tvfs.hpp"

namespace ktricks::tvfs {
namespace {

bool contains(const std::vector<std::string>& list, std::string_view value) {
    return std::find(list.begin(), list.end(), value) != list.end();
}

// FFmpeg names demuxers by family ("matroska,webm"); a TV cares which member it is.
std::string container_family(const MediaInfo& media) {
    const auto& name = media.container;
    if (name.starts_with("mov,mp4")) return "mp4";
    if (name.starts_with("matroska")) {
        auto webm_video = !media.video || media.video->codec == "vp8" || media.video->codec == "vp9" ||
                          media.video->codec == "av1";
        auto webm_audio = std::all_of(media.audio.begin(), media.audio.end(), [](const AudioStream& a) {
            return a.codec == "opus" || a.codec == "vorbis";
        });
        return webm_video && webm_audio ? "webm" : "matroska";
    }
    return name;
}

// "audio stream 2 (fre)": how reasons and --explain name a track.
std::string track_name(std::string_view kind, int index, const std::string& language) {
    return fmt::format("{} stream {} ({})", kind, index, language.empty() ? "no language" : language);
}

// Subtitles of a converted output: the default text stream (else the first) becomes the sidecar
// NAME.srt, which DLNA servers hand to TVs with the video; VobSub pictures are copied into a remux
// (MP4 carries them); every other stream is named as not shown.
void choose_subtitles(const MediaInfo& media, Decision& decision) {
    auto& why = decision.reasons;
    const SubtitleStream* sidecar = nullptr;
    for (const auto& s : media.subtitles)
        if (s.text && (!sidecar || (s.default_track && !sidecar->default_track))) sidecar = &s;
    if (sidecar) decision.sidecar_subtitle = sidecar->index;
    for (const auto& s : media.subtitles) {
        auto name = track_name("subtitle", s.index, s.language);
        if (&s == sidecar)
            why.push_back(fmt::format("{}: {} -> sidecar .srt beside the output", name, s.codec));
        else if (s.text)
            why.push_back(fmt::format("{}: {} not shown (one .srt sidecar per file: stream {} is)", name,
                                      s.codec, sidecar->index));
        else if (decision.action == Action::remux && s.codec == "dvd_subtitle") {
            decision.kept_subtitles.push_back(s.index);
            why.push_back(fmt::format("{}: {} pictures copied into the MP4", name, s.codec));
        } else {
            why.push_back(fmt::format("{}: {} pictures dropped ({} cannot carry them)", name, s.codec,
                                      decision.action == Action::remux ? "MP4" : "the MPEG-TS output"));
        }
    }
}

std::string level_text(int level) { return fmt::format("{}.{}", level / 10, level % 10); }

// Codecs the MPEG-TS muxer can carry when the video is copied into an audio-only transcode.
bool ts_can_carry(std::string_view codec) {
    return codec == "h264" || codec == "hevc" || codec == "mpeg2video";
}

}  // namespace

std::string_view to_string(Action action) {
    switch (action) {
        case Action::pass_through: return "pass-through";
        case Action::remux: return "remux";
        case Action::audio_transcode: return "audio-transcode";
        case Action::full_transcode: return "transcode";
        case Action::skip: return "skip";
    }
    return "?";
}

Decision decide(const MediaInfo& media, const Profile& profile) {
    Decision decision;
    auto& why = decision.reasons;
    if (!media.video) {
        why.push_back("no video stream");
        return decision;
    }
    if (media.duration <= 0) {
        why.push_back("no duration (a still image or a broken file)");
        return decision;
    }
    const auto& v = *media.video;
    bool video_ok = true;
    auto fail = [&](std::string text) {
        video_ok = false;
        why.push_back("video: " + std::move(text));
    };
    if (!contains(profile.video_codecs, v.codec)) {
        fail(fmt::format("{} not in profile {} ({})", v.codec, profile.name,
                         fmt::join(profile.video_codecs, ", ")));
    } else {
        if (v.codec == "h264" && !profile.h264_profiles.empty() &&
            !contains(profile.h264_profiles, v.profile))
            fail(fmt::format("H.264 profile {} not in ({})", v.profile.empty() ? "unknown" : v.profile,
                             fmt::join(profile.h264_profiles, ", ")));
        if (v.codec == "h264" && v.level > profile.max_h264_level)
            fail(fmt::format("H.264 level {} > {}", level_text(v.level), level_text(profile.max_h264_level)));
        if (v.codec == "hevc" && v.level > profile.max_hevc_level)
            fail(fmt::format("HEVC level {} > {}", level_text(v.level), level_text(profile.max_hevc_level)));
    }
    if (v.bit_depth > profile.max_bit_depth)
        fail(fmt::format("{}-bit > {}-bit", v.bit_depth, profile.max_bit_depth));
    if (v.pix_fmt.find("420") == std::string::npos && v.pix_fmt != "nv12")
        fail(fmt::format("pixel format {} is not 4:2:0", v.pix_fmt.empty() ? "unknown" : v.pix_fmt));
    if (v.width > profile.max_width || v.height > profile.max_height)
        fail(fmt::format("{}x{} > {}x{}", v.width, v.height, profile.max_width, profile.max_height));
    if (v.fps > profile.max_fps + 0.01) fail(fmt::format("{:.3g} fps > {:.3g}", v.fps, profile.max_fps));
    if (v.interlaced && !profile.interlaced) fail("interlaced, profile wants progressive");
    if (video_ok)
        why.push_back(fmt::format("video: {} {} {}x{} {:.3g} fps {}-bit ok", v.codec, v.profile, v.width,
                                  v.height, v.fps, v.bit_depth));

    // Every audio track, the default one first; each is checked against the profile on its own.
    bool audio_ok = true;
    std::vector<const AudioStream*> tracks;
    for (const auto& a : media.audio) tracks.push_back(&a);
    std::stable_partition(tracks.begin(), tracks.end(),
                          [](const AudioStream* a) { return a->default_track; });
    for (const auto* a : tracks) {
        decision.audio_streams.push_back(a->index);
        auto name = track_name("audio", a->index, a->language);
        bool fits = true;
        auto fail_audio = [&](std::string text) {
            fits = false;
            why.push_back(fmt::format("{}: {}", name, text));
        };
        if (!contains(profile.audio_codecs, a->codec))
            fail_audio(fmt::format("{} not in profile {} ({})", a->codec, profile.name,
                                   fmt::join(profile.audio_codecs, ", ")));
        if (a->channels > profile.max_channels)
            fail_audio(fmt::format("{} channels > {}", a->channels, profile.max_channels));
        if (!profile.sample_rates.empty() &&
            !std::count(profile.sample_rates.begin(), profile.sample_rates.end(), a->sample_rate))
            fail_audio(
                fmt::format("{} Hz not in ({})", a->sample_rate, fmt::join(profile.sample_rates, ", ")));
        if (fits)
            why.push_back(fmt::format("{}: {} {} ch {} Hz ok", name, a->codec, a->channels, a->sample_rate));
        audio_ok = audio_ok && fits;
    }

    auto family = container_family(media);
    bool container_ok = contains(profile.containers, family);
    if (!container_ok)
        why.push_back(fmt::format("container: {} not in ({})", family, fmt::join(profile.containers, ", ")));
    if (container_ok && family == "mp4" && !media.faststart) {
        container_ok = false;
        why.push_back(
            "container: mp4 with moov after mdat (a TV streaming it would have to seek to the end first)");
    }

    if (video_ok && audio_ok && container_ok) {
        decision.action = Action::pass_through;
    } else if (video_ok && audio_ok) {
        decision.action = Action::remux;
        decision.extension = ".mp4";
    } else if (video_ok && ts_can_carry(v.codec)) {
        decision.action = Action::audio_transcode;
        decision.extension = ".ts";
    } else {
        decision.action = Action::full_transcode;
        decision.extension = ".ts";
        if (video_ok) why.push_back(fmt::format("video: {} cannot be copied into MPEG-TS", v.codec));
    }
    if (decision.action != Action::pass_through) choose_subtitles(media, decision);
    return decision;
}

std::string output_name(std::string_view source_name, const Decision& decision) {
    if (decision.extension.empty()) return std::string(source_name);
    auto dot = source_name.rfind('.');
    auto stem = (dot == std::string_view::npos || dot == 0) ? source_name : source_name.substr(0, dot);
    return std::string(stem) + decision.extension;
}

std::string sidecar_name(std::string_view shown) {
    auto dot = shown.rfind('.');
    auto stem = (dot == std::string_view::npos || dot == 0) ? shown : shown.substr(0, dot);
    return std::string(stem) + ".srt";
}

std::string explain(const std::string& path, const MediaInfo& media, const Decision& decision) {
    std::string text = fmt::format("{}: {}\n", path, to_string(decision.action));
    text += fmt::format("  container: {}{}, {:.2f} s\n", media.container,
                        media.faststart ? "" : " (moov at the end)", media.duration);
    if (media.video) {
        const auto& v = *media.video;
        text += fmt::format("  stream {} video: {} {} level {} {} {}-bit {}x{} {:.3g} fps{}\n", v.index,
                            v.codec, v.profile.empty() ? "-" : v.profile, level_text(v.level), v.pix_fmt,
                            v.bit_depth, v.width, v.height, v.fps, v.interlaced ? " interlaced" : "");
    }
    for (const auto& a : media.audio)
        text +=
            fmt::format("  stream {} audio: {} {} {} ch {} Hz, {}{}\n", a.index, a.codec,
                        a.profile.empty() ? "-" : a.profile, a.channels, a.sample_rate,
                        a.language.empty() ? "no language" : a.language, a.default_track ? ", default" : "");
    for (const auto& s : media.subtitles)
        text += fmt::format("  stream {} subtitle: {} ({}), {}{}\n", s.index, s.codec,
                            s.text ? "text" : "pictures", s.language.empty() ? "no language" : s.language,
                            s.default_track ? ", default" : "");
    for (const auto& reason : decision.reasons) text += "  - " + reason + "\n";
    if (decision.action == Action::skip) return text;
    auto shown = output_name(path.substr(path.rfind('/') + 1), decision);
    text += fmt::format("  shown as: {}\n", shown);
    // What each audio track becomes, in output order.
    for (std::size_t i = 0; i < decision.audio_streams.size(); ++i) {
        int index = decision.audio_streams[i];
        auto a =
            std::find_if(media.audio.begin(), media.audio.end(), [&](auto& x) { return x.index == index; });
        if (a == media.audio.end()) continue;
        const char* what = decision.action == Action::pass_through ? "as is"
                           : decision.action == Action::remux      ? "copied"
                                                                   : "-> AAC-LC stereo 48 kHz";
        text +=
            fmt::format("  output audio {}: stream {} {} ({}{}) {}\n", i + 1, index, a->codec,
                        a->language.empty() ? "no language" : a->language, i == 0 ? ", default" : "", what);
    }
    if (decision.sidecar_subtitle >= 0)
        text += fmt::format("  sidecar: {} (subtitle stream {} as SubRip)\n", sidecar_name(shown),
                            decision.sidecar_subtitle);
    return text;
}

}  // namespace ktricks::tvfs
