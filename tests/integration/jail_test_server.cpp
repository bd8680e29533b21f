// A small server for the jail's tests and benchmark: it serves what it is handed and reports what
// it sees, so a test can check the isolation from the outside.
//
//   jail_test_server serve [--request ADDR]... [--inbox PATH] [--bind ADDR]...
//       Serves every LISTEN_FDS socket (and each socket the broker grants for --request ADDR, and
//       each socket handed to the inbox at PATH, and each ADDR it binds itself). Stream sockets: an HTTP/1.1 request gets
//       "200 OK" with the body below (keep-alive, so wrk can load it); any other line gets the body
//       as a line. Datagram sockets: each datagram gets the body back, sent from the address it
//       was sent to (IP_PKTINFO / IPV6_PKTINFO, needed when bound to a wildcard address).
//       Body: "peer=ADDRESS pid=PID\n": the client address the kernel reports, our pid.
//   jail_test_server probe ADDR...
//       Tries to connect to each tcp/udp address; prints "ADDR connected" or "ADDR ERRNONAME".
//   jail_test_server socket
//       Tries socket(AF_INET, SOCK_STREAM) and socketpair(AF_UNIX); prints the outcome of each.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ktricks/core/socket_address.hpp"
#include "ktricks/jail.hpp"

using namespace ktricks;

namespace {

const char* errno_name(int error) {
    switch (error) {
        case ENETUNREACH: return "ENETUNREACH";
        case ECONNREFUSED: return "ECONNREFUSED";
        case EHOSTUNREACH: return "EHOSTUNREACH";
        case ETIMEDOUT: return "ETIMEDOUT";
        case EPERM: return "EPERM";
        case EACCES: return "EACCES";
        case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
        case EAFNOSUPPORT: return "EAFNOSUPPORT";
        default: return strerror(error);
    }
}

int probe(const std::string& text) {
    SocketAddress address = SocketAddress::parse(text);
    int fd = ::socket(address.family(), address.socket_type() | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return errno;
    int result = ::connect(fd, address.sockaddr_ptr(), address.length());
    int error = result == 0 ? 0 : errno;
    if (error == EINPROGRESS) {
        pollfd writable{fd, POLLOUT, 0};
        if (::poll(&writable, 1, 2000) == 1) {
            socklen_t length = sizeof(error);
            ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
        } else {
            error = ETIMEDOUT;
        }
    }
    ::close(fd);
    return error;
}

std::string body_for(const sockaddr* peer, socklen_t length, int type) {
    std::string address =
        length > sizeof(sa_family_t) ? SocketAddress::from_sockaddr(peer, length, type).to_string() : "unix:";
    return "peer=" + address + " pid=" + std::to_string(::getpid()) + "\n";
}

struct Connection {
    std::string body;
    std::string input;
};

class Server {
public:
    Server() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {}

    void add_listener(int fd) {
        int type = 0;
        socklen_t length = sizeof(type);
        ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length);
        int on = 1;
        if (type == SOCK_DGRAM) {
            ::setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof(on));
            ::setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof(on));
            datagram_.insert(fd);
        } else {
            listeners_.insert(fd);
        }
        int flags = ::fcntl(fd, F_GETFL);
        ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        watch(fd);
        std::printf("serving %s\n", SocketAddress::of_socket(fd).to_string().c_str());
        std::fflush(stdout);
    }
    void add_inbox(const std::string& path) {
        inbox_.emplace(jail::Inbox::bind(path));
        watch(inbox_->fd());
        std::printf("inbox %s\n", path.c_str());
        std::fflush(stdout);
    }

    // SIGTERM drains: no new connections (the listeners may live on in a successor), the open ones
    // are served until their clients close them, then exit 0.
    [[noreturn]] void run() {
        epoll_event events[64];
        while (true) {
            int count = ::epoll_wait(epoll_, events, 64, draining ? 50 : -1);
            if (draining) {
                for (int fd : listeners_) ::close(fd);
                for (int fd : datagram_) ::close(fd);
                listeners_.clear();
                datagram_.clear();
                if (connections_.empty()) std::exit(0);
            }
            for (int i = 0; i < count; ++i) handle(events[i].data.fd);
        }
    }
    static inline volatile sig_atomic_t draining = 0;

private:
    void watch(int fd) {
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.fd = fd;
        ::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event);
    }

    void handle(int fd) {
        if (inbox_ && fd == inbox_->fd()) {
            auto handed = inbox_->receive();
            add_listener(handed.socket.release());
        } else if (listeners_.count(fd)) {
            sockaddr_storage peer{};
            socklen_t length = sizeof(peer);
            int client;
            while ((client = ::accept4(fd, reinterpret_cast<sockaddr*>(&peer), &length,
                                       SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
                connections_[client].body = body_for(reinterpret_cast<sockaddr*>(&peer), length, SOCK_STREAM);
                watch(client);
                length = sizeof(peer);
            }
        } else if (datagram_.count(fd)) {
            answer_datagram(fd);
        } else {
            serve_stream(fd);
        }
    }

    void serve_stream(int fd) {
        auto& connection = connections_[fd];
        char buffer[16384];
        ssize_t got = ::read(fd, buffer, sizeof(buffer));
        if (got < 0 && errno == EAGAIN) return;
        if (got <= 0) {
            connections_.erase(fd);
            ::close(fd);
            return;
        }
        connection.input.append(buffer, static_cast<std::size_t>(got));
        std::string output;
        while (true) {
            if (connection.input.starts_with("GET ") || connection.input.starts_with("HEAD ")) {
                auto end = connection.input.find("\r\n\r\n");
                if (end == std::string::npos) break;
                connection.input.erase(0, end + 4);
                output += "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                          std::to_string(connection.body.size()) + "\r\n\r\n" + connection.body;
            } else {
                auto end = connection.input.find('\n');
                if (end == std::string::npos) break;
                connection.input.erase(0, end + 1);
                output += connection.body;
            }
        }
        if (!output.empty() && ::write(fd, output.data(), output.size()) < 0) {
            connections_.erase(fd);
            ::close(fd);
        }
    }

    // Replies from the address the datagram was sent to: on a wildcard-bound socket the kernel
    // would otherwise pick a source by route, and the client would drop a reply from elsewhere.
    void answer_datagram(int fd) {
        char data[2048];
        sockaddr_storage peer{};
        alignas(cmsghdr) char control[256];
        iovec iov{data, sizeof(data)};
        msghdr message{};
        message.msg_name = &peer;
        message.msg_namelen = sizeof(peer);
        message.msg_iov = &iov;
        message.msg_iovlen = 1;
        message.msg_control = control;
        message.msg_controllen = sizeof(control);
        while (::recvmsg(fd, &message, MSG_DONTWAIT) >= 0) {
            std::string body = body_for(reinterpret_cast<sockaddr*>(&peer), message.msg_namelen, SOCK_DGRAM);
            iovec reply_iov{body.data(), body.size()};
            msghdr reply{};
            reply.msg_name = &peer;
            reply.msg_namelen = message.msg_namelen;
            reply.msg_iov = &reply_iov;
            reply.msg_iovlen = 1;
            alignas(cmsghdr) char reply_control[256];
            std::size_t used = 0;
            for (cmsghdr* header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
                bool v4 = header->cmsg_level == IPPROTO_IP && header->cmsg_type == IP_PKTINFO;
                bool v6 = header->cmsg_level == IPPROTO_IPV6 && header->cmsg_type == IPV6_PKTINFO;
                if (!v4 && !v6) continue;
                std::memcpy(reply_control + used, header, header->cmsg_len);
                if (v4)
                    reinterpret_cast<in_pktinfo*>(CMSG_DATA(reinterpret_cast<cmsghdr*>(reply_control + used)))
                        ->ipi_ifindex = 0;
                used += CMSG_SPACE(header->cmsg_len - CMSG_LEN(0));
            }
            if (used) {
                reply.msg_control = reply_control;
                reply.msg_controllen = used;
            }
            ::sendmsg(fd, &reply, 0);
            message.msg_namelen = sizeof(peer);
            message.msg_controllen = sizeof(control);
        }
    }

    int epoll_;
    std::optional<jail::Inbox> inbox_;
    std::set<int> listeners_, datagram_;
    std::map<int, Connection> connections_;
};

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty()) {
        std::fprintf(stderr, "usage: jail_test_server serve|probe|socket ...\n");
        return 64;
    }
    try {
        if (args[0] == "probe") {
            for (std::size_t i = 1; i < args.size(); ++i) {
                int error = probe(args[i]);
                std::printf("%s %s\n", args[i].c_str(), error ? errno_name(error) : "connected");
            }
            return 0;
        }
        if (args[0] == "socket") {
            int inet = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            std::printf("socket(AF_INET) %s\n", inet >= 0 ? "ok" : errno_name(errno));
            int pair[2];
            std::printf(
                "socketpair(AF_UNIX) %s\n",
                ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0 ? "ok" : errno_name(errno));
            return 0;
        }
        if (args[0] != "serve") return 64;
        Server server;
        struct sigaction drain {};
        drain.sa_handler = [](int) { Server::draining = 1; };
        ::sigaction(SIGTERM, &drain, nullptr);
        const char* count = std::getenv("LISTEN_FDS");
        const char* pid = std::getenv("LISTEN_PID");
        if (count && pid && std::atoi(pid) == ::getpid())
            for (int fd = 3; fd < 3 + std::atoi(count); ++fd) server.add_listener(fd);
        for (std::size_t i = 1; i + 1 < args.size(); i += 2) {
            if (args[i] == "--inbox") {
                server.add_inbox(args[i + 1]);
            } else if (args[i] == "--bind") {
                // Binds by itself, as an unmodified server would (in a jail: --intercept-bind).
                server.add_listener(bind_socket(SocketAddress::parse(args[i + 1])).release());
            } else if (args[i] == "--request") {
                try {
                    Fd granted = jail::request_listener(SocketAddress::parse(args[i + 1]));
                    std::printf("granted %s\n", args[i + 1].c_str());
                    server.add_listener(granted.release());
                } catch (const jail::RefusedError& refused) {
                    std::printf("refused %s\n", refused.what());
                }
                std::fflush(stdout);
            }
        }
        std::printf("ready pid=%d\n", ::getpid());
        std::fflush(stdout);
        server.run();
    } catch (const std::exception& error) {
        std::fprintf(stderr, "jail_test_server: %s\n", error.what());
        return 1;
    }
}
