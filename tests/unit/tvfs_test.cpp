// tvfs decisions and profiles: pure functions of a MediaInfo and a Profile.
#include <gtest/gtest.h>

#include "ktricks/core/error.hpp"
#include "ktricks/tvfs.hpp"

namespace ktricks::tvfs {
namespace {

MediaInfo h264_aac(std::string container = "mov,mp4,m4a,3gp,3g2,mj2") {
    MediaInfo media;
    media.container = std::move(container);
    media.duration = 10;
    media.video = VideoStream{0, "h264", "High", 40, 8, "yuv420p", 1920, 1080, 25, false};
    media.audio.push_back(AudioStream{1, "aac", "LC", 2, 48000});
    return media;
}

bool mentions(const Decision& decision, std::string_view text) {
    for (const auto& reason : decision.reasons)
        if (reason.find(text) != std::string::npos) return true;
    return false;
}

TEST(TvfsDecision, H264AacInFaststartMp4PassesThrough) {
    auto decision = decide(h264_aac(), builtin_profile("tv"));
    EXPECT_EQ(decision.action, Action::pass_through);
    EXPECT_EQ(output_name("clip.mp4", decision), "clip.mp4");
}

TEST(TvfsDecision, Mp4WithMoovAtTheEndIsRemuxed) {
    auto media = h264_aac();
    media.faststart = false;
    auto decision = decide(media, builtin_profile("tv"));
    EXPECT_EQ(decision.action, Action::remux);
    EXPECT_TRUE(mentions(decision, "moov after mdat"));
}

TEST(TvfsDecision, H264AacInMatroskaIsRemuxedToMp4) {
    auto decision = decide(h264_aac("matroska,webm"), builtin_profile("tv"));
    EXPECT_EQ(decision.action, Action::remux);
    EXPECT_EQ(output_name("clip.mkv", decision), "clip.mp4");
    EXPECT_TRUE(mentions(decision, "container: matroska"));
}

TEST(TvfsDecision, Ac3AudioIsTranscodedAloneWhileVideoIsCopied) {
    auto media = h264_aac("matroska,webm");
    media.audio[0] = AudioStream{1, "ac3", "", 6, 48000};
    auto decision = decide(media, builtin_profile("tv"));
    EXPECT_EQ(decision.action, Action::audio_transcode);
    EXPECT_EQ(output_name("film.mkv", decision), "film.ts");
    EXPECT_TRUE(mentions(decision, "ac3 not in profile tv"));
    EXPECT_TRUE(mentions(decision, "6 channels > 2"));
}

TEST(TvfsDecision, HevcInAnMp4IsTranscodedWhateverItsExtension) {
    auto media = h264_aac();
    media.video->codec = "hevc";
    media.video->profile = "Main";
    auto decision = decide(media, builtin_profile("tv"));
    EXPECT_EQ(decision.action, Action::full_transcode);
    EXPECT_EQ(output_name("clip.mp4", decision), "clip.ts");
}

TEST(TvfsDecision, TenBitInterlacedHighFrameRateAndOversizedVideoEachGiveAReason) {
    auto media = h264_aac();
    media.video = VideoStream{0, "h264", "High 10", 52, 10, "yuv420p10le", 3840, 2160, 60, true};
    auto decision = decide(media, builtin_profile("tv"));
    EXPECT_EQ(decision.action, Action::full_transcode);
    for (auto text : {"10-bit > 8-bit", "3840x2160 > 1920x1080", "60 fps > 30", "interlaced", "level 5.2 > 4.1", "High 10"})
        EXPECT_TRUE(mentions(decision, text)) << text;
}

TEST(TvfsDecision, TheSameFilePassesThroughOnADeviceThatPlaysIt) {
    auto media = h264_aac("matroska,webm");
    media.video = VideoStream{0, "hevc", "Main 10", 51, 10, "yuv420p10le", 3840, 2160, 60, false};
    media.audio[0] = AudioStream{1, "eac3", "", 6, 48000};
    EXPECT_EQ(decide(media, builtin_profile("samsung")).action, Action::pass_through);
    EXPECT_EQ(decide(media, builtin_profile("roku")).action, Action::pass_through);
    EXPECT_EQ(decide(media, builtin_profile("chromecast")).action, Action::full_transcode);
}

TEST(TvfsDecision, Vp9CannotBeCopiedIntoTransportStream) {
    auto media = h264_aac("matroska,webm");
    media.video = VideoStream{0, "vp9", "Profile 0", 0, 8, "yuv420p", 1280, 720, 30, false};
    media.audio[0] = AudioStream{1, "opus", "", 2, 48000};
    auto chromecast = builtin_profile("chromecast");
    chromecast.video_codecs.push_back("vp9");
    EXPECT_EQ(decide(media, chromecast).action, Action::pass_through);  // webm is a Chromecast container
    EXPECT_EQ(decide(media, builtin_profile("tv")).action, Action::full_transcode);
}

TEST(TvfsDecision, NoVideoOrNoDurationIsSkipped) {
    MediaInfo audio_only;
    audio_only.container = "mp3";
    audio_only.duration = 100;
    EXPECT_EQ(decide(audio_only, builtin_profile("tv")).action, Action::skip);
    auto still = h264_aac("image2");
    still.duration = 0;
    EXPECT_EQ(decide(still, builtin_profile("tv")).action, Action::skip);
}

TEST(TvfsDecision, SubtitlesAreNamedWhenDropped) {
    auto media = h264_aac("matroska,webm");
    media.subtitles = 2;
    EXPECT_TRUE(mentions(decide(media, builtin_profile("tv")), "subtitles: 2 stream(s) dropped"));
}

TEST(TvfsNames, ExtensionIsReplacedOnlyWhenConverted) {
    Decision remux;
    remux.action = Action::remux;
    remux.extension = ".mp4";
    EXPECT_EQ(output_name("a.b.mkv", remux), "a.b.mp4");
    EXPECT_EQ(output_name("noext", remux), "noext.mp4");
    EXPECT_EQ(output_name(".hidden", remux), ".hidden.mp4");
}

TEST(TvfsProfile, BuiltinProfilesExistAndUnknownNamesAreRejected) {
    for (auto name : {"tv", "roku", "samsung", "lg", "chromecast"}) {
        const auto& profile = builtin_profile(name);
        EXPECT_FALSE(profile.source.empty()) << name;
        EXPECT_NE(profile.describe().find(name), std::string::npos);
    }
    EXPECT_THROW(builtin_profile("betamax"), InputError);
}

TEST(TvfsProfile, TomlProfileInheritsFromItsBase) {
    auto profile = parse_profile("name = \"den\"\nbase = \"samsung\"\nmax_fps = 25\nmax_h264_level = 4.2\naudio_codecs = [\"aac\"]\n", "den.toml");
    EXPECT_EQ(profile.name, "den");
    EXPECT_EQ(profile.max_fps, 25);
    EXPECT_EQ(profile.max_h264_level, 42);
    EXPECT_EQ(profile.max_width, 3840);  // from samsung
    EXPECT_EQ(profile.audio_codecs, std::vector<std::string>{"aac"});
}

TEST(TvfsProfile, BadTomlNamesTheFileTheKeyAndTheProblem) {
    auto message = [](std::string_view text) {
        try {
            parse_profile(text, "p.toml");
        } catch (const InputError& error) {
            return std::string(error.what());
        }
        return std::string("no error");
    };
    EXPECT_NE(message("max_fps = \"fast\"").find("p.toml: `max_fps`"), std::string::npos);
    EXPECT_NE(message("max_width = 99999").find("`max_width` must be an integer"), std::string::npos);
    EXPECT_NE(message("colour = 1").find("unknown key `colour`"), std::string::npos);
    EXPECT_NE(message("video_codecs = [1]").find("`video_codecs`"), std::string::npos);
    EXPECT_NE(message("a = [").find("p.toml:1:"), std::string::npos);
    EXPECT_NE(message("preset = \"placebo2\"").find("preset"), std::string::npos);
    EXPECT_NE(message("base = \"vhs\"").find("unknown profile"), std::string::npos);
}

TEST(TvfsSize, SizesTakeBinaryUnits) {
    EXPECT_EQ(parse_size("4G"), 4ull << 30);
    EXPECT_EQ(parse_size("500M"), 500ull << 20);
    EXPECT_EQ(parse_size("1024"), 1024u);
    EXPECT_THROW(parse_size("G"), InputError);
    EXPECT_THROW(parse_size("5X"), InputError);
    EXPECT_THROW(parse_size("99999999999999999999"), InputError);
    EXPECT_THROW(parse_size("99999999999T"), InputError);
}

}  // namespace
}  // namespace ktricks::tvfs
