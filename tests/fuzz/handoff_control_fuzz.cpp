// Fuzzes what reaches serve's control socket and what `ktricks reload` reads back, and the uWSGI
// zerg greeting: outside bytes, each parsed or rejected with InputError, never a crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "../../src/handoff/protocol.hpp"  // private parsers: the fuzz targets see no src/ include path
#include "ktricks/core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    using namespace ktricks::handoff::detail;
    try {
        (void)parse_control_request(input);
    } catch (const ktricks::InputError&) {}
    try {
        auto result = parse_reload_answer(input);
        (void)parse_reload_answer(reload_answer(result));  // what we print we must read back
    } catch (const ktricks::InputError&) {}
    (void)parse_zerg_greeting(input);
    return 0;
}
