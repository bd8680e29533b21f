// `ktricks serve`, `reload` and `takeover` as users meet them: real servers (one built on libsystemd,
// Python socketserver, python3 -m http.server, uWSGI, the Upgrader example) under continuous load on
// loopback, with every request accounted for: a reload or takeover must cost zero failed requests,
// zero refused connections and zero resets.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "ktricks/handoff.hpp"
#include "process_helpers.hpp"

namespace ktricks::test {
namespace {

const std::string K = KTRICKS_BINARY;
const std::filesystem::path build_dir = std::filesystem::path(KTRICKS_BINARY).parent_path();
const std::string sd_server = (build_dir / "tests/helpers/handoff_sd_server").string();
const std::string chat_server = (build_dir / "examples/handoff_chat").string();
const std::filesystem::path scripts = std::filesystem::path(__FILE__).parent_path() / "handoff";
const std::string python = "/usr/bin/python3";
const std::string fd3_server = (scripts / "fd3_server.py").string();
const std::string show_env = (scripts / "show_env.py").string();

// A port nobody listens on right now (the kernel picks it; we release it at once).
std::uint16_t free_port() {
    Fd probe = bind_socket(SocketAddress::parse("tcp://127.0.0.1:0"));
    return SocketAddress::of_socket(probe.get()).port();
}

Fd connect_tcp(std::uint16_t port, int& error) {
    Fd socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    timeval timeout{5, 0};
    ::setsockopt(socket.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ::setsockopt(socket.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(socket.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) < 0) {
        error = errno;
        return Fd();
    }
    error = 0;
    return socket;
}

struct HttpResponse {
    int status = 0;
    bool close = false;
    std::string body;
};

// Reads one HTTP response; nullopt with `error` set (errno, or -1 for EOF mid-response).
std::optional<HttpResponse> read_response(int fd, int& error) {
    std::string data;
    char buffer[4096];
    std::size_t header_end = std::string::npos;
    std::size_t length = 0;
    HttpResponse response;
    while (true) {
        if (header_end == std::string::npos && (header_end = data.find("\r\n\r\n")) != std::string::npos) {
            std::string head = data.substr(0, header_end);
            response.status = std::atoi(head.substr(9, 3).c_str());
            response.close = head.starts_with("HTTP/1.0") || head.find("Connection: close") != std::string::npos;
            auto cl = head.find("Content-Length: ");
            length = cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 16));
        }
        if (header_end != std::string::npos && data.size() >= header_end + 4 + length) {
            response.body = data.substr(header_end + 4, length);
            return response;
        }
        ssize_t got = ::recv(fd, buffer, sizeof(buffer), 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            error = got == 0 ? -1 : errno;
            return std::nullopt;
        }
        data.append(buffer, static_cast<std::size_t>(got));
    }
}

// Continuous HTTP load: keep-alive clients (reconnecting only when the server says
// "Connection: close") and one-request-per-connection clients, each at a steady pace.
class Load {
public:
    Load(std::uint16_t port, std::string path, int keepalive = 2, int fresh = 2) : port_(port), path_(std::move(path)) {
        for (int i = 0; i < keepalive; ++i) threads_.emplace_back([this] { run(true); });
        for (int i = 0; i < fresh; ++i) threads_.emplace_back([this] { run(false); });
    }
    ~Load() { stop(); }
    void stop() {
        stop_ = true;
        threads_.clear();
    }
    long ok() const { return ok_; }
    long failed() const { return failed_; }
    long refused() const { return refused_; }
    long resets() const { return resets_; }
    std::set<std::string> bodies() {
        std::lock_guard lock(mutex_);
        return bodies_;
    }
    std::string errors() {
        std::lock_guard lock(mutex_);
        std::string all;
        for (const auto& e : errors_) all += e + "\n";
        return all;
    }

private:
    void fail(int error, const std::string& what) {
        if (error == ECONNREFUSED) ++refused_;
        else if (error == ECONNRESET || error == EPIPE) ++resets_;
        else ++failed_;
        std::lock_guard lock(mutex_);
        if (errors_.size() < 20) errors_.push_back(fmt::format("{}: {}", what, error == -1 ? "EOF" : std::strerror(error)));
    }
    void run(bool keepalive) {
        Fd socket;
        std::string request = fmt::format("GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\n", path_,
                                          keepalive ? "" : "Connection: close\r\n");
        while (!stop_) {
            int error = 0;
            if (!socket) {
                socket = connect_tcp(port_, error);
                if (!socket) {
                    fail(error, "connect");
                    std::this_thread::sleep_for(std::chrono::milliseconds(5));
                    continue;
                }
            }
            if (::send(socket.get(), request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
                fail(errno, "send");
                socket.reset();
                continue;
            }
            auto response = read_response(socket.get(), error);
            if (!response) {
                fail(error, keepalive ? "keep-alive response" : "response");
                socket.reset();
                continue;
            }
            if (response->status != 200) {
                fail(0, fmt::format("status {}", response->status));
            } else {
                ++ok_;
                std::lock_guard lock(mutex_);
                bodies_.insert(response->body);
            }
            if (response->close || !keepalive) socket.reset();
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    }

    std::uint16_t port_;
    std::string path_;
    std::atomic<bool> stop_ = false;
    std::atomic<long> ok_ = 0, failed_ = 0, refused_ = 0, resets_ = 0;
    std::mutex mutex_;
    std::set<std::string> bodies_;
    std::vector<std::string> errors_;
    std::vector<std::jthread> threads_;
};

std::optional<std::string> http_get(std::uint16_t port, const std::string& path = "/") {
    int error = 0;
    Fd socket = connect_tcp(port, error);
    if (!socket) return std::nullopt;
    std::string request = fmt::format("GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
    if (::send(socket.get(), request.data(), request.size(), MSG_NOSIGNAL) < 0) return std::nullopt;
    auto response = read_response(socket.get(), error);
    if (!response || response->status != 200) return std::nullopt;
    return response->body;
}

::testing::AssertionResult serves(std::uint16_t port, Process& server, const std::string& path = "/") {
    if (eventually([&] { return http_get(port, path).has_value() || !server.running(); }) && server.running())
        return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "port " << port << " never answered\n" << server.describe();
}

::testing::AssertionResult no_request_lost(Load& load) {
    if (load.failed() == 0 && load.refused() == 0 && load.resets() == 0 && load.ok() > 0)
        return ::testing::AssertionSuccess() << load.ok() << " requests";
    return ::testing::AssertionFailure() << "ok " << load.ok() << ", failed " << load.failed() << ", refused "
                                         << load.refused() << ", resets " << load.resets() << "\n"
                                         << load.errors();
}

std::string addr(std::uint16_t port) { return fmt::format("tcp://127.0.0.1:{}", port); }

// Starts `serve` for `command` with a control socket and waits until it answers HTTP.
struct Served {
    TempDir dir;
    std::uint16_t port = free_port();
    std::string control = dir / "control.sock";
    std::optional<Process> process;

    explicit Served(std::vector<std::string> command, std::vector<std::string> extra = {}) {
        std::vector<std::string> argv = {K, "serve", "--listen", addr(port), "--control", control};
        if (std::find(extra.begin(), extra.end(), "--drain-timeout") == extra.end()) extra.insert(extra.end(), {"--drain-timeout", "10"});
        argv.insert(argv.end(), extra.begin(), extra.end());
        argv.push_back("--");
        argv.insert(argv.end(), command.begin(), command.end());
        process.emplace(Process::start(argv));
    }
    // Answering HTTP is not enough: the first generation answers before serve has read its READY=1,
    // and a reload until then is refused as "already in progress".
    ::testing::AssertionResult up() {
        auto answering = serves(port, *process);
        if (!answering) return answering;
        if (eventually([&] {
                try {
                    return status()["generation"] == 1;
                } catch (const std::exception&) {
                    return false;
                }
            }))
            return ::testing::AssertionSuccess();
        return ::testing::AssertionFailure() << "generation 1 never became ready\n" << process->describe();
    }
    handoff::ReloadResult reload() { return handoff::request_reload(control, std::chrono::seconds(20)); }
    nlohmann::json status() { return nlohmann::json::parse(handoff::request_status(control, std::chrono::seconds(5))); }
};

void reload_under_load(Served& served, int reloads) {
    ASSERT_TRUE(served.up());
    Load load(served.port, "/");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (int i = 0; i < reloads; ++i) {
        auto result = served.reload();
        ASSERT_TRUE(result.ok) << result.message << "\n" << served.process->describe();
        EXPECT_EQ(result.generation, static_cast<unsigned>(i + 2));
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    load.stop();
    EXPECT_TRUE(no_request_lost(load)) << served.process->describe();
    EXPECT_GE(load.bodies().size(), static_cast<std::size_t>(reloads / 2)) << "requests reached too few generations";
    EXPECT_GE(load.ok(), 100);
}

TEST(HandoffServe, ReloadsALibsystemdServerTwentyTimesUnderLoadWithoutLosingARequest) {
    Served served({sd_server});
    reload_under_load(served, 20);
}

TEST(HandoffServe, ReloadsAPythonSocketserverOnFd3TwentyTimesUnderLoadWithoutLosingARequest) {
    Served served({python, fd3_server});
    reload_under_load(served, 20);
}

TEST(HandoffServe, PassesListenersExactlyAsSystemdDoes) {
    TempDir dir;
    std::uint16_t port = free_port();
    std::string abstract = fmt::format("unix:@ktricks-it-env-{}", ::getpid());
    Process serve = Process::start({K, "serve", "--listen", "web=" + addr(port), "--listen", abstract, "--ready=delay:0",
                                    "--", python, show_env});
    ASSERT_TRUE(eventually([&] { return serve.out().find('\n') != std::string::npos; })) << serve.describe();
    auto shown = nlohmann::json::parse(lines_of(serve.out()).front());
    EXPECT_EQ(shown["env"]["LISTEN_FDS"], "2");
    EXPECT_EQ(shown["env"]["LISTEN_PID"], std::to_string(shown["pid"].get<int>()));
    EXPECT_EQ(shown["env"]["LISTEN_FDNAMES"], "web:unknown");
    EXPECT_TRUE(shown["env"]["NOTIFY_SOCKET"].get<std::string>().starts_with("@"));
    EXPECT_EQ(shown["fds"]["3"], fmt::format("127.0.0.1:{}", port));
    EXPECT_EQ(shown["fds"]["4"], abstract.substr(5));
    EXPECT_FALSE(shown["fds"].contains("5")) << "only the listeners are inherited";
}

TEST(HandoffServe, SpeaksTheNginxEinhornAndGunicornConventions) {
    struct Case {
        std::string protocol, key, value;
    };
    for (const auto& c : {Case{"nginx", "NGINX", "3;4;"}, Case{"einhorn", "EINHORN_FD_COUNT", "2"},
                          Case{"gunicorn", "GUNICORN_FD", "3,4"}}) {
        Process serve = Process::start({K, "serve", "--listen", addr(free_port()), "--listen", addr(free_port()),
                                        "--protocol", c.protocol, "--ready=delay:0", "--", python, show_env});
        ASSERT_TRUE(eventually([&] { return serve.out().find('\n') != std::string::npos; })) << serve.describe();
        auto shown = nlohmann::json::parse(lines_of(serve.out()).front());
        EXPECT_EQ(shown["env"][c.key], c.value) << c.protocol;
        EXPECT_TRUE(shown["env"]["LISTEN_FDS"].is_null()) << c.protocol << ": no systemd variables in another protocol";
        EXPECT_EQ(shown["fds"].size(), 2u) << c.protocol;
        if (c.protocol == "einhorn") {
            EXPECT_EQ(shown["env"]["EINHORN_FD_0"], "3");
            EXPECT_EQ(shown["env"]["EINHORN_FD_1"], "4");
        }
    }
}

TEST(HandoffServe, HandsStoredFdsToTheNextGenerationWithTheirNames) {
    Served served({python, show_env, "--store"}, {"--ready=delay:300"});
    ASSERT_TRUE(eventually([&] { return served.process->out().find('\n') != std::string::npos; }));
    ASSERT_TRUE(eventually([&] { return served.status()["fdstore"] == 1 && served.status()["generation"] == 1; }))
        << served.process->describe();
    auto result = served.reload();
    ASSERT_TRUE(result.ok) << result.message;
    ASSERT_TRUE(eventually([&] { return lines_of(served.process->out()).size() >= 2; })) << served.process->describe();
    auto second = nlohmann::json::parse(lines_of(served.process->out())[1]);
    EXPECT_EQ(second["env"]["LISTEN_FDS"], "2");
    EXPECT_EQ(second["env"]["LISTEN_FDNAMES"], "unknown:kept-pipe");
}

TEST(HandoffServe, AFailingNewGenerationLeavesTheOldOneServing) {
    std::string script = fmt::format("if [ \"$KTRICKS_SERVE_GENERATION\" = 2 ]; then exec {} --fail; fi; exec {}",
                                     sd_server, sd_server);
    Served served({"/bin/sh", "-c", script});
    ASSERT_TRUE(served.up());
    Load load(served.port, "/");
    auto result = served.reload();
    EXPECT_FALSE(result.ok);
    EXPECT_NE(result.message.find("exited with status 3 before it was ready"), std::string::npos) << result.message;
    EXPECT_NE(result.message.find("generation 1"), std::string::npos) << result.message;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    load.stop();
    EXPECT_TRUE(no_request_lost(load));
    auto body = http_get(served.port);
    ASSERT_TRUE(body);
    EXPECT_TRUE(body->starts_with("generation 1 ")) << *body;
    auto next = served.reload();  // generation 3 is fine again
    EXPECT_TRUE(next.ok) << next.message;
    EXPECT_EQ(next.generation, 3u);
}

TEST(HandoffServe, ANewGenerationThatNeverGetsReadyIsRolledBackAfterTheTimeout) {
    std::string script = fmt::format("if [ \"$KTRICKS_SERVE_GENERATION\" = 2 ]; then exec sleep 30; fi; exec {}", sd_server);
    Served served({"/bin/sh", "-c", script}, {"--ready-timeout", "0.5"});
    ASSERT_TRUE(served.up());
    auto result = served.reload();
    EXPECT_FALSE(result.ok);
    EXPECT_NE(result.message.find("not ready within 500 ms"), std::string::npos) << result.message;
    EXPECT_TRUE(http_get(served.port).value_or("").starts_with("generation 1 "));
}

TEST(HandoffServe, RefusesAReloadWhileOneIsInProgress) {
    std::string script = fmt::format("if [ \"$KTRICKS_SERVE_GENERATION\" = 2 ]; then exec {} --start-delay 1500; fi; exec {}",
                                     sd_server, sd_server);
    Served served({"/bin/sh", "-c", script});
    ASSERT_TRUE(served.up());
    std::optional<handoff::ReloadResult> first;
    std::jthread reloading([&] { first = served.reload(); });
    ASSERT_TRUE(eventually([&] { return served.status()["reloading"] == true; }));
    auto second = run({K, "reload", "--control", served.control});
    EXPECT_EQ(second.status, 75) << second.describe;
    EXPECT_NE(second.err.find("a reload is already in progress: generation 2"), std::string::npos) << second.err;
    reloading.join();
    ASSERT_TRUE(first);
    EXPECT_TRUE(first->ok) << first->message;
}

TEST(HandoffServe, SeveralOldGenerationsDrainAtOnce) {
    // The generations ignore the drain signal, so each one drains until the timeout kills it.
    std::string script = fmt::format("trap '' USR2; exec {}", sd_server);
    Served served({"/bin/sh", "-c", script}, {"--drain-signal", "USR2", "--drain-timeout", "2"});
    ASSERT_TRUE(served.up());
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(served.reload().ok);
    EXPECT_EQ(served.status()["draining"].size(), 3u);
    EXPECT_TRUE(http_get(served.port).has_value());
    EXPECT_TRUE(eventually([&] { return served.status()["draining"].empty(); }, std::chrono::seconds(8)));
    EXPECT_TRUE(http_get(served.port).value_or("").starts_with("generation 4 "));
}

TEST(HandoffServe, ReloadsOnSighupAndReportsJsonEvents) {
    std::uint16_t port = free_port();
    Process serve = Process::start({K, "serve", "--json", "--listen", addr(port), "--", sd_server});
    ASSERT_TRUE(eventually([&] { return serve.out().find("\"event\":\"ready\"") != std::string::npos; })) << serve.describe();
    serve.signal(SIGHUP);
    ASSERT_TRUE(eventually([&] { return http_get(port).value_or("").starts_with("generation 2 "); })) << serve.describe();
    serve.signal(SIGTERM);
    ASSERT_EQ(serve.wait(), 0) << serve.describe();
    std::vector<std::string> events;
    for (const auto& line : lines_of(serve.out())) events.push_back(nlohmann::json::parse(line)["event"]);
    for (const char* expected : {"listening", "started", "ready", "reload", "draining", "drained", "exited"})
        EXPECT_NE(std::find(events.begin(), events.end(), expected), events.end()) << expected << "\n" << serve.out();
}

TEST(HandoffServe, FirstGenerationThatFailsIsAClearError) {
    auto result = run({K, "serve", "--listen", addr(free_port()), "--", sd_server, "--fail"});
    EXPECT_EQ(result.status, 69) << result.describe;
    EXPECT_NE(result.err.find("exited with status 3 before it was ready"), std::string::npos) << result.err;
}

TEST(HandoffZerg, AUwsgiZergServesThroughServesListeners) {
    if (!std::filesystem::exists("/usr/bin/uwsgi")) GTEST_SKIP() << "uwsgi is not installed";
    TempDir dir;
    std::uint16_t port = free_port();
    std::string zerg = dir / "zerg.sock";
    Process serve = Process::start({K, "serve", "--listen", addr(port), "--zerg", zerg, "--ready=delay:0", "--",
                                    "/usr/bin/uwsgi", "--zerg", zerg, "--plugin", "python3", "--socket-protocol", "http",
                                    "--wsgi-file", (scripts / "wsgi_app.py").string(), "--need-app", "--disable-logging"});
    ASSERT_TRUE(eventually([&] { return http_get(port).has_value() || !serve.running(); }) && serve.running())
        << serve.describe();
    EXPECT_EQ(http_get(port).value_or(""), "hello from uwsgi\n");
    EXPECT_NE(serve.err().find("zerg pid"), std::string::npos) << serve.describe();
}

TEST(HandoffTakeover, AdoptsAPlainPythonHttpServerUnderLoadWithoutLosingARequest) {
    TempDir dir;
    write_file(dir / "hello.txt", "hello\n");
    std::uint16_t port = free_port();
    Process old = Process::start({python, "-m", "http.server", "--bind", "127.0.0.1", std::to_string(port)}, in_dir(dir.path()));
    ASSERT_TRUE(serves(port, old, "/hello.txt"));
    Load load(port, "/hello.txt");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    std::string control = dir / "control.sock";
    Process takeover = Process::start({K, "takeover", "--json", "--pid", std::to_string(old.pid()), "--control", control,
                                       "--drain-timeout", "30", "--", python, fd3_server});
    // Generous: on a loaded machine the old server's threads may take long to finish what they hold.
    auto exit_status = old.wait(std::chrono::seconds(40));
    ASSERT_TRUE(exit_status) << "the old server is still running\n" << takeover.describe();
    ASSERT_TRUE(eventually([&] { return takeover.out().find("\"retired") != std::string::npos; }, std::chrono::seconds(10)))
        << takeover.describe();
    for (int i = 0; i < 3; ++i) {  // takeover stays on as a supervisor
        auto result = handoff::request_reload(control, std::chrono::seconds(20));
        ASSERT_TRUE(result.ok) << result.message << "\n" << takeover.describe();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    load.stop();
    EXPECT_TRUE(no_request_lost(load)) << takeover.describe();
    nlohmann::json retired;
    for (const auto& line : lines_of(takeover.out()))
        if (line.find("\"retired") != std::string::npos) retired = nlohmann::json::parse(line);
    EXPECT_EQ(retired["event"], "retired") << retired.dump();
    EXPECT_EQ(retired["lost_connections"], 0);
    EXPECT_TRUE(http_get(port).value_or("").starts_with("generation 4 "));
}

TEST(HandoffTakeover, ExplainsWhyAnotherUsersServerCannotBeTaken) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to start a process as another uid";
    TempDir dir;
    std::uint16_t port = free_port();
    Process old = Process::start({python, "-m", "http.server", "--bind", "127.0.0.1", std::to_string(port)}, in_dir(dir.path()));
    ASSERT_TRUE(serves(port, old));
    std::string binary = dir / "ktricks";
    std::filesystem::copy_file(K, binary);
    auto result = run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", binary, "takeover", "--pid",
                       std::to_string(old.pid()), "--", "/bin/true"},
                      in_dir("/"));
    EXPECT_EQ(result.status, 77) << result.describe;
    EXPECT_NE(result.err.find("runs as uid 0 and we are uid 65534"), std::string::npos) << result.err;
    EXPECT_NE(result.err.find("run takeover as uid 0 or as root"), std::string::npos) << result.err;
    EXPECT_TRUE(http_get(port).has_value()) << "the server must be left alone";
}

TEST(HandoffTakeover, ExplainsThatANonDumpableServerNeedsRoot) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to start processes as another uid";
    TempDir dir;
    std::uint16_t port = free_port();
    // Same uid as the caller, but non-dumpable, like a server that dropped root.
    std::string server = fmt::format(
        "import ctypes, http.server; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); "
        "http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port={}, bind='127.0.0.1')",
        port);
    std::vector<std::string> nobody = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
    auto as_nobody = [&](std::vector<std::string> argv) {
        std::vector<std::string> full = nobody;
        full.insert(full.end(), argv.begin(), argv.end());
        return full;
    };
    Process old = Process::start(as_nobody({python, "-c", server}), in_dir(dir.path()));
    ASSERT_TRUE(serves(port, old));
    std::string binary = dir / "ktricks";
    std::filesystem::copy_file(K, binary);
    // setpriv execs python directly, so the pid we started is the server.
    auto result = run(as_nobody({binary, "takeover", "--pid", std::to_string(old.pid()), "--", "/bin/true"}), in_dir("/"));
    EXPECT_EQ(result.status, 77) << result.describe;
    EXPECT_NE(result.err.find("is not dumpable"), std::string::npos) << result.err;
    EXPECT_NE(result.err.find("run takeover as root"), std::string::npos) << result.err;
}

TEST(HandoffTakeover, NamesTheListenersWhenTheAskedOneIsNotThere) {
    TempDir dir;
    std::uint16_t port = free_port();
    Process old = Process::start({python, "-m", "http.server", "--bind", "127.0.0.1", std::to_string(port)}, in_dir(dir.path()));
    ASSERT_TRUE(serves(port, old));
    auto result = run({K, "takeover", "--pid", std::to_string(old.pid()), "--listen", "tcp://127.0.0.1:1", "--", "/bin/true"});
    EXPECT_EQ(result.status, 64) << result.describe;
    EXPECT_NE(result.err.find(fmt::format("it has: fd 3 tcp://127.0.0.1:{}", port)), std::string::npos) << result.err;
}

// --- live connections: the Upgrader example -----------------------------------------------------

class LineClient {
public:
    explicit LineClient(std::uint16_t port) {
        int error = 0;
        fd_ = connect_tcp(port, error);
        if (!fd_) throw std::system_error(error, std::system_category(), "connect");
    }
    void send(const std::string& text) {
        if (::send(fd_.get(), text.data(), text.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(text.size()))
            throw std::system_error(errno, std::system_category(), "send");
    }
    std::string line() {
        while (true) {
            auto newline = buffer_.find('\n');
            if (newline != std::string::npos) {
                std::string line = buffer_.substr(0, newline);
                buffer_.erase(0, newline + 1);
                return line;
            }
            char chunk[1024];
            ssize_t got = ::recv(fd_.get(), chunk, sizeof(chunk), 0);
            if (got == 0) throw std::runtime_error("the server closed the connection");
            if (got < 0) throw std::system_error(errno, std::system_category(), "recv");
            buffer_.append(chunk, static_cast<std::size_t>(got));
        }
    }

private:
    Fd fd_;
    std::string buffer_;
};

TEST(HandoffUpgrader, HundredClientsStayConnectedThroughTenUpgradesWithoutLosingAMessage) {
    TempDir dir;
    std::uint16_t port = free_port();
    std::string control = dir / "control.sock";
    Process serve = Process::start({K, "serve", "--handoff", "--listen", addr(port), "--control", control, "--", chat_server,
                                    addr(port)});
    ASSERT_TRUE(eventually([&] {
        int error = 0;
        return static_cast<bool>(connect_tcp(port, error));
    })) << serve.describe();
    ASSERT_TRUE(eventually([&] {
        try {
            return nlohmann::json::parse(handoff::request_status(control, std::chrono::seconds(5)))["generation"] == 1;
        } catch (const std::exception&) {
            return false;
        }
    })) << serve.describe();
    std::vector<LineClient> clients;
    for (int i = 0; i < 100; ++i) {
        clients.emplace_back(port);
        clients.back().send(fmt::format("NICK c{}\n", i));
        ASSERT_EQ(clients.back().line(), fmt::format("OK c{}", i));
    }
    for (int round = 1; round <= 10; ++round) {
        // A whole line and half of another are in flight while the generations change.
        for (int i = 0; i < 100; ++i) clients[i].send(fmt::format("ECHO r{}-c{}\nECHO p{}", round, i, round));
        auto result = handoff::request_reload(control, std::chrono::seconds(20));
        ASSERT_TRUE(result.ok) << result.message << "\n" << serve.describe();
        for (int i = 0; i < 100; ++i) clients[i].send(fmt::format("-c{}\n", i));
        for (int i = 0; i < 100; ++i) {
            ASSERT_EQ(clients[i].line(), fmt::format("{} r{}-c{}", 2 * round - 1, round, i)) << serve.describe();
            ASSERT_EQ(clients[i].line(), fmt::format("{} p{}-c{}", 2 * round, round, i)) << serve.describe();
        }
        clients[round].send("GEN\n");
        EXPECT_TRUE(clients[round].line().starts_with(fmt::format("generation {} ", round + 1)));
    }
    clients[0].send("WHO\n");
    EXPECT_EQ(clients[0].line(), "100 connected");
}

}  // namespace
}  // namespace ktricks::test
