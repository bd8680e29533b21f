// Fuzzes the decoder of MariaDB's filename encoding with any directory entry name: it must decode
// or refuse, and a decoded name must encode back to a name that decodes to the same identifier.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ktricks/mysqlwatch.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view name(reinterpret_cast<const char*>(data), size);
    using namespace ktricks::mysqlwatch;
    if (auto decoded = decode_filename(name)) {
        auto encoded = encode_filename(*decoded);
        if (!encoded) std::abort();
        auto again = decode_filename(*encoded);
        if (!again || *again != *decoded) std::abort();
    }
    parse_table_file(name);
    return 0;
}
