// Fuzzes the binlog parser with what a binlog file may hold after a torn write or a bad disk: any
// bytes, fed in two pieces (the tail of a file that is still being written). It must never crash,
// and must always make progress (all fed bytes are parsed or wait as one partial event).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ktricks/mysqlwatch.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    std::size_t split = size > 0 ? data[0] % (size + 1) : 0;
    ktricks::mysqlwatch::BinlogParser parser;
    parser.feed(bytes.substr(0, split));
    parser.feed(bytes.substr(split));
    if (parser.offset() + parser.pending_bytes() != size) std::abort();
    ktricks::mysqlwatch::changes_from_statement(bytes, "db");
    return 0;
}
