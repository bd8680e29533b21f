// Tour stop "jail": a jailed HTTP server answers the host on the socket it was handed, while its
// own attempts to reach the outside fail.
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <chrono>
#include <regex>

#include "ktricks/core/child.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/socket_address.hpp"
#include "tour/support.hpp"

namespace ktricks::tour {
namespace {

// The server: fd 3 from LISTEN_FDS; it tries two outbound connections first and reports them.
constexpr const char* server_script = R"(
import errno, os, socket
def attempt(host, port):
    c = socket.socket()
    c.settimeout(2)
    try:
        c.connect((host, port)); return 'connected (!)'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
out = {h: attempt(h, 80) for h in ('1.1.1.1', '169.254.169.254')}
listener = socket.socket(fileno=int(os.environ['LISTEN_FDS']) + 2)
while True:
    conn, peer = listener.accept()
    conn.recv(4096)
    body = (f"hello from pid {os.getpid()} (LISTEN_PID={os.environ['LISTEN_PID']}) in the jail; you are {peer[0]}:{peer[1]}\n"
            + ''.join(f"my connect() to {h}:80 -> {r}\n" for h, r in out.items()))
    conn.sendall(b'HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n' % len(body) + body.encode())
    conn.close()
)";

std::string read_memfd(int fd) {
    std::string text;
    char buffer[4096];
    for (off_t offset = 0;;) {
        ssize_t got = ::pread(fd, buffer, sizeof(buffer), offset);
        if (got <= 0) return text;
        text.append(buffer, static_cast<std::size_t>(got));
        offset += got;
    }
}

std::string http_get(const SocketAddress& address) {
    Fd socket(::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(socket.get(), address.sockaddr_ptr(), address.length()) < 0)
        throw_errno("connect", address.to_string());
    std::string request = "GET / HTTP/1.0\r\nHost: jail\r\n\r\n";
    if (::send(socket.get(), request.data(), request.size(), MSG_NOSIGNAL) < 0)
        throw_errno("send", address.to_string());
    std::string response;
    char buffer[4096];
    while (true) {
        pollfd readable{socket.get(), POLLIN, 0};
        if (::poll(&readable, 1, 10000) != 1)
            throw std::runtime_error("the jailed server did not answer within 10 s");
        ssize_t got = ::recv(socket.get(), buffer, sizeof(buffer), 0);
        if (got <= 0) break;
        response.append(buffer, static_cast<std::size_t>(got));
    }
    return response;
}

void run_stop(TourLog& log) {
    Fd err(::memfd_create("jail-stderr", MFD_CLOEXEC));
    SpawnOptions spawn;
    spawn.argv = {ktricks_program(),   "jail", "--readonly",       "--user", "65534",      "--listen",
                  "tcp://127.0.0.1:0", "--",   "/usr/bin/python3", "-c",     server_script};
    spawn.stderr_fd = err.get();
    spawn.new_process_group = true;
    Child jail = Child::spawn(spawn);
    log.say(
        "Started `ktricks jail --readonly --user 65534 --listen tcp://127.0.0.1:0 -- python3 -c SERVER`.");
    std::smatch match;
    std::string text;
    static const std::regex bound("fd 3 = (\\S+)");
    wait_for([&] { return std::regex_search(text = read_memfd(err.get()), bound) || jail.try_wait(); },
             std::chrono::seconds(5));
    if (!std::regex_search(text, match, bound)) {
        log.failed("the jail did not report its listener: " + text);
        return;
    }
    SocketAddress address = SocketAddress::parse(match[1].str());
    log.say(
        fmt::format("The listener {} was bound on the host, then handed in as fd 3.", address.to_string()));
    auto before = Clock::now();
    std::string response = http_get(address);
    double ms = ms_since(before);
    auto body_at = response.find("\r\n\r\n");
    std::string body = body_at == std::string::npos ? response : response.substr(body_at + 4);
    log.say("The host fetched http://" + address.to_string().substr(6) + "/ and got:");
    for (size_t start = 0; start < body.size();) {
        auto end = body.find('\n', start);
        log.say("  " + body.substr(start, end - start));
        if (end == std::string::npos) break;
        start = end + 1;
    }
    log.measured("first page from the jail (server start included)", format_ms(ms));
    if (body.find("connected (!)") != std::string::npos || body.find("ENETUNREACH") == std::string::npos)
        log.failed("the jailed server reached the outside");
    else
        log.say("Inbound works, outbound does not: the jail has no interface but a downed lo.");
    jail.signal(SIGTERM);
    jail.wait(std::chrono::seconds(5));
}

}  // namespace

TourStop jail_stop() {
    return {"jail", "a server in an empty network namespace: clients in, nothing out",
            [] {
                return ::access("/usr/bin/python3", X_OK) == 0
                           ? std::optional<std::string>()
                           : std::optional<std::string>("needs /usr/bin/python3");
            },
            run_stop};
}

}  // namespace ktricks::tour
