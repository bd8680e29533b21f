// Fuzzes the row-image decoder of mysql-watch --rows with what a damaged binlog could pair: a
// TABLE_MAP body (column types, metadata, optional metadata) and a ROWS event's row images.
// Input: u16 little-endian length L | L bytes of TABLE_MAP body | 1 byte kind | row images.
// A bad event may only raise DataError (the watcher logs it and goes on); the values it returns
// must always serialise.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ktricks/core/error.hpp"
#include "mysqlwatch/rows.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace ktricks::mysqlwatch;
    if (size < 3) return 0;
    std::size_t length = data[0] | (static_cast<std::size_t>(data[1]) << 8);
    if (2 + length + 1 > size) return 0;
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    auto table = parse_table_map(bytes.substr(2, length), 8);
    if (!table) return 0;
    auto kind = static_cast<RowsKind>(data[2 + length] % 3);
    try {
        for (const RowImage& row : decode_rows(*table, bytes.substr(3 + length), kind)) {
            (void)row.before.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
            (void)row.after.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
        }
    } catch (const ktricks::DataError&) {}
    return 0;
}
