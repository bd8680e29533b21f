// A small HTTP/1.1 server that knows only systemd's socket activation, through libsystemd itself:
// sd_listen_fds() for its listeners, sd_notify() for READY=1 and STATUS=. It is what `ktricks serve`
// must run unchanged, and the integration tests drive it under load across reloads.
//
//   handoff_sd_server [--fail] [--start-delay MS]
//
// Every response body is "generation G pid P\n" (G from KTRICKS_SERVE_GENERATION). On SIGTERM it
// stops accepting, answers each open connection's next request with "Connection: close" and exits
// when none is left: the graceful drain that loses nothing.
//
// Stream listeners (tcp, tcp6, unix) speak that HTTP; a datagram listener (udp) answers each
// datagram at once with "PAYLOAD generation G pid P\n" to its sender. On SIGTERM it closes its copy
// of a datagram socket like a listener: what it read, it has answered; what it did not read stays
// in the socket's receive queue for whoever holds the socket next.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

namespace {

volatile sig_atomic_t draining = 0;
void on_term(int) { draining = 1; }

struct Connection {
    std::string input;
};

// Answers every complete request in `c`; returns false when the connection is to be closed.
bool serve_requests(int fd, Connection& c, const std::string& body) {
    while (true) {
        auto end = c.input.find("\r\n\r\n");
        if (end == std::string::npos) return true;
        c.input.erase(0, end + 4);
        bool close_after = draining != 0;
        std::string response =
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
            "\r\n" + (close_after ? "Connection: close\r\n" : "") + "\r\n" + body;
        size_t sent = 0;
        while (sent < response.size()) {
            ssize_t n = send(fd, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
            if (n < 0 && errno == EAGAIN) {
                pollfd out{fd, POLLOUT, 0};
                poll(&out, 1, 1000);
                continue;
            }
            if (n <= 0) return false;
            sent += static_cast<size_t>(n);
        }
        if (close_after) return false;
    }
}

}  // namespace

int main(int argc, char** argv) {
    int start_delay_ms = 0;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--fail")) {
            fprintf(stderr, "handoff_sd_server: failing on purpose\n");
            return 3;
        }
        if (!strcmp(argv[i], "--start-delay") && i + 1 < argc) start_delay_ms = atoi(argv[++i]);
    }
    int listeners = sd_listen_fds(1);
    if (listeners < 1) {
        fprintf(stderr, "handoff_sd_server: no socket from sd_listen_fds (%d)\n", listeners);
        return 2;
    }
    struct sigaction action {};
    action.sa_handler = on_term;
    sigaction(SIGTERM, &action, nullptr);
    signal(SIGPIPE, SIG_IGN);
    if (start_delay_ms) usleep(static_cast<useconds_t>(start_delay_ms) * 1000);

    const char* generation = getenv("KTRICKS_SERVE_GENERATION");
    std::string body = std::string("generation ") + (generation ? generation : "?") + " pid " +
                       std::to_string(getpid()) + "\n";
    // Two generations poll the same listening socket during a reload, and only one wins each
    // connection: a blocking accept() in the loser would hang. O_NONBLOCK is a flag of the open file
    // description, so setting it here sets it for serve and every other generation too (harmless for
    // them: they poll before accepting, as every server sharing a listener must).
    for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + listeners; ++fd)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    sd_notifyf(0, "READY=1\nSTATUS=serving as pid %d", getpid());

    std::vector<bool> datagram(static_cast<size_t>(SD_LISTEN_FDS_START + listeners), false);
    for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + listeners; ++fd)
        datagram[static_cast<size_t>(fd)] = sd_is_socket(fd, AF_UNSPEC, SOCK_DGRAM, -1) > 0;

    std::map<int, Connection> connections;
    bool accepting = true;
    while (true) {
        if (draining && accepting) {
            accepting = false;
            for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + listeners; ++fd) close(fd);
            sd_notify(0, "STOPPING=1");
        }
        if (!accepting && connections.empty()) return 0;
        std::vector<pollfd> fds;
        if (accepting)
            for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + listeners; ++fd)
                fds.push_back({fd, POLLIN, 0});
        for (auto& [fd, c] : connections) fds.push_back({fd, POLLIN, 0});
        int ready = poll(fds.data(), fds.size(), 200);
        if (ready < 0 && errno == EINTR) continue;
        for (auto& p : fds) {
            if (!p.revents) continue;
            if (p.fd < SD_LISTEN_FDS_START + listeners && accepting && datagram[static_cast<size_t>(p.fd)]) {
                char payload[512];
                sockaddr_storage peer{};
                socklen_t peer_length = sizeof(peer);
                ssize_t n = recvfrom(p.fd, payload, sizeof(payload), MSG_DONTWAIT,
                                     reinterpret_cast<sockaddr*>(&peer), &peer_length);
                if (n < 0) continue;  // another generation read it first
                std::string answer = std::string(payload, static_cast<size_t>(n)) + " " + body;
                sendto(p.fd, answer.data(), answer.size(), 0, reinterpret_cast<sockaddr*>(&peer),
                       peer_length);
                continue;
            }
            if (p.fd < SD_LISTEN_FDS_START + listeners && accepting) {
                // Another generation may take the connection first: accept must not block then.
                int client = accept4(p.fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (client >= 0) connections[client] = {};
                continue;
            }
            auto it = connections.find(p.fd);
            if (it == connections.end()) continue;
            char buffer[4096];
            ssize_t n = recv(p.fd, buffer, sizeof(buffer), 0);
            if (n < 0 && errno == EAGAIN) continue;
            bool keep = n > 0;
            if (keep) {
                it->second.input.append(buffer, static_cast<size_t>(n));
                keep = serve_requests(p.fd, it->second, body);
            }
            if (!keep) {
                close(p.fd);
                connections.erase(it);
            }
        }
    }
}
