// tvfs_asan_check FILE...: the whole media path (probe, decide, layout, subtitle sidecar, every remux
// and segment) on
// each FILE, built with AddressSanitizer; the integration tests run it on corrupt media. Exit 0
// unless the sanitizer finds something (it aborts with its report); bad media is just reported.
#include <fmt/format.h>

#include <cstdio>
#include <exception>

#include "tvfs/av.hpp"

int main(int argc, char** argv) {
    using namespace ktricks::tvfs;
    const Profile& profile = builtin_profile("tv");
    for (int i = 1; i < argc; ++i) {
        std::string path = argv[i];
        try {
            auto media = probe(path);
            auto decision = decide(media, profile);
            fmt::print("{}: {}\n", path, to_string(decision.action));
            if (decision.sidecar_subtitle >= 0) {
                try {
                    fmt::print("  sidecar: {} bytes\n",
                               subtitle_srt(path, decision.sidecar_subtitle, true).size());
                } catch (const std::exception& error) {
                    fmt::print("  sidecar: {}\n", error.what());
                }
            }
            if (decision.action == Action::remux) {
                auto size = remux_size(path, decision);
                auto out = fmt::format("/tmp/tvfs-asan-{}.mp4", ::getpid());
                remux(path, decision, out);
                std::remove(out.c_str());
                fmt::print("  remux: {} bytes\n", size);
            } else if (decision.action == Action::audio_transcode ||
                       decision.action == Action::full_transcode) {
                auto layout = transcode_layout(path, media, decision, profile);
                for (std::size_t k = 0; k < layout.segments.size(); ++k) {
                    try {
                        auto data = produce_segment(path, media, decision, profile, layout, k);
                        if (data.size() != layout.segments[k].bytes)
                            fmt::print("  segment {}: WRONG SIZE\n", k);
                    } catch (const std::exception& error) {
                        fmt::print("  segment {}: {}\n", k, error.what());
                    }
                }
                fmt::print("  {} segments, {} bytes\n", layout.segments.size(), layout.size);
            }
        } catch (const std::exception& error) {
            fmt::print("{}: rejected: {}\n", path, error.what());
        }
    }
    return 0;
}
