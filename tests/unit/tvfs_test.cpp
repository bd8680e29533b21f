// tvfs decisions and profiles: pure functions of a MediaInfo and a Profile. The output cache and the
// catalog, on real directories, without a FUSE mount.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "ktricks/core/error.hpp"
#include "ktricks/tvfs.hpp"
#include "test_support.hpp"
#include "tvfs/cache.hpp"
#include "tvfs/catalog.hpp"
#include "tvfs/mp4_boxes.hpp"
#include "tvfs/probe_cache.hpp"

namespace ktricks::tvfs {
namespace {

MediaInfo h264_aac(std::string container = "mov,mp4,m4a,3gp,3g2,mj2") {
    MediaInfo media;
    media.container = std::move(container);
    media.duration = 10;
    media.video = VideoStream{0, "h264", "High", 40, 8, "yuv420p", 1920, 1080, 25, false};
    media.audio.push_back(AudioStream{1, "aac", "LC", 2, 48000, "", false});
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
    media.audio[0] = AudioStream{1, "ac3", "", 6, 48000, "", false};
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
    for (auto text : {"10-bit > 8-bit", "3840x2160 > 1920x1080", "60 fps > 30", "interlaced",
                      "level 5.2 > 4.1", "High 10"})
        EXPECT_TRUE(mentions(decision, text)) << text;
}

TEST(TvfsDecision, TheSameFilePassesThroughOnADeviceThatPlaysIt) {
    auto media = h264_aac("matroska,webm");
    media.video = VideoStream{0, "hevc", "Main 10", 51, 10, "yuv420p10le", 3840, 2160, 60, false};
    media.audio[0] = AudioStream{1, "eac3", "", 6, 48000, "", false};
    EXPECT_EQ(decide(media, builtin_profile("samsung")).action, Action::pass_through);
    EXPECT_EQ(decide(media, builtin_profile("roku")).action, Action::pass_through);
    EXPECT_EQ(decide(media, builtin_profile("chromecast")).action, Action::full_transcode);
}

TEST(TvfsDecision, Vp9CannotBeCopiedIntoTransportStream) {
    auto media = h264_aac("matroska,webm");
    media.video = VideoStream{0, "vp9", "Profile 0", 0, 8, "yuv420p", 1280, 720, 30, false};
    media.audio[0] = AudioStream{1, "opus", "", 2, 48000, "", false};
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

TEST(TvfsDecision, TheDefaultTextSubtitleBecomesTheSidecarAndPicturesAreNamed) {
    auto media = h264_aac("matroska,webm");
    media.subtitles = {SubtitleStream{2, "subrip", "eng", false, true},
                       SubtitleStream{3, "ass", "fre", true, true},
                       SubtitleStream{4, "hdmv_pgs_subtitle", "ger", false, false},
                       SubtitleStream{5, "dvd_subtitle", "spa", false, false}};
    auto remux = decide(media, builtin_profile("tv"));
    EXPECT_EQ(remux.action, Action::remux);
    EXPECT_EQ(remux.sidecar_subtitle, 3);
    EXPECT_EQ(remux.kept_subtitles, std::vector<int>{5});  // MP4 carries VobSub
    EXPECT_TRUE(mentions(remux, "subtitle stream 4 (ger): hdmv_pgs_subtitle pictures dropped (MP4"));
    EXPECT_TRUE(mentions(remux, "subtitle stream 2 (eng): subrip not shown"));
    EXPECT_EQ(sidecar_name("clip.mp4"), "clip.srt");
    media.audio[0].codec = "ac3";
    auto ts = decide(media, builtin_profile("tv"));
    EXPECT_EQ(ts.action, Action::audio_transcode);
    EXPECT_TRUE(ts.kept_subtitles.empty());
    EXPECT_TRUE(mentions(ts, "subtitle stream 5 (spa): dvd_subtitle pictures dropped (the MPEG-TS output"));
    media.audio[0].codec = "aac";
    media.container = "mov,mp4,m4a,3gp,3g2,mj2";
    EXPECT_EQ(decide(media, builtin_profile("tv")).sidecar_subtitle, -1);  // pass-through: the file as is
}

TEST(TvfsDecision, EveryAudioTrackIsCheckedAndTheDefaultGoesFirst) {
    auto media = h264_aac("mov,mp4,m4a,3gp,3g2,mj2");
    media.audio.push_back(AudioStream{2, "ac3", "", 6, 48000, "fre", true});
    auto decision = decide(media, builtin_profile("tv"));
    EXPECT_EQ(decision.action, Action::audio_transcode);  // one track that does not fit is enough
    EXPECT_EQ(decision.audio_streams, (std::vector<int>{2, 1}));
    EXPECT_TRUE(mentions(decision, "audio stream 2 (fre): ac3 not in profile tv"));
    EXPECT_TRUE(mentions(decision, "audio stream 1 (no language): aac 2 ch 48000 Hz ok"));
    EXPECT_EQ(decide(media, builtin_profile("samsung")).audio_streams, (std::vector<int>{2, 1}));
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
    auto profile = parse_profile(
        "name = \"den\"\nbase = \"samsung\"\nmax_fps = 25\nmax_h264_level = 4.2\naudio_codecs = [\"aac\"]\n",
        "den.toml");
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

// Bad bytes in a profile file are the file's fault (DataError, exit 65); an unknown name given on
// the command line is the user's (InputError, exit 64). The CLI maps both in one place.
TEST(TvfsProfile, BadFileContentsAreADataErrorAndAnUnknownNameIsNot) {
    for (auto text : {"max_fps = \"fast\"", "a = [", "colour = 1", "base = \"vhs\""}) {
        EXPECT_THROW(parse_profile(text, "p.toml"), DataError) << text;
        try {
            parse_profile(text, "p.toml");
        } catch (const std::exception& error) {
            EXPECT_EQ(exit_status_for(error), exit_code::data) << text;
        }
    }
    try {
        builtin_profile("betamax");
        ADD_FAILURE() << "no error for an unknown profile name";
    } catch (const InputError& error) {
        EXPECT_EQ(dynamic_cast<const DataError*>(&error), nullptr);
        EXPECT_EQ(exit_status_for(error), exit_code::usage);
    }
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

// ---- the output cache (LRU over output directories) ----

namespace fs = std::filesystem;
using test_support::TempDir;

// A directory KEY under ROOT holding BYTES bytes, as an output would leave it.
void fill(const fs::path& root, const std::string& key, std::size_t bytes, const std::string& file = "0.ts") {
    fs::create_directories(root / key);
    std::ofstream(root / key / file) << std::string(bytes, 'x');
}

// Made through the cache, as the outputs do it: written, counted, used.
void produce(OutputCache& cache, const fs::path& root, const std::string& key, std::size_t bytes) {
    fill(root, key, bytes);
    cache.add(bytes);
    cache.touch(key);
}

const auto anything = [](const std::string&) { return true; };

TEST(TvfsCache, EvictsTheLeastRecentlyUsedFirstUntilTheNewBytesFit) {
    TempDir dir;
    auto root = dir.path() / "out";
    OutputCache cache(root.string(), 1000);
    produce(cache, root, "a", 300);
    produce(cache, root, "b", 300);
    produce(cache, root, "c", 300);
    cache.touch("a");  // a read again: now the most recent
    EXPECT_EQ(cache.used(), 900u);
    EXPECT_EQ(cache.make_room(500, anything), (std::vector<std::string>{"b", "c"}));
    EXPECT_EQ(cache.used(), 300u);
    EXPECT_TRUE(fs::exists(root / "a"));
    EXPECT_FALSE(fs::exists(root / "b"));
    EXPECT_FALSE(fs::exists(root / "c"));
}

TEST(TvfsCache, RoomThatIsThereEvictsNothing) {
    TempDir dir;
    auto root = dir.path() / "out";
    OutputCache cache(root.string(), 1000);
    produce(cache, root, "a", 600);
    EXPECT_TRUE(cache.make_room(400, anything).empty());
    EXPECT_TRUE(cache.make_room(0, anything).empty());
    EXPECT_EQ(cache.used(), 600u);
}

TEST(TvfsCache, OutputsInUseAreSparedAndTheCacheStaysOverItsLimitUntilTheyClose) {
    TempDir dir;
    auto root = dir.path() / "out";
    OutputCache cache(root.string(), 1000);
    produce(cache, root, "open", 700);
    produce(cache, root, "closed", 200);
    produce(cache, root, "also-open", 300);  // over the limit now: 1200
    auto in_use = [](const std::string& key) { return key != "open" && key != "also-open"; };
    EXPECT_EQ(cache.make_room(0, in_use), (std::vector<std::string>{"closed"}));
    EXPECT_EQ(cache.used(), 1000u);
    EXPECT_TRUE(cache.make_room(1, in_use).empty());  // nothing evictable left: over the limit, no loop
    EXPECT_EQ(cache.make_room(1, anything), (std::vector<std::string>{"open"}));
    EXPECT_EQ(cache.used(), 300u);
}

TEST(TvfsCache, DirectoriesFoundAtStartAreCountedOrderedByMtimeAndOlderThanAnyUsedSince) {
    TempDir dir;
    auto root = dir.path() / "out";
    fill(root, "old", 100);
    fill(root, "older", 100);
    fill(root, "newer", 100);
    fill(root, "crashed", 50);
    fill(root, "crashed", 999, "1.ts.part");  // a write cut short by a crash
    auto now = fs::file_time_type::clock::now();
    fs::last_write_time(root / "older", now - std::chrono::hours(3));
    fs::last_write_time(root / "old", now - std::chrono::hours(2));
    fs::last_write_time(root / "crashed", now - std::chrono::hours(1));
    fs::last_write_time(root / "newer", now);
    OutputCache cache(root.string(), 1000);
    EXPECT_EQ(cache.used(), 350u);
    EXPECT_FALSE(fs::exists(root / "crashed" / "1.ts.part"));
    cache.touch("older");  // used in this run: newer than anything found at start
    EXPECT_EQ(cache.make_room(1000 - 100, anything), (std::vector<std::string>{"old", "crashed", "newer"}));
    EXPECT_TRUE(fs::exists(root / "older"));
}

// ---- the catalog (names in the mount) ----

Decision decision(Action action) {
    Decision d;
    d.action = action;
    d.extension = action == Action::remux                                    ? ".mp4"
                  : action == Action::pass_through || action == Action::skip ? ""
                                                                             : ".ts";
    return d;
}

SourceItem file(std::string name, Action action) {
    return SourceItem{std::move(name), false, decision(action)};
}

std::set<std::string> names(const Listing& listing) {
    std::set<std::string> result;
    for (const auto& [name, item] : listing) result.insert(name);
    return result;
}

// Whether TEXT is well-formed UTF-8 (no sequence cut short, no stray continuation byte).
bool valid_utf8(std::string_view text) {
    for (std::size_t i = 0; i < text.size();) {
        auto lead = static_cast<unsigned char>(text[i]);
        std::size_t length = lead < 0x80           ? 1
                             : (lead >> 5) == 0x6  ? 2
                             : (lead >> 4) == 0xE  ? 3
                             : (lead >> 3) == 0x1E ? 4
                                                   : 0;
        if (length == 0 || i + length > text.size()) return false;
        for (std::size_t j = 1; j < length; ++j)
            if ((static_cast<unsigned char>(text[i + j]) & 0xC0) != 0x80) return false;
        i += length;
    }
    return true;
}

TEST(TvfsCatalog, APassThroughNameWinsAndTheConvertedFileKeepsItsSourceNameInFront) {
    auto listing =
        name_items({file("clip.mkv", Action::remux), file("clip.mp4", Action::pass_through),
                    file("talk.avi", Action::full_transcode), file("talk.ts", Action::pass_through)});
    EXPECT_EQ(names(listing), (std::set<std::string>{"clip.mp4", "clip.mkv.mp4", "talk.ts", "talk.avi.ts"}));
    EXPECT_EQ(listing.at("clip.mp4").source_name, "clip.mp4");
    EXPECT_EQ(listing.at("clip.mkv.mp4").source_name, "clip.mkv");
    EXPECT_EQ(listing.at("talk.avi.ts").source_name, "talk.avi");
}

TEST(TvfsCatalog, SkippedFilesAreLeftOutAndDirectoriesKeepTheirNames) {
    auto listing = name_items({file("notes.txt", Action::skip), SourceItem{"season1", true, {}},
                               file("a.webm", Action::full_transcode), SourceItem{"b.ts", true, {}},
                               file("b.mkv", Action::audio_transcode)});
    EXPECT_EQ(names(listing), (std::set<std::string>{"season1", "a.ts", "b.ts", "b.mkv.ts"}));
    EXPECT_TRUE(listing.at("b.ts").directory);
    EXPECT_FALSE(listing.at("b.mkv.ts").directory);
}

TEST(TvfsCatalog, NamesNeverExceed255BytesStayDistinctAndKeepTheirExtension) {
    // Every source name is at most 255 bytes (the kernel's limit); their outputs may be longer.
    std::string one = std::string(253, 'a') + ".m",
                two = std::string(252, 'a') + "b.m";  // -> 256 bytes with ".ts"
    std::string clash(250, 'c');                      // -> "ccc.mkv.mp4": 258 bytes
    std::string accented;
    for (int i = 0; i < 126; ++i) accented += "\xC3\xA9";  // "é" x 126: a cut at an odd byte would split one
    std::string fits = std::string(251, 'p') + ".mp4";     // 255 bytes: kept as it is
    auto listing =
        name_items({file(one, Action::full_transcode), file(two, Action::full_transcode),
                    file(clash + ".mp4", Action::pass_through), file(clash + ".mkv", Action::remux),
                    file(accented + "x.m", Action::full_transcode), file(fits, Action::pass_through),
                    file("short.mkv", Action::remux)});
    EXPECT_EQ(listing.size(), 7u) << "distinct long names stay distinct";
    EXPECT_TRUE(listing.count("short.mp4"));
    EXPECT_TRUE(listing.count(fits));
    EXPECT_TRUE(listing.count(clash + ".mp4"));
    for (const auto& [name, item] : listing) {
        EXPECT_LE(name.size(), 255u) << name;
        EXPECT_TRUE(valid_utf8(name)) << name;
        if (item.source_name.ends_with(".mkv")) {
            EXPECT_TRUE(name.ends_with(".mp4")) << name;
        }
        if (item.source_name.ends_with(".m")) {
            EXPECT_TRUE(name.ends_with(".ts")) << name;
        }
    }
    EXPECT_EQ(fit_name("short.mp4", 4), "short.mp4");
    // The suffix is the CRC-32 of the whole name (Python's zlib.crc32 of the name is 0x18a63d7b): the same
    // name on every run, build and machine.
    auto y = std::string(255, 'y') + ".mp4";
    EXPECT_EQ(fit_name(y, 4), std::string(242, 'y') + "~18a63d7b.mp4");
}

// The catalog on a real directory, with a probe of our own (by extension) in place of FFmpeg's.
struct ByExtension {
    std::string root;
    int probes = 0;
    std::optional<Entry> operator()(const std::string& rel) {
        ++probes;
        if (!fs::exists(root + rel)) return std::nullopt;
        Entry entry;
        entry.decision = decision(rel.ends_with(".mkv")   ? Action::remux
                                  : rel.ends_with(".mp4") ? Action::pass_through
                                                          : Action::skip);
        return entry;
    }
};

TEST(TvfsCatalog, AListingIsReadOnceAndKeptUntilForgotten) {
    TempDir dir;
    auto root = dir.path().string();
    std::ofstream(dir.path() / "a.mkv") << "";
    std::ofstream(dir.path() / ".hidden.mkv") << "";
    std::ofstream(dir.path() / "notes.txt") << "";
    fs::create_directory(dir.path() / "sub");
    std::ofstream(dir.path() / "sub" / "c.mp4") << "";
    ByExtension probe{root};
    int scans = 0;
    Catalog catalog(root, std::ref(probe), [&] { ++scans; });
    EXPECT_EQ(names(*catalog.listing("")), (std::set<std::string>{"a.mp4", "sub"}));
    std::ofstream(dir.path() / "b.mkv") << "";
    EXPECT_EQ(names(*catalog.listing("")), (std::set<std::string>{"a.mp4", "sub"})) << "kept until forgotten";
    EXPECT_EQ(scans, 1);
    EXPECT_EQ(catalog.names_of("", "a.mkv"), std::vector<std::string>{"a.mp4"});
    catalog.forget("");
    EXPECT_EQ(names(*catalog.listing("")), (std::set<std::string>{"a.mp4", "b.mp4", "sub"}));
    EXPECT_EQ(scans, 2);

    auto resolved = catalog.resolve("/a.mp4");
    ASSERT_TRUE(resolved);
    EXPECT_FALSE(resolved->directory);
    EXPECT_EQ(resolved->source_rel, "/a.mkv");
    ASSERT_TRUE(catalog.resolve("/sub"));
    EXPECT_TRUE(catalog.resolve("/sub")->directory);
    ASSERT_TRUE(catalog.resolve("/sub/c.mp4"));
    EXPECT_EQ(catalog.resolve("/sub/c.mp4")->source_rel, "/sub/c.mp4");
    EXPECT_FALSE(catalog.resolve("/a.mkv")) << "the source name is not in the mount";
    EXPECT_FALSE(catalog.resolve("/notes.txt"));
    EXPECT_FALSE(catalog.resolve("/.hidden.mp4"));
    fs::remove(dir.path() / "a.mkv");
    EXPECT_FALSE(catalog.resolve("/a.mp4"))
        << "a file gone from the source resolves to nothing even before forget()";
}

// decide_all() on files that are not media (no FFmpeg work to speak of): every file gets its entry in
// order, skipped with the reason, gone files are nullopt; the work is shared with the pool; after
// stop() the caller's thread does it alone; the entries are saved and a new cache loads them.
TEST(TvfsProbeCache, DecideAllGivesEveryFileItsEntryInOrderAndWorksAfterStop) {
    TempDir dir;
    auto root = dir.path().string();
    fs::create_directory(dir.path() / "src");
    std::vector<std::string> rels;
    for (int i = 0; i < 40; ++i) {
        auto rel = "/f" + std::to_string(i) + ".mkv";
        std::ofstream(dir.path() / ("src" + rel)) << "not a video " << i;
        rels.push_back(rel);
    }
    rels.push_back("/gone.mkv");
    const Profile& profile = builtin_profile("tv");
    auto file = root + "/probe.json";
    {
        ProbeCache cache(root + "/src", profile, file);
        auto entries = cache.decide_all(rels);
        ASSERT_EQ(entries.size(), rels.size());
        for (std::size_t i = 0; i + 1 < rels.size(); ++i) {
            ASSERT_TRUE(entries[i]) << rels[i];
            EXPECT_EQ(entries[i]->decision.action, Action::skip);
            EXPECT_FALSE(entries[i]->decision.reasons.empty());
            EXPECT_EQ(entries[i]->size,
                      static_cast<std::int64_t>(fs::file_size(dir.path() / ("src" + rels[i]))));
            EXPECT_TRUE(cache.ready(rels[i])) << "a skipped file needs no layout: complete at once";
        }
        EXPECT_FALSE(entries.back()) << "a file that is not there";
        cache.stop();
        std::ofstream(dir.path() / "src/late.mkv") << "late";
        auto late = cache.decide_all({"/late.mkv", "/f0.mkv"});
        ASSERT_EQ(late.size(), 2u);
        EXPECT_TRUE(late[0] && late[1]);
        cache.save();
    }
    ProbeCache reloaded(root + "/src", profile, file);
    EXPECT_TRUE(reloaded.ready("/f39.mkv"));
    EXPECT_TRUE(reloaded.ready("/late.mkv"));
    std::ofstream(dir.path() / "src/f39.mkv") << "changed, longer than before";
    EXPECT_FALSE(reloaded.ready("/f39.mkv")) << "size and mtime must match";
}

// The faststart head of a streamed remux (mp4_boxes.hpp), on hand-made boxes.
namespace mp4 {

using namespace std::string_literals;

std::string be32(std::uint64_t v) {
    return {char(v >> 24 & 0xff), char(v >> 16 & 0xff), char(v >> 8 & 0xff), char(v & 0xff)};
}
std::string be64(std::uint64_t v) { return be32(v >> 32) + be32(v & 0xffffffff); }
std::string box(const std::string& type, const std::string& payload) {
    return be32(8 + payload.size()) + type + payload;
}
std::string stco(std::initializer_list<std::uint32_t> offsets) {
    std::string p = be32(0) + be32(offsets.size());
    for (auto o : offsets) p += be32(o);
    return box("stco", p);
}
std::string trak(const std::string& table) {
    return box("trak", box("tkhd", std::string(12, 't')) +
                           box("mdia", box("minf", box("stbl", box("stsd", "descr") + table))));
}
// ftyp, a `free` placeholder and an mdat header for PAYLOAD bytes.
std::string plain_header(std::uint32_t payload) {
    return box("ftyp", "isom\0\0\2\0"s) + box("free", "") + be32(8 + payload) + "mdat";
}
// The offsets of every chunk table in MOOV, in order, and the table types.
std::vector<std::uint64_t> offsets(const std::string& moov, std::string& types) {
    std::vector<std::uint64_t> out;
    for (const char* type : {"stco", "co64"})
        for (std::size_t at = moov.find(type); at != std::string::npos; at = moov.find(type, at + 1)) {
            types += type;
            auto u = [&](std::size_t i) { return static_cast<std::uint8_t>(moov[i]); };
            auto count =
                (std::uint32_t(u(at + 8)) << 24) | (u(at + 9) << 16) | (u(at + 10) << 8) | u(at + 11);
            std::size_t width = std::string(type) == "co64" ? 8 : 4;
            for (std::uint32_t i = 0; i < count; ++i) {
                std::uint64_t v = 0;
                for (std::size_t b = 0; b < width; ++b) v = v << 8 | u(at + 12 + i * width + b);
                out.push_back(v);
            }
        }
    return out;
}

}  // namespace mp4

TEST(TvfsMp4, FaststartHeadShiftsEveryTracksChunkOffsetsByMoovsSize) {
    using namespace mp4;
    auto header = plain_header(1000);
    auto moov = box("moov", box("mvhd", std::string(20, 'm')) + trak(stco({32, 500})) + trak(stco({700})));
    auto head = faststart_head(header, moov);
    ASSERT_EQ(head.size(), header.size() + moov.size());
    EXPECT_EQ(head.substr(0, 16), header.substr(0, 16));          // ftyp first
    EXPECT_EQ(head.substr(16, 4), be32(moov.size()));             // then moov, same size
    EXPECT_EQ(head.substr(16 + moov.size()), header.substr(16));  // then free + mdat header
    std::string types;
    EXPECT_EQ(offsets(head, types),
              (std::vector<std::uint64_t>{32 + moov.size(), 500 + moov.size(), 700 + moov.size()}));
    EXPECT_EQ(types, "stcostco");
    auto mdat = parse_faststart_head(head);
    EXPECT_EQ(mdat.payload_start, header.size());
    EXPECT_EQ(mdat.payload_bytes, 1000u);
}

TEST(TvfsMp4, AnStcoThatWouldOverflowBecomesCo64AndMoovsSizeSettles) {
    using namespace mp4;
    auto header = plain_header(1000);
    // The second track's last chunk sits 100 bytes below 4 GiB: shifted by moov it no longer fits.
    auto moov = box("moov", trak(stco({32})) + trak(stco({64, 0xffffff9cu})));
    auto head = faststart_head(header, moov);
    // That table grows by 4 bytes per entry, so moov (and the shift) by 8.
    auto moov_size = moov.size() + 8;
    ASSERT_EQ(head.size(), header.size() + moov_size);
    std::string types;
    EXPECT_EQ(offsets(head, types),
              (std::vector<std::uint64_t>{32 + moov_size, 64 + moov_size, 0xffffff9cull + moov_size}));
    EXPECT_EQ(types, "stcoco64");
    EXPECT_EQ(parse_faststart_head(head).payload_start, header.size());
}

TEST(TvfsMp4, MalformedBoxesAreRefusedNotReadPast) {
    using namespace mp4;
    auto header = plain_header(10);
    auto good = box("moov", trak(stco({1, 2})));
    EXPECT_NO_THROW(faststart_head(header, good));
    EXPECT_THROW(faststart_head(header, good.substr(0, good.size() - 1)), DataError);  // cut short
    EXPECT_THROW(faststart_head(header, good + "x"), DataError);                       // trailing bytes
    EXPECT_THROW(faststart_head(header, box("moov", box("stbl", be32(0) + be32(9)))), DataError);
    EXPECT_THROW(faststart_head(header, box("moov", box("trak", be32(1) + "stco" + be64(4)))), DataError);
    EXPECT_THROW(faststart_head(header, box("moov", box("trak", stco({1}) + be32(3) + "abcd"))), DataError);
    EXPECT_THROW(faststart_head(header.substr(0, header.size() - 1), good), DataError);  // no mdat header
    EXPECT_THROW(faststart_head("ftyp" + header, good), DataError);
    EXPECT_THROW(faststart_head(box("ftyp", "") + box("uuid", "x") + be32(8) + "mdat", good), DataError);
    EXPECT_THROW(parse_faststart_head(header), DataError);  // no moov
    EXPECT_THROW(parse_faststart_head(""), DataError);
}

}  // namespace
}  // namespace ktricks::tvfs
