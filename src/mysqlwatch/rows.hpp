// Row images of the binary log (mysql-watch --rows): the table map a ROWS event refers to, with
// the optional metadata of binlog_row_metadata=MINIMAL/FULL, and the decoder of the row images
// into JSON values. Private to src/mysqlwatch (and the fuzz target).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ktricks::mysqlwatch {

// Little-endian unsigned integer of `size` bytes at `at` (the caller checked the bounds).
std::uint64_t le(std::string_view bytes, std::size_t at, int size);
// Length-encoded ("packed") integer; nullopt when it does not fit in `body`.
std::optional<std::uint64_t> packed_int(std::string_view body, std::size_t& at);
// Bytes one value of a column takes in a row image, or nullopt if it cannot be sized.
std::optional<std::size_t> value_size(std::uint8_t type, std::uint16_t meta, std::string_view row,
                                      std::size_t at);
// Metadata bytes per column type in TABLE_MAP.
int metadata_bytes(std::uint8_t type);
// A BMP code point as UTF-8 (filename.cpp).
void append_utf8(std::string& out, std::uint32_t cp);

struct TableMap {
    std::string db, table;
    std::string types;                // column types (MYSQL_TYPE_*), one byte each
    std::vector<std::uint16_t> meta;  // per column
    // From the optional metadata (empty/-1 when the server did not write it).
    std::vector<std::string> names;
    std::vector<signed char> is_unsigned;  // per column: 1 unsigned, 0 signed, -1 not a number/unknown
    std::vector<int> collation;            // per column: collation id, -1 unknown
    std::vector<std::vector<std::string>> enum_names, set_names;  // per column
};

// A TABLE_MAP event's body (after the common header, without the checksum); `post_header` is its
// post-header length from the format description (8, or 6 in old servers). nullopt if it is too
// short for the names; columns stay empty when their types or metadata do not fit.
std::optional<TableMap> parse_table_map(std::string_view body, std::size_t post_header);

// Parses TABLE_MAP's optional metadata (after the null bitmap): TLV fields of binlog_row_metadata.
// Fields it does not know or cannot parse are ignored; it never throws.
void parse_optional_metadata(TableMap& table, std::string_view fields);

enum class RowsKind { write, update, remove };

struct RowImage {
    nlohmann::ordered_json before;  // null for write
    nlohmann::ordered_json after;   // null for remove
};

// The rows of one ROWS event's body after the post-header and the extra data (column count,
// present-columns bitmap(s), then the images). Throws DataError naming the column and the fault
// when the bytes do not fit the table map.
std::vector<RowImage> decode_rows(const TableMap& table, std::string_view rows, RowsKind kind);

}  // namespace ktricks::mysqlwatch
