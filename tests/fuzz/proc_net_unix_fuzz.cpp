// Fuzzes the /proc/net/unix parser (core): any text must parse into entries or be skipped.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ktricks/core/proc.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto entries = ktricks::parse_proc_net_unix({reinterpret_cast<const char*>(data), size});
    (void)entries;
    return 0;
}
