// tvfs_asan_check FILE...: the whole media path (probe, decide, layout, subtitle sidecar, every remux
// and segment) on
// each FILE, built with AddressSanitizer; the integration tests run it on corrupt media. Exit 0
// unless the sanitizer finds something (it aborts with its report) or a streamed remux differs from
// libavformat's own faststart remux (exit 1); bad media is just reported.
#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <fstream>
#include <iterator>

#include "tvfs/av.hpp"

int main(int argc, char** argv) {
    using namespace ktricks::tvfs;
    const Profile& profile = builtin_profile("tv");
    int status = 0;
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
                // The streamed remux (dry-run head + the plain muxer's payload) against
                // libavformat's own +faststart remux of the same packets: byte for byte.
                auto plan = remux_plan(path, decision);
                std::string streamed = plan.head;
                stream_remux(path, decision, plan,
                             [&](std::uint64_t, const std::uint8_t* data, std::size_t n) {
                                 streamed.append(reinterpret_cast<const char*>(data), n);
                             });
                auto out = fmt::format("/tmp/tvfs-asan-{}.mp4", ::getpid());
                remux(path, decision, out);
                std::ifstream file(out, std::ios::binary);
                std::string reference((std::istreambuf_iterator<char>(file)),
                                      std::istreambuf_iterator<char>());
                std::remove(out.c_str());
                fmt::print("  remux: {} bytes{}\n", plan.size(),
                           streamed == reference && streamed.size() == plan.size()
                               ? ", streamed = faststart"
                               : fmt::format(", STREAMED DIFFERS (faststart {} bytes)", reference.size()));
                if (streamed != reference) status = 1;
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
    return status;
}
