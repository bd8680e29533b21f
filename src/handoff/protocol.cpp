#include "handoff/protocol.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <charconv>
#include <cstring>

#include "ktricks/core/error.hpp"

namespace ktricks::handoff {
namespace {

std::optional<long long> parse_integer(std::string_view text) {
    long long value = 0;
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
    return value;
}

std::string_view trim_newline(std::string_view line) {
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    return line;
}

std::string join(const std::vector<std::string>& parts, std::string_view separator, bool trailing = false) {
    std::string out;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        out += parts[i];
        if (trailing || i + 1 < parts.size()) out += separator;
    }
    return out;
}

}  // namespace

ListenSpec ListenSpec::parse(std::string_view text) {
    // An address always has "://" or starts with "unix:"; a name never contains ':' (systemd's rule),
    // so "NAME=ADDR" is told apart by an '=' before the first ':'.
    auto equals = text.find('=');
    auto colon = text.find(':');
    if (equals != std::string_view::npos && (colon == std::string_view::npos || equals < colon)) {
        std::string_view name = text.substr(0, equals);
        if (!detail::valid_fd_name(name))
            throw InputError(
                fmt::format("--listen {}: the name \"{}\" must be 1-255 printable characters without ':'",
                            printable(text), printable(name)));
        return {std::string(name), SocketAddress::parse(text.substr(equals + 1))};
    }
    return {"", SocketAddress::parse(text)};
}

std::string Listener::describe() const {
    std::string address;
    try {
        address = SocketAddress::of_socket(fd.get()).to_string();
    } catch (const std::exception&) {
        address = fmt::format("fd {}", fd.get());
    }
    return name.empty() ? address : name + "=" + address;
}

ReadyCheck ReadyCheck::parse(std::string_view text) {
    ReadyCheck check;
    if (text == "notify") return check;
    if (text == "tcp") {
        check.kind = Kind::tcp;
        return check;
    }
    if (text.starts_with("exec:")) {
        check.kind = Kind::exec;
        check.command = text.substr(5);
        if (check.command.empty()) throw InputError("--ready=exec:CMD: the command is empty");
        return check;
    }
    if (text.starts_with("delay:")) {
        auto ms = parse_integer(text.substr(6));
        if (!ms || *ms < 0 || *ms > 3'600'000)
            throw InputError(
                fmt::format("--ready={}: expected delay:MILLISECONDS (0-3600000)", printable(text)));
        check.kind = Kind::delay;
        check.delay = milliseconds(*ms);
        return check;
    }
    if (text == "connect") {
        check.kind = Kind::connect;
        return check;
    }
    if (text.starts_with("http:")) {
        std::string_view target = text.substr(5);
        // A query string may hold '=': only a final "=NNN" is a status.
        if (auto equals = target.rfind('='); equals != std::string_view::npos) {
            auto status = parse_integer(target.substr(equals + 1));
            if (status && target.size() - equals - 1 == 3) {
                if (*status < 100 || *status > 599)
                    throw InputError(fmt::format("--ready={}: the status must be 100-599", printable(text)));
                check.status = static_cast<int>(*status);
                target = target.substr(0, equals);
            }
        }
        if (!target.starts_with("/") || target.size() > 1024)
            throw InputError(fmt::format(
                "--ready={}: expected http:/PATH[=STATUS] (the path starts with '/')", printable(text)));
        for (unsigned char c : target)
            if (c <= 0x20 || c >= 0x7f)
                throw InputError(fmt::format("--ready={}: the path must be printable ASCII without spaces",
                                             printable(text)));
        check.kind = Kind::http;
        check.path = std::string(target);
        return check;
    }
    throw InputError(
        fmt::format("--ready={}: expected notify, tcp, exec:CMD, delay:MS, http:PATH[=STATUS] or connect",
                    printable(text)));
}

Server parse_server(std::string_view text) {
    if (text == "nginx") return Server::nginx;
    if (text == "gunicorn") return Server::gunicorn;
    if (text == "lighttpd") return Server::lighttpd;
    if (text == "uwsgi") return Server::uwsgi;
    if (text == "systemd") return Server::systemd;
    throw InputError(
        fmt::format("--server {}: expected nginx, gunicorn, lighttpd, uwsgi or systemd", printable(text)));
}

ServerPreset server_preset(Server server) {
    ServerPreset preset;
    // Every preset proves readiness through the probe: gunicorn says READY=1 before its workers
    // import the application, and nginx, lighttpd and uWSGI say nothing useful at all.
    preset.ready.kind = ReadyCheck::Kind::http;
    preset.ready.path = "/";
    switch (server) {
        case Server::nginx:
            // nginx reads NGINX=fd;fd; on its own binary upgrade, whose sockets are already
            // non-blocking, so it never sets O_NONBLOCK on inherited ones; a blocking listener
            // lets its workers sleep in accept(). QUIT is its graceful stop (TERM is fast).
            preset.protocol = Protocol::nginx;
            preset.nonblocking_listeners = true;
            preset.drain_signal = SIGQUIT;
            break;
        case Server::gunicorn:
            // gunicorn takes LISTEN_FDS itself. GUNICORN_FD would need GUNICORN_PID equal to its
            // parent pid, which is 0 for pid 1 of a PID namespace, and a gunicorn that believes
            // its "old master" gone unlinks unix socket paths that serve still listens on.
            // TERM is its graceful stop (workers finish within graceful_timeout).
            break;
        case Server::lighttpd:
            preset.drain_signal = SIGINT;  // graceful; TERM drops requests in flight
            break;
        case Server::uwsgi:
            // uWSGI 2.0 treats TERM as "reload" and INT/QUIT as a brutal stop; its documented way to
            // a graceful stop on a signal is this master hook (every option reads UWSGI_<NAME>).
            preset.environment.push_back("UWSGI_HOOK_MASTER_START=unix_signal:15 gracefully_kill_them_all");
            break;
        case Server::systemd: break;
    }
    return preset;
}

Protocol parse_protocol(std::string_view text) {
    if (text == "systemd") return Protocol::systemd;
    if (text == "nginx") return Protocol::nginx;
    if (text == "einhorn") return Protocol::einhorn;
    if (text == "gunicorn") return Protocol::gunicorn;
    throw InputError(
        fmt::format("--protocol {}: expected systemd, nginx, einhorn or gunicorn", printable(text)));
}

std::vector<std::string> protocol_environment(Protocol protocol, const std::vector<std::string>& names,
                                              pid_t parent) {
    std::vector<std::string> fds;
    for (std::size_t i = 0; i < names.size(); ++i) fds.push_back(std::to_string(3 + i));
    std::vector<std::string> env;
    switch (protocol) {
        case Protocol::systemd: {
            std::vector<std::string> shown;
            for (const auto& name : names) shown.push_back(name.empty() ? "unknown" : name);
            env.push_back("LISTEN_FDNAMES=" + join(shown, ":"));
            break;
        }
        // nginx reads "NGINX=3;4;" on a binary upgrade (ngx_add_inherited_sockets), ';' after each.
        case Protocol::nginx: env.push_back("NGINX=" + join(fds, ";", true)); break;
        case Protocol::einhorn:
            env.push_back(fmt::format("EINHORN_FD_COUNT={}", fds.size()));
            for (std::size_t i = 0; i < fds.size(); ++i)
                env.push_back(fmt::format("EINHORN_FD_{}={}", i, fds[i]));
            break;
        // gunicorn's arbiter splits GUNICORN_FD on ',' and reads it only when GUNICORN_PID names its
        // "old master" (it then promotes itself once that is no longer its parent).
        case Protocol::gunicorn:
            env.push_back("GUNICORN_FD=" + join(fds, ","));
            env.push_back(fmt::format("GUNICORN_PID={}", parent > 0 ? parent : 1));
            break;
    }
    return env;
}

namespace detail {

bool valid_fd_name(std::string_view name) noexcept {
    if (name.empty() || name.size() > 255) return false;
    for (unsigned char c : name)
        if (c <= 0x20 || c >= 0x7f || c == ':') return false;
    return true;
}

NotifyMessage parse_notify(std::string_view datagram) {
    NotifyMessage message;
    while (!datagram.empty()) {
        auto newline = datagram.find('\n');
        std::string_view line = datagram.substr(0, newline);
        datagram = newline == std::string_view::npos ? std::string_view() : datagram.substr(newline + 1);
        auto equals = line.find('=');
        if (equals == std::string_view::npos) continue;
        std::string_view key = line.substr(0, equals), value = line.substr(equals + 1);
        if (key == "READY") message.ready = value == "1";
        else if (key == "RELOADING")
            message.reloading = value == "1";
        else if (key == "STOPPING")
            message.stopping = value == "1";
        else if (key == "FDSTORE")
            message.fdstore = value == "1";
        else if (key == "FDSTOREREMOVE")
            message.fdstore_remove = value == "1";
        else if (key == "STATUS")
            message.status = std::string(value);
        else if (key == "FDNAME") {
            if (valid_fd_name(value)) message.fdname = std::string(value);
        } else if (key == "MAINPID") {
            auto pid = parse_integer(value);
            if (pid && *pid > 0 && *pid <= 0x7fffffff) message.main_pid = static_cast<pid_t>(*pid);
        }
    }
    return message;
}

ControlRequest parse_control_request(std::string_view line) {
    line = trim_newline(line);
    if (line == "reload") return ControlRequest::reload;
    if (line == "status") return ControlRequest::status;
    throw InputError(fmt::format("unknown control request \"{}\" (expected reload or status)",
                                 printable(line.substr(0, 64))));
}

std::string reload_answer(const ReloadResult& result) {
    nlohmann::ordered_json answer;
    answer["ok"] = result.ok;
    if (!result.ok) answer["error"] = result.message;
    answer["generation"] = result.generation;
    answer["pid"] = result.pid;
    if (result.ok) answer["ready_ms"] = result.ready_ms;
    return answer.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

ReloadResult parse_reload_answer(std::string_view line) {
    auto json = nlohmann::json::parse(trim_newline(line), nullptr, false);
    if (json.is_discarded() || !json.is_object() || !json.contains("ok") || !json["ok"].is_boolean())
        throw InputError(fmt::format("the control socket answered \"{}\", not a reload result",
                                     printable(line.substr(0, 120))));
    ReloadResult result;
    result.ok = json["ok"].get<bool>();
    if (auto it = json.find("error"); it != json.end() && it->is_string())
        result.message = it->get<std::string>();
    if (auto it = json.find("generation"); it != json.end() && it->is_number_unsigned())
        result.generation = it->get<unsigned>();
    if (auto it = json.find("pid"); it != json.end() && it->is_number_integer())
        result.pid = it->get<pid_t>();
    if (auto it = json.find("ready_ms"); it != json.end() && it->is_number())
        result.ready_ms = it->get<double>();
    if (!result.ok && result.message.empty()) result.message = "the reload failed (no reason given)";
    return result;
}

std::optional<std::vector<std::string>> parse_listen_environment(const char* listen_fds,
                                                                 const char* listen_pid,
                                                                 const char* listen_fdnames, pid_t self) {
    if (!listen_fds || !listen_pid) return std::nullopt;
    auto pid = parse_integer(listen_pid);
    auto count = parse_integer(listen_fds);
    // The variables are inherited by every descendant: LISTEN_PID says whom they were meant for.
    if (!pid || *pid != self || !count || *count < 0 || *count > 65536) return std::nullopt;
    std::vector<std::string> names(static_cast<std::size_t>(*count), "unknown");
    if (listen_fdnames) {
        std::string_view all = listen_fdnames;
        for (std::size_t i = 0; i < names.size() && !all.empty(); ++i) {
            auto colon = all.find(':');
            std::string_view name = all.substr(0, colon);
            if (!name.empty()) names[i] = std::string(name);
            all = colon == std::string_view::npos ? std::string_view() : all.substr(colon + 1);
        }
    }
    return names;
}

int parse_http_status(std::string_view response) noexcept {
    if (!response.starts_with("HTTP/1.") || response.size() < 12 || response[8] != ' ') return 0;
    int code = 0;
    for (char c : response.substr(9, 3)) {
        if (c < '0' || c > '9') return 0;
        code = code * 10 + (c - '0');
    }
    return code >= 100 ? code : 0;
}

std::string zerg_greeting(int fd_count) {
    std::string greeting(zerg_magic);
    char count[sizeof(int)];
    std::memcpy(count, &fd_count, sizeof(int));
    greeting.append(count, sizeof(int));
    return greeting;
}

std::optional<int> parse_zerg_greeting(std::string_view bytes) {
    if (bytes.size() != zerg_magic.size() + sizeof(int) || !bytes.starts_with(zerg_magic))
        return std::nullopt;
    int count;
    std::memcpy(&count, bytes.data() + zerg_magic.size(), sizeof(int));
    if (count < 0 || count > 253) return std::nullopt;
    return count;
}

}  // namespace detail
}  // namespace ktricks::handoff
