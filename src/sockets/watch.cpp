// sockets::Watcher: sock_diag's destroy multicast on the caller's EventLoop.
//
// Guarantees: every TCP/UDP socket the kernel destroys in the namespace after start() returns is
// either delivered through on_socket or counted in an on_lost call (the kernel reports a receive
// buffer overrun as ENOBUFS on the next read, never silently); nothing is delivered after stop().
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>

#include <optional>
#include <utility>

#include "ktricks/netlink.hpp"
#include "ktricks/sockets.hpp"
#include "sockets/decode.hpp"

namespace ktricks::sockets {

class Watcher::Impl {
public:
    Impl(EventLoop& loop, WatchOptions options, WatchCallbacks callbacks)
        : loop_(loop), options_(std::move(options)), callbacks_(std::move(callbacks)) {}
    ~Impl() { stop(); }

    // Not from one of our own callbacks (the socket being read would be replaced under it).
    void start() {
        stop();
        const Query& query = options_.query;
        // A netlink socket belongs to the namespace it was created in; the subscription follows it.
        std::optional<netlink::Socket> diag;
        if (options_.netns.empty()) {
            diag = netlink::Socket::open(NETLINK_SOCK_DIAG);
        } else {
            Fd namespace_fd = netlink::open_netns(options_.netns);
            diag = netlink::open_in_netns(namespace_fd.get(), options_.netns, NETLINK_SOCK_DIAG);
        }
        bool any_kind = query.tcp || query.udp;
        bool tcp = query.tcp || !any_kind, udp = query.udp || !any_kind;
        // A burst of closes (a server restart) can outrun us; a larger buffer makes overruns rarer,
        // and the ones that still happen are reported.
        diag->set_receive_buffer(options_.receive_buffer);
        if (tcp && query.ipv4) diag->subscribe(SKNLGRP_INET_TCP_DESTROY, "inet-tcp-destroy");
        if (udp && query.ipv4) diag->subscribe(SKNLGRP_INET_UDP_DESTROY, "inet-udp-destroy");
        if (tcp && query.ipv6) diag->subscribe(SKNLGRP_INET6_TCP_DESTROY, "inet6-tcp-destroy");
        if (udp && query.ipv6) diag->subscribe(SKNLGRP_INET6_UDP_DESTROY, "inet6-udp-destroy");
        diag->set_nonblocking();
        socket_ = std::move(diag);
        source_ = loop_.add_fd(socket_->fd(), EPOLLIN, [this](std::uint32_t) { read(); });
    }

    void stop() noexcept {
        loop_.remove(source_);
        source_ = 0;
        // Closing the socket ends the subscription. A callback that stops us runs inside the
        // socket's receive(): the socket is closed when that returns.
        if (reading_) stopping_ = true;
        else
            socket_.reset();
    }

private:
    void read() {
        const Query& query = options_.query;
        struct Reading {
            Impl& impl;
            explicit Reading(Impl& i) : impl(i) { impl.reading_ = true; }
            ~Reading() {
                impl.reading_ = false;
                if (std::exchange(impl.stopping_, false)) impl.socket_.reset();
            }
        } reading(*this);
        while (socket_ && !stopping_) {
            auto received = socket_->receive([&](const nlmsghdr& message) {
                if (message.nlmsg_type != SOCK_DIAG_BY_FAMILY) return true;
                SocketInfo info;
                if (!detail::decode_inet(message, 0, info)) return true;
                info.netns = options_.netns;
                if (query.states && !(query.states & (1u << info.state))) return true;
                if (query.filter && !query.filter->matches(info)) return true;
                if (callbacks_.on_socket) callbacks_.on_socket(info);
                return !stopping_;
            });
            if (received == netlink::Received::would_block) break;
            if (received == netlink::Received::overrun && callbacks_.on_lost && !stopping_)
                callbacks_.on_lost();
        }
    }

    EventLoop& loop_;
    const WatchOptions options_;
    const WatchCallbacks callbacks_;
    std::optional<netlink::Socket> socket_;
    EventLoop::SourceId source_ = 0;
    bool reading_ = false, stopping_ = false;  // inside read(); stop() was called from a callback
};

Watcher::Watcher(EventLoop& loop, WatchOptions options, WatchCallbacks callbacks)
    : impl_(std::make_unique<Impl>(loop, std::move(options), std::move(callbacks))) {}
Watcher::~Watcher() = default;
void Watcher::start() { impl_->start(); }
void Watcher::stop() noexcept { impl_->stop(); }

}  // namespace ktricks::sockets
