// Event: one JSON object per line, the same shape for every watcher, and the same fields in a
// script's environment:
//   {"ts":"2026-11-27T03:20:39.123456Z","source":"once","event":"acquired", ...fields}
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ktricks {

class Event {
public:
    Event(std::string_view source, std::string_view event,
          std::chrono::system_clock::time_point when = std::chrono::system_clock::now());

    template <typename T>
    Event& set(std::string_view key, T&& value) {
        json_[std::string(key)] = std::forward<T>(value);
        return *this;
    }
    const nlohmann::ordered_json& json() const noexcept { return json_; }
    // One line, '\n'-terminated, no other newline in it (JSON escapes them).
    std::string to_line() const;
    // The same event for a script: KTRICKS_<FIELD>=VALUE for every field (KTRICKS_TS,
    // KTRICKS_SOURCE, KTRICKS_EVENT, ...). The name is upper-cased, anything but letters and digits
    // becomes '_'; strings stay as they are, true/false become 1/0, a list of strings is joined
    // like a shell command line (shell_join), anything else is its JSON text.
    std::vector<std::string> environment() const;

private:
    nlohmann::ordered_json json_;
};

// ISO-8601 UTC with microseconds.
std::string format_timestamp(std::chrono::system_clock::time_point when);

}  // namespace ktricks
