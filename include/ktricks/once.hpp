// once: a single-instance lock on an abstract unix socket.
//
// Binding an abstract unix socket name succeeds for exactly one socket in a network namespace, and
// the kernel frees the name the moment the last descriptor of that socket closes, however its owner
// died. So a bound name is a lock that cannot go stale and needs no file; the name also is an
// address, so others can find the holder (SO_PEERCRED gives its pid and uid) and talk to it.
//
// Names are scoped: "@ktricks/once/u<UID>/NAME" per user (the default) or "@ktricks/once/global/NAME".
// Any process in the network namespace can bind any abstract name, so a holder whose uid does not
// match the scope is reported as squatted rather than obeyed.
//
// Waiting does not poll: a waiter connects to the holder and sleeps until the connection hangs up,
// which the kernel does when the holder's socket closes; then it tries to bind again. Of many
// waiters exactly one bind succeeds.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ktricks/core/child.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/core/socket_address.hpp"

namespace ktricks::once {

enum class Scope { user, global };

// A validated lock name and the abstract socket address it stands for.
class LockName {
public:
    // Throws InputError for an empty name, a NUL or control character, or a name too long for
    // sun_path once the scope prefix is added.
    static LockName make(std::string_view name, Scope scope = Scope::user, uid_t uid = ::geteuid());

    const std::string& name() const noexcept { return name_; }
    Scope scope() const noexcept { return scope_; }
    // The uid a holder must have; nullopt for the global scope, where anyone may hold it.
    std::optional<uid_t> expected_uid() const noexcept { return expected_uid_; }
    const SocketAddress& address() const noexcept { return address_; }
    // "@ktricks/once/u1000/NAME", as /proc/net/unix and `ss -x` show it.
    std::string socket_name() const { return address_.to_string().substr(5); }

private:
    LockName(std::string name, Scope scope, std::optional<uid_t> uid, SocketAddress address)
        : name_(std::move(name)), scope_(scope), expected_uid_(uid), address_(std::move(address)) {}
    std::string name_;
    Scope scope_;
    std::optional<uid_t> expected_uid_;
    SocketAddress address_;
};

// Who holds a lock, as the kernel reports it (SO_PEERCRED) plus /proc/PID/cmdline.
struct Holder {
    pid_t pid = 0;  // 0 if the holder is in a pid namespace we cannot see
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<std::string> command;  // empty if /proc/PID/cmdline is unreadable
    bool squatted = false;             // uid differs from LockName::expected_uid()
    bool accepting = true;             // false: the name is bound by a socket that takes no connections
    std::string describe() const;      // "pid 42 (sleep 100)", "pid 42 uid 65534 (...)"
};

// The current holder, or nullopt if the name is free. Never takes the lock itself.
std::optional<Holder> find_holder(const LockName& name);

// A message for the holder's inbox (`ktricks once --send`). pid/uid/gid are filled in by the holder
// from SO_PEERCRED, never taken from the sender's word.
struct Message {
    pid_t pid = 0;
    uid_t uid = 0;
    gid_t gid = 0;
    std::string cwd;  // the sender's working directory
    std::vector<std::string> args;
    // With stdio: the sender's stdin, stdout, stderr and a reply descriptor (the write end of a
    // pipe): the sender exits when every copy of the reply descriptor is closed, with the exit
    // status written to it as a decimal number, if any (0 otherwise).
    std::vector<Fd> fds;

    bool has_stdio() const noexcept { return fds.size() == 4; }
    // The inbox record: one JSON object and '\n':
    // {"pid":1,"uid":0,"gid":0,"cwd":"/home/me","args":["a.txt"],"stdio":false}
    std::string to_json_line() const;
    // Throws InputError naming what is wrong.
    static Message from_json(std::string_view text);
};

enum class Delivery { delivered, no_inbox, inbox_full, inbox_closed, refused };
const char* to_string(Delivery delivery) noexcept;

// A held lock. Destroying it (or release()) frees the name at once.
class Lock {
public:
    // Takes the lock if it is free; nullopt if someone holds it (see find_holder).
    static std::optional<Lock> try_acquire(const LockName& name);
    // Waits until the lock is free and takes it; nullopt if `timeout` passes first.
    static std::optional<Lock> acquire(const LockName& name,
                                       std::optional<std::chrono::milliseconds> timeout = std::nullopt);

    Lock(Lock&&) noexcept;
    Lock& operator=(Lock&&) noexcept;
    ~Lock();

    const LockName& name() const noexcept;
    // The bound, listening socket (close-on-exec).
    int fd() const noexcept;

    // Answers waiters, status queries and messages on `loop` until release. Messages from a uid the
    // scope does not allow are refused; others go to `on_message`, whose answer goes back to the
    // sender. Without serve(), waiters still wake when the lock is released (their connections sit
    // in the listen backlog, which the kernel resets), but messages are not answered.
    void serve(EventLoop& loop, std::function<Delivery(Message&&)> on_message);

    void release() noexcept;

private:
    struct State;
    explicit Lock(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

// Sends args (and the cwd, and with `stdio` our fds 0-2 and a reply pipe) to the holder.
// Returns the holder's answer; with stdio and Delivery::delivered, *exit_status receives the status
// the instance wrote on the reply pipe once it closed it. Throws BusyError if the name is free,
// squatted or the holder does not answer within `timeout`.
Delivery send(const LockName& name, const std::vector<std::string>& args, bool stdio,
              std::chrono::milliseconds timeout, int* exit_status = nullptr);

// The holder side of an inbox: a SOCK_SEQPACKET socketpair whose far end the instance reads.
class Inbox {
public:
    static Inbox create();
    int instance_fd() const noexcept { return instance_end_.get(); }  // pass to the instance
    void close_instance_end() noexcept { instance_end_.reset(); }
    // Non-blocking: a full inbox refuses rather than stalls the holder.
    Delivery deliver(const Message& message);

private:
    Fd holder_end_, instance_end_;
};

// The instance side: the next message from KTRICKS_INBOX_FD (or any inbox fd); nullopt at end.
std::optional<Message> receive(int inbox_fd);
// The inbox fd named by KTRICKS_INBOX_FD; throws InputError if it is unset or invalid.
int inbox_fd_from_environment();

// `ktricks once NAME -- CMD`: runs a command while holding the lock.
struct RunOptions {
    std::vector<std::string> command;
    bool wait = false;                                      // wait for the lock instead of failing
    std::optional<std::chrono::milliseconds> wait_timeout;  // with wait: give up after this long
    bool inbox = false;                                     // give the command KTRICKS_INBOX_FD
};

// `ktricks once NAME -- CMD` as a component: a command run while holding the lock, on the caller's
// loop. It never touches signals; the CLI forwards TERM, INT, HUP, QUIT, USR1 and USR2 with signal().
//   once::LockedCommand command(name, options);           // the lock is held from here
//   loop.add_signals({SIGTERM, ...}, [&](auto& info) { command.signal(info.ssi_signo); });
//   command.start(loop, [&](ExitStatus) { loop.stop(); });
//   loop.run();
class LockedCommand {
public:
    // Finds the command (throws SpawnError "exec NAME: ..." if it cannot run, before any lock is
    // taken), then takes the lock, waiting with options.wait; throws BusyError "NAME is held by pid
    // PID (COMMAND)" if it is held (or the wait timed out). Nothing runs yet.
    LockedCommand(const LockName& name, const RunOptions& options);
    LockedCommand(LockedCommand&&) noexcept;
    LockedCommand& operator=(LockedCommand&&) noexcept;
    // A command still running is killed (SIGKILL) and reaped before the lock is released.
    ~LockedCommand();

    // Runs the command as a child with the lock descriptors closed to it and serves waiters and
    // messages on `loop`. When the command exits the lock is released at once, then `on_exit` is
    // called (on the loop) with how it ended. If this process is killed outright, the kernel kills
    // the command too (PR_SET_PDEATHSIG): it never runs unlocked. The command gets
    // KTRICKS_ONCE_NAME, and with options.inbox KTRICKS_INBOX_FD.
    void start(EventLoop& loop, std::function<void(ExitStatus)> on_exit);
    // Sends a signal to the command; false if it is not running (not started, or exited).
    bool signal(int signal_number);
    // How the command ended; nullopt while it runs.
    std::optional<ExitStatus> status() const;

private:
    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace ktricks::once
