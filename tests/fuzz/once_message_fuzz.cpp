// Fuzzes the inbox message parser (bytes any local process can send to a lock holder): it must
// accept or throw InputError, and what it accepts must survive a round trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ktricks/core/error.hpp"
#include "ktricks/once.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        auto message = ktricks::once::Message::from_json(text);
        auto again = ktricks::once::Message::from_json(message.to_json_line());
        if (again.args.size() != message.args.size() || again.pid != message.pid) std::abort();
    } catch (const ktricks::InputError&) {}
    return 0;
}
