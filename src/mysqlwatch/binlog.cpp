// Binary log v4 parser for a file that is still being written.
//
// Layout: the magic 0xFE 'b' 'i' 'n', then events. Each event has a 19-byte header
//   timestamp u32 | type u8 | server_id u32 | event_size u32 | log_pos u32 | flags u16
// where log_pos is the file offset just past the event: with event_size it gives two independent
// checks that an offset really starts an event, which is what resynchronisation after a corrupt
// event relies on. With binlog_checksum=CRC32 (MariaDB's default) every event ends in the CRC32
// of everything before it; the FORMAT_DESCRIPTION event says which algorithm the file uses.
// The server writes whole events, but the kernel may show us a file between two write()s, so a
// partial event at the tail stays buffered until the rest arrives.
#include <zlib.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "ktricks/core/error.hpp"
#include "ktricks/mysqlwatch.hpp"
#include "mysqlwatch/rows.hpp"

namespace ktricks::mysqlwatch {
namespace {

constexpr std::size_t header_size = 19;
constexpr std::uint32_t max_event_size = 1U << 30;  // max_allowed_packet's ceiling
constexpr std::uint16_t in_use_flag = 0x1;          // LOG_EVENT_BINLOG_IN_USE_F

enum Type : std::uint8_t {
    start_v3 = 1,
    query = 2,
    stop = 3,
    rotate = 4,
    format_description = 15,
    xid = 16,
    table_map = 19,
    write_rows_v1 = 23,
    update_rows_v1 = 24,
    delete_rows_v1 = 25,
    write_rows_v2 = 30,
    update_rows_v2 = 31,
    delete_rows_v2 = 32,
    mariadb_gtid = 162,
    start_encryption = 164,
    query_compressed = 165,
    write_rows_compressed_v1 = 166,
    delete_rows_compressed_v2 = 171,
};

}  // namespace

std::uint64_t le(std::string_view bytes, std::size_t at, int size) {
    std::uint64_t value = 0;
    for (int k = size - 1; k >= 0; --k) value = (value << 8) | static_cast<unsigned char>(bytes[at + k]);
    return value;
}

namespace {

bool is_rows_event(std::uint8_t type) {
    return (type >= write_rows_v1 && type <= delete_rows_v1) ||
           (type >= write_rows_v2 && type <= delete_rows_v2) ||
           (type >= write_rows_compressed_v1 && type <= delete_rows_compressed_v2);
}

std::uint32_t crc32_of(std::string_view bytes) {
    return static_cast<std::uint32_t>(
        ::crc32(0, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size())));
}

// The FORMAT_DESCRIPTION event's checksum was computed before the server set the in-use flag.
std::uint32_t crc32_of_event(std::string_view event) {
    if (static_cast<unsigned char>(event[4]) != format_description) return crc32_of(event);
    std::string copy(event);
    copy[17] = static_cast<char>(static_cast<unsigned char>(copy[17]) & ~in_use_flag);
    return crc32_of(copy);
}

}  // namespace

// Length-encoded ("packed") integer.
std::optional<std::uint64_t> packed_int(std::string_view body, std::size_t& at) {
    if (at >= body.size()) return std::nullopt;
    auto first = static_cast<unsigned char>(body[at]);
    int size = first < 251 ? 0 : first == 252 ? 2 : first == 253 ? 3 : first == 254 ? 8 : -1;
    if (size < 0 || at + 1 + size > body.size()) return std::nullopt;
    std::uint64_t value = size == 0 ? first : le(body, at + 1, size);
    at += 1 + size;
    return value;
}

// Column types of the row format (MYSQL_TYPE_*), as TABLE_MAP lists them.
int metadata_bytes(std::uint8_t type) {
    switch (type) {
        case 4:
        case 5:
        case 17:
        case 18:
        case 19:
        case 245:
        case 249:
        case 250:
        case 251:
        case 252:
        case 255: return 1;
        case 15:
        case 16:
        case 246:
        case 247:
        case 248:
        case 253:
        case 254: return 2;
        default: return 0;
    }
}

// Bytes one value of a column takes in a row image, or nullopt if this parser cannot tell.
std::optional<std::size_t> value_size(std::uint8_t type, std::uint16_t meta, std::string_view row,
                                      std::size_t at) {
    auto prefixed = [&](int length_bytes) -> std::optional<std::size_t> {
        if (at + length_bytes > row.size()) return std::nullopt;
        return length_bytes + le(row, at, length_bytes);
    };
    switch (type) {
        case 1:
        case 13: return 1;
        case 2: return 2;
        case 9:
        case 10:
        case 11:
        case 14: return 3;
        case 3:
        case 4:
        case 7: return 4;
        case 5:
        case 8:
        case 12: return 8;
        case 6: return 0;
        case 17: return 4 + (meta + 1) / 2;
        case 18: return 5 + (meta + 1) / 2;
        case 19: return 3 + (meta + 1) / 2;
        case 15: return prefixed(meta > 255 ? 2 : 1);
        case 16: return (meta >> 8) + ((meta & 0xFF) ? 1 : 0);
        case 245:
        case 249:
        case 250:
        case 251:
        case 252:
        case 255:
            if (meta < 1 || meta > 4) return std::nullopt;
            return prefixed(meta);
        case 246: {
            static constexpr int digit_bytes[] = {0, 1, 1, 2, 2, 3, 3, 4, 4, 4};
            int precision = meta >> 8, scale = meta & 0xFF;
            if (scale > precision) return std::nullopt;
            int integral = precision - scale;
            return (integral / 9) * 4 + digit_bytes[integral % 9] + (scale / 9) * 4 + digit_bytes[scale % 9];
        }
        case 253:
        case 254: {
            int real_type = meta >> 8;
            if (real_type == 247 || real_type == 248) return meta & 0xFF;
            std::size_t max_length = ((((meta >> 4) & 0x300) ^ 0x300) | (meta & 0xFF));
            return prefixed(max_length > 255 ? 2 : 1);
        }
        default: return std::nullopt;
    }
}

namespace {

std::size_t bits_set(std::string_view bitmap, std::size_t count) {
    std::size_t set = 0;
    for (std::size_t i = 0; i < count; ++i) set += (static_cast<unsigned char>(bitmap[i / 8]) >> (i % 8)) & 1;
    return set;
}

// MariaDB's log_bin_compress format: one byte 0x80 | N, the inflated length in N (1-4) big-endian
// bytes, then a zlib stream.
std::optional<std::string> inflate(std::string_view data) {
    if (data.empty() || (static_cast<unsigned char>(data[0]) & 0xF8) != 0x80) return std::nullopt;
    std::size_t length_bytes = static_cast<unsigned char>(data[0]) & 0x07;
    if (length_bytes < 1 || length_bytes > 4 || data.size() < 1 + length_bytes) return std::nullopt;
    std::size_t length = 0;
    for (std::size_t k = 0; k < length_bytes; ++k)
        length = (length << 8) | static_cast<unsigned char>(data[1 + k]);
    auto input = data.substr(1 + length_bytes);
    // deflate cannot do better than about 1032:1: a larger claim is corrupt, and must not make us
    // allocate it.
    if (length > max_event_size || length > input.size() * 1032 + 1024) return std::nullopt;
    std::string text(length, '\0');
    uLongf produced = length;
    if (::uncompress(reinterpret_cast<Bytef*>(text.data()), &produced,
                     reinterpret_cast<const Bytef*>(input.data()),
                     static_cast<uLong>(input.size())) != Z_OK ||
        produced != length)
        return std::nullopt;
    return text;
}

}  // namespace

// Rows in a row event's body (after the post-header): each row is a null bitmap over the present
// columns and their values; UPDATE has a before and an after image per row. nullopt if a column
// type is one this parser cannot size.
static std::optional<std::uint64_t> count_rows(std::string_view body, bool update, const std::string& types,
                                               const std::vector<std::uint16_t>& meta) {
    std::size_t at = 0;
    auto columns = packed_int(body, at);
    if (!columns || *columns != types.size()) return std::nullopt;
    std::size_t bitmap_bytes = (*columns + 7) / 8;
    if (at + bitmap_bytes * (update ? 2 : 1) > body.size()) return std::nullopt;
    std::string_view present[2] = {body.substr(at, bitmap_bytes),
                                   body.substr(at + (update ? bitmap_bytes : 0), bitmap_bytes)};
    at += bitmap_bytes * (update ? 2 : 1);
    std::uint64_t rows = 0;
    while (at < body.size()) {
        std::size_t row_start = at;
        for (int image = 0; image < (update ? 2 : 1); ++image) {
            std::size_t null_bytes = (bits_set(present[image], *columns) + 7) / 8;
            if (at + null_bytes > body.size()) return std::nullopt;
            std::string_view nulls = body.substr(at, null_bytes);
            at += null_bytes;
            std::size_t present_index = 0;
            for (std::size_t column = 0; column < *columns; ++column) {
                if (!((static_cast<unsigned char>(present[image][column / 8]) >> (column % 8)) & 1)) continue;
                bool is_null =
                    (static_cast<unsigned char>(nulls[present_index / 8]) >> (present_index % 8)) & 1;
                ++present_index;
                if (is_null) continue;
                auto size = value_size(static_cast<std::uint8_t>(types[column]), meta[column], body, at);
                if (!size || at + *size > body.size()) return std::nullopt;
                at += *size;
            }
        }
        if (at == row_start)
            return std::nullopt;  // no column present: a corrupt bitmap, not endless empty rows
        ++rows;
    }
    return rows;
}

std::optional<TableMap> parse_table_map(std::string_view body, std::size_t fixed) {
    // table_id u48 (u32 in old servers) | flags u16 || db_len u8 | db \0 | table_len u8 | table \0 | ...
    if (body.size() < fixed + 1) return std::nullopt;
    std::size_t at = fixed;
    std::size_t db_len = static_cast<unsigned char>(body[at++]);
    if (at + db_len + 2 > body.size()) return std::nullopt;
    std::string db(body.substr(at, db_len));
    at += db_len + 1;
    std::size_t table_len = static_cast<unsigned char>(body[at++]);
    if (at + table_len > body.size()) return std::nullopt;
    std::optional<TableMap> ref(std::in_place);
    ref->db = std::move(db);
    ref->table = std::string(body.substr(at, table_len));
    at += table_len + 1;
    // column_count (packed) | types, one byte each | metadata length (packed) | metadata |
    // null bitmap | optional metadata (binlog_row_metadata=MINIMAL/FULL) to the end
    if (auto columns = packed_int(body, at); columns && *columns <= body.size() - std::min(at, body.size())) {
        ref->types = std::string(body.substr(at, *columns));
        at += *columns;
        auto meta_length = packed_int(body, at);
        std::size_t meta_at = at;
        bool ok = meta_length && *meta_length <= body.size() - at;
        for (std::size_t column = 0; ok && column < ref->types.size(); ++column) {
            int size = metadata_bytes(static_cast<std::uint8_t>(ref->types[column]));
            if (meta_at + size > at + *meta_length) ok = false;
            else if (size == 0)
                ref->meta.push_back(0);
            else if (size == 1)
                ref->meta.push_back(static_cast<unsigned char>(body[meta_at]));
            else {
                auto column_type = static_cast<std::uint8_t>(ref->types[column]);
                // VARCHAR and BIT store little-endian; STRING, ENUM, SET, NEWDECIMAL big-endian.
                auto b0 = static_cast<unsigned char>(body[meta_at]),
                     b1 = static_cast<unsigned char>(body[meta_at + 1]);
                ref->meta.push_back(static_cast<std::uint16_t>(
                    column_type == 15 || column_type == 16 ? (b1 << 8) | b0 : (b0 << 8) | b1));
            }
            meta_at += size;
        }
        if (!ok) {
            ref->types.clear();
            ref->meta.clear();
        } else {
            std::size_t optional_at = at + *meta_length + (ref->types.size() + 7) / 8;
            parse_optional_metadata(*ref, optional_at < body.size() ? body.substr(optional_at) : "");
        }
    }
    return ref;
}

BinlogParser::BinlogParser() = default;

bool BinlogParser::plausible_at(std::size_t at) const {
    std::string_view rest(buffer_.data() + at, buffer_.size() - at);
    if (rest.size() < header_size) return true;  // cannot tell yet
    auto size = static_cast<std::uint32_t>(le(rest, 9, 4));
    auto log_pos = static_cast<std::uint32_t>(le(rest, 13, 4));
    auto type = static_cast<std::uint8_t>(rest[4]);
    if (size < header_size + (checksum_ ? 4 : 0) || size > max_event_size || type == 0) return false;
    std::uint64_t end = offset_ + at + size;
    // The server always writes log_pos in a file (only the network stream has 0s); it is 32 bits, so
    // files beyond 4 GiB wrap it.
    if (log_pos != static_cast<std::uint32_t>(end)) return false;
    if (checksum_ && rest.size() >= size) {
        auto stored = static_cast<std::uint32_t>(le(rest, size - 4, 4));
        if (stored != crc32_of_event(rest.substr(0, size - 4))) return false;
    }
    return true;
}

void BinlogParser::resync(Output& out) {
    std::size_t start = consumed_;
    std::size_t at = consumed_ + 1;
    while (at < buffer_.size() && !plausible_at(at)) ++at;
    consumed_ = at;
    out.problems.push_back(fmt::format("corrupt event at binlog offset {}: skipped {} bytes to offset {}",
                                       offset_ + start, at - start, offset_ + at));
}

BinlogParser::Output BinlogParser::feed(std::string_view bytes) {
    Output out;
    buffer_.append(bytes);
    if (encrypted_) {
        offset_ += buffer_.size();
        buffer_.clear();
        consumed_ = 0;
        return out;
    }
    if (magic_pending_) {
        if (buffer_.size() < 4) return out;
        if (buffer_.compare(0, 4,
                            "\xfe"
                            "bin") != 0) {
            out.problems.push_back("not a binary log: the file does not start with the binlog magic number");
            consumed_ = 0;
            magic_pending_ = false;
            resync(out);
        } else {
            consumed_ = 4;
            magic_pending_ = false;
        }
    }
    while (buffer_.size() - consumed_ >= header_size) {
        std::string_view rest(buffer_.data() + consumed_, buffer_.size() - consumed_);
        auto size = static_cast<std::uint32_t>(le(rest, 9, 4));
        // A plausible header whose body is still being written: wait for it.
        if (!plausible_at(consumed_)) {
            resync(out);
            continue;
        }
        if (rest.size() < size) break;
        std::string_view event = rest.substr(0, size);
        consumed_ += size;
        parse_event(event, out);
        if (boundary_pending_ && !in_group_) {
            boundary_pending_ = false;
            safe_offset_ = offset_ + consumed_;
            safe_gtid_ = gtid_;
            if (!quiet_) out.boundaries.push_back({out.changes.size(), safe_offset_, safe_gtid_});
        }
        if (encrypted_) {
            offset_ += buffer_.size();
            buffer_.clear();
            consumed_ = 0;
            return out;
        }
    }
    if (consumed_ > 0) {
        offset_ += consumed_;
        buffer_.erase(0, consumed_);
        consumed_ = 0;
    }
    return out;
}

void BinlogParser::add_change(Change change, Output& out, bool in_group) {
    if (!in_group) boundary_pending_ = true;
    if (quiet_) return;
    if (!in_group) {
        out.changes.push_back(std::move(change));
        return;
    }
    for (Change& pending : group_) {
        if (!change.op.empty()) break;  // rows are never merged
        if (pending.event == change.event && pending.db == change.db && pending.table == change.table &&
            pending.new_table == change.new_table) {
            if (pending.rows && change.rows) *pending.rows += *change.rows;
            else
                pending.rows.reset();
            return;
        }
    }
    group_.push_back(std::move(change));
}

void BinlogParser::commit(Output& out) {
    auto now = std::chrono::system_clock::now();
    for (Change& change : group_) {
        change.when = now;
        out.changes.push_back(std::move(change));
    }
    group_.clear();
    in_group_ = false;
    boundary_pending_ = true;
}

void BinlogParser::parse_event(std::string_view event, Output& out) {
    auto type = static_cast<std::uint8_t>(event[4]);
    std::uint64_t event_offset = offset_ + consumed_ - event.size();
    // Body without the header and without the trailing checksum.
    std::size_t trailer = checksum_ && type != format_description ? 4 : 0;
    std::string_view body = event.substr(header_size, event.size() - header_size - trailer);
    auto post_header = [&](std::uint8_t of, std::size_t fallback) -> std::size_t {
        if (of >= 1 && of <= post_header_lengths_.size())
            return static_cast<unsigned char>(post_header_lengths_[of - 1]);
        return fallback;
    };

    switch (type) {
        case format_description: {
            // binlog_version u16 | server_version char[50] | created u32 | header_length u8 |
            // post-header lengths, one per type | checksum algorithm u8 | checksum u32
            if (body.size() < 2 + 50 + 4 + 1 + 5) {
                out.problems.push_back(
                    fmt::format("format description event at offset {} is too short", event_offset));
                return;
            }
            std::uint8_t algorithm = static_cast<std::uint8_t>(body[body.size() - 5]);
            post_header_lengths_ = std::string(body.substr(57, body.size() - 57 - 5));
            checksum_ = algorithm == 1;
            if (checksum_) {
                auto stored = static_cast<std::uint32_t>(le(event, event.size() - 4, 4));
                if (stored != crc32_of_event(event.substr(0, event.size() - 4)))
                    out.problems.push_back(
                        fmt::format("format description event at offset {} fails its CRC32", event_offset));
            } else if (algorithm != 0 && algorithm != 0xFF) {
                out.problems.push_back(
                    fmt::format("unknown binlog checksum algorithm {} (offset {})", algorithm, event_offset));
            }
            tables_.clear();
            boundary_pending_ = true;
            return;
        }
        case rotate: {
            if (body.size() < 8) return;
            out.rotate_to = std::string(body.substr(8));
            return;
        }
        case mariadb_gtid: {
            // seq_no u64 | domain u32 | flags2 u8: FL_STANDALONE (1) marks a group with no XID/COMMIT (DDL).
            if (body.size() < 13) return;
            bool standalone = (static_cast<unsigned char>(body[12]) & 1) != 0;
            gtid_ = fmt::format("{}-{}-{}", le(body, 8, 4), le(event, 5, 4), le(body, 0, 8));
            group_.clear();
            in_group_ = !standalone;
            return;
        }
        case xid: commit(out); return;
        case query:
        case query_compressed: {
            // thread_id u32 | exec_time u32 | db_len u8 | error u16 | status_vars_len u16 | vars | db \0 | sql
            std::size_t fixed = post_header(type, 13);
            if (body.size() < fixed || fixed < 13) return;
            std::size_t db_len = static_cast<unsigned char>(body[8]);
            std::size_t vars_len = le(body, 11, 2);
            std::size_t db_at = fixed + vars_len;
            if (db_at + db_len + 1 > body.size()) {
                out.problems.push_back(fmt::format("query event at offset {} is malformed", event_offset));
                return;
            }
            std::string db(body.substr(db_at, db_len));
            std::string_view sql = body.substr(db_at + db_len + 1);
            std::string inflated;
            if (type == query_compressed) {
                auto text = inflate(sql);
                if (!text) {
                    out.problems.push_back(
                        fmt::format("compressed query event at offset {} does not inflate", event_offset));
                    return;
                }
                inflated = std::move(*text);
                sql = inflated;
            }
            auto is = [&](std::string_view word) {
                return sql.size() == word.size() &&
                       std::equal(sql.begin(), sql.end(), word.begin(), [](char a, char b) {
                           return std::toupper(static_cast<unsigned char>(a)) == b;
                       });
            };
            if (is("BEGIN")) {
                in_group_ = true;
                group_.clear();
            } else if (is("COMMIT") || is("XA COMMIT")) {
                commit(out);
            } else if (is("ROLLBACK")) {
                group_.clear();
                in_group_ = false;
                boundary_pending_ = true;
            } else {
                for (Change& change : changes_from_statement(sql, db))
                    add_change(std::move(change), out, in_group_);
                if (!in_group_)
                    boundary_pending_ = true;  // DDL: its own statement, a boundary even unreported
            }
            return;
        }
        case table_map: {
            std::size_t fixed = post_header(table_map, 8);
            std::size_t id_size = fixed == 6 ? 4 : 6;
            if (body.size() < fixed + 1) return;
            std::uint64_t id = le(body, 0, static_cast<int>(id_size));
            auto ref = parse_table_map(body, fixed);
            if (!ref) return;
            tables_[id] = std::make_shared<TableMap>(std::move(*ref));
            if (tables_.size() > 100000) tables_.clear();  // ids only grow; do not keep them forever
            return;
        }
        case start_encryption:
            out.problems.push_back(fmt::format(
                "the binlog is encrypted (encrypt_binlog=ON) from offset {}: events cannot be read without the key; "
                "use --mode redo or --mode files",
                event_offset));
            encrypted_ = true;
            return;
        default: break;
    }
    if (is_rows_event(type)) {
        std::size_t id_size = post_header(type, 8) == 6 ? 4 : 6;
        std::size_t fixed = post_header(type, 8);
        if (body.size() < id_size || body.size() < fixed) return;
        auto found = tables_.find(le(body, 0, static_cast<int>(id_size)));
        if (found == tables_.end()) {
            if (!quiet_)
                out.problems.push_back(
                    fmt::format("rows event at offset {} names a table id with no table map", event_offset));
            return;
        }
        const TableMap& table = *found->second;
        Change change;
        change.event = "change";
        change.db = table.db;
        change.table = table.table;
        change.via = Via::binlog;
        bool compressed = type >= write_rows_compressed_v1;
        bool v2 = (type >= write_rows_v2 && type <= delete_rows_v2) || type >= write_rows_compressed_v1 + 3;
        std::size_t rows_at = fixed;
        if (v2 && fixed >= 10) {
            std::size_t extra = le(body, fixed - 2, 2);  // extra data, its own two length bytes included
            rows_at = extra >= 2 ? fixed + extra - 2 : body.size() + 1;
        }
        if (!table.types.empty() && rows_at <= body.size()) {
            bool update = type == update_rows_v1 || type == update_rows_v2 ||
                          type == write_rows_compressed_v1 + 1 || type == delete_rows_compressed_v2 - 1;
            std::string_view rows = body.substr(rows_at);
            std::optional<std::string> inflated;
            if (compressed) {
                // The column count and bitmaps stay plain; the row images are one zlib block.
                std::size_t at = 0;
                auto columns = packed_int(rows, at);
                std::size_t plain = columns ? at + (*columns + 7) / 8 * (update ? 2 : 1) : rows.size() + 1;
                if (plain <= rows.size()) inflated = inflate(rows.substr(plain));
                if (inflated) inflated->insert(0, rows.substr(0, plain));
            }
            if (!compressed || inflated) {
                std::string_view images = inflated ? std::string_view(*inflated) : rows;
                if (rows_ && !quiet_) {
                    auto kind = update ? RowsKind::update
                                : type == write_rows_v1 || type == write_rows_v2 ||
                                        type == write_rows_compressed_v1 ||
                                        type == write_rows_compressed_v1 + 3
                                    ? RowsKind::write
                                    : RowsKind::remove;
                    try {
                        for (RowImage& row : decode_rows(table, images, kind)) {
                            Change row_change = change;
                            row_change.event = "row";
                            row_change.op = kind == RowsKind::write    ? "c"
                                            : kind == RowsKind::update ? "u"
                                                                       : "d";
                            row_change.before = std::move(row.before);
                            row_change.after = std::move(row.after);
                            row_change.rows = 1;
                            row_change.binlog_time = static_cast<std::uint32_t>(le(event, 0, 4));
                            add_change(std::move(row_change), out, in_group_);
                        }
                        return;
                    } catch (const DataError& error) {
                        out.problems.push_back(
                            fmt::format("{} (offset {}): reported as a table change without rows",
                                        error.what(), event_offset));
                    }
                } else {
                    change.rows = count_rows(images, update, table.types, table.meta);
                }
            } else if (rows_ && !quiet_) {
                out.problems.push_back(
                    fmt::format("rows event for {}.{} at offset {}: compressed row images do "
                                "not inflate; reported as a table change without rows",
                                table.db, table.table, event_offset));
            }
        } else if (rows_ && !quiet_) {
            out.problems.push_back(
                fmt::format("rows event for {}.{} at offset {}: its table map could not be "
                            "read; reported as a table change without rows",
                            table.db, table.table, event_offset));
        }
        add_change(std::move(change), out, in_group_);
    }
}

}  // namespace ktricks::mysqlwatch
