#include "netwatch/dispatcher.hpp"

#include <dirent.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <fmt/format.h>

#include <algorithm>

#include "ktricks/core/service.hpp"
#include "ktricks/core/error.hpp"

namespace ktricks::netwatch {

Dispatcher::Dispatcher(std::string directory) : directory_(std::move(directory)) {
    struct stat info;
    if (::stat(directory_.c_str(), &info) < 0) throw_errno("stat", directory_);
    if (!S_ISDIR(info.st_mode)) throw_error(ENOTDIR, "open", directory_);
}

std::vector<std::string> Dispatcher::scripts() const {
    std::vector<std::string> found;
    DIR* directory = ::opendir(directory_.c_str());
    if (!directory) return found;
    while (dirent* entry = ::readdir(directory)) {
        std::string name = entry->d_name;
        if (name[0] == '.') continue;
        std::string path = directory_ + "/" + name;
        struct stat info;
        if (::stat(path.c_str(), &info) < 0 || !S_ISREG(info.st_mode) || !(info.st_mode & S_IXUSR)) continue;
        // NetworkManager's own rules: a script anyone but root could change would run as root.
        if (info.st_uid != 0 || (info.st_mode & (S_IWGRP | S_IWOTH)) || (info.st_mode & S_ISUID)) {
            log_warning("skipping {}: not owned by root, or writable by others, or setuid",
                       printable(path));
            continue;
        }
        found.push_back(path);
    }
    ::closedir(directory);
    std::sort(found.begin(), found.end());
    return found;
}

std::string Dispatcher::action_for(const NetEvent& event) {
    if (event.type == "link-up") return "up";
    if (event.type == "link-down") return "down";
    if (event.type == "addr-add" || event.type == "addr-remove")
        return event.field("family") == "inet6" ? "dhcp6-change" : "dhcp4-change";
    if (event.type == "online" || event.type == "offline") return "connectivity-change";
    return {};
}

std::vector<std::string> Dispatcher::environment(const NetEvent& event, const State& state, const std::string& action) {
    std::vector<std::string> env = {"NM_DISPATCHER_ACTION=" + action};
    if (action == "connectivity-change") {
        env.push_back(std::string("CONNECTIVITY_STATE=") + (event.type == "online" ? "FULL" : "NONE"));
    }
    env.push_back("DEVICE_IFACE=" + event.iface);
    env.push_back("DEVICE_IP_IFACE=" + event.iface);
    std::string ssid = event.field("ssid");
    env.push_back("CONNECTION_ID=" + (ssid.empty() ? event.iface : ssid));
    for (auto [family, prefix] : {std::pair{AF_INET, "IP4"}, std::pair{AF_INET6, "IP6"}}) {
        std::string gateway;
        if (auto* route = state.default_route(family); route && route->oif == event.ifindex) gateway = route->gateway;
        int count = 0;
        for (const auto& [key, address] : state.addresses) {
            if (address.index != event.ifindex || address.family != family) continue;
            env.push_back(fmt::format("{}_ADDRESS_{}={}/{} {}", prefix, count++, address.address, address.prefixlen,
                                      gateway.empty() ? (family == AF_INET ? "0.0.0.0" : "::") : gateway));
        }
        env.push_back(fmt::format("{}_NUM_ADDRESSES={}", prefix, count));
        if (!gateway.empty()) env.push_back(fmt::format("{}_GATEWAY={}", prefix, gateway));
        int routes = 0;
        for (const auto& [key, route] : state.routes) {
            if (route.oif != event.ifindex || route.family != family || route.table != RT_TABLE_MAIN) continue;
            env.push_back(fmt::format("{}_ROUTE_{}={}/{} {} {}", prefix, routes++,
                                      route.dst.empty() ? (family == AF_INET ? "0.0.0.0" : "::") : route.dst,
                                      route.dst_len,
                                      route.gateway.empty() ? (family == AF_INET ? "0.0.0.0" : "::") : route.gateway,
                                      route.priority));
        }
        env.push_back(fmt::format("{}_NUM_ROUTES={}", prefix, routes));
    }
    return env;
}

void Dispatcher::handle(const NetEvent& event, const State& state, std::chrono::steady_clock::time_point when,
                        Runner& runner, bool dry_run, const std::function<void(const std::string&)>& would_run,
                        std::chrono::milliseconds timeout) {
    std::string action = action_for(event);
    if (action.empty()) return;
    std::string iface = action == "connectivity-change" ? "" : event.iface;
    auto env = environment(event, state, action);
    auto own = event.environment();
    env.insert(env.end(), own.begin(), own.end());
    for (const auto& script : scripts()) {
        if (dry_run) {
            if (would_run) would_run(fmt::format("would run {} {} {}", script, iface, action));
            continue;
        }
        Job job;
        // One queue for every dispatcher script, as NetworkManager runs them one at a time.
        job.key = "dispatcher";
        job.argv = {script, iface, action};
        job.env = env;
        job.input = event.to_event().to_line();
        job.timeout = timeout;
        job.label = fmt::format("dispatcher {} ({} {})", script, action, iface.empty() ? "-" : iface);
        job.event_time = when;
        runner.submit(std::move(job));
    }
}

}  // namespace ktricks::netwatch
