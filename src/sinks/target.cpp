// Sink URLs and stream-name placeholders.
#include <fmt/format.h>

#include <unistd.h>

#include <cctype>
#include <charconv>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <utility>
#include <vector>

#include "ktricks/core/error.hpp"
#include "ktricks/sinks.hpp"

namespace ktricks::sinks {

namespace {

std::string read_secret(std::string_view path, const std::function<InputError(std::string_view)>& fault,
                        std::string_view option) {
    std::ifstream in{std::string(path)};
    std::string line;
    if (!in || !std::getline(in, line))
        throw fault(fmt::format("cannot read {} {}", option, printable(path)));
    return line;
}

}  // namespace

Target parse_target(std::string_view url) {
    std::function<InputError(std::string_view)> fault = [&](std::string_view what) {
        return InputError(fmt::format("--publish {}: {}", printable(url), what));
    };
    Target target;
    auto scheme_end = url.find("://");
    if (scheme_end == std::string_view::npos)
        throw fault("expected redis://HOST:PORT/STREAM or nats://HOST:PORT/SUBJECT");
    target.scheme = std::string(url.substr(0, scheme_end));
    if (target.scheme != "redis" && target.scheme != "nats")
        throw fault("unknown scheme (expected redis:// or nats://)");
    bool nats = target.scheme == "nats";
    std::string_view rest = url.substr(scheme_end + 3);
    std::string_view query;
    if (auto q = rest.find('?'); q != std::string_view::npos) {
        query = rest.substr(q + 1);
        rest = rest.substr(0, q);
    }
    auto slash = rest.find('/');
    if (slash == std::string_view::npos || slash + 1 == rest.size())
        throw fault(nats ? "no subject after HOST:PORT/" : "no stream name after HOST:PORT/");
    std::string_view authority = rest.substr(0, slash);
    target.name = std::string(rest.substr(slash + 1));
    if (authority.find('@') != std::string_view::npos)
        throw fault("credentials in the URL would show in ps(1): use ?user=NAME&password_file=PATH");
    // HOST:PORT, or for nats several of them, comma-separated (the members of a cluster).
    std::vector<std::pair<std::string, std::uint16_t>> servers;
    for (std::string_view rest_of = authority; !rest_of.empty() || servers.empty();) {
        auto comma = rest_of.find(',');
        std::string_view server = rest_of.substr(0, comma);
        rest_of = comma == std::string_view::npos ? std::string_view() : rest_of.substr(comma + 1);
        if (comma != std::string_view::npos && !nats)
            throw fault("one HOST:PORT for redis:// (several servers are for a NATS cluster)");
        auto colon = server.rfind(':');
        if (colon == std::string_view::npos || colon == 0)
            throw fault(fmt::format("expected HOST:PORT, not {}", printable(server)));
        std::string host(server.substr(0, colon));
        if (host.size() > 2 && host.front() == '[' && host.back() == ']')
            host = host.substr(1, host.size() - 2);
        auto port_text = server.substr(colon + 1);
        unsigned port = 0;
        auto [end, error] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
        if (error != std::errc() || end != port_text.data() + port_text.size() || port == 0 || port > 65535)
            throw fault(fmt::format("bad port {}", printable(port_text)));
        servers.emplace_back(host, static_cast<std::uint16_t>(port));
        if (comma != std::string_view::npos && rest_of.empty()) throw fault("empty server after ','");
    }
    target.host = servers.front().first;
    target.port = servers.front().second;
    if (nats) {
        // A subject is tokens separated by '.', none empty; '*' and '>' are for subscribers.
        if (target.name.find_first_of(" \t*>") != std::string::npos || target.name.front() == '.' ||
            target.name.back() == '.' || target.name.find("..") != std::string::npos)
            throw fault(fmt::format("bad subject {} (tokens separated by '.', no spaces, '*' or '>')",
                                    printable(target.name)));
    }
    while (!query.empty()) {
        auto amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
        auto equals = pair.find('=');
        std::string_view key = pair.substr(0, equals);
        std::string value(equals == std::string_view::npos ? std::string_view() : pair.substr(equals + 1));
        auto number = [&](auto& out, auto low, auto high) {
            auto [p, e] = std::from_chars(value.data(), value.data() + value.size(), out);
            if (e != std::errc() || p != value.data() + value.size() || out < low || out > high)
                throw fault(fmt::format("{}={}: expected a number from {} to {}", printable(key),
                                        printable(value), low, high));
        };
        if (key == "user") {
            target.user = value;
        } else if (key == "password_file") {
            target.password = read_secret(value, fault, key);
        } else if (key == "password" || key == "token") {
            throw fault(fmt::format("a {} on the command line shows in ps(1): use {}_file=PATH", key, key));
        } else if (!nats && key == "maxlen") {
            number(target.maxlen, std::uint64_t{1}, std::numeric_limits<std::uint64_t>::max());
        } else if (!nats && key == "tls") {
            throw fault(
                "TLS is not supported for redis:// yet (hiredis_ssl is not linked); use a local broker or a "
                "tunnel");
        } else if (nats && key == "stream") {
            if (value.empty() || value.find_first_of(" \t.*>/") != std::string::npos)
                throw fault(fmt::format("bad stream name {}", printable(value)));
            target.stream = value;
        } else if (nats && key == "replicas") {
            number(target.replicas, 1, 5);
        } else if (nats && key == "token_file") {
            target.token = read_secret(value, fault, key);
        } else if (nats && key == "creds_file") {
            if (::access(value.c_str(), R_OK) != 0)
                throw fault(fmt::format("cannot read creds_file {}", printable(value)));
            target.creds_file = value;
        } else if (nats && key == "tls") {
            if (value != "1" && value != "0") throw fault("tls=1 or tls=0");
            target.tls = value == "1";
        } else if (nats && (key == "ca_file" || key == "cert_file" || key == "key_file")) {
            if (::access(value.c_str(), R_OK) != 0)
                throw fault(fmt::format("cannot read {} {}", key, printable(value)));
            (key == "ca_file"     ? target.ca_file
             : key == "cert_file" ? target.cert_file
                                  : target.key_file) = value;
            target.tls = true;
        } else {
            throw fault(fmt::format("unknown option {} for {}://", printable(key), target.scheme));
        }
    }
    if (target.cert_file.empty() != target.key_file.empty())
        throw fault("cert_file and key_file go together");
    // libnats names a server by URL only: an IPv6 literal is bracketed again.
    for (const auto& [host, port] : servers)
        target.servers.push_back(fmt::format("{}://{}:{}", target.tls ? "tls" : "nats",
                                             host.find(':') != std::string::npos ? "[" + host + "]" : host,
                                             port));
    target.display = fmt::format("{}://{}/{}", target.scheme, authority, target.name);
    return target;
}

std::string expand(std::string_view name, const nlohmann::ordered_json& event, std::string_view host,
                   bool nats_subject) {
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
                    if (nats_subject)
                        for (char& c : value)
                            if (c == '.' || c == '*' || c == '>' ||
                                std::isspace(static_cast<unsigned char>(c)))
                                c = '_';
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

std::string subject_filter(std::string_view name) {
    std::string out;
    for (std::size_t at = 0; at <= name.size();) {
        auto dot = name.find('.', at);
        if (dot == std::string_view::npos) dot = name.size();
        std::string_view token = name.substr(at, dot - at);
        bool templated = false;
        for (std::string_view key : {"{host}", "{source}", "{db}", "{table}"})
            templated = templated || token.find(key) != std::string_view::npos;
        if (!out.empty()) out += '.';
        out += templated ? std::string_view("*") : token;
        at = dot + 1;
    }
    return out;
}

PublisherOptions publisher_options(std::string_view url, const std::filesystem::path& spool,
                                   std::uint64_t spool_max_mb) {
    if (spool.empty())
        throw InputError("--publish needs --spool DIR: where events wait while the broker is unreachable");
    PublisherOptions options;
    options.target = parse_target(url);
    options.spool = spool;
    options.spool_bytes = spool_max_mb << 20;
    return options;
}

}  // namespace ktricks::sinks
