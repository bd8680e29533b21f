// handoff_chat: a line-based chat server whose connected clients stay connected through upgrades.
//
//   ktricks serve --handoff --listen tcp://127.0.0.1:7000 --control /tmp/chat.ctl -- handoff_chat
//   handoff_chat tcp://127.0.0.1:7000          (standalone: binds the address itself)
//
// Protocol (one line each way):
//   NICK name   -> "OK name"
//   SAY text    -> everyone else gets "name: text"
//   ECHO text   -> "N text", N counting this connection's ECHOs (it survives upgrades)
//   WHO         -> "N connected"
//   GEN         -> "generation G pid P"
//
// What it guarantees: on upgrade it stops accepting, answers nothing more, and hands every
// connection to its successor with the connection's state (nick, ECHO count, any partial line it
// has read). Bytes a client sends meanwhile wait in the kernel's socket buffer, which travels with
// the descriptor: the successor reads them. What it trades away: it writes replies with blocking
// sends, so one client that never reads can stall it (fine for an example, not for production).
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/handoff.hpp"

namespace {

using ktricks::Fd;

struct Client {
    Fd fd;
    std::string nick = "anonymous";
    unsigned long echoes = 0;
    std::string input;  // bytes read but not yet a whole line
};

// nick '\n' echoes '\n' partial-input: the opaque blob the successor gets with the descriptor.
std::string encode(const Client& c) { return fmt::format("{}\n{}\n{}", c.nick, c.echoes, c.input); }
Client decode(Fd fd, const std::string& state) {
    Client c;
    c.fd = std::move(fd);
    auto first = state.find('\n');
    auto second = first == std::string::npos ? std::string::npos : state.find('\n', first + 1);
    if (second == std::string::npos) return c;
    c.nick = state.substr(0, first);
    c.echoes = std::strtoul(state.substr(first + 1, second - first - 1).c_str(), nullptr, 10);
    c.input = state.substr(second + 1);
    return c;
}

void send_line(const Client& c, const std::string& line) {
    std::string out = line + "\n";
    std::size_t sent = 0;
    while (sent < out.size()) {
        ssize_t n = ::send(c.fd.get(), out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // the client is gone; its read side will tell us
        sent += static_cast<std::size_t>(n);
    }
}

}  // namespace

int main(int argc, char** argv) {
    try {
        auto upgrader = ktricks::handoff::Upgrader::from_environment();
        std::string address_text = argc > 1 ? argv[1] : "tcp://127.0.0.1:7000";
        Fd listener = upgrader.listener(ktricks::SocketAddress::parse(address_text));
        ktricks::set_nonblocking(listener.get());  // a flag of the shared open file description
        // The listener is shared with serve and the other generation: poll, then accept without
        // blocking, since the other generation may win the connection.
        const char* generation = std::getenv("KTRICKS_SERVE_GENERATION");
        std::string gen_line = fmt::format("generation {} pid {}", generation ? generation : "0", ::getpid());
        std::map<int, Client> clients;
        upgrader.ready();

        auto handle_line = [&](Client& c, const std::string& line) {
            if (line.starts_with("NICK ")) {
                c.nick = line.substr(5);
                send_line(c, "OK " + c.nick);
            } else if (line.starts_with("ECHO ")) {
                send_line(c, fmt::format("{} {}", ++c.echoes, line.substr(5)));
            } else if (line.starts_with("SAY ")) {
                for (auto& [fd, other] : clients)
                    if (fd != c.fd.get()) send_line(other, c.nick + ": " + line.substr(4));
            } else if (line == "WHO") {
                send_line(c, fmt::format("{} connected", clients.size()));
            } else if (line == "GEN") {
                send_line(c, gen_line);
            } else {
                send_line(c, "ERR unknown command");
            }
        };
        auto process_input = [&](Client& c) {
            std::size_t newline;
            while ((newline = c.input.find('\n')) != std::string::npos) {
                std::string line = c.input.substr(0, newline);
                c.input.erase(0, newline + 1);
                if (!line.empty() && line.back() == '\r') line.pop_back();
                handle_line(c, line);
            }
        };

        while (true) {
            std::vector<pollfd> fds{{listener.get(), POLLIN, 0}};
            if (upgrader.inherit_fd() >= 0) fds.push_back({upgrader.inherit_fd(), POLLIN, 0});
            if (upgrader.upgrade_fd() >= 0) fds.push_back({upgrader.upgrade_fd(), POLLIN, 0});
            for (auto& [fd, c] : clients) fds.push_back({fd, POLLIN, 0});
            if (::poll(fds.data(), fds.size(), -1) < 0) {
                if (errno == EINTR) continue;
                ktricks::throw_errno("poll");
            }
            for (const auto& p : fds) {
                if (!p.revents) continue;
                if (p.fd == listener.get()) {
                    Fd client(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
                    if (client) {
                        int fd = client.get();
                        clients[fd].fd = std::move(client);
                    }
                } else if (p.fd == upgrader.inherit_fd()) {
                    while (auto connection = upgrader.receive_connection()) {
                        ktricks::set_nonblocking(connection->fd.get());
                        Client c = decode(std::move(connection->fd), connection->state);
                        int fd = c.fd.get();
                        auto& stored = clients[fd] = std::move(c);
                        process_input(stored);  // a whole line may have been read by the predecessor
                    }
                } else if (p.fd == upgrader.upgrade_fd()) {
                    if (!upgrader.upgrade_requested()) continue;
                    for (auto& [fd, c] : clients) upgrader.hand_over(std::move(c.fd), encode(c));
                    upgrader.finish();
                    return 0;
                } else if (auto it = clients.find(p.fd); it != clients.end()) {
                    char buffer[4096];
                    ssize_t n = ::recv(p.fd, buffer, sizeof(buffer), 0);
                    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                    if (n <= 0) {
                        clients.erase(it);
                        continue;
                    }
                    it->second.input.append(buffer, static_cast<std::size_t>(n));
                    process_input(it->second);
                }
            }
        }
    } catch (const std::exception& error) {
        fmt::print(stderr, "handoff_chat: {}\n", error.what());
        return 1;
    }
}
