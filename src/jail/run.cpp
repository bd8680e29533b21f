// `ktricks jail`: bind here, run there, forward signals, answer the broker, report how it ended.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "intercept.hpp"
#include "jail/grants.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/proc.hpp"
#include "ktricks/core/scm_rights.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/jail.hpp"

namespace ktricks::jail {
namespace {

// Whether `pid` has a handler for, or ignores, `signal_number` (SigCgt/SigIgn in /proc/PID/status).
bool handles_or_ignores(pid_t pid, int signal_number) {
    std::uint64_t mask = 0;
    for (const char* key : {"SigCgt", "SigIgn"})
        if (auto field = process_status_field(pid, key)) mask |= std::strtoull(field->c_str(), nullptr, 16);
    return mask & (std::uint64_t{1} << (signal_number - 1));
}

std::string describe_clone_error(const std::system_error& error) {
    if (error.code().value() == EPERM && ::geteuid() != 0) {
        std::ifstream knob("/proc/sys/kernel/unprivileged_userns_clone");
        int enabled = 1;
        if (knob >> enabled; !enabled)
            return fmt::format(
                "{} (unprivileged user namespaces are off: sysctl kernel.unprivileged_userns_clone=0; run as root)",
                error.what());
        return fmt::format(
            "{} (this kernel does not let unprivileged users create the namespaces; run as root)",
            error.what());
    }
    return error.what();
}

}  // namespace

struct Jail::State {
    RunOptions options;
    std::optional<Sandbox> sandbox;
    std::vector<Fd> listeners;
    std::vector<InterceptListener> intercepted;
    std::vector<int> intercepted_fds;  // the same order as `intercepted`
    Fd notify_ours, notify_theirs;
    std::optional<Broker> broker;
    std::shared_ptr<Grants> grants;  // the broker's, or the allow-list's for intercepted binds alone
    SpawnOptions spawn;
    std::optional<Child> child;
    std::optional<BindInterceptor> interceptor;
    Fd jail_root;
    std::optional<int> translated;  // a forwarded signal we had to deliver as SIGKILL
    std::optional<ExitStatus> status;
    EventLoop* loop = nullptr;
    EventLoop::SourceId exit_source = 0;

    ~State() {
        if (loop) loop->remove(exit_source);
        // The interceptor and broker leave the loop with their own destructors; the jail's pid 1
        // is killed and reaped by Child's, and the kernel then kills the rest of its namespace.
        interceptor.reset();
        child.reset();
        remove_broker_socket();
    }
    void remove_broker_socket() noexcept {
        if (jail_root) ::unlinkat(jail_root.get(), options.sandbox.broker_path->c_str() + 1, 0);
        jail_root.reset();
    }
};

Jail::Jail(const RunOptions& given) : state_(std::make_unique<State>()) {
    auto& s = *state_;
    s.options = given;
    const auto& options = s.options;
    if (options.command.empty())
        throw InputError("missing command: ktricks jail --listen ADDR -- CMD [ARGS...]");
    if (!options.allow.empty() && !options.sandbox.broker_path && !options.intercept_bind)
        throw InputError("--allow needs --broker PATH or --intercept-bind");
    s.sandbox.emplace(Sandbox::prepare(options.sandbox));

    std::vector<int> pass;
    for (const auto& address : options.listen) {
        BindOptions bind_options;
        // A server that binds [::] itself gets both IPv4 and IPv6 (Linux's default, bindv6only=0),
        // so an intercepted [::] listener must be dual-stack too, unless IPv4 has its own.
        if (options.intercept_bind && address.family() == AF_INET6 &&
            IN6_IS_ADDR_UNSPECIFIED(
                &reinterpret_cast<const sockaddr_in6*>(address.sockaddr_ptr())->sin6_addr)) {
            bool v4_too =
                std::any_of(options.listen.begin(), options.listen.end(), [&](const SocketAddress& other) {
                    return other.family() == AF_INET && other.port() == address.port() &&
                           other.transport() == address.transport();
                });
            bind_options.v6_only = v4_too;
        }
        s.listeners.push_back(bind_socket(address, bind_options));
        pass.push_back(s.listeners.back().get());
        if (options.verbose)
            log_info("fd {} = {}", 2 + pass.size(), SocketAddress::of_socket(pass.back()).to_string());
        if (address.family() == AF_INET || address.family() == AF_INET6) {
            s.intercepted.push_back({SocketAddress::of_socket(pass.back()), address.port()});
            s.intercepted_fds.push_back(pass.back());
        }
    }
    // The child sends its seccomp listener back on this pair (the kernel hands it to the process
    // that installs the filter, and only the child can).
    if (options.intercept_bind) {
        int pair[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
            throw_errno("socketpair", "(seccomp listener)");
        s.notify_ours = Fd(pair[0]);
        s.notify_theirs = Fd(pair[1]);
    }
    if (options.sandbox.broker_path) s.broker.emplace(options.allow, options.verbose);
    // One allow-list for the broker's requests and for intercepted binds that match no --listen.
    s.grants = s.broker                ? s.broker->grants()
               : options.allow.empty() ? nullptr
                                       : std::make_shared<Grants>(options.allow, options.verbose);

    auto& spawn = s.spawn;
    spawn.argv = options.command;
    spawn.pass_fds = pass;
    spawn.listen_fds_env = true;
    spawn.new_process_group = true;
    spawn.parent_death_signal = SIGKILL;
    s.sandbox->apply(spawn, s.broker ? s.broker->socket_fd() : -1,
                     s.notify_theirs ? s.notify_theirs.get() : -1);
}

Jail::Jail(Jail&&) noexcept = default;
Jail& Jail::operator=(Jail&&) noexcept = default;
Jail::~Jail() = default;

void Jail::start(EventLoop& loop, std::function<void(ExitStatus)> on_exit) {
    auto& s = *state_;
    if (s.child || s.status) throw std::logic_error("jail::Jail::start called twice");
    try {
        s.child.emplace(Child::spawn(s.spawn));
    } catch (const SpawnError&) {
        throw;
    } catch (const std::system_error& error) {
        throw std::system_error(error.code(), describe_clone_error(error));
    }
    if (s.options.intercept_bind) {
        s.notify_theirs.reset();
        std::byte byte[1];
        auto received = recv_fds(s.notify_ours.get(), byte, 1);
        if (received.fds.size() != 1) throw std::runtime_error("the jail did not send its seccomp listener");
        // The listeners stay ours as well: each is installed into the jail on its bind().
        s.interceptor.emplace(std::move(received.fds[0]), s.intercepted_fds, s.intercepted, s.options.verbose,
                              s.grants);
    } else {
        // The child holds its own copies now; ours would keep a port bound after the command quits.
        s.listeners.clear();
    }
    // The broker's socket file lives in the jail's view (a private /tmp, or a shared directory);
    // this handle on that view lets us remove it when the jail is gone.
    if (s.broker)
        s.jail_root = Fd(
            ::open(fmt::format("/proc/{}/root", s.child->pid()).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));

    s.loop = &loop;
    s.exit_source = loop.add_child(s.child->pidfd(), [state = &s, on_exit = std::move(on_exit)] {
        state->loop->remove(std::exchange(state->exit_source, 0));
        auto status = *state->child->wait();
        state->remove_broker_socket();
        if (status.signaled && status.code == SIGKILL && state->translated) status.code = *state->translated;
        state->status = status;
        if (on_exit) on_exit(status);
    });
    if (s.broker) s.broker->serve(loop);
    if (s.interceptor) s.interceptor->serve(loop);
}

bool Jail::signal(int number) {
    auto& s = *state_;
    if (!s.child || s.status || !s.child->running()) return false;
    // pid 1 of a PID namespace only gets the signals it has a handler for; one it would take by
    // default is dropped by the kernel. Terminating signals are then delivered as SIGKILL.
    if (number != SIGWINCH && !handles_or_ignores(s.child->pid(), number)) {
        s.translated = number;
        return s.child->signal(SIGKILL);
    }
    return s.child->signal(number);
}

std::optional<ExitStatus> Jail::status() const { return state_->status; }

}  // namespace ktricks::jail
