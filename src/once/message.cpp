#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>

#include "ktricks/core/error.hpp"
#include "ktricks/once.hpp"

namespace ktricks::once {

std::string Message::to_json_line() const {
    // ordered_json: the record's keys come in the documented order (nlohmann::json would sort them).
    nlohmann::ordered_json json{{"pid", pid}, {"uid", uid},   {"gid", gid},
                                {"cwd", cwd}, {"args", args}, {"stdio", has_stdio()}};
    return json.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

Message Message::from_json(std::string_view text) {
    nlohmann::json json;
    try {
        json = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& error) {
        throw InputError(fmt::format("message is not valid JSON: {}", error.what()));
    }
    if (!json.is_object()) throw InputError("message is not a JSON object");
    Message message;
    auto number = [&](const char* key, auto& out) {
        auto it = json.find(key);
        if (it == json.end()) return;
        using Field = std::remove_reference_t<decltype(out)>;
        if (!it->is_number_unsigned())
            throw InputError(fmt::format("message field \"{}\" is not a whole number", key));
        // get<>() would wrap silently: uid 4294967296 would read as 0, root.
        auto value = it->template get<std::uint64_t>();
        if (value > static_cast<std::uint64_t>(std::numeric_limits<Field>::max()))
            throw InputError(fmt::format("message field \"{}\" is out of range: {}", key, value));
        out = static_cast<Field>(value);
    };
    number("pid", message.pid);
    number("uid", message.uid);
    number("gid", message.gid);
    if (auto it = json.find("cwd"); it != json.end()) {
        if (!it->is_string()) throw InputError("message field \"cwd\" is not a string");
        message.cwd = it->get<std::string>();
    }
    if (auto it = json.find("args"); it != json.end()) {
        if (!it->is_array()) throw InputError("message field \"args\" is not an array");
        for (const auto& arg : *it) {
            if (!arg.is_string()) throw InputError("message field \"args\" holds a non-string");
            message.args.push_back(arg.get<std::string>());
        }
    }
    return message;
}

const char* to_string(Delivery delivery) noexcept {
    switch (delivery) {
        case Delivery::delivered: return "delivered";
        case Delivery::no_inbox: return "no-inbox";
        case Delivery::inbox_full: return "inbox-full";
        case Delivery::inbox_closed: return "inbox-closed";
        case Delivery::refused: return "refused";
    }
    return "refused";
}

}  // namespace ktricks::once
