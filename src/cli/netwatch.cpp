// ktricks netwatch: argument parsing for the network event watcher (library: ktricks/netwatch.hpp).
#include <fmt/format.h>

#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>

#include "cli/common.hpp"
#include "cli/publish_link.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/netwatch.hpp"

namespace ktricks::cli {
namespace {

struct NetwatchOptions {
    std::vector<std::string> rules_files;
    std::vector<std::string> on;
    std::vector<std::string> exec;
    bool json = false;
    bool dry_run = false;
    bool no_initial = false;
    bool no_wifi = false;
    bool all_netns = false;
    bool user = false;
    std::vector<std::string> dispatcher_dirs;
    bool nm_dirs = false;
    std::string record;
    std::string replay;
    int receive_buffer = 0;
    std::string duration;
    ExecFlags exec_flags;
    PublishFlags publish;
};

void print_line(const std::string& text, FILE* to = stdout) {
    std::fwrite(text.data(), 1, text.size(), to);
    std::fflush(to);
}

// --user: $XDG_CONFIG_HOME/ktricks/netwatch.toml, XDG_CONFIG_HOME defaulting to ~/.config (the
// XDG base directory rules, as systemd --user sets HOME and leaves XDG_CONFIG_HOME unset).
std::string user_rules_file() {
    const char* config = std::getenv("XDG_CONFIG_HOME");
    if (config && config[0] == '/') return std::string(config) + "/ktricks/netwatch.toml";
    std::string home;
    if (const char* value = std::getenv("HOME"); value && value[0] == '/') home = value;
    else if (const passwd* entry = ::getpwuid(::getuid()); entry && entry->pw_dir)
        home = entry->pw_dir;
    if (home.empty())
        throw InputError("--user: neither XDG_CONFIG_HOME nor HOME is set, and no home directory");
    return home + "/.config/ktricks/netwatch.toml";
}

int run_netwatch(const NetwatchOptions& options) {
    netwatch::WatchOptions watch;
    std::vector<std::string> rules_files = options.rules_files;
    if (options.user) {
        if (options.nm_dirs)
            throw InputError(
                "--user and --nm-dirs do not go together: NetworkManager's scripts must be root's");
        rules_files.push_back(user_rules_file());
    }
    if (options.on.size() != options.exec.size())
        throw InputError(fmt::format("every --on needs its --exec (got {} --on and {} --exec)",
                                     options.on.size(), options.exec.size()));
    for (const auto& file : rules_files) {
        auto rules = netwatch::load_rules_file(file);
        watch.rules.insert(watch.rules.end(), rules.begin(), rules.end());
    }
    for (std::size_t i = 0; i < options.on.size(); ++i)
        watch.rules.push_back(netwatch::parse_inline_rule(options.on[i], options.exec[i],
                                                          static_cast<int>(watch.rules.size() + 1)));
    if (watch.rules.empty() && !options.json && options.dispatcher_dirs.empty() && !options.nm_dirs)
        throw InputError(
            "nothing to do: give --rules FILE, --on EVENT --exec CMD, --dispatcher-dir DIR, --nm-dirs "
            "or --json");
    watch.all_netns = options.all_netns;
    watch.dry_run = options.dry_run;
    watch.initial = !options.no_initial;
    watch.wifi = !options.no_wifi;
    watch.dispatcher_dirs = options.dispatcher_dirs;
    watch.nm_dirs = options.nm_dirs;
    watch.record_file = options.record;
    watch.replay_file = options.replay;
    watch.receive_buffer = options.receive_buffer;
    watch.exec_timeout = exec_timeout(options.exec_flags);
    watch.exec_concurrency = options.exec_flags.concurrency;
    // With --json, stdout is the event stream: scripts' output goes to stderr.
    if (options.json) watch.script_stdout = STDERR_FILENO;
    std::optional<std::chrono::milliseconds> duration;
    if (!options.duration.empty())
        duration = std::chrono::milliseconds(parse_seconds_ms("--duration", options.duration));

    EventLoop loop;
    std::optional<PublishLink> link;
    if (!options.publish.url.empty()) {
        link.emplace(loop, options.publish, "netwatch", false);
        link->start();
    }
    netwatch::Callbacks callbacks;
    if (options.json || link)
        callbacks.on_event = [&, json = options.json](const netwatch::NetEvent& event) {
            Event line = event.to_event();
            if (link) link->send(line);
            if (json) print_line(line.to_line());
        };
    callbacks.on_script_end = [json = options.json](const JobReport& report) {
        if (json) print_line(report.to_event("netwatch").to_line());
        log_script_end(report);
    };
    callbacks.on_dry_run = [json = options.json](const std::string& line) {
        print_line(line + "\n", json ? stderr : stdout);
    };

    netwatch::Watcher watcher(loop, watch, callbacks);
    loop.add_signals({SIGINT, SIGTERM}, [&](const signalfd_siginfo&) { loop.stop(); });
    // SIGUSR1: print the cache (for comparing it with the kernel's state, and for bug reports).
    loop.add_signal(SIGUSR1, [&](const signalfd_siginfo&) {
        print_line(Event("netwatch", "state").set("state", watcher.describe_state()).to_line());
    });
    if (duration) loop.add_timer(*duration, [&] { loop.stop(); });
    watcher.start();
    if (!options.replay.empty()) {
        // Scripts started by the replay finish (bounded by their timeouts) before we return.
        while (!watcher.idle() && !loop.stopped()) loop.run_once(std::chrono::milliseconds(100));
        return link ? finish_publishing(*link) : 0;
    }
    if (options.json) {
        Event ready("netwatch", "ready");
        ready.set("wifi", watcher.wifi());
        if (options.all_netns) ready.set("netns", watcher.namespaces());
        print_line(ready.to_line());
    }
    // Under systemd (Type=notify): ready once the initial state is known and the rules have seen it.
    auto watched = watcher.namespaces().size();
    notify_ready(fmt::format("watching {} namespace{}{}", watched, watched == 1 ? "" : "s",
                             watcher.wifi() ? " and wifi" : ""));
    loop.run();
    notify_stopping();
    if (link) {
        watcher.stop();
        return finish_publishing(*link);
    }
    return 0;
}

}  // namespace

Subcommand add_netwatch(CLI::App& app) {
    auto options = std::make_shared<NetwatchOptions>();
    auto* sub = add_subcommand(app, "netwatch");
    sub->add_option("--rules", options->rules_files, "TOML rules file ([[rule]] on=... run=...); repeatable");
    sub->add_option("--on", options->on,
                    "EVENT[|EVENT...][,FILTER...] for the next --exec; filters: iface=GLOB "
                    "ssid=GLOB ssid!=GLOB bssid= family=inet|inet6 addr=CIDR netns=NAME "
                    "debounce_ms=N timeout=SECONDS");
    sub->add_option("--exec", options->exec, "Shell command run for the matching --on");
    sub->add_flag("--json", options->json, "Print every event (and every script's end) as a JSON line");
    add_publish_flags(sub, options->publish);
    sub->add_flag("--dry-run", options->dry_run, "Print which rules would fire instead of running them");
    sub->add_flag("--no-initial", options->no_initial,
                  "Do not emit `initial` events for the state found at start-up");
    sub->add_flag("--no-wifi", options->no_wifi, "Do not watch nl80211");
    sub->add_flag("--all-netns", options->all_netns,
                  "Also watch every other network namespace, named in /run/netns or held by processes "
                  "(found as they appear); events carry netns=NAME or netns=pid:N and netns_inode");
    sub->add_flag("--user", options->user,
                  "Also run the rules of ~/.config/ktricks/netwatch.toml ($XDG_CONFIG_HOME); for a normal "
                  "user's service (systemctl --user), scripts run as that user");
    sub->add_option("--dispatcher-dir", options->dispatcher_dirs,
                    "Run NetworkManager-dispatcher scripts from DIR ($1 iface, $2 up/down/dhcp4-change/...); "
                    "repeatable, a later DIR masks an earlier one's script of the same name");
    sub->add_flag(
        "--nm-dirs", options->nm_dirs,
        "Run the scripts of /usr/lib/NetworkManager/dispatcher.d and /etc/NetworkManager/dispatcher.d "
        "(an /etc entry masks a /usr/lib one) before any --dispatcher-dir");
    sub->add_option("--record", options->record, "Save the raw netlink stream with timestamps to FILE");
    sub->add_option("--replay", options->replay,
                    "Feed a --record FILE through the rules instead of the kernel");
    sub->add_option("--receive-buffer", options->receive_buffer,
                    "SO_RCVBUF of the rtnetlink socket in bytes (default 8 MiB)");
    add_exec_flags(sub, options->exec_flags);
    sub->add_option("--duration", options->duration,
                    "Stop after SECONDS (default: run until SIGINT/SIGTERM)");
    sub->footer(
        "Events: link-add link-remove link-up link-down link-rename addr-add addr-remove route-add route-remove\n"
        "        default-route-change online offline wifi-connect wifi-disconnect wifi-roam\n"
        "Scripts get KTRICKS_EVENT, KTRICKS_IFACE, KTRICKS_IFINDEX, KTRICKS_ADDR, KTRICKS_SSID, KTRICKS_BSSID, ...\n"
        "in the environment and the event as JSON on stdin.\n"
        "Examples:\n"
        "  ktricks netwatch --on 'wifi-connect,ssid=home' --exec 'mount /mnt/nas'\n"
        "  ktricks netwatch --on 'default-route-change,family=inet' --exec 'notify-send \"route: $KTRICKS_GATEWAY\"'\n"
        "  ktricks netwatch --rules /etc/ktricks/netwatch.toml\n"
        "  ktricks netwatch --json --no-initial\n"
        "Exit status: 0 when stopped by INT/TERM or --duration; 65 for a bad rules file (FILE:LINE and the problem);\n"
        "64 for bad usage. A failing or hung script is logged, never fatal.");
    return {sub, [options] { return run_netwatch(*options); }};
}

}  // namespace ktricks::cli
