// Sink URLs and stream-name placeholders.
#include <fmt/format.h>

#include <charconv>
#include <fstream>
#include <sstream>

#include "ktricks/core/error.hpp"
#include "ktricks/sinks.hpp"

namespace ktricks::sinks {

Target parse_target(std::string_view url) {
    auto fault = [&](std::string_view what) {
        return InputError(fmt::format("--publish {}: {}", printable(url), what));
    };
    Target target;
    auto scheme_end = url.find("://");
    if (scheme_end == std::string_view::npos) throw fault("expected redis://HOST:PORT/STREAM");
    target.scheme = std::string(url.substr(0, scheme_end));
    if (target.scheme == "nats")
        throw fault(
            "NATS JetStream is not supported yet (only redis://HOST:PORT/STREAM); see docs/events.md");
    if (target.scheme != "redis") throw fault("unknown scheme (expected redis://)");
    std::string_view rest = url.substr(scheme_end + 3);
    std::string_view query;
    if (auto q = rest.find('?'); q != std::string_view::npos) {
        query = rest.substr(q + 1);
        rest = rest.substr(0, q);
    }
    auto slash = rest.find('/');
    if (slash == std::string_view::npos || slash + 1 == rest.size())
        throw fault("no stream name after HOST:PORT/");
    std::string_view authority = rest.substr(0, slash);
    target.name = std::string(rest.substr(slash + 1));
    if (authority.find('@') != std::string_view::npos)
        throw fault("credentials in the URL would show in ps(1): use ?user=NAME&password_file=PATH");
    auto colon = authority.rfind(':');
    if (colon == std::string_view::npos || colon == 0) throw fault("expected HOST:PORT");
    target.host = std::string(authority.substr(0, colon));
    if (target.host.size() > 2 && target.host.front() == '[' && target.host.back() == ']')
        target.host = target.host.substr(1, target.host.size() - 2);
    auto port_text = authority.substr(colon + 1);
    unsigned port = 0;
    auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (error != std::errc() || end != port_text.data() + port_text.size() || port == 0 || port > 65535)
        throw fault(fmt::format("bad port {}", printable(port_text)));
    target.port = static_cast<std::uint16_t>(port);
    while (!query.empty()) {
        auto amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        auto equals = pair.find('=');
        std::string_view key = pair.substr(0, equals);
        std::string value(equals == std::string_view::npos ? std::string_view() : pair.substr(equals + 1));
        if (key == "maxlen") {
            auto [p, e] = std::from_chars(value.data(), value.data() + value.size(), target.maxlen);
            if (e != std::errc() || p != value.data() + value.size() || target.maxlen == 0)
                throw fault(fmt::format("maxlen={}: expected a positive number", printable(value)));
        } else if (key == "user") {
            target.user = value;
        } else if (key == "password_file") {
            std::ifstream in(value);
            if (!in) throw fault(fmt::format("cannot read password_file {}", printable(value)));
            std::getline(in, target.password);
        } else if (key == "password") {
            throw fault("a password on the command line shows in ps(1): use password_file=PATH");
        } else if (key == "tls") {
            throw fault(
                "TLS is not supported yet (hiredis_ssl is not linked); use a local broker or a tunnel");
        } else {
            throw fault(fmt::format("unknown option {}", printable(key)));
        }
    }
    target.display = fmt::format("redis://{}:{}/{}", target.host, target.port, target.name);
    return target;
}

std::string expand(std::string_view name, const nlohmann::ordered_json& event, std::string_view host) {
    std::string out;
    for (std::size_t at = 0; at < name.size();) {
        if (name[at] == '{') {
            auto close = name.find('}', at);
            if (close != std::string_view::npos) {
                std::string key(name.substr(at + 1, close - at - 1));
                if (key == "host" || key == "source" || key == "db" || key == "table") {
                    std::string value = key == "host" ? std::string(host) : "";
                    if (key != "host" && event.contains(key) && event[key].is_string())
                        value = event[key].get<std::string>();
                    out += value.empty() ? "_" : value;
                    at = close + 1;
                    continue;
                }
            }
        }
        out += name[at++];
    }
    return out;
}

}  // namespace ktricks::sinks
