// The TOML profile parser on arbitrary bytes: it either returns a profile or throws InputError.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ktricks/core/error.hpp"
#include "ktricks/tvfs.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        auto profile = ktricks::tvfs::parse_profile(text, "fuzz.toml");
        ktricks::tvfs::MediaInfo media;
        media.container = "matroska,webm";
        media.duration = 1;
        media.video = ktricks::tvfs::VideoStream{0, "h264", "High", 41, 8, "yuv420p", 1920, 1080, 25, false};
        media.audio.push_back(ktricks::tvfs::AudioStream{1, "ac3", "", 6, 48000, "", false});
        (void)ktricks::tvfs::decide(media, profile);
        (void)profile.describe();
    } catch (const ktricks::InputError&) {}
    try {
        (void)ktricks::tvfs::parse_size(text);
    } catch (const ktricks::InputError&) {}
    return 0;
}
