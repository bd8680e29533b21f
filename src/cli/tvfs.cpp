// ktricks tvfs: argument parsing for the TV filesystem (library: ktricks/tvfs.hpp).
#include <fmt/format.h>

#include "cli/common.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/tvfs.hpp"

namespace ktricks::cli {
namespace {

struct TvfsOptions {
    tvfs::MountOptions mount;
    std::string explain;
    std::string cache_size;
    bool list_profiles = false;
};

// Bad bytes in a file (a TOML profile, a media file) rather than on the command line: EX_DATAERR.
struct DataError : InputError {
    using InputError::InputError;
};

template <typename Function>
auto from_file(Function function) {
    try {
        return function();
    } catch (const DataError&) {
        throw;
    } catch (const InputError& error) {
        throw DataError(error.what());
    }
}

int run_tvfs(TvfsOptions& options) {
    if (options.list_profiles) {
        for (const auto& name : tvfs::builtin_profile_names()) fmt::print("{}", tvfs::builtin_profile(name).describe());
        return 0;
    }
    bool profile_is_file = options.mount.profile.find('/') != std::string::npos || options.mount.profile.ends_with(".toml");
    auto profile = profile_is_file ? from_file([&] { return tvfs::load_profile(options.mount.profile); })
                                   : tvfs::load_profile(options.mount.profile);
    if (!options.explain.empty()) {
        auto media = from_file([&] { return tvfs::probe(options.explain); });
        auto decision = tvfs::decide(media, profile);
        fmt::print("{}", tvfs::explain(options.explain, media, decision));
        return 0;
    }
    if (options.mount.source.empty() || options.mount.mountpoint.empty()) throw InputError("missing SRC and MNT: ktricks tvfs SRC MNT");
    if (!options.cache_size.empty()) options.mount.cache_size = tvfs::parse_size(options.cache_size);
    return tvfs::mount(options.mount);
}

}  // namespace

Subcommand add_tvfs(CLI::App& app) {
    auto options = std::make_shared<TvfsOptions>();
    auto* sub = add_subcommand(app, "tvfs");
    sub->add_option("source", options->mount.source, "Folder of videos (SRC)");
    sub->add_option("mountpoint", options->mount.mountpoint, "Where to mount (MNT)");
    sub->add_option("--profile", options->mount.profile, "Built-in profile (tv, roku, samsung, lg, chromecast) or a TOML file")
        ->capture_default_str();
    sub->add_option("--cache", options->mount.cache_dir, "Cache folder (probe results and transcoded output)");
    sub->add_option("--cache-size", options->cache_size, "Cache size limit, e.g. 4G (default 4G)");
    sub->add_flag("-f,--foreground", options->mount.foreground, "Stay in the foreground");
    sub->add_option("-o", options->mount.fuse_options, "FUSE mount options (allow_other, ...)")->allow_extra_args(false);
    sub->add_option("--explain", options->explain, "Probe FILE and print the decision and why");
    sub->add_flag("--profiles", options->list_profiles, "Print the built-in profiles");
    sub->add_flag("--dlna", options->mount.dlna, "Also run minidlna serving MNT (restarted with -r when SRC changes)");
    sub->add_option("--dlna-iface", options->mount.dlna_iface, "Interface minidlna announces on")->capture_default_str();
    sub->add_option("--dlna-port", options->mount.dlna_port, "minidlna HTTP port")->capture_default_str();
    sub->add_option("--grace", options->mount.grace_seconds, "Seconds a transcoder lingers after the last close")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    sub->footer(
        "Examples:\n"
        "  ktricks tvfs --explain movie.mkv                # pass-through, remux, audio-transcode or transcode, and why\n"
        "  ktricks tvfs ~/Videos /srv/tv -f                # mount in the foreground; Ctrl-C unmounts\n"
        "  ktricks tvfs ~/Videos /srv/tv --profile samsung --dlna --dlna-iface eth0\n"
        "  fusermount3 -u /srv/tv                           # unmount\n"
        "Exit status: 0 after a clean unmount (SIGINT, SIGTERM or fusermount3 -u); 66 if SRC or FILE is missing;\n"
        "65 for a bad profile or an unreadable media file (--explain); 64 for bad usage.");
    return {sub, [options] {
                try {
                    return run_tvfs(*options);
                } catch (const DataError& error) {
                    report_error("tvfs", error);
                    return exit_code::data;
                }
            }};
}

}  // namespace ktricks::cli
