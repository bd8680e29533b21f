// Built-in device profiles (limits from the vendors' published media specifications; the URLs are in
// each profile's `source`) and user profiles in TOML.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "ktricks/core/error.hpp"
#include "ktricks/tvfs.hpp"

namespace ktricks::tvfs {
namespace {

std::vector<Profile> make_builtins() {
    std::vector<Profile> profiles;
    Profile tv;
    tv.name = "tv";
    tv.description =
        "plays on any smart TV: H.264 8-bit 4:2:0 progressive <=1080p30 level <=4.1, AAC-LC stereo 48 kHz";
    tv.source = "DLNA AVC_MP4_HP_HD_AAC / AVC_TS_HD: the subset every DLNA TV decodes";
    tv.containers = {"mp4"};
    tv.video_codecs = {"h264"};
    tv.h264_profiles = {"Constrained Baseline", "Baseline", "Main", "High"};
    tv.audio_codecs = {"aac"};
    tv.sample_rates = {48000};
    profiles.push_back(tv);

    Profile roku = tv;
    roku.name = "roku";
    roku.description = "Roku 4K players (Ultra, Streaming Stick 4K)";
    roku.source = "https://developer.roku.com/docs/specs/media/streaming-specifications.md";
    roku.containers = {"mp4", "matroska", "mpegts"};
    roku.video_codecs = {"h264", "hevc", "vp9"};
    roku.max_h264_level = 51;
    roku.max_hevc_level = 51;
    roku.max_bit_depth = 10;
    roku.max_width = 3840;
    roku.max_height = 2160;
    roku.max_fps = 60;
    roku.audio_codecs = {"aac", "mp3", "ac3", "eac3", "flac", "opus", "vorbis"};
    roku.max_channels = 6;
    roku.sample_rates = {};
    profiles.push_back(roku);

    Profile samsung = roku;
    samsung.name = "samsung";
    samsung.description = "Samsung Tizen TVs (2020 and later, UHD models)";
    samsung.source = "https://developer.samsung.com/smarttv/develop/specifications/media-specifications.html";
    samsung.containers = {"mp4", "matroska", "mpegts", "webm"};
    samsung.video_codecs = {"h264", "hevc", "vp9", "av1", "mpeg2video"};
    samsung.interlaced = true;  // broadcast MPEG-2/H.264 1080i is decoded in hardware
    samsung.audio_codecs = {"aac", "mp3", "ac3", "eac3", "opus", "vorbis", "mp2"};
    profiles.push_back(samsung);

    Profile lg = samsung;
    lg.name = "lg";
    lg.description = "LG webOS TVs (webOS 4.0 and later, UHD models)";
    lg.source = "https://webostv.developer.lge.com/develop/specifications/video-audio-codecs";
    lg.audio_codecs = {"aac", "mp3", "ac3", "eac3", "opus", "vorbis", "mp2", "flac"};
    profiles.push_back(lg);

    Profile chromecast = tv;
    chromecast.name = "chromecast";
    chromecast.description =
        "Chromecast (3rd generation): H.264 High <=4.1 1080p30, VP8; AAC, MP3, Opus, Vorbis";
    chromecast.source = "https://developers.google.com/cast/docs/media";
    chromecast.containers = {"mp4", "webm"};
    chromecast.video_codecs = {"h264", "vp8"};
    chromecast.audio_codecs = {"aac", "mp3", "opus", "vorbis", "flac"};
    chromecast.sample_rates = {};
    profiles.push_back(chromecast);
    return profiles;
}

const std::vector<Profile>& builtins() {
    static const std::vector<Profile> profiles = make_builtins();
    return profiles;
}

template <typename T, typename View>
std::vector<T> read_array(View node, std::string_view key, std::string_view origin) {
    std::vector<T> values;
    const auto* array = node.as_array();
    if (!array) throw DataError(fmt::format("{}: `{}` must be an array", origin, key));
    for (const auto& element : *array) {
        auto value = element.template value<T>();
        if (!value) throw DataError(fmt::format("{}: `{}` has an element of the wrong type", origin, key));
        values.push_back(*value);
    }
    return values;
}

void read_int(const toml::table& table, std::string_view key, int& out, int low, int high,
              std::string_view origin) {
    auto node = table[key];
    if (!node) return;
    auto value = node.value<std::int64_t>();
    if (!value || *value < low || *value > high)
        throw DataError(fmt::format("{}: `{}` must be an integer in [{}, {}]", origin, key, low, high));
    out = static_cast<int>(*value);
}

void read_strings(const toml::table& table, std::string_view key, std::vector<std::string>& out,
                  std::string_view origin) {
    auto node = table[key];
    if (!node) return;
    out = read_array<std::string>(node, key, origin);
    for (const auto& text : out)
        if (text.empty() || text.size() > 64 || first_control_byte(text) >= 0)
            throw DataError(fmt::format("{}: `{}` has an empty, overlong or unprintable name", origin, key));
}

// "4.1" or 41 -> 41
void read_level(const toml::table& table, std::string_view key, int& out, std::string_view origin) {
    auto node = table[key];
    if (!node) return;
    if (auto number = node.value<double>()) {
        double scaled = *number < 10 ? *number * 10 : *number;
        if (!(scaled >= 10 && scaled <= 62))
            throw DataError(fmt::format("{}: `{}` must be a level like 4.1", origin, key));
        out = static_cast<int>(std::lround(scaled));
        return;
    }
    throw DataError(fmt::format("{}: `{}` must be a level like 4.1", origin, key));
}

}  // namespace

std::string Profile::describe() const {
    std::string text;
    text += fmt::format("profile {}: {}\n", name, description);
    text += fmt::format("  containers passed through: {}\n", fmt::join(containers, ", "));
    text += fmt::format(
        "  video: {} (H.264 level <= {}.{}, HEVC level <= {}.{}), <= {} bit, <= {}x{}, <= {} fps, {}\n",
        fmt::join(video_codecs, ", "), max_h264_level / 10, max_h264_level % 10, max_hevc_level / 10,
        max_hevc_level % 10, max_bit_depth, max_width, max_height, max_fps,
        interlaced ? "interlaced allowed" : "progressive only");
    text += fmt::format(
        "  audio: {}, <= {} channels{}\n", fmt::join(audio_codecs, ", "), max_channels,
        sample_rates.empty() ? std::string() : fmt::format(", {} Hz", fmt::join(sample_rates, "/")));
    text += fmt::format(
        "  transcodes to: H.264 {} kbit/s at 1080p ({}), AAC-LC {} kbit/s stereo 48 kHz, MPEG-TS\n",
        video_kbps, preset, audio_kbps);
    text += fmt::format("  source: {}\n", source);
    return text;
}

const Profile& builtin_profile(std::string_view name) {
    for (const auto& profile : builtins())
        if (profile.name == name) return profile;
    throw InputError(fmt::format("unknown profile \"{}\" (built in: {}; or give a .toml file)",
                                 printable(name), fmt::join(builtin_profile_names(), ", ")));
}

std::vector<std::string> builtin_profile_names() {
    std::vector<std::string> names;
    for (const auto& profile : builtins()) names.push_back(profile.name);
    return names;
}

Profile parse_profile(std::string_view toml_text, std::string_view origin) {
    toml::table table;
    try {
        table = toml::parse(toml_text, origin);
    } catch (const toml::parse_error& error) {
        throw DataError(fmt::format("{}:{}:{}: {}", origin, error.source().begin.line,
                                    error.source().begin.column, printable(error.description())));
    }
    static const std::vector<std::string_view> known = {
        "name",         "description",   "source",         "base",           "containers",
        "video_codecs", "h264_profiles", "max_h264_level", "max_hevc_level", "max_bit_depth",
        "max_width",    "max_height",    "max_fps",        "interlaced",     "audio_codecs",
        "max_channels", "sample_rates",  "video_kbps",     "audio_kbps",     "preset"};
    for (const auto& [key, value] : table)
        if (std::find(known.begin(), known.end(), key.str()) == known.end())
            throw DataError(fmt::format("{}: unknown key `{}`", origin, printable(key.str())));

    Profile profile = builtin_profile("tv");
    if (auto base = table["base"]) {
        auto name = base.value<std::string>();
        if (!name) throw DataError(fmt::format("{}: `base` must be a profile name", origin));
        try {
            profile = builtin_profile(*name);
        } catch (const InputError& error) {
            throw DataError(fmt::format("{}: `base`: {}", origin, error.what()));  // the file's fault
        }
    }
    profile.name = std::string(origin);
    profile.source = std::string(origin);
    auto read_string = [&](std::string_view key, std::string& out) {
        if (auto node = table[key]) {
            auto value = node.value<std::string>();
            if (!value || value->size() > 200 || first_control_byte(*value) >= 0)
                throw DataError(fmt::format("{}: `{}` must be a short printable string", origin, key));
            out = *value;
        }
    };
    read_string("name", profile.name);
    read_string("description", profile.description);
    read_string("source", profile.source);
    read_string("preset", profile.preset);
    static const std::vector<std::string_view> presets = {"ultrafast", "superfast", "veryfast", "faster",
                                                          "fast",      "medium",    "slow"};
    if (std::find(presets.begin(), presets.end(), profile.preset) == presets.end())
        throw DataError(fmt::format("{}: `preset` must be an x264 preset (ultrafast ... slow)", origin));
    read_strings(table, "containers", profile.containers, origin);
    read_strings(table, "video_codecs", profile.video_codecs, origin);
    read_strings(table, "h264_profiles", profile.h264_profiles, origin);
    read_strings(table, "audio_codecs", profile.audio_codecs, origin);
    read_level(table, "max_h264_level", profile.max_h264_level, origin);
    read_level(table, "max_hevc_level", profile.max_hevc_level, origin);
    read_int(table, "max_bit_depth", profile.max_bit_depth, 8, 16, origin);
    read_int(table, "max_width", profile.max_width, 16, 16384, origin);
    read_int(table, "max_height", profile.max_height, 16, 16384, origin);
    read_int(table, "max_channels", profile.max_channels, 1, 16, origin);
    read_int(table, "video_kbps", profile.video_kbps, 100, 100000, origin);
    read_int(table, "audio_kbps", profile.audio_kbps, 32, 512, origin);
    if (auto node = table["max_fps"]) {
        auto value = node.value<double>();
        if (!value || !(*value >= 1 && *value <= 240))
            throw DataError(fmt::format("{}: `max_fps` must be in [1, 240]", origin));
        profile.max_fps = *value;
    }
    if (auto node = table["interlaced"]) {
        auto value = node.value<bool>();
        if (!value) throw DataError(fmt::format("{}: `interlaced` must be true or false", origin));
        profile.interlaced = *value;
    }
    if (auto node = table["sample_rates"]) {
        std::vector<int> rates;
        for (auto rate : read_array<std::int64_t>(node, "sample_rates", origin)) {
            if (rate < 8000 || rate > 192000)
                throw DataError(fmt::format("{}: `sample_rates` must be in [8000, 192000]", origin));
            rates.push_back(static_cast<int>(rate));
        }
        profile.sample_rates = rates;
    }
    if (profile.name.empty() || first_control_byte(profile.name) >= 0)
        throw DataError(fmt::format("{}: empty `name`", origin));
    return profile;
}

Profile load_profile(const std::string& name_or_path) {
    if (name_or_path.find('/') == std::string::npos && !name_or_path.ends_with(".toml"))
        return builtin_profile(name_or_path);
    std::ifstream file(name_or_path, std::ios::binary);
    if (!file) throw_errno("open", name_or_path);
    std::stringstream text;
    text << file.rdbuf();
    return parse_profile(text.str(), name_or_path);
}

std::uint64_t parse_size(std::string_view text) {
    std::uint64_t value = 0;
    std::size_t i = 0;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
        if (value > (UINT64_MAX - 9) / 10)
            throw InputError(fmt::format("size \"{}\" is too large", printable(text)));
        value = value * 10 + static_cast<std::uint64_t>(text[i] - '0');
    }
    if (i == 0)
        throw InputError(
            fmt::format("size \"{}\" must be a number with an optional K, M, G or T", printable(text)));
    std::string_view unit = text.substr(i);
    int shift = 0;
    if (unit == "" || unit == "B") shift = 0;
    else if (unit == "K" || unit == "k" || unit == "KiB")
        shift = 10;
    else if (unit == "M" || unit == "MiB")
        shift = 20;
    else if (unit == "G" || unit == "GiB")
        shift = 30;
    else if (unit == "T" || unit == "TiB")
        shift = 40;
    else
        throw InputError(
            fmt::format("size \"{}\" must be a number with an optional K, M, G or T", printable(text)));
    if (shift && value > (UINT64_MAX >> shift))
        throw InputError(fmt::format("size \"{}\" is too large", printable(text)));
    return value << shift;
}

}  // namespace ktricks::tvfs
