// Tour stop "handoff": a Python server under `ktricks serve`, driven by a steady client while it is
// reloaded five times; then a plain `python3 -m http.server` taken over under the same load; then,
// when Debian's nginx is installed, nginx itself under `ktricks serve --server nginx`, reloaded five
// times under the same load. Every request is counted: failed, refused and reset must all be zero.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <thread>

#include "ktricks/core/child.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/handoff.hpp"
#include "tour/support.hpp"

namespace ktricks::tour {
namespace {

const char* const python = "/usr/bin/python3";

// A socket-activated server in a dozen lines: adopts fd 3, says READY=1 on NOTIFY_SOCKET, and on
// SIGTERM finishes what it accepted (its handler threads are joined) before exiting. The signal
// handler only sets a flag: Python runs it between bytecodes of the main thread, possibly inside
// threading's locked sections, so starting a thread from it can deadlock.
constexpr const char* fd3_server = R"(import http.server, os, signal, socket, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"generation {os.environ['KTRICKS_SERVE_GENERATION']}\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): block_on_close = True
s = S(("", 0), H, bind_and_activate=False); s.socket.close(); s.socket = socket.socket(fileno=3)
s.socket.setblocking(False)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
n = os.environ["NOTIFY_SOCKET"]; n = "\0" + n[1:] if n[0] == "@" else n
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", n)
s.timeout = 0.05
while not stop: s.handle_request()
s.server_close()
)";

struct Counts {
    std::atomic<long> ok = 0, failed = 0, refused = 0, reset = 0;
};

// One request per connection, every 2 ms, from two threads: an HTTP client as plain as they come.
class Client {
public:
    Client(std::uint16_t port, Counts& counts) {
        for (int i = 0; i < 2; ++i)
            threads_.emplace_back([this, port, &counts] {
                while (!stop_) {
                    one(port, counts);
                    std::this_thread::sleep_for(std::chrono::milliseconds(2));
                }
            });
    }
    ~Client() { stop_ = true; }

private:
    void one(std::uint16_t port, Counts& counts) {
        Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        timeval timeout{5, 0};
        ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(port);
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(s.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) < 0) {
            ++(errno == ECONNREFUSED ? counts.refused : counts.failed);
            return;
        }
        static constexpr std::string_view request = "GET /hello.txt HTTP/1.0\r\n\r\n";
        if (::send(s.get(), request.data(), request.size(), MSG_NOSIGNAL) < 0) {
            ++counts.reset;
            return;
        }
        std::string response;
        char buffer[1024];
        ssize_t got;
        while ((got = ::recv(s.get(), buffer, sizeof(buffer), 0)) > 0)
            response.append(buffer, static_cast<std::size_t>(got));
        if (got < 0) ++(errno == ECONNRESET ? counts.reset : counts.failed);
        else if (response.starts_with("HTTP/1.") && response.compare(8, 4, " 200") == 0)
            ++counts.ok;
        else
            ++counts.failed;
    }
    std::atomic<bool> stop_ = false;
    std::vector<std::jthread> threads_;
};

bool answers(std::uint16_t port) {
    Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(s.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
}

// A server or a ktricks command of the stop: in the scratch directory, its output in the stop's
// log, in a process group of its own, and killed with us if the tour dies mid-stop.
Child start(std::vector<std::string> argv, const TempDir& dir, const OutputLog& output) {
    SpawnOptions spawn;
    spawn.argv = std::move(argv);
    spawn.working_directory = dir.path().string();
    spawn.new_process_group = true;
    spawn.parent_death_signal = SIGKILL;
    return spawn_quiet(std::move(spawn), output.path());
}

void report(TourLog& log, const Counts& counts, const std::string& what) {
    log.measured(fmt::format("{}: requests ok / failed / refused / reset", what),
                 fmt::format("{} / {} / {} / {}", counts.ok.load(), counts.failed.load(),
                             counts.refused.load(), counts.reset.load()));
    if (counts.failed || counts.refused || counts.reset) log.failed(what + " lost requests");
    if (counts.ok == 0) log.failed(what + ": no request succeeded");
}

// nginx as a user runs it, in the foreground; the probe path is what `serve --server nginx` needs
// (nginx serves an inherited socket only if a `listen` directive names its address).
std::string nginx_config(const TempDir& dir, std::uint16_t port) {
    return fmt::format(R"(daemon off;
worker_processes 2;
pid {0}/nginx.pid;
error_log {0}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {0}/body; proxy_temp_path {0}/proxy; fastcgi_temp_path {0}/fastcgi;
    uwsgi_temp_path {0}/uwsgi; scgi_temp_path {0}/scgi;
    server {{
        listen 127.0.0.1:{1};
        listen unix:{0}/probe.sock;
        location / {{ return 200 "hello from nginx\n"; }}
    }}
}}
)",
                       dir.path().string(), port);
}

// Generation 1 is serving once serve has read its readiness (until then a reload is refused).
bool first_generation_serving(const std::string& control) {
    try {
        return handoff::request_status(control, std::chrono::seconds(2)).find("\"generation\":1") !=
               std::string::npos;
    } catch (const std::exception&) {
        return false;
    }
}

// Five reloads of whatever `control` supervises, 100 ms apart, under the two-thread client.
void reload_five_times_under_load(TourLog& log, const std::string& control, std::uint16_t port,
                                  const std::string& what) {
    std::vector<double> ready_ms;
    Counts counts;
    auto client = std::make_unique<Client>(port, counts);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    for (int i = 0; i < 5; ++i) {
        auto result = handoff::request_reload(control, std::chrono::seconds(20));
        if (!result.ok) log.failed(what + ": reload: " + result.message);
        ready_ms.push_back(result.ready_ms);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    client.reset();
    report(log, counts, what + ": 5 reloads under load");
    log.measured(
        what + ": reload -> new generation ready (median, max)",
        fmt::format("{}, {}", format_ms(percentile(ready_ms, 0.5)), format_ms(percentile(ready_ms, 1.0))));
}

void run_nginx(TourLog& log, const std::string& self) {
    auto nginx = find_program("nginx");
    if (!nginx) {
        log.say(
            "nginx is not installed: skipping the real-server part (scripts/install-deps.sh installs it)");
        return;
    }
    TempDir dir("handoff-nginx");
    OutputLog output(log, dir / "nginx-and-serve.log");
    std::uint16_t port = free_port();
    std::ofstream(dir / "nginx.conf") << nginx_config(dir, port);
    std::string control = (dir / "serve.ctl").string();
    std::string probe = "unix:" + (dir / "probe.sock").string();
    log.say(fmt::format(
        "ktricks serve --server nginx --listen tcp://127.0.0.1:{} --probe {} -- nginx -c nginx.conf", port,
        probe));
    Child serve = start({self,
                         "serve",
                         "--server",
                         "nginx",
                         "--listen",
                         fmt::format("tcp://127.0.0.1:{}", port),
                         "--probe",
                         probe,
                         "--control",
                         control,
                         "--ready-timeout",
                         "15",
                         "--",
                         *nginx,
                         "-p",
                         dir.path().string(),
                         "-e",
                         (dir / "error.log").string(),
                         "-c",
                         (dir / "nginx.conf").string()},
                        dir, output);
    if (!wait_for([&] { return first_generation_serving(control); }, std::chrono::seconds(15)))
        throw std::runtime_error("serve --server nginx did not come up within 15 s");
    reload_five_times_under_load(log, control, port, "nginx");
    serve.signal(SIGTERM);
    if (!serve.wait(std::chrono::seconds(15))) log.failed("serve --server nginx did not stop within 15 s");
}

void run_stop(TourLog& log) {
    TempDir dir("handoff");
    OutputLog output(log, dir / "servers.log");
    std::ofstream(dir / "server.py") << fd3_server;
    std::ofstream(dir / "hello.txt") << "hello\n";
    std::string self = ktricks_program();
    std::string script = (dir / "server.py").string();

    std::uint16_t port = free_port();
    std::string control = (dir / "serve.ctl").string();
    log.say(fmt::format("ktricks serve --listen tcp://127.0.0.1:{} --control {} -- python3 server.py", port,
                        control));
    Child serve = start({self, "serve", "--listen", fmt::format("tcp://127.0.0.1:{}", port), "--control",
                         control, "--", python, script},
                        dir, output);
    if (!wait_for([&] { return first_generation_serving(control); }, std::chrono::seconds(10)))
        throw std::runtime_error("serve did not come up within 10 s");
    reload_five_times_under_load(log, control, port, "python");
    serve.signal(SIGTERM);
    serve.wait(std::chrono::seconds(10));

    port = free_port();
    log.say(fmt::format(
        "python3 -m http.server {} (knows nothing of ktricks), then ktricks takeover --pid ...", port));
    Child plain =
        start({python, "-m", "http.server", "--bind", "127.0.0.1", std::to_string(port)}, dir, output);
    if (!wait_for([&] { return answers(port); }, std::chrono::seconds(10)))
        throw std::runtime_error("python3 -m http.server did not come up within 10 s");
    {
        Counts counts;
        auto client = std::make_unique<Client>(port, counts);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        auto started = Clock::now();
        Child takeover = start({self, "takeover", "--pid", std::to_string(plain.pid()), "--drain-timeout",
                                "5", "--", python, script},
                               dir, output);
        auto status = plain.wait(std::chrono::seconds(10));
        double took = ms_since(started);
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        client.reset();
        if (!status) log.failed("the old server was not retired within 10 s");
        else
            log.measured("takeover: command start -> old server gone", format_ms(took));
        report(log, counts, "takeover under load");
        takeover.signal(SIGTERM);
        takeover.wait(std::chrono::seconds(10));
    }

    run_nginx(log, self);
}

}  // namespace

TourStop handoff_stop() {
    return {"handoff",
            "replace a server without dropping a request: serve, reload, takeover; nginx if installed",
            [] {
                if (::access(python, X_OK) != 0) return std::optional<std::string>("needs /usr/bin/python3");
                return std::optional<std::string>();
            },
            run_stop};
}

}  // namespace ktricks::tour
