// Fuzzes SocketAddress::parse: any bytes must either parse into an address whose canonical text
// parses back to the same address, or be rejected with InputError. Nothing else may escape.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ktricks/core/error.hpp"
#include "ktricks/core/socket_address.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        auto address = ktricks::SocketAddress::parse(text);
        auto again = ktricks::SocketAddress::parse(address.to_string());
        if (!(again == address)) std::abort();
    } catch (const ktricks::InputError&) {}
    return 0;
}
