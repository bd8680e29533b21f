// The front door's side of ktricks-publish (publish_link.hpp): libc only, no broker library.
#include "cli/publish_link.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "cli/common.hpp"
#include "cli/publish_wire.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/service.hpp"

namespace ktricks::cli {
using Clock = std::chrono::steady_clock;

void add_publish_flags(CLI::App* sub, PublishFlags& flags) {
    sub->add_option("--publish", flags.url,
                    "Also send every event to nats://HOST:PORT/SUBJECT[?stream=NAME...] (JetStream) or "
                    "redis://HOST:PORT/STREAM[?maxlen=N...]; {host} {source} placeholders (docs/events.md)");
    sub->add_option("--spool", flags.spool,
                    "With --publish: directory where events wait, in order, while the broker is unreachable");
    sub->add_option(
           "--spool-max", flags.spool_max_mb,
           "Spool cap in MiB; when full the oldest events are dropped and a spool_dropped event says so")
        ->capture_default_str();
}

PublishLink::PublishLink(EventLoop& loop, PublishFlags flags, std::string source, bool quiet)
    : loop_(loop), flags_(std::move(flags)), source_(std::move(source)), quiet_(quiet) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    prefix_ = fmt::format("{}:{}:{}:", host, source_,
                          std::chrono::duration_cast<std::chrono::microseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count());
}

PublishLink::~PublishLink() {
    loop_.remove(reader_);
    // Not finished (an exception): the helper still gets the end of the stream and exits by itself.
    socket_.reset();
    if (helper_) helper_->detach();
}

void PublishLink::start() {
    if (flags_.spool.empty())
        throw InputError("--publish needs --spool DIR: where events wait while the broker is unreachable");
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
        throw_errno("socketpair", "SEQPACKET");
    socket_ = Fd(pair[0]);
    Fd theirs(pair[1]);
    SpawnOptions spawn;
    std::string helper;
    for (const auto& path : helper_paths("ktricks-publish"))
        if (::access(path.c_str(), X_OK) == 0) {
            helper = path;
            break;
        }
    if (helper.empty())
        throw std::system_error(ENOENT, std::generic_category(),
                                "cannot find its helper program ktricks-publish");
    spawn.argv = {helper,        "publish",
                  "--publish",   flags_.url,
                  "--spool",     flags_.spool,
                  "--spool-max", std::to_string(flags_.spool_max_mb),
                  "--link-fd",   std::to_string(publish_wire::helper_fd)};
    if (quiet_) spawn.argv.push_back("--quiet");
    spawn.pass_fds = {theirs.get()};  // placed from fd 3 on: publish_wire::helper_fd
    // Same process group (a Ctrl-C reaches it, and it ignores it: it ends with the stream), no
    // parent-death signal: it must outlive a killed watcher long enough to accept what is queued.
    helper_.emplace(Child::spawn(spawn));
    theirs.reset();
    reader_ = loop_.add_fd(socket_.get(), EPOLLIN, [this](std::uint32_t) { read_acks(false, {}); });
}

void PublishLink::send(const Event& event) {
    std::string id = prefix_ + std::to_string(sent_ + 1);
    std::string message = publish_wire::encode(id, event.to_line());
    for (;;) {
        if (::send(socket_.get(), message.data(), message.size(), MSG_NOSIGNAL) >= 0) break;
        if (errno == EINTR) continue;
        throw_errno("send to ktricks-publish", flags_.url);  // EPIPE: it is gone
    }
    ++sent_;
}

// Acks are cumulative counts: the last one read is the truth.
void PublishLink::read_acks(bool block_until_done, Clock::time_point deadline) {
    for (;;) {
        if (block_until_done) {
            if (accepted_ >= sent_) return;
            auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
            if (left <= 0) return;
            pollfd poll_fd{socket_.get(), POLLIN, 0};
            if (::poll(&poll_fd, 1, static_cast<int>(left)) <= 0) continue;
        }
        publish_wire::Ack count = 0;
        ssize_t got = ::recv(socket_.get(), &count, sizeof count, MSG_DONTWAIT);
        if (got == sizeof count) {
            accepted_ = count;
            continue;
        }
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !block_until_done) return;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        // 0: the helper closed its end (it exited).
        loop_.remove(reader_);
        reader_ = 0;
        return;
    }
}

std::uint64_t PublishLink::finish(std::chrono::milliseconds limit) {
    if (!helper_) return sent_ - accepted_;
    auto deadline = Clock::now() + limit;
    ::shutdown(socket_.get(), SHUT_WR);  // the end of the stream: the helper exits once it accepted all
    if (reader_) read_acks(true, deadline);
    loop_.remove(reader_);
    reader_ = 0;
    auto left = std::max<Clock::duration>(deadline - Clock::now(), std::chrono::milliseconds(100));
    if (!helper_->wait(std::chrono::duration_cast<std::chrono::milliseconds>(left))) {
        log_warning("ktricks-publish did not exit within {} ms; leaving it to finish", limit.count());
        helper_->detach();
    }
    helper_.reset();
    socket_.reset();
    return sent_ - accepted_;
}

int finish_publishing(PublishLink& link) {
    auto unconfirmed = link.finish(std::chrono::seconds(10));
    if (!unconfirmed) return exit_code::ok;
    log_warning("--publish: {} of {} events not confirmed by ktricks-publish (it may still be sending them)",
                unconfirmed, link.sent());
    return exit_code::temp_fail;
}

}  // namespace ktricks::cli
