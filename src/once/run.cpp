#include <signal.h>

#include <fmt/format.h>

#include "ktricks/core/error.hpp"
#include "ktricks/once.hpp"

namespace ktricks::once {
namespace {

[[noreturn]] void throw_held(const LockName& name) {
    auto holder = find_holder(name);
    if (!holder)
        throw BusyError(fmt::format("{} was held a moment ago and is free now; try again", name.name()));
    if (holder->squatted)
        throw BusyError(fmt::format("{} is squatted by {} (the lock belongs to uid {})", name.name(),
                                    holder->describe(), *name.expected_uid()));
    throw BusyError(fmt::format("{} is held by {}", name.name(), holder->describe()));
}

}  // namespace

ExitStatus run(const LockName& name, const RunOptions& options) {
    if (options.command.empty()) throw InputError("no command to run");
    SpawnOptions spawn;
    spawn.argv = options.command;
    // Before the lock: a command that cannot run fails at once instead of taking (or waiting for)
    // the lock first, and a waiter that wins has less to do before its command starts.
    spawn.executable = find_program(options.command[0]);
    std::optional<Lock> lock =
        options.wait ? Lock::acquire(name, options.wait_timeout) : Lock::try_acquire(name);
    if (!lock) throw_held(name);

    EventLoop loop;
    // Block the forwarded signals before the child exists, so none is lost in between; Child
    // restores the default mask in the child.
    std::optional<Child> child;
    // Signals that mean "you, stop or do something" belong to the command, not to us.
    loop.add_signals({SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2},
                     [&child](const signalfd_siginfo& info) {
                         // A signal from the terminal (Ctrl-C) already went to the whole foreground process group,
                         // the command included: forwarding it would deliver it twice.
                         if (info.ssi_code == SI_KERNEL) return;
                         if (child) child->signal(static_cast<int>(info.ssi_signo));
                     });

    std::optional<Inbox> inbox;
    spawn.close_other_fds = false;  // the user's own inherited fds pass through; ours are all CLOEXEC
    // If we are killed (SIGKILL cannot be forwarded), the lock is gone at once; the command must go
    // with it, or a new holder would run beside it.
    spawn.parent_death_signal = SIGKILL;
    spawn.set_env.push_back("KTRICKS_ONCE_NAME=" + name.name());
    spawn.unset_env.push_back("KTRICKS_INBOX_FD");
    if (options.inbox) {
        inbox = Inbox::create();
        spawn.keep_fds.push_back(inbox->instance_fd());
        spawn.set_env.push_back(fmt::format("KTRICKS_INBOX_FD={}", inbox->instance_fd()));
    }
    child = Child::spawn(spawn);
    if (inbox) inbox->close_instance_end();  // so a closed inbox shows up as EPIPE, not a full queue

    lock->serve(loop,
                [&inbox](Message&& message) { return inbox ? inbox->deliver(message) : Delivery::no_inbox; });
    loop.add_child(child->pidfd(), [&loop] { loop.stop(); });
    loop.run();
    ExitStatus status = *child->wait();
    lock->release();
    return status;
}

}  // namespace ktricks::once
