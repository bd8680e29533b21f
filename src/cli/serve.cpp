// ktricks serve / reload / takeover: argument parsing for socket handoff (library: ktricks/handoff.hpp).
#include <signal.h>
#include <string.h>

#include <fmt/format.h>

#include <charconv>
#include <memory>

#include "cli/common.hpp"
#include "cli/jail_options.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/socket_address.hpp"
#include "ktricks/handoff.hpp"

namespace ktricks::cli {
namespace {

using handoff::milliseconds;

// "TERM", "SIGTERM", "term" or "15".
int parse_signal(std::string_view flag, const std::string& text) {
    int number = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (error == std::errc() && end == text.data() + text.size() && number > 0 && number < 65) return number;
    std::string name;
    for (char c : text) name += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (name.starts_with("SIG")) name.erase(0, 3);
    for (int sig = 1; sig < 32; ++sig)
        if (const char* abbrev = ::sigabbrev_np(sig); abbrev && name == abbrev) return sig;
    throw InputError(
        fmt::format("{} {}: not a signal (use a name like TERM or a number)", flag, printable(text)));
}

// One stderr line per lifecycle event, for people; --json prints the events themselves.
std::string describe(const nlohmann::ordered_json& e) {
    auto field = [&](const char* key) -> std::string {
        if (!e.contains(key)) return "";
        const auto& value = e[key];
        if (value.is_string()) return value.get<std::string>();
        if (value.is_number_float()) return fmt::format("{:.1f}", value.get<double>());
        return value.dump();
    };
    std::string who = e.contains("generation")
                          ? fmt::format("generation {} (pid {})", field("generation"), field("pid"))
                          : "";
    std::string name = e["event"].get<std::string>();
    if (name == "listening") return "listening on " + field("listeners");
    if (name == "started") return fmt::format("{} started: {}", who, field("command"));
    if (name == "ready") return fmt::format("{} ready after {} ms", who, field("ready_ms"));
    if (name == "reload") return fmt::format("reload: starting generation {}", field("generation"));
    if (name == "rollback") return fmt::format("reload failed, rolled back: {} {}", who, field("reason"));
    if (name == "failed") return fmt::format("{} never became ready: {}", who, field("reason"));
    if (name == "notified-ready")
        return fmt::format("{} says READY=1; waiting for the probe to prove it", who);
    if (name == "pid-namespace-unavailable")
        return fmt::format("no PID namespace ({}): {}", field("error"), field("consequence"));
    if (name == "refused") return "reload refused: " + field("reason");
    if (name == "draining")
        return fmt::format("{} draining ({}, up to {} ms)", who, field("how"), field("drain_timeout_ms"));
    if (name == "drain-timeout")
        return fmt::format("{} still running after the drain timeout: {}", who, field("action"));
    if (name == "drained")
        return fmt::format("{} drained: {} after {} ms", who, field("status"), field("drain_ms"));
    if (name == "exited") return fmt::format("{} exited: {}", who, field("status"));
    if (name == "status") return fmt::format("{} status: {}", who, field("status"));
    if (name == "fdstore")
        return fmt::format("{} stored {} fd(s) named {}", who, field("count"), field("name"));
    if (name == "stopping")
        return who.empty() ? "stopping: every generation gets the drain signal"
                           : who + " is stopping (STOPPING=1)";
    if (name == "adopted")
        return fmt::format("took fd {} ({}) from pid {}", field("fd"), field("address"), field("pid"));
    if (name == "retired" || name == "retired-with-loss")
        return fmt::format("pid {} retired with SIG{} after {} ms ({} check(s)); connections lost: {}{}",
                           field("pid"), field("signal"), field("ms"), field("attempts"),
                           field("lost_connections"), e.contains("lost") ? " " + field("lost") : "");
    if (name == "zerg")
        return fmt::format("zerg pid {} attached to {} listener(s)", field("pid"), field("listeners"));
    std::string rest;
    for (auto it = e.begin(); it != e.end(); ++it)
        if (it.key() != "ts" && it.key() != "source" && it.key() != "event")
            rest += fmt::format(" {}={}", it.key(), it.value().dump());
    return name + rest;
}

// Empty strings are "not given": the --server preset, or else the built-in default, fills them.
struct ServeCli {
    std::vector<std::string> listen;
    std::vector<std::string> command;
    std::string server;
    std::string ready;
    std::string ready_timeout = "30";
    std::string drain_signal;
    std::string drain_timeout = "30";
    std::string control;
    std::string protocol;
    std::string probe;
    std::string pid_file;
    int pid_namespace = -1;  // --pid-namespace 1, --no-pid-namespace 0, neither -1 (on with --server)
    std::string zerg;
    bool handoff = false;
    bool shared_listeners = false;
    bool json = false;
    bool jail = false;  // --jail: every generation runs in a jail (see jail_options.hpp)
    JailFlags jail_flags;
};

handoff::ServeOptions serve_options(const ServeCli& cli, std::string_view source) {
    handoff::ServeOptions options;
    options.command = cli.command;
    for (const auto& text : cli.listen) options.listen.push_back(handoff::ListenSpec::parse(text));
    std::optional<handoff::ServerPreset> preset;
    if (!cli.server.empty()) preset = handoff::server_preset(handoff::parse_server(cli.server));
    options.ready = !cli.ready.empty() ? handoff::ReadyCheck::parse(cli.ready)
                    : preset           ? preset->ready
                                       : handoff::ReadyCheck{};
    options.ready_timeout = milliseconds(parse_seconds_ms("--ready-timeout", cli.ready_timeout));
    options.drain_signal = !cli.drain_signal.empty() ? parse_signal("--drain-signal", cli.drain_signal)
                           : preset                  ? preset->drain_signal
                                                     : SIGTERM;
    options.drain_timeout = milliseconds(parse_seconds_ms("--drain-timeout", cli.drain_timeout));
    if (!cli.control.empty()) options.control_path = cli.control;
    if (!cli.zerg.empty()) options.zerg_path = cli.zerg;
    options.protocol = !cli.protocol.empty() ? handoff::parse_protocol(cli.protocol)
                       : preset              ? preset->protocol
                                             : handoff::Protocol::systemd;
    if (preset) {
        options.nonblocking_listeners = preset->nonblocking_listeners;
        options.environment = preset->environment;
    }
    options.pid_namespace = cli.pid_namespace < 0 ? preset.has_value() : cli.pid_namespace == 1;
    options.steer = !cli.shared_listeners;
    if (!cli.probe.empty()) {
        options.probe = SocketAddress::parse(cli.probe);
        if (options.probe->transport() == SocketAddress::Transport::udp)
            throw InputError(fmt::format("--probe {}: the probe must be a stream socket (tcp or unix)",
                                         printable(cli.probe)));
    }
    // nginx takes an inherited socket only where a `listen` directive names its address, so a probe
    // on a fresh port would never be served: the generation would always be rolled back.
    if (cli.server == "nginx" && options.ready.uses_probe() && !options.probe)
        throw InputError(
            "--server nginx: nginx serves only the inherited sockets its configuration names; give --probe "
            "unix:/PATH and add `listen unix:/PATH;` to a server block (or choose another --ready)");
    if (!cli.pid_file.empty()) options.pid_file = cli.pid_file;
    options.handoff = cli.handoff;
    if (cli.jail) apply_jail(options, cli.jail_flags);
    bool json = cli.json;
    std::string prefix = fmt::format("ktricks {}", source);
    options.on_event = [json, prefix](const Event& event) {
        if (json) {
            fmt::print("{}", event.to_line());
            std::fflush(stdout);
        } else {
            fmt::print(stderr, "{}: {}\n", prefix, describe(event.json()));
        }
    };
    return options;
}

void add_serve_options(CLI::App* sub, ServeCli& cli) {
    sub->add_option(
        "--server", cli.server,
        "Preset for a known server: nginx, gunicorn, lighttpd, uwsgi, systemd (protocol, environment, "
        "drain signal, --ready=http:/, PID namespace); explicit flags override it");
    sub->add_option("--ready", cli.ready,
                    "When a generation is ready: notify (READY=1 on NOTIFY_SOCKET), tcp, exec:CMD, delay:MS, "
                    "http:PATH[=STATUS] or connect (both through the generation's private probe listener) "
                    "[default: notify; http:/ with --server]");
    sub->add_option("--probe", cli.probe,
                    "Address of each generation's private probe listener (LISTEN_FDNAMES ktricks-probe) "
                    "[default: tcp://127.0.0.1:0]; a unix:/path is rebound per generation");
    sub->add_option("--ready-timeout", cli.ready_timeout, "Seconds a new generation gets to become ready")
        ->capture_default_str();
    sub->add_option(
        "--drain-signal", cli.drain_signal,
        "Signal telling an old generation to finish and exit [default: TERM; nginx QUIT, lighttpd INT]");
    sub->add_option("--drain-timeout", cli.drain_timeout, "Seconds before a draining generation is killed")
        ->capture_default_str();
    sub->add_option("--control", cli.control,
                    "Unix socket (path, or @abstract) for `ktricks reload --control`");
    sub->add_option(
        "--protocol", cli.protocol,
        "How CMD learns its fds: systemd, nginx, einhorn, gunicorn [default: systemd, or the --server preset's]");
    sub->add_option("--pid-file", cli.pid_file,
                    "Keep the serving generation's pid in this file (replaced at every switch)");
    sub->add_flag_callback(
        "--pid-namespace", [&cli] { cli.pid_namespace = 1; },
        "Run each generation as pid 1 of its own PID namespace, so that nothing of it outlives "
        "serve [default: on with --server]");
    sub->add_flag_callback(
        "--no-pid-namespace", [&cli] { cli.pid_namespace = 0; }, "Run generations as plain children");
    sub->add_option("--zerg", cli.zerg,
                    "Also hand the listeners to uWSGI instances started with --zerg PATH");
    sub->add_flag("--shared-listeners", cli.shared_listeners,
                  "Give every generation the same TCP listening socket instead of one socket each, steered "
                  "to the newest ready generation by a reuseport program (needs root)");
    sub->add_flag("--handoff", cli.handoff,
                  "Give CMD KTRICKS_HANDOFF_FD to move live connections (see Upgrader)");
    sub->add_flag("--json", cli.json, "Print lifecycle events as JSON lines on stdout");
    sub->add_option("command", cli.command, "The server to run")->required();
}

// The signals of `ktricks serve` and `takeover`: HUP reloads, TERM and INT drain and stop. Blocked
// (signalfd) before the first generation starts, so none is lost; Child unblocks them in the child.
int supervise(EventLoop& loop, handoff::Supervisor& supervisor) {
    loop.add_signal(SIGHUP, [&supervisor](const signalfd_siginfo&) { supervisor.reload(); });
    loop.add_signals({SIGTERM, SIGINT}, [&supervisor](const signalfd_siginfo&) { supervisor.stop(); });
    supervisor.start([&loop] { loop.stop(); });
    loop.run();
    return supervisor.result().shell_status();
}

int run_serve(const ServeCli& cli) {
    if (cli.listen.empty()) throw InputError("give at least one --listen [NAME=]ADDR");
    try {
        EventLoop loop;
        handoff::Supervisor supervisor(loop, serve_options(cli, "serve"));
        return supervise(loop, supervisor);
    } catch (const handoff::GenerationFailed& error) {
        fmt::print(stderr, "ktricks serve: {}\n", error.what());
        return exit_code::unavailable;
    }
}

struct ReloadCli {
    std::string control;
    double timeout_seconds = 60;
    bool status = false;
    bool json = false;
};

int run_reload(const ReloadCli& cli) {
    auto timeout = milliseconds(static_cast<long long>(cli.timeout_seconds * 1000));
    if (cli.status) {
        fmt::print("{}\n", handoff::request_status(cli.control, timeout));
        return 0;
    }
    auto result = handoff::request_reload(cli.control, timeout);
    if (cli.json) {
        Event event("reload", result.ok ? "ready" : "failed");
        event.set("generation", result.generation).set("pid", result.pid);
        if (result.ok) event.set("ready_ms", result.ready_ms);
        else
            event.set("error", result.message);
        fmt::print("{}", event.to_line());
    } else if (result.ok) {
        fmt::print("generation {} (pid {}) ready after {:.1f} ms\n", result.generation, result.pid,
                   result.ready_ms);
    } else {
        fmt::print(stderr, "ktricks reload: {}\n", result.message);
    }
    return result.ok ? 0 : exit_code::temp_fail;
}

struct TakeoverCli {
    ServeCli serve;
    int pid = 0;
    std::vector<int> fds;
    std::string signal = "TERM";
};

int run_takeover(const TakeoverCli& cli) {
    handoff::TakeoverOptions options;
    options.pid = cli.pid;
    options.fds = cli.fds;
    for (const auto& text : cli.serve.listen) options.listen.push_back(SocketAddress::parse(text));
    options.signal = parse_signal("--signal", cli.signal);
    ServeCli serve = cli.serve;
    serve.listen.clear();  // the listeners come from the target, not from bind
    options.serve = serve_options(serve, "takeover");
    try {
        EventLoop loop;
        auto supervisor = handoff::takeover(loop, std::move(options));
        return supervise(loop, supervisor);
    } catch (const handoff::GenerationFailed& error) {
        fmt::print(stderr, "ktricks takeover: {} (pid {} was left serving)\n", error.what(), cli.pid);
        return exit_code::unavailable;
    } catch (const std::system_error& error) {
        // The process named by --pid is not there (or exited before its listeners were taken).
        if (error.code() != std::errc::no_such_process) throw;
        fmt::print(stderr, "ktricks takeover: --pid {}: no such process\n", cli.pid);
        return exit_code::no_input;
    }
}

}  // namespace

Subcommand add_serve(CLI::App& app) {
    auto cli = std::make_shared<ServeCli>();
    auto* sub = add_subcommand(app, "serve");
    // One value per occurrence: a vector option would otherwise swallow the "--" before CMD.
    sub->add_option("--listen", cli->listen,
                    "[NAME=]ADDR to bind (tcp://, tcp6://, udp://, unix:/path, unix:@name); repeatable")
        ->allow_extra_args(false);
    add_serve_options(sub, *cli);
    add_jail_to_serve(*sub, cli->jail, cli->jail_flags);
    sub->footer(
        "CMD gets the listeners as fds 3.. with LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES and NOTIFY_SOCKET, exactly as\n"
        "systemd socket activation gives them. SIGHUP (or `ktricks reload --control PATH`) starts a new generation; once\n"
        "it is ready the old one gets the drain signal. If the new one fails, the old one keeps serving.\n"
        "Examples:\n"
        "  ktricks serve --listen tcp://0.0.0.0:8080 --control /run/web.ctl -- /usr/bin/my-sd-server\n"
        "  ktricks serve --listen web=tcp://:8080 --ready=tcp -- python3 app.py\n"
        "  ktricks serve --listen tcp://:8000 --server gunicorn --control /run/app.ctl -- gunicorn app:app\n"
        "  ktricks serve --listen tcp://:80 --server nginx --probe unix:/run/web-probe.sock -- nginx -g 'daemon off;'\n"
        "Exit status: the last generation's own when it ends without a reload (0 when serve is stopped\n"
        "by TERM or INT); 64 for bad usage; 66 if a unix:/path's directory does not exist; 69 if the\n"
        "first generation never becomes ready or cannot be started; 75 if an address is in use; 77 if\n"
        "binding or spawning is not permitted; 127 if CMD is not found, 126 if it is not executable.");
    return {sub, [cli] { return run_serve(*cli); }};
}

Subcommand add_takeover(CLI::App& app) {
    auto cli = std::make_shared<TakeoverCli>();
    auto* sub = add_subcommand(app, "takeover");
    sub->add_option("--pid", cli->pid, "The running server")->required();
    sub->add_option("--listen", cli->serve.listen, "Take only its listener bound to ADDR (repeatable)")
        ->allow_extra_args(false);
    sub->add_option("--fd", cli->fds, "Take only its listener at this fd number (repeatable)")
        ->allow_extra_args(false);
    sub->add_option("--signal", cli->signal,
                    "Signal that ends the old server once it holds no accepted connection")
        ->capture_default_str();
    add_serve_options(sub, cli->serve);
    sub->footer(
        "Without --listen/--fd every listening socket of PID and of its descendants (workers) is taken. CMD starts\n"
        "with them as LISTEN_FDS; once it is ready the old server and its descendants are stopped (SIGSTOP), checked\n"
        "through /proc for connections they accepted and have not answered (let run briefly and checked again until\n"
        "--drain-timeout), then each is sent --signal. takeover then stays on as `ktricks serve` for the adopted\n"
        "sockets: SIGHUP and --control reloads work.\n"
        "Examples:\n"
        "  ktricks takeover --pid $(pgrep -f 'http.server 8000') --control /tmp/web.ctl -- python3 my_server.py\n"
        "  ktricks takeover --pid 1234 --listen tcp://0.0.0.0:80 --signal QUIT -- /usr/sbin/my-sd-server\n"
        "Exit status: as serve; 66 if PID does not exist; 77 if pidfd_getfd is not permitted (the message says why\n"
        "and what to do); 64 if PID has no matching listener; 69 if the kernel lacks pidfd_getfd (< 5.6) or CMD never\n"
        "becomes ready (PID is then left serving).");
    return {sub, [cli] { return run_takeover(*cli); }};
}

Subcommand add_reload(CLI::App& app) {
    auto cli = std::make_shared<ReloadCli>();
    auto* sub = add_subcommand(app, "reload");
    sub->add_option("--control", cli->control, "serve's control socket")->required();
    sub->add_option("--timeout", cli->timeout_seconds, "Seconds to wait for the new generation")
        ->capture_default_str();
    sub->add_flag("--status", cli->status, "Print serve's state as JSON instead of reloading");
    sub->add_flag("--json", cli->json, "Print the outcome as a JSON line");
    sub->footer(
        "Examples:\n"
        "  ktricks reload --control /run/web.ctl            # wait until the new generation is ready\n"
        "  ktricks reload --control /run/web.ctl --status   # generations, their state and age, as JSON\n"
        "Exit status: 0 when the new generation is ready (or --status answered); 75 if the\n"
        "reload was refused or rolled back, or serve did not answer within --timeout; 66 if the\n"
        "control socket does not exist; 69 if nothing answers on it (serve is gone); 77 if\n"
        "connecting is not permitted; 64 for bad usage.");
    return {sub, [cli] { return run_reload(*cli); }};
}

}  // namespace ktricks::cli
