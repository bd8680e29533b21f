#include "ktricks/core/proc.hpp"

#include <dirent.h>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

#include <iterator>
#include "ktricks/core/error.hpp"

namespace ktricks {

std::vector<pid_t> process_ids() {
    std::vector<pid_t> pids;
    DIR* directory = ::opendir("/proc");
    if (!directory) return pids;
    while (const dirent* entry = ::readdir(directory)) {
        std::string_view name = entry->d_name;
        pid_t pid = 0;
        auto [end, error] = std::from_chars(name.data(), name.data() + name.size(), pid);
        if (error == std::errc() && end == name.data() + name.size() && pid > 0) pids.push_back(pid);
    }
    ::closedir(directory);
    std::sort(pids.begin(), pids.end());
    return pids;
}

std::optional<std::vector<std::string>> process_command_line(pid_t pid) {
    std::ifstream file(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
    if (!file) return std::nullopt;
    std::string raw;
    try {
        raw.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
    } catch (const std::ios_base::failure&) {
        // read(2) fails with ESRCH once the process is gone, and libstdc++'s filebuf throws that
        // through istreambuf_iterator whatever the stream's exception mask says.
        return std::nullopt;
    }
    if (file.bad()) return std::nullopt;
    std::vector<std::string> argv;
    std::size_t start = 0;
    while (start < raw.size()) {
        std::size_t end = raw.find('\0', start);
        if (end == std::string::npos) end = raw.size();
        argv.emplace_back(raw.substr(start, end - start));
        start = end + 1;
    }
    return argv;
}

std::optional<std::string> process_status_field(pid_t pid, std::string_view key) {
    std::ifstream file(fmt::format("/proc/{}/status", pid));
    for (std::string line; std::getline(file, line);) {
        if (line.size() <= key.size() || line.compare(0, key.size(), key) != 0 || line[key.size()] != ':')
            continue;
        auto start = line.find_first_not_of(" \t", key.size() + 1);
        return start == std::string::npos ? std::string() : line.substr(start);
    }
    return std::nullopt;
}

std::vector<UnixSocketEntry> parse_proc_net_unix(std::string_view text) {
    std::vector<UnixSocketEntry> entries;
    std::istringstream lines{std::string(text)};
    std::string line;
    std::getline(lines, line);  // the header
    while (std::getline(lines, line)) {
        std::istringstream fields(line);
        std::string slot, refcount, protocol;
        UnixSocketEntry entry;
        fields >> slot >> refcount >> protocol >> std::hex >> entry.flags >> entry.type >> entry.state >>
            std::dec >> entry.inode;
        if (!fields) continue;
        // The path is the rest of the line: a name may hold spaces.
        std::getline(fields >> std::ws, entry.path);
        entries.push_back(std::move(entry));
    }
    return entries;
}

std::vector<UnixSocketEntry> read_proc_net_unix() {
    std::ifstream file("/proc/net/unix");
    std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    return parse_proc_net_unix(text);
}

std::string shell_join(const std::vector<std::string>& argv) {
    std::string out;
    // Control bytes come out as \xNN (inside quotes): an argv is whatever its process chose.
    for (const auto& raw : argv) {
        std::string arg = printable(raw);
        if (!out.empty()) out += ' ';
        bool plain = !arg.empty() && arg.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789@%+=:,./-_") == std::string::npos;
        if (plain) {
            out += arg;
            continue;
        }
        out += '\'';
        for (char c : arg) {
            if (c == '\'') out += "'\\''";
            else
                out += c;
        }
        out += '\'';
    }
    return out;
}

}  // namespace ktricks
