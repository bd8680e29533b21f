// The wire format between a front-door watcher (publish_link.cpp) and ktricks-publish (publish.cpp),
// in one place so the two ends cannot drift apart. One SOCK_SEQPACKET socketpair, the helper's end
// is its fd 3 (publish_link.hpp has the protocol):
//   watcher -> helper: one message per event: ID '\n' JSON (the event's line, without its newline);
//   helper -> watcher: an Ack, the count of events accepted so far (native-endian, 8 bytes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ktricks::cli::publish_wire {

constexpr int helper_fd = 3;
using Ack = std::uint64_t;
// The largest message the helper reads whole; a longer one is reported as malformed and dropped.
constexpr std::size_t max_message = 1 << 20;

// `line` may end with the event line's '\n': it is not sent.
inline std::string encode(std::string_view id, std::string_view line) {
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    std::string message;
    message.reserve(id.size() + 1 + line.size());
    message.append(id).append(1, '\n').append(line);
    return message;
}

struct Message {
    std::string_view id, line;
};
// nullopt when there is no '\n' (not a message of this format).
inline std::optional<Message> decode(std::string_view message) {
    auto newline = message.find('\n');
    if (newline == std::string_view::npos) return std::nullopt;
    return Message{message.substr(0, newline), message.substr(newline + 1)};
}

}  // namespace ktricks::cli::publish_wire
