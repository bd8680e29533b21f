// ktricks once: argument parsing for the single-instance lock (library: ktricks/once.hpp).
#include <signal.h>

#include <fmt/format.h>

#include <cmath>
#include <memory>

#include "cli/common.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/proc.hpp"
#include "ktricks/once.hpp"

namespace ktricks::cli {
namespace {

struct OnceOptions {
    std::string name;
    const CLI::Option* name_option = nullptr;  // tells `once ''` (an empty name) from no name at all
    std::vector<std::string> command;
    std::string wait;  // "" not given, "true" for a bare --wait, else seconds
    bool status = false;
    bool send = false;
    bool send_stdio = false;
    bool recv = false;
    bool inbox = false;
    bool global = false;
    bool json = false;
    double timeout_seconds = 5;
};

int print_status(const once::LockName& name, bool json) {
    auto holder = once::find_holder(name);
    if (json) {
        Event event("once", holder ? "held" : "free");
        event.set("name", name.name()).set("socket", name.socket_name());
        if (holder) {
            event.set("pid", holder->pid).set("uid", holder->uid).set("gid", holder->gid);
            event.set("command", holder->command)
                .set("squatted", holder->squatted)
                .set("accepting", holder->accepting);
        }
        fmt::print("{}", event.to_line());
        return holder ? 0 : 1;
    }
    if (!holder) {
        fmt::print("free\n");
        return 1;
    }
    if (!holder->accepting) {
        fmt::print("held by {}\n", holder->describe());
        return 0;
    }
    fmt::print("held\npid: {}\nuid: {}\ncommand: {}\nsocket: {}\n", holder->pid, holder->uid,
               holder->command.empty() ? "(unreadable)" : shell_join(holder->command), name.socket_name());
    if (holder->squatted)
        fmt::print("squatted: yes (the lock belongs to uid {}, but uid {} holds it)\n", *name.expected_uid(),
                   holder->uid);
    return 0;
}

int run_once(const OnceOptions& options) {
    int modes = options.status + options.send + options.recv;
    if (modes > 1) throw InputError("--status, --send and --recv exclude each other");
    if (options.send_stdio && !options.send) throw InputError("--send-stdio goes with --send");

    if (options.recv) {
        if (!options.name.empty()) throw InputError("--recv takes no NAME: it reads $KTRICKS_INBOX_FD");
        auto message = once::receive(once::inbox_fd_from_environment());
        if (!message) return 1;
        fmt::print("{}", message->to_json_line());
        return 0;
    }
    if (options.name.empty() && options.name_option->count() == 0) throw InputError("missing lock NAME");
    auto name = once::LockName::make(options.name, options.global ? once::Scope::global : once::Scope::user);

    if (options.status) {
        if (!options.command.empty()) throw InputError("--status takes no command");
        return print_status(name, options.json);
    }
    if (options.send) {
        int exit_status = 0;
        auto timeout = round_to_ms(options.timeout_seconds);
        auto delivery = once::send(name, options.command, options.send_stdio, timeout, &exit_status);
        switch (delivery) {
            case once::Delivery::delivered: return exit_status;
            case once::Delivery::no_inbox:
                throw_error(EOPNOTSUPP, "send",
                            fmt::format("{}: the holder was started without --inbox", name.name()));
            case once::Delivery::inbox_full:
                throw BusyError(
                    fmt::format("send {}: the holder's inbox is full (it is not reading)", name.name()));
            case once::Delivery::inbox_closed:
                throw_error(EPIPE, "send",
                            fmt::format("{}: the running instance closed its inbox", name.name()));
            case once::Delivery::refused:
                throw InputError(fmt::format("send {}: the holder refused the message", name.name()));
        }
    }
    if (options.command.empty()) throw InputError("missing command: ktricks once NAME -- CMD [ARGS...]");
    once::RunOptions run;
    run.command = options.command;
    run.inbox = options.inbox;
    if (!options.wait.empty()) {
        run.wait = true;
        if (options.wait != "true")
            run.wait_timeout = std::chrono::milliseconds(parse_seconds_ms("--wait", options.wait));
    }
    once::LockedCommand command(name, run);  // the lock is held from here
    EventLoop loop;
    // Blocked (signalfd) before the command exists, so none is lost in between; Child restores the
    // default mask in the command. Signals that mean "you, stop or do something" belong to the
    // command, not to us.
    loop.add_signals({SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2},
                     [&command](const signalfd_siginfo& info) {
                         // A signal from the terminal (Ctrl-C) already went to the whole foreground
                         // process group, the command included: forwarding it would deliver it twice.
                         if (info.ssi_code == SI_KERNEL) return;
                         command.signal(static_cast<int>(info.ssi_signo));
                     });
    command.start(loop, [&loop](ExitStatus) { loop.stop(); });
    loop.run();
    return command.status()->shell_status();
}

}  // namespace

Subcommand add_once(CLI::App& app) {
    auto options = std::make_shared<OnceOptions>();
    auto* sub = add_subcommand(app, "once");
    options->name_option = sub->add_option("name", options->name, "Lock name (per user unless --global)");
    sub->add_option("command", options->command,
                    "Command to run while holding the lock (with --send: the message)");
    sub->add_flag(
        "--wait", options->wait,
        "If the lock is held, wait for it (no polling: the kernel wakes us when the holder's socket "
        "closes); --wait=SECONDS gives up after that long with exit 75");
    sub->add_flag("--status", options->status,
                  "Print the holder's pid, uid and command (exit 0), or 'free' (exit 1)");
    sub->add_flag("--send", options->send, "Deliver ARGS and our working directory to the holder's inbox");
    sub->add_flag(
        "--send-stdio", options->send_stdio,
        "With --send: also pass our stdin/stdout/stderr, and wait until the instance is done with them");
    sub->add_option("--timeout", options->timeout_seconds,
                    "With --send: seconds to wait for the holder's answer")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    sub->add_flag("--inbox", options->inbox, "Give CMD an inbox: messages arrive on fd $KTRICKS_INBOX_FD");
    sub->add_flag("--recv", options->recv,
                  "Inside CMD: print the next inbox message as a JSON line (exit 1 at end)");
    sub->add_flag("--global", options->global, "One name shared by all users instead of one per user");
    sub->add_flag("--json", options->json, "With --status: one JSON object");
    sub->footer(
        "Forms:\n"
        "  ktricks once [--wait[=SECONDS]] [--inbox] [--global] NAME -- CMD [ARGS...]\n"
        "  ktricks once --status [--json] [--global] NAME\n"
        "  ktricks once --send [--send-stdio] [--timeout SECONDS] [--global] NAME [-- ARGS...]\n"
        "  ktricks once --recv\n"
        "Exit status: CMD's own (128+N if killed by signal N); 75 if NAME is held (or --wait timed out);\n"
        "127/126 if CMD cannot be found/executed; 64 for bad usage. --status: 0 held, 1 free.\n"
        "Examples:\n"
        "  ktricks once backup -- rsync -a /home /mnt/backup     # skip if the last run is still going\n"
        "  ktricks once --wait=60 deploy -- ./deploy.sh           # queue behind a running deploy\n"
        "  ktricks once --inbox editor -- my-editor && ktricks once --send editor -- file.txt");
    return {sub, [options] { return run_once(*options); }};
}

}  // namespace ktricks::cli
