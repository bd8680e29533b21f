// ktricks tvfs: argument parsing for the TV filesystem (library: ktricks/tvfs.hpp), and what the
// library leaves to the program: going into the background, signals, minidlna, sd_notify and the
// exit status.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <fmt/format.h>

#include <filesystem>

#include "cli/common.hpp"
#include "cli/tvfs_dlna.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/tvfs.hpp"

namespace ktricks::cli {
namespace {

struct TvfsOptions {
    tvfs::MountOptions mount;
    std::string explain;
    std::string cache_size;
    bool list_profiles = false;
    bool foreground = false;
    bool dlna = false;
    std::string dlna_iface = "lo";
    int dlna_port = 8200;
};

// Forks; the parent exits once the child reports that it serves (0), or dies first (70). The child
// leaves the terminal (new session, "/" as its directory, stdio on /dev/null) and gets the pipe to
// report on. Called before any thread exists: fork copies only the calling thread.
Fd go_to_background() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) < 0) throw_errno("pipe2");
    Fd report(fds[0]), ready(fds[1]);
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("fork");
    if (pid > 0) {
        ready = Fd();
        char byte = 0;
        ssize_t got;
        while ((got = ::read(report.get(), &byte, 1)) < 0 && errno == EINTR) {}
        ::_exit(got == 1 ? exit_code::ok
                         : exit_code::software);  // the mount is the child's now: no destructors
    }
    report = Fd();
    ::setsid();
    if (::chdir("/") != 0) throw_errno("chdir", "/");
    Fd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!null) throw_errno("open", "/dev/null");
    for (int stdio = 0; stdio < 3; ++stdio) ::dup2(null.get(), stdio);
    return ready;
}

int serve(TvfsOptions& options) {
    EventLoop loop;
    tvfs::Mount mount(options.mount);
    // minidlna's files: in the cache directory given, else /tmp. Absolute before we change to "/".
    auto dlna_dir = options.mount.cache_dir.empty()
                        ? std::string("/tmp")
                        : std::filesystem::absolute(options.mount.cache_dir).string();
    Fd background;
    if (!options.foreground) background = go_to_background();
    // A reader gone away is an error on one write, not the end of the daemon.
    ::signal(SIGPIPE, SIG_IGN);
    int status = exit_code::ok;
    // SIGINT, SIGTERM, SIGHUP and fusermount3 -u are a clean unmount; a failure to serve is 70.
    loop.add_signals({SIGINT, SIGTERM, SIGHUP}, [&](const signalfd_siginfo&) { loop.stop(); });
    mount.start(loop, [&](std::exception_ptr error) {
        if (error) {
            try {
                std::rethrow_exception(error);
            } catch (const std::exception& failure) {
                log_error("serving {}: {}", mount.mountpoint(), failure.what());
            }
            status = exit_code::software;
        }
        loop.stop();
    });
    std::optional<Dlna> dlna;
    if (options.dlna) {
        dlna.emplace(DlnaOptions{mount.mountpoint(), dlna_dir, options.dlna_iface, options.dlna_port});
        dlna->start(false);
    }
    EventLoop::SourceId rescan = 0;
    tvfs::SourceWatch watch(loop, mount, [&] {
        if (!dlna) return;
        // Debounced: copying one file into SRC is many events.
        loop.remove(rescan);
        rescan = loop.add_timer(std::chrono::seconds(2), [&] {
            rescan = 0;
            try {
                dlna->restart();
            } catch (const std::exception& error) {
                log_info("minidlna restart: {}", error.what());
            }
        });
    });
    watch.start();
    // Under systemd (Type=notify): the mount is in place and answers.
    notify_ready(fmt::format("{} on {}", mount.source(), mount.mountpoint()));
    if (background) {
        char byte = 1;
        [[maybe_unused]] auto ignored = ::write(background.get(), &byte, 1);
        background = Fd();
    }
    loop.run();
    notify_stopping();
    watch.stop();
    loop.remove(rescan);
    dlna.reset();
    mount.stop();
    return status;
}

int run_tvfs(TvfsOptions& options) {
    if (options.list_profiles) {
        for (const auto& name : tvfs::builtin_profile_names())
            fmt::print("{}", tvfs::builtin_profile(name).describe());
        return 0;
    }
    // Bad bytes in a profile file or a medium: the library's DataError, 65 through exit_status_for.
    auto profile = tvfs::load_profile(options.mount.profile);
    if (!options.explain.empty()) {
        auto media = tvfs::probe(options.explain);
        auto decision = tvfs::decide(media, profile);
        fmt::print("{}", tvfs::explain(options.explain, media, decision));
        return 0;
    }
    if (options.mount.source.empty() || options.mount.mountpoint.empty())
        throw InputError("missing SRC and MNT: ktricks tvfs SRC MNT");
    if (!options.cache_size.empty()) options.mount.cache_size = tvfs::parse_size(options.cache_size);
    return serve(options);
}

}  // namespace

Subcommand add_tvfs(CLI::App& app) {
    auto options = std::make_shared<TvfsOptions>();
    auto* sub = add_subcommand(app, "tvfs");
    sub->add_option("source", options->mount.source, "Folder of videos (SRC)");
    sub->add_option("mountpoint", options->mount.mountpoint, "Where to mount (MNT)");
    sub->add_option("--profile", options->mount.profile,
                    "Built-in profile (tv, roku, samsung, lg, chromecast) or a TOML file")
        ->capture_default_str();
    sub->add_option("--cache", options->mount.cache_dir,
                    "Cache folder (probe results and transcoded output)");
    sub->add_option("--cache-size", options->cache_size, "Cache size limit, e.g. 4G (default 4G)");
    sub->add_flag("-f,--foreground", options->foreground, "Stay in the foreground");
    sub->add_option("-o", options->mount.fuse_options, "FUSE mount options (allow_other, ...)")
        ->allow_extra_args(false);
    sub->add_option("--explain", options->explain, "Probe FILE and print the decision and why");
    sub->add_flag("--profiles", options->list_profiles, "Print the built-in profiles");
    sub->add_flag("--dlna", options->dlna,
                  "Also run minidlna serving MNT (restarted with -r when SRC changes)");
    sub->add_option("--dlna-iface", options->dlna_iface, "Interface minidlna announces on")
        ->capture_default_str();
    sub->add_option("--dlna-port", options->dlna_port, "minidlna HTTP port")->capture_default_str();
    sub->add_option("--grace", options->mount.grace_seconds,
                    "Seconds a transcoder lingers after the last close")
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
    // A DataError from the profile or the medium exits 65 through exit_status_for, like any other.
    return {sub, [options] { return run_tvfs(*options); }};
}

}  // namespace ktricks::cli
