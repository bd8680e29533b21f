// The jail's wire protocol, on SOCK_SEQPACKET unix sockets (one message = one record, so there is
// no framing to get wrong, and SCM_RIGHTS descriptors ride on the record they belong to).
//
//   broker:  jailed program -> supervisor   "listen ADDRESS"
//            supervisor -> jailed program   "ok ADDRESS" + 1 fd   |  "refused REASON"
//   inbox:   `jail --into` -> target        "offer ADDRESS" + 1 fd
//            target -> `jail --into`        "ok"                  |  "refused REASON"
//
// ADDRESS is the SocketAddress grammar (tcp://127.0.0.1:8080). Text is printable ASCII; a record
// is at most max_message bytes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "ktricks/core/socket_address.hpp"

namespace ktricks::jail::protocol {

inline constexpr std::size_t max_message = 512;

enum class Verb { listen, offer, ok, refused };

struct Message {
    Verb verb;
    std::string argument;  // the address text, or the reason; empty for a bare "ok"
};

// Throws InputError naming what is wrong (unknown verb, control bytes, too long, missing address).
Message parse(std::string_view text);
// A request's address, parsed; throws InputError.
SocketAddress parse_address(const Message& message);
std::string format(Verb verb, std::string_view argument = {});

}  // namespace ktricks::jail::protocol
