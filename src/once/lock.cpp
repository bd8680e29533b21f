#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <array>
#include <climits>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "ktricks/core/error.hpp"
#include "ktricks/core/proc.hpp"
#include "ktricks/core/scm_rights.hpp"
#include "ktricks/once.hpp"

namespace ktricks::once {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t max_message_bytes = 64 * 1024;
constexpr std::size_t message_fds = 4;
// Past this many open connections the holder stops accepting; further waiters wait in the listen
// backlog, where the kernel also resets them when the lock goes.
constexpr std::size_t max_peers = 1024;
constexpr int listen_backlog = 4096;

Fd seqpacket_socket(const LockName& name, bool nonblocking) {
    Fd socket(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
    if (!socket) throw_errno("socket", name.socket_name());
    return socket;
}

// The lock itself: bind succeeds for exactly one socket per name and network namespace.
std::optional<Fd> try_bind(const LockName& name) {
    Fd socket = seqpacket_socket(name, false);
    if (::bind(socket.get(), name.address().sockaddr_ptr(), name.address().length()) < 0) {
        if (errno == EADDRINUSE) return std::nullopt;
        throw_errno("bind", name.socket_name());
    }
    if (::listen(socket.get(), listen_backlog) < 0) throw_errno("listen", name.socket_name());
    return socket;
}

enum class Connect { connected, refused, backlog_full, not_a_lock };

Connect connect_to(const LockName& name, Fd& out) {
    out = seqpacket_socket(name, true);
    if (::connect(out.get(), name.address().sockaddr_ptr(), name.address().length()) == 0)
        return Connect::connected;
    switch (errno) {
        case ECONNREFUSED: return Connect::refused;  // free, or bound and not (yet) listening
        case EAGAIN: return Connect::backlog_full;
        case EPROTOTYPE:
            return Connect::not_a_lock;  // a socket of another type (not seen for abstract names)
        default: throw_errno("connect", name.socket_name());
    }
}

ucred peer_credentials(int fd) {
    ucred credentials{};
    socklen_t length = sizeof(credentials);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) < 0)
        throw_errno("getsockopt(SO_PEERCRED)", fmt::format("fd {}", fd));
    return credentials;
}

bool squats(const LockName& name, uid_t uid) { return name.expected_uid() && *name.expected_uid() != uid; }

Holder holder_of(const LockName& name, int connected) {
    ucred credentials = peer_credentials(connected);
    Holder holder;
    holder.pid = credentials.pid;
    holder.uid = credentials.uid;
    holder.gid = credentials.gid;
    if (holder.pid > 0)
        if (auto command = process_command_line(holder.pid)) holder.command = std::move(*command);
    holder.squatted = squats(name, holder.uid);
    return holder;
}

// /proc/net/unix lists the bound unix sockets of our network namespace; abstract names start with '@'.
// The kernel keeps abstract names apart per socket type (the type is part of the name's hash), so a
// stream or datagram socket on our name neither blocks a bind nor holds the lock: count only
// SOCK_SEQPACKET lines ("Num RefCount Protocol Flags Type St Inode Path", Type in hex).
bool name_is_bound(const LockName& name) {
    std::string wanted = name.socket_name();
    for (const auto& entry : read_proc_net_unix())
        if (entry.type == SOCK_SEQPACKET && entry.path == wanted) return true;
    return false;
}

// Between a holder's bind() and listen(), connects are refused although the name is taken: retry
// briefly with growing pauses rather than spin.
void pause_before_retry(std::chrono::microseconds& backoff) {
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::microseconds(20'000));
}

int remaining_ms(std::optional<Clock::time_point> deadline) {
    if (!deadline) return -1;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now()).count();
    return static_cast<int>(std::clamp<long long>(left, 0, INT_MAX));
}

void send_reply(int fd, Delivery delivery, std::string_view reason = {}) {
    nlohmann::json reply{{"result", to_string(delivery)}};
    if (!reason.empty()) reply["reason"] = reason;
    std::string text = reply.dump();
    // The sender may be gone already; a reply that cannot be sent is nobody's loss.
    (void)::send(fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace

std::string Holder::describe() const {
    std::string who =
        pid > 0 ? fmt::format("pid {}", pid) : std::string("a process in another pid namespace");
    if (squatted) who += fmt::format(" uid {}", uid);
    if (!command.empty()) who += fmt::format(" ({})", shell_join(command));
    if (!accepting) who = "a socket that accepts no connections (not a ktricks lock)";
    return who;
}

std::optional<Holder> find_holder(const LockName& name) {
    auto backoff = std::chrono::microseconds(50);
    for (int attempt = 0; attempt < 12; ++attempt) {
        Fd connection;
        switch (connect_to(name, connection)) {
            case Connect::connected: return holder_of(name, connection.get());
            case Connect::not_a_lock: {
                Holder holder;
                holder.accepting = false;
                return holder;
            }
            case Connect::refused:
                if (!name_is_bound(name)) return std::nullopt;
                break;
            case Connect::backlog_full: break;
        }
        pause_before_retry(backoff);
    }
    Holder holder;
    holder.accepting = false;
    return holder;
}

struct Lock::State {
    LockName name;
    Fd listener;
    EventLoop* loop = nullptr;
    EventLoop::SourceId listener_source = 0;
    EventLoop::SourceId resume_timer = 0;
    struct Peer {
        Fd socket;
        EventLoop::SourceId source = 0;
    };
    std::map<int, Peer> peers;
    std::function<Delivery(Message&&)> on_message;

    State(LockName n, Fd l) : name(std::move(n)), listener(std::move(l)) {}
    ~State() { close_all(); }

    void leave_loop() noexcept {
        if (!loop) return;
        loop->remove(listener_source);
        loop->remove(resume_timer);
        for (auto& [fd, peer] : peers) loop->remove(peer.source);
        listener_source = resume_timer = 0;
        loop = nullptr;
    }

    void close_all() noexcept {
        leave_loop();
        // The listener first: the name is free from this instant, and every waiter's connection
        // hangs up when its peer below closes (or, if never accepted, when the listener does).
        listener.reset();
        peers.clear();
    }

    void watch_listener() {
        listener_source = loop->add_fd(listener.get(), EPOLLIN, [this](std::uint32_t) { accept_peers(); });
    }

    void pause_listener(std::chrono::milliseconds retry) {
        loop->remove(listener_source);
        listener_source = 0;
        if (retry.count() > 0)
            resume_timer = loop->add_timer(retry, [this] {
                resume_timer = 0;
                if (!listener_source) watch_listener();
            });
    }

    void accept_peers() {
        while (true) {
            if (peers.size() >= max_peers) {
                pause_listener(std::chrono::milliseconds(0));  // resumed when a peer leaves
                return;
            }
            int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0) {
                if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
                // Out of descriptors: level-triggered epoll would spin, so look again later.
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                    pause_listener(std::chrono::milliseconds(100));
                    return;
                }
                throw_errno("accept4", name.socket_name());
            }
            Peer peer{Fd(fd), 0};
            peer.source = loop->add_fd(fd, EPOLLIN | EPOLLRDHUP, [this, fd](std::uint32_t) { on_peer(fd); });
            peers.emplace(fd, std::move(peer));
        }
    }

    void drop_peer(int fd) {
        auto it = peers.find(fd);
        if (it == peers.end()) return;
        loop->remove(it->second.source);
        peers.erase(it);
        if (!listener_source && !resume_timer && listener) watch_listener();
    }

    void on_peer(int fd) {  // a hang-up also reads as 0 bytes below
        std::array<std::byte, max_message_bytes> buffer;
        ReceivedMessage received;
        try {
            received = recv_fds(fd, buffer, message_fds);
        } catch (const std::system_error& error) {
            if (error.code().value() == EAGAIN) return;
            if (error.code().value() == EMSGSIZE) {
                send_reply(fd, Delivery::refused, "a message carries at most 4 descriptors");
                return;
            }
            drop_peer(fd);
            return;
        }
        if (received.size == 0 &&
            received.fds.empty()) {  // the peer closed: a waiter gave up or a query ended
            drop_peer(fd);
            return;
        }
        if (received.data_truncated) {
            send_reply(fd, Delivery::refused, fmt::format("message larger than {} bytes", max_message_bytes));
            return;
        }
        ucred credentials = peer_credentials(fd);
        // Abstract names have no file permissions: anyone in the network namespace can connect.
        if (squats(name, credentials.uid) && credentials.uid != 0) {
            send_reply(fd, Delivery::refused,
                       fmt::format("uid {} may not message a lock of uid {}", credentials.uid,
                                   *name.expected_uid()));
            return;
        }
        Message message;
        try {
            message = Message::from_json(
                std::string_view(reinterpret_cast<const char*>(buffer.data()), received.size));
        } catch (const InputError& error) {
            send_reply(fd, Delivery::refused, error.what());
            return;
        }
        if (!received.fds.empty() && received.fds.size() != message_fds) {
            send_reply(fd, Delivery::refused, "stdio messages carry exactly 4 descriptors");
            return;
        }
        message.pid = credentials.pid;
        message.uid = credentials.uid;
        message.gid = credentials.gid;
        message.fds = std::move(received.fds);
        Delivery delivery = on_message ? on_message(std::move(message)) : Delivery::no_inbox;
        send_reply(fd, delivery);
    }
};

Lock::Lock(std::unique_ptr<State> state) : state_(std::move(state)) {}
Lock::Lock(Lock&&) noexcept = default;
Lock& Lock::operator=(Lock&&) noexcept = default;
Lock::~Lock() = default;

const LockName& Lock::name() const noexcept { return state_->name; }
int Lock::fd() const noexcept { return state_ ? state_->listener.get() : -1; }
void Lock::release() noexcept { state_.reset(); }

void Lock::serve(EventLoop& loop, std::function<Delivery(Message&&)> on_message) {
    state_->leave_loop();
    // accept_peers() drains the backlog until EAGAIN: a blocking listener would hang the loop there.
    set_nonblocking(state_->listener.get());
    state_->loop = &loop;
    state_->on_message = std::move(on_message);
    state_->watch_listener();
}

std::optional<Lock> Lock::try_acquire(const LockName& name) {
    if (auto listener = try_bind(name)) return Lock(std::make_unique<State>(name, std::move(*listener)));
    return std::nullopt;
}

std::optional<Lock> Lock::acquire(const LockName& name, std::optional<std::chrono::milliseconds> timeout) {
    std::optional<Clock::time_point> deadline;
    if (timeout) deadline = Clock::now() + *timeout;
    auto backoff = std::chrono::microseconds(50);
    while (true) {
        if (auto listener = try_bind(name)) return Lock(std::make_unique<State>(name, std::move(*listener)));
        Fd connection;
        if (connect_to(name, connection) == Connect::connected) {
            backoff = std::chrono::microseconds(50);
            // Sleep until the kernel hangs up our connection: it does so the instant the holder's
            // socket is closed, whether the holder released it, exited or was killed.
            while (true) {
                pollfd poll_fd{connection.get(), POLLIN | POLLRDHUP, 0};
                int ready = ::poll(&poll_fd, 1, remaining_ms(deadline));
                if (ready < 0 && errno == EINTR) continue;
                if (ready < 0) throw_errno("poll", name.socket_name());
                if (ready == 0) return std::nullopt;
                if (poll_fd.revents & (POLLHUP | POLLRDHUP | POLLERR)) break;
                char discard[64];
                if (::recv(connection.get(), discard, sizeof(discard), MSG_DONTWAIT) == 0) break;
            }
            continue;
        }
        // Refused (between a new holder's bind and listen), a full backlog, or a squatter that is
        // not a lock at all: nothing to sleep on, so retry after a growing pause.
        if (deadline && Clock::now() >= *deadline) return std::nullopt;
        pause_before_retry(backoff);
    }
}

Delivery send(const LockName& name, const std::vector<std::string>& args, bool stdio,
              std::chrono::milliseconds timeout, int* exit_status) {
    Fd connection;
    Connect result = connect_to(name, connection);
    if (result == Connect::refused)
        throw_error(ECONNREFUSED, "send", fmt::format("{}: nobody holds the lock", name.name()));
    if (result != Connect::connected)
        throw BusyError(fmt::format("send {}: the holder does not accept connections", name.name()));
    ucred holder_credentials = peer_credentials(connection.get());
    if (squats(name, holder_credentials.uid))
        throw_error(EPERM, "send",
                    fmt::format("{}: held by uid {}, not uid {} (squatted); not sending", name.name(),
                                holder_credentials.uid, *name.expected_uid()));
    char cwd[PATH_MAX];
    nlohmann::json request{{"cwd", ::getcwd(cwd, sizeof(cwd)) ? cwd : ""}, {"args", args}, {"stdio", stdio}};
    std::string text = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (text.size() > max_message_bytes)
        throw InputError(
            fmt::format("message is {} bytes; at most {} can be sent", text.size(), max_message_bytes));

    Fd reply_read, reply_write;
    std::vector<int> fds;
    if (stdio) {
        int pipe_fds[2];
        if (::pipe2(pipe_fds, O_CLOEXEC) < 0) throw_errno("pipe2");
        reply_read = Fd(pipe_fds[0]);
        reply_write = Fd(pipe_fds[1]);
        fds = {0, 1, 2, reply_write.get()};
    }
    set_nonblocking(connection.get(), false);
    send_fds(connection.get(), std::as_bytes(std::span(text)), fds);
    reply_write.reset();  // from now on only the instance holds the write end

    pollfd poll_fd{connection.get(), POLLIN, 0};
    int ready;
    do {
        ready = ::poll(&poll_fd, 1, static_cast<int>(timeout.count()));
    } while (ready < 0 && errno == EINTR);
    if (ready == 0)
        throw BusyError(
            fmt::format("send {}: the holder, {}, did not answer within {} ms (it may not serve messages)",
                        name.name(), holder_of(name, connection.get()).describe(), timeout.count()));
    char answer[512];
    ssize_t got = ::recv(connection.get(), answer, sizeof(answer), 0);
    if (got <= 0)
        throw BusyError(
            fmt::format("send {}: the holder closed the connection without answering", name.name()));
    auto reply =
        nlohmann::json::parse(std::string_view(answer, static_cast<std::size_t>(got)), nullptr, false);
    std::string verdict = reply.is_object() && reply.contains("result") && reply["result"].is_string()
                              ? reply["result"].get<std::string>()
                              : "";
    Delivery delivery = Delivery::refused;
    for (auto candidate :
         {Delivery::delivered, Delivery::no_inbox, Delivery::inbox_full, Delivery::inbox_closed})
        if (verdict == to_string(candidate)) delivery = candidate;
    if (delivery == Delivery::refused && reply.is_object() && reply.contains("reason") &&
        reply["reason"].is_string())
        throw InputError(fmt::format("send {}: the holder refused the message: {}", name.name(),
                                     reply["reason"].get<std::string>()));

    if (delivery == Delivery::delivered && stdio) {
        // The instance answers on our terminal; we are done when it closes every copy of the reply fd.
        std::string status_text;
        char chunk[64];
        while (true) {
            ssize_t n = ::read(reply_read.get(), chunk, sizeof(chunk));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            if (status_text.size() < 32) status_text.append(chunk, static_cast<std::size_t>(n));
        }
        if (exit_status) {
            *exit_status = 0;
            try {
                if (!status_text.empty()) *exit_status = std::stoi(status_text) & 0xff;
            } catch (const std::exception&) {
                *exit_status = 0;
            }
        }
    }
    return delivery;
}

Inbox Inbox::create() {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) throw_errno("socketpair", "inbox");
    Inbox inbox;
    inbox.holder_end_ = Fd(pair[0]);
    inbox.instance_end_ = Fd(pair[1]);
    set_nonblocking(inbox.holder_end_.get());
    // The holder only writes; without this the instance's replies would pile up unread.
    ::shutdown(inbox.holder_end_.get(), SHUT_RD);
    return inbox;
}

Delivery Inbox::deliver(const Message& message) {
    std::string line = message.to_json_line();
    std::vector<int> fds;
    for (const auto& fd : message.fds) fds.push_back(fd.get());
    try {
        send_fds(holder_end_.get(), std::as_bytes(std::span(line)), fds);
    } catch (const std::system_error& error) {
        int code = error.code().value();
        if (code == EAGAIN) return Delivery::inbox_full;
        if (code == EPIPE || code == ECONNRESET) return Delivery::inbox_closed;
        throw;
    }
    return Delivery::delivered;
}

std::optional<Message> receive(int inbox_fd) {
    std::vector<std::byte> buffer(max_message_bytes + 256);
    ReceivedMessage received = recv_fds(inbox_fd, buffer, message_fds);
    if (received.size == 0 && received.fds.empty()) return std::nullopt;
    Message message =
        Message::from_json(std::string_view(reinterpret_cast<const char*>(buffer.data()), received.size));
    message.fds = std::move(received.fds);
    return message;
}

int inbox_fd_from_environment() {
    const char* text = ::getenv("KTRICKS_INBOX_FD");
    if (!text || !*text)
        throw InputError("KTRICKS_INBOX_FD is not set (start the program with ktricks once --inbox)");
    char* end = nullptr;
    long fd = std::strtol(text, &end, 10);
    if (*end || fd < 0 || fd > INT_MAX)
        throw InputError(fmt::format("KTRICKS_INBOX_FD=\"{}\" is not a descriptor number", text));
    int type = 0;
    socklen_t length = sizeof(type);
    if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_TYPE, &type, &length) < 0 || type != SOCK_SEQPACKET)
        throw InputError(fmt::format("KTRICKS_INBOX_FD={} is not an open inbox socket", fd));
    return static_cast<int>(fd);
}

}  // namespace ktricks::once
