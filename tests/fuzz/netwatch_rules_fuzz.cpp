// Fuzzes the rules grammar (a rules file and an --on text): accept or throw InputError whose
// message is one line; every accepted rule can be matched against an event.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "ktricks/core/error.hpp"
#include "ktricks/netwatch.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    ktricks::netwatch::NetEvent event;
    event.type = "wifi-connect";
    event.iface = "wlan0";
    event.fields["ssid"] = "home";
    event.fields["addr"] = "10.0.0.1";
    auto one_line = [](const std::exception& error) {
        if (std::string_view(error.what()).find('\n') != std::string_view::npos) std::abort();
    };
    try {
        for (const auto& rule : ktricks::netwatch::parse_rules(text, "fuzz.toml")) (void)rule.matches(event);
    } catch (const ktricks::InputError& error) {
        one_line(error);
    }
    try {
        (void)ktricks::netwatch::parse_inline_rule(text, "true", 1).matches(event);
    } catch (const ktricks::InputError& error) {
        one_line(error);
    }
    return 0;
}
