// Events as JSON and environment, and the rules that match them: the inline `--on/--exec`
// grammar and the TOML rules file.
#include <arpa/inet.h>
#include <fnmatch.h>

#include <fmt/format.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "ktricks/core/error.hpp"
#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/netwatch.hpp"

namespace ktricks::netwatch {

const std::vector<std::string>& event_types() {
    static const std::vector<std::string> types = {
        "link-add", "link-remove", "link-up",      "link-down",       "link-rename",
        "addr-add", "addr-remove", "route-add",    "route-remove",    "default-route-change",
        "online",   "offline",     "wifi-connect", "wifi-disconnect", "wifi-roam",
        "resync"};
    return types;
}

static std::string text_of(const nlohmann::ordered_json& value) {
    return value.is_string() ? value.get<std::string>() : value.dump();
}

std::string NetEvent::field(std::string_view key) const {
    if (key == "iface") return iface;
    if (key == "netns") return netns;
    if (key == "event") return type;
    auto it = fields.find(std::string(key));
    return it == fields.end() ? std::string() : text_of(*it);
}

Event NetEvent::to_event() const {
    Event event("netwatch", type);
    event.set("iface", iface).set("ifindex", ifindex);
    if (!netns.empty()) event.set("netns", netns);
    if (netns_inode) event.set("netns_inode", netns_inode);
    for (const auto& [key, value] : fields.items()) event.set(key, value);
    if (initial) event.set("initial", true);
    if (resync) event.set("resync", true);
    if (derived) event.set("derived", true);
    return event;
}

std::vector<std::string> NetEvent::environment() const {
    auto env = to_event().environment();
    // The JSON leaves out what is false or empty; scripts test "$KTRICKS_INITIAL" = 1 and expect
    // every one of these to be set.
    if (netns.empty()) env.push_back("KTRICKS_NETNS=");
    for (auto [flag, name] : {std::pair{initial, "INITIAL"}, {resync, "RESYNC"}, {derived, "DERIVED"}})
        if (!flag) env.push_back(fmt::format("KTRICKS_{}=0", name));
    return env;
}

namespace {

const char* const filter_keys[] = {"iface", "ssid", "bssid", "family", "addr", "netns"};

bool known_filter(std::string_view key) {
    return std::any_of(std::begin(filter_keys), std::end(filter_keys),
                       [&](const char* k) { return key == k; });
}

// "10.0.0.0/8" or "fe80::/10" (a bare address means the full length).
struct Cidr {
    int family = 0;
    unsigned char bytes[16] = {};
    int length = 0;
};

std::optional<Cidr> parse_cidr(std::string_view text) {
    Cidr cidr;
    std::string address(text.substr(0, text.find('/')));
    cidr.family = address.find(':') != std::string::npos ? AF_INET6 : AF_INET;
    if (::inet_pton(cidr.family, address.c_str(), cidr.bytes) != 1) return std::nullopt;
    int max = cidr.family == AF_INET ? 32 : 128;
    cidr.length = max;
    if (auto slash = text.find('/'); slash != std::string_view::npos) {
        std::string length(text.substr(slash + 1));
        char* end = nullptr;
        long value = std::strtol(length.c_str(), &end, 10);
        if (length.empty() || *end || value < 0 || value > max) return std::nullopt;
        cidr.length = static_cast<int>(value);
    }
    return cidr;
}

bool in_cidr(const std::string& address, const Cidr& cidr) {
    unsigned char bytes[16];
    if (address.empty() || ::inet_pton(cidr.family, address.c_str(), bytes) != 1) return false;
    int full = cidr.length / 8, rest = cidr.length % 8;
    if (std::memcmp(bytes, cidr.bytes, static_cast<std::size_t>(full)) != 0) return false;
    if (rest == 0) return true;
    unsigned mask = (0xffu << (8 - rest)) & 0xffu;
    return (bytes[full] & mask) == (cidr.bytes[full] & mask);
}

bool filter_matches(const Rule::Filter& filter, const NetEvent& event) {
    bool hit;
    if (filter.key == "addr") {
        auto cidr = parse_cidr(filter.pattern);
        std::string address = event.field("addr");
        if (address.empty()) address = event.field("gateway");
        hit = cidr && in_cidr(address, *cidr);
    } else if (filter.key == "bssid") {
        hit = ::fnmatch(filter.pattern.c_str(), event.field("bssid").c_str(), FNM_CASEFOLD) == 0;
    } else {
        hit = ::fnmatch(filter.pattern.c_str(), event.field(filter.key).c_str(), 0) == 0;
    }
    return hit != filter.negate;
}

// Checks one filter's value; returns the problem or "".
std::string check_filter(const Rule::Filter& filter) {
    if (!known_filter(filter.key))
        return fmt::format("unknown filter \"{}\" (expected iface, ssid, bssid, family, addr or netns)",
                           printable(filter.key));
    if (filter.key == "family" && filter.pattern != "inet" && filter.pattern != "inet6")
        return fmt::format("family=\"{}\": expected inet or inet6", printable(filter.pattern));
    if (filter.key == "addr" && !parse_cidr(filter.pattern))
        return fmt::format("addr=\"{}\": expected an address or CIDR like 192.168.1.0/24",
                           printable(filter.pattern));
    return {};
}

std::string check_event(const std::string& type) {
    if (type == "*") return {};
    const auto& types = event_types();
    if (std::find(types.begin(), types.end(), type) != types.end()) return {};
    return fmt::format("unknown event \"{}\" (expected one of: {})", printable(type), fmt::join(types, ", "));
}

std::optional<long long> parse_count(std::string_view text) {
    std::string copy(text);
    char* end = nullptr;
    long long value = std::strtoll(copy.c_str(), &end, 10);
    if (copy.empty() || *end || value < 0 || value > 86'400'000) return std::nullopt;
    return value;
}

}  // namespace

bool Rule::matches(const NetEvent& event) const {
    bool type_ok = std::any_of(events.begin(), events.end(),
                               [&](const std::string& type) { return type == "*" || type == event.type; });
    if (!type_ok) return false;
    return std::all_of(filters.begin(), filters.end(),
                       [&](const Filter& filter) { return filter_matches(filter, event); });
}

Rule parse_inline_rule(std::string_view on, std::string_view command, int number) {
    Rule rule;
    rule.name = fmt::format("rule {}", number);
    rule.where = fmt::format("--on #{}", number);
    rule.command = std::string(command);
    auto fail = [&](const std::string& problem) {
        return InputError(fmt::format("--on \"{}\": {}", printable(on), problem));
    };
    if (rule.command.empty()) throw fail("empty --exec command");
    std::vector<std::string> parts;
    std::stringstream stream{std::string(on)};
    for (std::string part; std::getline(stream, part, ',');) parts.push_back(part);
    if (parts.empty() || parts[0].empty()) throw fail("missing event name");
    std::stringstream types(parts[0]);
    for (std::string type; std::getline(types, type, '|');) {
        if (auto problem = check_event(type); !problem.empty()) throw fail(problem);
        rule.events.push_back(type);
    }
    for (std::size_t i = 1; i < parts.size(); ++i) {
        const std::string& part = parts[i];
        auto equals = part.find('=');
        if (equals == std::string::npos || equals == 0)
            throw fail(fmt::format("\"{}\": expected KEY=VALUE or KEY!=VALUE", printable(part)));
        Rule::Filter filter;
        filter.negate = part[equals - 1] == '!';
        filter.key = part.substr(0, filter.negate ? equals - 1 : equals);
        filter.pattern = part.substr(equals + 1);
        if (filter.key == "debounce_ms" || filter.key == "timeout") {
            auto value = parse_count(filter.pattern);
            if (!value || filter.negate) throw fail(fmt::format("{}: expected a whole number", filter.key));
            if (filter.key == "debounce_ms") rule.debounce = std::chrono::milliseconds(*value);
            else
                rule.timeout = std::chrono::seconds(*value);
            continue;
        }
        if (auto problem = check_filter(filter); !problem.empty()) throw fail(problem);
        rule.filters.push_back(std::move(filter));
    }
    return rule;
}

std::vector<Rule> parse_rules(std::string_view text, const std::string& source_name) {
    toml::table document;
    try {
        document = toml::parse(text, source_name);
    } catch (const toml::parse_error& error) {
        throw DataError(
            fmt::format("{}:{}: {}", source_name, error.source().begin.line, printable(error.description())));
    }
    auto fail = [&](const toml::node& node, const std::string& problem) {
        return DataError(fmt::format("{}:{}: {}", source_name, node.source().begin.line, problem));
    };
    std::vector<Rule> rules;
    for (const auto& [key, value] : document) {
        if (key.str() != "rule")
            throw fail(value, fmt::format("unknown table \"{}\" (rules are [[rule]] entries)",
                                          printable(key.str())));
    }
    auto* list = document["rule"].as_array();
    if (!list) {
        if (document.contains("rule")) throw fail(*document.get("rule"), "\"rule\" must be [[rule]] tables");
        return rules;
    }
    int number = 0;
    for (const auto& entry : *list) {
        ++number;
        auto* table = entry.as_table();
        if (!table) throw fail(entry, "each [[rule]] must be a table");
        Rule rule;
        rule.name = fmt::format("rule {}", number);
        rule.where = fmt::format("{}:{}", source_name, entry.source().begin.line);
        for (const auto& item_pair : *table) {
            // (no structured binding: clang 14 cannot capture one in the lambdas below)
            const toml::node& node = item_pair.second;
            std::string key(item_pair.first.str());
            auto string_value = [&]() -> std::string {
                auto* s = node.as_string();
                if (!s) throw fail(node, fmt::format("\"{}\" must be a string", key));
                return s->get();
            };
            if (key == "name") {
                rule.name = string_value();
            } else if (key == "on") {
                if (auto* many = node.as_array()) {
                    for (const auto& item : *many) {
                        auto* s = item.as_string();
                        if (!s) throw fail(item, "\"on\" must list event names as strings");
                        rule.events.push_back(s->get());
                    }
                } else {
                    rule.events.push_back(string_value());
                }
                for (const auto& type : rule.events)
                    if (auto problem = check_event(type); !problem.empty()) throw fail(node, problem);
            } else if (key == "run") {
                rule.command = string_value();
                if (rule.command.empty()) throw fail(node, "\"run\" is empty");
            } else if (key == "debounce_ms") {
                auto* n = node.as_integer();
                if (!n || n->get() < 0)
                    throw fail(node, "\"debounce_ms\" must be a whole number of milliseconds >= 0");
                rule.debounce = std::chrono::milliseconds(n->get());
            } else if (key == "timeout") {
                double seconds;
                if (auto* i = node.as_integer()) seconds = static_cast<double>(i->get());
                else if (auto* f = node.as_floating_point())
                    seconds = f->get();
                else
                    throw fail(node, "\"timeout\" must be a number of seconds");
                if (!(seconds > 0) || seconds > 86400)
                    throw fail(node, "\"timeout\" must be between 0 and 86400 seconds");
                rule.timeout = round_to_ms(seconds);
            } else if (key == "in_netns") {
                auto* b = node.as_boolean();
                if (!b) throw fail(node, "\"in_netns\" must be true or false");
                rule.in_netns = b->get();
            } else {
                Rule::Filter filter;
                filter.key = key;
                if (!known_filter(key))
                    throw fail(
                        node, fmt::format("unknown key \"{}\" (expected on, run, name, debounce_ms, timeout, "
                                          "in_netns, or a filter: iface ssid bssid family addr netns)",
                                          printable(key)));
                filter.pattern = string_value();
                if (!filter.pattern.empty() && filter.pattern[0] == '!') {
                    filter.negate = true;
                    filter.pattern.erase(0, 1);
                }
                if (auto problem = check_filter(filter); !problem.empty()) throw fail(node, problem);
                rule.filters.push_back(std::move(filter));
            }
        }
        if (rule.events.empty()) throw fail(entry, "rule has no \"on\" (the events it reacts to)");
        if (rule.command.empty()) throw fail(entry, "rule has no \"run\" (the command to run)");
        rules.push_back(std::move(rule));
    }
    return rules;
}

std::vector<Rule> load_rules_file(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw_errno("open", path);
    std::stringstream text;
    text << file.rdbuf();
    return parse_rules(text.str(), path);
}

}  // namespace ktricks::netwatch
