#include <signal.h>

#include <fmt/format.h>

#include <stdexcept>

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

struct LockedCommand::State {
    LockName name;
    SpawnOptions spawn;
    bool inbox_wanted = false;
    std::optional<Lock> lock;
    std::optional<Inbox> inbox;
    std::optional<Child> child;
    std::optional<ExitStatus> status;
    EventLoop* loop = nullptr;
    EventLoop::SourceId exit_source = 0;

    explicit State(const LockName& lock_name) : name(lock_name) {}
    ~State() {
        if (loop) loop->remove(exit_source);
        // The command must never run unlocked: it goes (SIGKILL, reaped by Child) before the lock.
        child.reset();
        lock.reset();
    }
};

LockedCommand::LockedCommand(const LockName& name, const RunOptions& options)
    : state_(std::make_unique<State>(name)) {
    if (options.command.empty()) throw InputError("no command to run");
    auto& spawn = state_->spawn;
    spawn.argv = options.command;
    // Before the lock: a command that cannot run fails at once instead of taking (or waiting for)
    // the lock first, and a waiter that wins has less to do before its command starts.
    spawn.executable = find_program(options.command[0]);
    state_->inbox_wanted = options.inbox;
    state_->lock = options.wait ? Lock::acquire(name, options.wait_timeout) : Lock::try_acquire(name);
    if (!state_->lock) throw_held(name);
}

LockedCommand::LockedCommand(LockedCommand&&) noexcept = default;
LockedCommand& LockedCommand::operator=(LockedCommand&&) noexcept = default;
LockedCommand::~LockedCommand() = default;

void LockedCommand::start(EventLoop& loop, std::function<void(ExitStatus)> on_exit) {
    auto& s = *state_;
    if (s.child || s.status) throw std::logic_error("once::LockedCommand::start called twice");
    auto& spawn = s.spawn;
    spawn.close_other_fds = false;  // the user's own inherited fds pass through; ours are all CLOEXEC
    // If we are killed (SIGKILL cannot be forwarded), the lock is gone at once; the command must go
    // with it, or a new holder would run beside it.
    spawn.parent_death_signal = SIGKILL;
    spawn.set_env.push_back("KTRICKS_ONCE_NAME=" + s.name.name());
    spawn.unset_env.push_back("KTRICKS_INBOX_FD");
    if (s.inbox_wanted) {
        s.inbox = Inbox::create();
        spawn.keep_fds.push_back(s.inbox->instance_fd());
        spawn.set_env.push_back(fmt::format("KTRICKS_INBOX_FD={}", s.inbox->instance_fd()));
    }
    s.child = Child::spawn(spawn);
    if (s.inbox) s.inbox->close_instance_end();  // so a closed inbox shows up as EPIPE, not a full queue

    s.lock->serve(loop, [state = &s](Message&& message) {
        return state->inbox ? state->inbox->deliver(message) : Delivery::no_inbox;
    });
    s.loop = &loop;
    s.exit_source = loop.add_child(s.child->pidfd(), [state = &s, on_exit = std::move(on_exit)] {
        state->loop->remove(std::exchange(state->exit_source, 0));
        state->status = *state->child->wait();
        state->lock.reset();  // released the moment the command is gone
        if (on_exit) on_exit(*state->status);
    });
}

bool LockedCommand::signal(int signal_number) {
    return state_->child && !state_->status && state_->child->signal(signal_number);
}

std::optional<ExitStatus> LockedCommand::status() const { return state_->status; }

}  // namespace ktricks::once
