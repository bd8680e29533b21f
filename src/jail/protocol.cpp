#include "jail/protocol.hpp"

#include <fmt/format.h>

#include "ktricks/core/error.hpp"

namespace ktricks::jail::protocol {
namespace {

struct VerbName {
    Verb verb;
    std::string_view name;
};
constexpr VerbName verbs[] = {
    {Verb::listen, "listen"}, {Verb::offer, "offer"}, {Verb::ok, "ok"}, {Verb::refused, "refused"}};

}  // namespace

Message parse(std::string_view text) {
    if (text.size() > max_message)
        throw InputError(fmt::format("jail message of {} bytes is longer than {}", text.size(), max_message));
    if (int c = first_control_byte(text); c >= 0)
        throw InputError(
            fmt::format("jail message \"{}\" contains a control byte (0x{:02x})", printable(text), c));
    auto space = text.find(' ');
    std::string_view word = text.substr(0, space);
    std::string_view argument = space == std::string_view::npos ? std::string_view{} : text.substr(space + 1);
    for (const auto& [verb, name] : verbs) {
        if (word != name) continue;
        bool needs_argument = verb != Verb::ok;
        if (needs_argument && argument.empty())
            throw InputError(
                fmt::format("jail message \"{}\": \"{}\" needs an argument", printable(text), name));
        return Message{verb, std::string(argument)};
    }
    throw InputError(fmt::format("jail message \"{}\": unknown verb (expected listen, offer, ok or refused)",
                                 printable(text.substr(0, 64))));
}

SocketAddress parse_address(const Message& message) { return SocketAddress::parse(message.argument); }

std::string format(Verb verb, std::string_view argument) {
    for (const auto& [known, name] : verbs)
        if (known == verb) {
            std::string text = argument.empty() ? std::string(name) : fmt::format("{} {}", name, argument);
            // A reason may quote outside text: keep it one printable record.
            if (first_control_byte(text) >= 0) text = printable(text);
            if (text.size() > max_message) text.resize(max_message);
            return text;
        }
    return "refused internal error";
}

}  // namespace ktricks::jail::protocol
