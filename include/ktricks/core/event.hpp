// Event: one JSON object per line, the same shape for every watcher:
//   {"ts":"2026-11-27T03:20:39.123456Z","source":"once","event":"acquired", ...fields}
#pragma once

#include <chrono>
#include <string>
#include <string_view>

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

private:
    nlohmann::ordered_json json_;
};

// ISO-8601 UTC with microseconds.
std::string format_timestamp(std::chrono::system_clock::time_point when);

}  // namespace ktricks
