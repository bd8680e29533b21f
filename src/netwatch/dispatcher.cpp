#include "netwatch/dispatcher.hpp"

#include <dirent.h>
#include <linux/if.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>

#include "ktricks/core/error.hpp"
#include "ktricks/core/service.hpp"

namespace ktricks::netwatch {
namespace {

bool ends_with(std::string_view text, std::string_view suffix) {
    return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

std::string read_link(const std::string& path) {
    std::error_code error;
    auto target = std::filesystem::read_symlink(path, error);
    return error ? std::string() : target.string();
}

// NetworkManager runs a script without waiting for it when it is a symlink whose target lies in
// a folder named no-wait.d (the folder's real path, relative links resolved from the link's folder).
bool must_wait(const std::string& path) {
    std::string target = read_link(path);
    if (target.empty()) return true;
    std::filesystem::path link(target);
    if (link.is_relative()) link = std::filesystem::path(path).parent_path() / link;
    std::error_code error;
    auto folder = std::filesystem::canonical(link.parent_path(), error);
    return error || !ends_with(folder.string(), "/no-wait.d");
}

std::string read_machine_id() {
    std::ifstream file("/etc/machine-id");
    std::string id;
    file >> id;
    return id;
}

const Route* best_default(const State& state, int family, int ifindex) {
    const Route* best = nullptr;
    for (const auto& [key, route] : state.routes)
        if (route.family == family && route.oif == ifindex && route.is_default() &&
            (!best || route.priority < best->priority))
            best = &route;
    return best;
}

bool loopback(const State& state, int ifindex) {
    auto link = state.links.find(ifindex);
    return link != state.links.end() && (link->second.flags & IFF_LOOPBACK);
}

bool usable(const State& state, int ifindex) {
    auto link = state.links.find(ifindex);
    return link != state.links.end() && link->second.usable();
}

// NetworkManager's _sanitize_var_name: upper case, only A-Z 0-9 _ (else the option is dropped).
std::string variable_name(std::string_view key) {
    std::string name;
    for (char c : key) {
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return {};
        name += c;
    }
    return name;
}

}  // namespace

bool dispatcher_name_allowed(std::string_view name) {
    if (name.empty() || name[0] == '.') return false;
    for (std::string_view suffix : {"~", ".rpmsave", ".rpmorig", ".rpmnew", ".swp"})
        if (ends_with(name, suffix)) return false;
    auto dpkg = name.rfind(".dpkg-");
    return dpkg == std::string_view::npos || name.find('.', dpkg + 1) != std::string_view::npos;
}

std::string connection_uuid(std::string_view machine_id, std::string_view netns, std::string_view iface) {
    // Two 64-bit FNV-1a hashes (different offset bases) of "ktricks-netwatch\0MACHINE\0NETNS\0IFACE",
    // formatted as an RFC 9562 version 8 ("custom") UUID: stable, and distinct per machine,
    // namespace and interface name. Not a secret and not meant to be one.
    std::string input =
        fmt::format("ktricks-netwatch{}{}{}{}{}{}", '\0', machine_id, '\0', netns, '\0', iface);
    auto fnv = [&](std::uint64_t hash) {
        for (unsigned char c : input) hash = (hash ^ c) * 0x100000001b3ull;
        return hash;
    };
    std::uint64_t high = fnv(0xcbf29ce484222325ull), low = fnv(0x84222325cbf29ce4ull);
    high = (high & ~0xf000ull) | 0x8000ull;      // version 8
    low = (low & ~(3ull << 62)) | (2ull << 62);  // variant 10
    return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", high >> 32, (high >> 16) & 0xffff,
                       high & 0xffff, low >> 48, low & 0xffffffffffffull);
}

std::vector<std::string> Dispatcher::networkmanager_directories() {
    return {"/usr/lib/NetworkManager/dispatcher.d", "/etc/NetworkManager/dispatcher.d"};
}

Dispatcher::Dispatcher(std::vector<std::string> directories, bool missing_ok, HostFiles files)
    : directories_(std::move(directories)), files_(std::move(files)), machine_id_(read_machine_id()) {
    if (missing_ok) return;
    for (const auto& directory : directories_) {
        struct stat info;
        if (::stat(directory.c_str(), &info) < 0) throw_errno("stat", directory);
        if (!S_ISDIR(info.st_mode)) throw_error(ENOTDIR, "open", directory);
    }
}

std::vector<Dispatcher::Script> Dispatcher::scripts(const std::string& action) const {
    std::string sub = action == "pre-up" ? "/pre-up.d" : action == "pre-down" ? "/pre-down.d" : "";
    std::map<std::string, std::string> by_name;  // sorted by file name, as NetworkManager runs them
    for (const auto& base : directories_) {
        std::string directory = base + sub;
        DIR* listing = ::opendir(directory.c_str());
        if (!listing) continue;
        while (dirent* entry = ::readdir(listing)) {
            std::string name = entry->d_name;
            if (dispatcher_name_allowed(name)) by_name[name] = directory + "/" + name;  // later folders mask
        }
        ::closedir(listing);
    }
    std::vector<Script> found;
    for (const auto& [name, path] : by_name) {
        if (read_link(path) == "/dev/null") continue;  // masked
        struct stat info;
        if (::stat(path.c_str(), &info) < 0 || !S_ISREG(info.st_mode) || info.st_size == 0) continue;
        // NetworkManager's own rules: a script anyone but root could change would run as root.
        const char* fault = info.st_uid != 0 ? "not owned by root"
                            : (info.st_mode & (S_IWGRP | S_IWOTH | S_ISUID))
                                ? "writable by group or other, or set-UID"
                            : !(info.st_mode & S_IXUSR) ? "not executable by owner"
                                                        : nullptr;
        if (fault) {
            log_warning("skipping dispatcher script {}: {}", printable(path), fault);
            continue;
        }
        found.push_back({path, must_wait(path)});
    }
    return found;
}

std::vector<std::string> Dispatcher::actions_for(const NetEvent& event, const State& state) {
    if (event.type == "online" || event.type == "offline") {
        bool any = false;
        for (const auto& [index, link] : state.links)
            if (state.online(index)) any = true;
        auto last = connected_.find(event.netns);
        if (last != connected_.end() && last->second == any) return {};
        connected_[event.netns] = any;
        return {"connectivity-change"};
    }
    if (loopback(state, event.ifindex)) return {};
    if (event.type == "link-up") return {"pre-up", "up"};
    if (event.type == "link-down") return {"pre-down", "down"};
    if ((event.type == "addr-add" || event.type == "addr-remove") && !event.initial &&
        event.field("scope") == "global" && usable(state, event.ifindex))
        return {event.field("family") == "inet6" ? "dhcp6-change" : "dhcp4-change"};
    return {};
}

std::vector<std::string> Dispatcher::environment(const NetEvent& event, const State& state,
                                                 const std::string& action) const {
    std::vector<std::string> env = {"NM_DISPATCHER_ACTION=" + action};
    if (action == "connectivity-change") {
        auto it = connected_.find(event.netns);
        env.push_back(std::string("CONNECTIVITY_STATE=") +
                      (it != connected_.end() && it->second ? "FULL" : "NONE"));
        return env;
    }
    std::string ssid = event.field("ssid");
    std::string id = ssid.empty() ? event.iface : ssid;
    env.push_back("CONNECTION_UUID=" + connection_uuid(machine_id_, event.netns, event.iface));
    env.push_back("CONNECTION_ID=" + id);
    // Where NetworkManager keeps an in-memory (external) profile; netwatch writes no file there.
    env.push_back("CONNECTION_FILENAME=/run/NetworkManager/system-connections/" + id + ".nmconnection");
    env.push_back("CONNECTION_EXTERNAL=1");
    env.push_back("DEVICE_IFACE=" + event.iface);
    env.push_back("DEVICE_IP_IFACE=" + event.iface);
    // NetworkManager adds the IP and DHCP items only while the device is activated.
    if (action != "up" && action != "dhcp4-change" && action != "dhcp6-change") return env;
    Resolver resolver = files_.resolver(event.ifindex);
    bool has_default =
        best_default(state, AF_INET, event.ifindex) || best_default(state, AF_INET6, event.ifindex);
    for (auto [family, prefix] : {std::pair{AF_INET, "IP4"}, std::pair{AF_INET6, "IP6"}}) {
        // NetworkManager's fallback is "0.0.0.0" for both families (nm-dispatcher-utils.c).
        std::string gateway = "0.0.0.0";
        if (auto* route = best_default(state, family, event.ifindex); route && !route->gateway.empty())
            gateway = route->gateway;
        int count = 0;
        for (const auto& [key, address] : state.addresses) {
            if (address.index != event.ifindex || address.family != family) continue;
            env.push_back(fmt::format("{}_ADDRESS_{}={}/{} {}", prefix, count++, address.address,
                                      address.prefixlen, gateway));
        }
        if (count > 0) env.push_back(fmt::format("{}_NUM_ADDRESSES={}", prefix, count));
        env.push_back(fmt::format("{}_GATEWAY={}", prefix, gateway));
        // Per-link resolver data belongs to its link; the global resolv.conf to the interfaces
        // that carry a default route.
        const auto& servers = family == AF_INET ? resolver.servers4 : resolver.servers6;
        bool link_data = !servers.empty() || !resolver.domains.empty();
        if (link_data && (has_default || resolver.per_link)) {
            std::string list;
            for (const auto& server : servers) list += (list.empty() ? "" : " ") + server;
            if (!list.empty()) env.push_back(fmt::format("{}_NAMESERVERS={}", prefix, list));
            std::string domains;
            for (const auto& domain : resolver.domains) domains += (domains.empty() ? "" : " ") + domain;
            if (!domains.empty() && (family == AF_INET || !servers.empty()))
                env.push_back(fmt::format("{}_DOMAINS={}", prefix, domains));
        }
        int routes = 0;
        for (const auto& [key, route] : state.routes) {
            // NetworkManager lists the device's routes without the default route (that is the gateway).
            if (route.oif != event.ifindex || route.family != family || route.table != RT_TABLE_MAIN ||
                route.type != RTN_UNICAST || route.dst_len == 0)
                continue;
            env.push_back(
                fmt::format("{}_ROUTE_{}={}/{} {} {}", prefix, routes++, route.dst, route.dst_len,
                            route.gateway.empty() ? (family == AF_INET ? "0.0.0.0" : "::") : route.gateway,
                            route.priority));
        }
        if (routes > 0 || family == AF_INET) env.push_back(fmt::format("{}_NUM_ROUTES={}", prefix, routes));
    }
    for (int family : {4, 6})
        for (const auto& [key, value] : files_.dhcp(event.iface, event.ifindex, family))
            if (auto name = variable_name(key); !name.empty())
                env.push_back(fmt::format("DHCP{}_{}={}", family, name, value));
    return env;
}

void Dispatcher::handle(const NetEvent& event, const State& state, std::chrono::steady_clock::time_point when,
                        Runner& runner, bool dry_run,
                        const std::function<void(const std::string&)>& would_run,
                        std::chrono::milliseconds timeout) {
    // Remember the leases an interface has when it comes up: rewriting the same lease is no change.
    if (event.type == "link-up")
        for (int family : {4, 6})
            leases_[{event.ifindex, family}] = files_.dhcp(event.iface, event.ifindex, family);
    for (const auto& action : actions_for(event, state))
        run(event, state, action, when, runner, dry_run, would_run, timeout);
}

void Dispatcher::leases_changed(const State& state, std::chrono::steady_clock::time_point when,
                                Runner& runner, bool dry_run,
                                const std::function<void(const std::string&)>& would_run,
                                std::chrono::milliseconds timeout) {
    for (const auto& [index, link] : state.links) {
        if (!link.usable() || (link.flags & IFF_LOOPBACK)) continue;
        for (int family : {4, 6}) {
            auto options = files_.dhcp(link.name, index, family);
            auto& last = leases_[{index, family}];
            if (options == last) continue;
            // NetworkManager sends `up` only once the device has its IP configuration, so some
            // scripts (ntpsec's) look at the lease on `up` and `down` only. netwatch's `up` comes at
            // link-up, usually before the DHCP client has a lease: the first lease of an interface
            // that came up without one is therefore announced as `up` again, later ones as dhcp*-change.
            bool first = last.empty() && !options.empty();
            last = options;
            NetEvent event;
            event.type = "dhcp-lease";
            event.iface = link.name;
            event.ifindex = index;
            event.netns = state.netns;
            run(event, state,
                first         ? "up"
                : family == 6 ? "dhcp6-change"
                              : "dhcp4-change",
                when, runner, dry_run, would_run, timeout);
        }
    }
}

std::vector<std::string> Dispatcher::lease_directories() const {
    std::vector<std::string> found;
    for (const char* folder : {"/run/systemd/netif/leases", "/var/lib/dhcpcd", "/var/lib/dhcp"}) {
        std::string path = files_.root + folder;
        struct stat info;
        if (::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) found.push_back(path);
    }
    return found;
}

void Dispatcher::run(const NetEvent& event, const State& state, const std::string& action,
                     std::chrono::steady_clock::time_point when, Runner& runner, bool dry_run,
                     const std::function<void(const std::string&)>& would_run,
                     std::chrono::milliseconds timeout) {
    std::string iface = action == "connectivity-change" ? "" : event.iface;
    auto found = scripts(action);
    if (found.empty()) return;
    auto env = environment(event, state, action);
    for (const auto& script : found) {
        if (dry_run) {
            if (would_run) would_run(fmt::format("would run {} {} {}", script.path, iface, action));
            continue;
        }
        Job job;
        // One queue for every waited-for script: NetworkManager runs them one at a time, event
        // after event. A no-wait script gets a queue of its own and starts at once.
        job.key = script.wait ? "dispatcher" : fmt::format("dispatcher no-wait {}", ++no_wait_serial_);
        job.argv = {script.path, iface, action};
        job.env = env;
        job.inherit_ktricks_env = false;
        job.working_directory = "/";
        job.input = event.to_event().to_line();
        job.timeout = timeout;
        job.label = fmt::format("dispatcher {} ({} {})", script.path, action, iface.empty() ? "-" : iface);
        job.event_time = when;
        runner.submit(std::move(job));
    }
}

}  // namespace ktricks::netwatch
