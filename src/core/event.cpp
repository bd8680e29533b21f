#include "ktricks/core/event.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <ctime>

#include "ktricks/core/proc.hpp"

namespace ktricks {

std::string format_timestamp(std::chrono::system_clock::time_point when) {
    using namespace std::chrono;
    // floor, not duration_cast: before 1970 the latter rounds toward zero and leaves a negative
    // fraction ("...:00.-00001Z"); floor keeps the fraction in 0..999999 of the second before.
    auto micros = floor<microseconds>(when.time_since_epoch());
    auto seconds = floor<std::chrono::seconds>(micros);
    std::time_t whole = static_cast<std::time_t>(seconds.count());
    std::tm utc{};
    ::gmtime_r(&whole, &utc);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", utc.tm_year + 1900, utc.tm_mon + 1,
                       utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, (micros - seconds).count());
}

Event::Event(std::string_view source, std::string_view event, std::chrono::system_clock::time_point when) {
    json_["ts"] = format_timestamp(when);
    json_["source"] = source;
    json_["event"] = event;
}

std::string Event::to_line() const {
    // Invalid UTF-8 (a file name, a command line) is replaced rather than thrown on: an event line
    // must never be lost because of one odd byte.
    return json_.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

std::vector<std::string> Event::environment() const {
    std::vector<std::string> env;
    for (const auto& [key, value] : json_.items()) {
        std::string name = "KTRICKS_";
        for (char c : key)
            name += std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::toupper(c)) : '_';
        std::string text;
        if (value.is_string()) text = value.get<std::string>();
        else if (value.is_boolean())
            text = value.get<bool>() ? "1" : "0";
        else if (value.is_null())
            text = "";
        else if (value.is_array() &&
                 std::all_of(value.begin(), value.end(), [](const auto& item) { return item.is_string(); }))
            text = shell_join(value.get<std::vector<std::string>>());
        else
            text = value.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
        env.push_back(name + "=" + text);
    }
    return env;
}

}  // namespace ktricks
