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

#include "ktricks/mysqlwatch.hpp"

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

std::uint64_t le(std::string_view bytes, std::size_t at, int size) {
    std::uint64_t value = 0;
    for (int k = size - 1; k >= 0; --k) value = (value << 8) | static_cast<unsigned char>(bytes[at + k]);
    return value;
}

bool is_rows_event(std::uint8_t type) {
    return (type >= write_rows_v1 && type <= delete_rows_v1) || (type >= write_rows_v2 && type <= delete_rows_v2) ||
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
        if (buffer_.compare(0, 4, "\xfe" "bin") != 0) {
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
    if (quiet_) return;
    if (!in_group) {
        out.changes.push_back(std::move(change));
        return;
    }
    for (Change& pending : group_) {
        if (pending.event == change.event && pending.db == change.db && pending.table == change.table &&
            pending.new_table == change.new_table) {
            if (pending.rows && change.rows) *pending.rows += *change.rows;
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
}

void BinlogParser::parse_event(std::string_view event, Output& out) {
    auto type = static_cast<std::uint8_t>(event[4]);
    std::uint64_t event_offset = offset_ + consumed_ - event.size();
    // Body without the header and without the trailing checksum.
    std::size_t trailer = checksum_ && type != format_description ? 4 : 0;
    std::string_view body = event.substr(header_size, event.size() - header_size - trailer);
    auto post_header = [&](std::uint8_t of, std::size_t fallback) -> std::size_t {
        if (of >= 1 && of <= post_header_lengths_.size()) return static_cast<unsigned char>(post_header_lengths_[of - 1]);
        return fallback;
    };

    switch (type) {
    case format_description: {
        // binlog_version u16 | server_version char[50] | created u32 | header_length u8 |
        // post-header lengths, one per type | checksum algorithm u8 | checksum u32
        if (body.size() < 2 + 50 + 4 + 1 + 5) {
            out.problems.push_back(fmt::format("format description event at offset {} is too short", event_offset));
            return;
        }
        std::uint8_t algorithm = static_cast<std::uint8_t>(body[body.size() - 5]);
        post_header_lengths_ = std::string(body.substr(57, body.size() - 57 - 5));
        checksum_ = algorithm == 1;
        if (checksum_) {
            auto stored = static_cast<std::uint32_t>(le(event, event.size() - 4, 4));
            if (stored != crc32_of_event(event.substr(0, event.size() - 4)))
                out.problems.push_back(fmt::format("format description event at offset {} fails its CRC32", event_offset));
        } else if (algorithm != 0 && algorithm != 0xFF) {
            out.problems.push_back(fmt::format("unknown binlog checksum algorithm {} (offset {})", algorithm, event_offset));
        }
        tables_.clear();
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
        group_.clear();
        in_group_ = !standalone;
        return;
    }
    case xid:
        commit(out);
        return;
    case query: {
        // thread_id u32 | exec_time u32 | db_len u8 | error u16 | status_vars_len u16 | vars | db \0 | sql
        std::size_t fixed = post_header(query, 13);
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
        auto is = [&](std::string_view word) {
            return sql.size() == word.size() &&
                   std::equal(sql.begin(), sql.end(), word.begin(),
                              [](char a, char b) { return std::toupper(static_cast<unsigned char>(a)) == b; });
        };
        if (is("BEGIN")) {
            in_group_ = true;
            group_.clear();
        } else if (is("COMMIT") || is("XA COMMIT")) {
            commit(out);
        } else if (is("ROLLBACK")) {
            group_.clear();
            in_group_ = false;
        } else {
            for (Change& change : changes_from_statement(sql, db)) add_change(std::move(change), out, in_group_);
        }
        return;
    }
    case table_map: {
        // table_id u48 (u32 in old servers) | flags u16 || db_len u8 | db \0 | table_len u8 | table \0 | ...
        std::size_t fixed = post_header(table_map, 8);
        std::size_t id_size = fixed == 6 ? 4 : 6;
        if (body.size() < fixed + 1) return;
        std::uint64_t id = le(body, 0, static_cast<int>(id_size));
        std::size_t at = fixed;
        std::size_t db_len = static_cast<unsigned char>(body[at++]);
        if (at + db_len + 2 > body.size()) return;
        std::string db(body.substr(at, db_len));
        at += db_len + 1;
        std::size_t table_len = static_cast<unsigned char>(body[at++]);
        if (at + table_len > body.size()) return;
        tables_[id] = TableRef{std::move(db), std::string(body.substr(at, table_len))};
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
    case query_compressed:
        if (!reported_compression_) {
            out.problems.push_back(fmt::format(
                "compressed query events (log_bin_compress=ON, offset {}) are not supported: DDL and statements "
                "in them are not reported",
                event_offset));
            reported_compression_ = true;
        }
        return;
    default:
        break;
    }
    if (is_rows_event(type)) {
        std::size_t id_size = post_header(type, 8) == 6 ? 4 : 6;
        if (body.size() < id_size) return;
        auto found = tables_.find(le(body, 0, static_cast<int>(id_size)));
        if (found == tables_.end()) {
            if (!quiet_)
                out.problems.push_back(fmt::format("rows event at offset {} names a table id with no table map", event_offset));
            return;
        }
        Change change;
        change.event = "change";
        change.db = found->second.db;
        change.table = found->second.table;
        change.via = Via::binlog;
        add_change(std::move(change), out, in_group_);
    }
}

}  // namespace ktricks::mysqlwatch
