#include "ktricks/core/proc.hpp"

#include <fmt/format.h>

#include <fstream>

#include "ktricks/core/error.hpp"
#include <iterator>

namespace ktricks {

std::optional<std::vector<std::string>> process_command_line(pid_t pid) {
    std::ifstream file(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
    if (!file) return std::nullopt;
    std::string raw((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
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

std::string shell_join(const std::vector<std::string>& argv) {
    std::string out;
    // Control bytes come out as \xNN (inside quotes): an argv is whatever its process chose.
    for (const auto& raw : argv) {
        std::string arg = printable(raw);
        if (!out.empty()) out += ' ';
        bool plain = !arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                          "0123456789@%+=:,./-_") == std::string::npos;
        if (plain) {
            out += arg;
            continue;
        }
        out += '\'';
        for (char c : arg) {
            if (c == '\'') out += "'\\''";
            else out += c;
        }
        out += '\'';
    }
    return out;
}

}  // namespace ktricks
