// mysql-watch --rows against a real MariaDB: every row image the watcher reports must equal what
// MariaDB's own `mariadb-binlog --base64-output=decode-rows -v` decodes from the same binlog
// events (its `### @N=...` lines), value for value, for a table with every column type and edge
// values, and row for row for a sysbench oltp_write_only workload.
#include <gtest/gtest.h>

#include <fmt/printf.h>
#include <nlohmann/json.hpp>

#include <errno.h>
#include <iconv.h>
#include <time.h>

#include <algorithm>
#include <cinttypes>
#include <iostream>
#include <map>
#include <set>

#include "brokers.hpp"
#include "mariadb_server.hpp"
#include "process_helpers.hpp"

namespace ktricks::test {
namespace {

using nlohmann::json;

// How mariadb-binlog prints a column, and so how the test turns the watcher's JSON value into
// that text.
enum class Kind {
    int8,
    int16,
    int24,
    int32,
    int64,
    uint8,
    uint16,
    uint24,
    uint32,
    uint64,
    decimal,
    float32,
    float64,
    date,
    time,
    datetime,
    timestamp,
    year,
    text,
    latin1,
    binary,
    fixed_binary,
    enum_,
    set,
    bit,
    geometry
};

struct Column {
    std::string name;
    Kind kind;
    int width = 0;                       // BIT: bits; SET: bytes; TIMESTAMP: fraction digits
    std::vector<std::string> members{};  // ENUM/SET
};

// One row image as mariadb-binlog prints it: column number -> text after `@N=`.
using Image = std::map<int, std::string>;
struct Row {
    char op = '?';
    std::string table;  // `db`.`table`
    Image before, after;
};

// Parses `### INSERT INTO`, `### UPDATE`, `### DELETE FROM` blocks.
std::vector<Row> parse_mariadb_binlog(const std::string& text, const std::string& table) {
    std::vector<Row> rows;
    Image* image = nullptr;
    bool keep = false;
    for (const std::string& line : lines_of(text)) {
        if (line.rfind("### ", 0) != 0) {
            image = nullptr;
            continue;
        }
        std::string rest = line.substr(4);
        auto starts = [&](const char* word) { return rest.rfind(word, 0) == 0; };
        if (starts("INSERT INTO ") || starts("UPDATE ") || starts("DELETE FROM ")) {
            std::string name = rest.substr(rest.find(' ', starts("UPDATE ") ? 0 : 7) + 1);
            keep = name == table;
            if (keep) rows.push_back({starts("INSERT") ? 'c' : starts("UPDATE") ? 'u' : 'd', name, {}, {}});
            image = nullptr;
        } else if (keep && rest == "SET") {
            image = &rows.back().after;
        } else if (keep && rest == "WHERE") {
            image = &rows.back().before;
        } else if (keep && image && starts("  @")) {
            auto equals = rest.find('=');
            int column = std::stoi(rest.substr(3, equals - 3));
            std::string value = rest.substr(equals + 1);
            while (!value.empty() && value.back() == ' ') value.pop_back();  // FLOAT is %-20g
            (*image)[column] = value;
        }
    }
    return rows;
}

// mariadb-binlog's my_b_write_quoted: bytes below 0x20 as \xNN, everything else as it is.
std::string binlog_quoted(std::string_view bytes) {
    std::string out = "'";
    for (unsigned char c : bytes)
        out += c < 0x20 ? fmt::format("\\x{:02x}", c) : std::string(1, static_cast<char>(c));
    return out + "'";
}

std::string unhex(const std::string& text) {
    std::string bytes;
    for (std::size_t i = 0; i + 1 < text.size(); i += 2)
        bytes += static_cast<char>(std::stoi(text.substr(i, 2), nullptr, 16));
    return bytes;
}

std::string utf8_to_latin1(const std::string& text) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c < 0x80) {
            out += static_cast<char>(c);
        } else {  // the test's latin1 values stay below U+0100
            out += static_cast<char>(((c & 0x1F) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3F));
            ++i;
        }
    }
    return out;
}

std::string bits(std::uint64_t value, int width) {
    std::string out;
    for (int k = width - 1; k >= 0; --k) out += ((value >> k) & 1) ? '1' : '0';
    return out;
}

// The watcher's value in mariadb-binlog's notation.
std::string as_mariadb_binlog(const Column& column, const json& value) {
    if (value.is_null()) return "NULL";
    auto signed_int = [](std::int64_t v, int bits_) {
        if (v >= 0) return std::to_string(v);
        std::uint64_t as_unsigned = bits_ == 64 ? static_cast<std::uint64_t>(v)
                                                : static_cast<std::uint64_t>(v) & ((1ULL << bits_) - 1);
        return fmt::format("{} ({})", v, as_unsigned);
    };
    auto unsigned_int = [](std::uint64_t v, int bits_) {
        std::uint64_t half = 1ULL << (bits_ - 1);
        if (v < half) return std::to_string(v);
        std::int64_t as_signed = bits_ == 64
                                     ? static_cast<std::int64_t>(v)
                                     : static_cast<std::int64_t>(v) - static_cast<std::int64_t>(half * 2);
        return fmt::format("{} ({})", as_signed, v);
    };
    switch (column.kind) {
        case Kind::int8: return signed_int(value.get<std::int64_t>(), 8);
        case Kind::int16: return signed_int(value.get<std::int64_t>(), 16);
        case Kind::int24: return signed_int(value.get<std::int64_t>(), 24);
        case Kind::int32: return signed_int(value.get<std::int64_t>(), 32);
        case Kind::int64: return signed_int(value.get<std::int64_t>(), 64);
        case Kind::uint8: return unsigned_int(value.get<std::uint64_t>(), 8);
        case Kind::uint16: return unsigned_int(value.get<std::uint64_t>(), 16);
        case Kind::uint24: return unsigned_int(value.get<std::uint64_t>(), 24);
        case Kind::uint32: return unsigned_int(value.get<std::uint64_t>(), 32);
        case Kind::uint64: return unsigned_int(value.get<std::uint64_t>(), 64);
        case Kind::decimal: return value.get<std::string>();
        case Kind::float32: {
            std::string text = fmt::format(
                "{:<20}", fmt::sprintf("%g", static_cast<double>(static_cast<float>(value.get<double>()))));
            while (!text.empty() && text.back() == ' ') text.pop_back();
            return text;
        }
        case Kind::float64: return fmt::sprintf("%.20g", value.get<double>());
        case Kind::date: {
            std::string text = value.get<std::string>();
            std::replace(text.begin(), text.end(), '-', ':');
            return "'" + text + "'";
        }
        case Kind::time:
        case Kind::datetime: return "'" + value.get<std::string>() + "'";
        case Kind::timestamp: {
            // "2038-01-19T03:14:07.999Z" -> seconds since the epoch (and the fraction as printed).
            std::string text = value.get<std::string>();
            struct tm tm {};
            std::int64_t seconds = 0;
            if (text.rfind("0000-00-00", 0) != 0) {
                ::strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
                seconds = ::timegm(&tm);
            }
            auto dot = text.find('.');
            if (column.width == 0 || dot == std::string::npos) return std::to_string(seconds);
            return fmt::format("{}.{}", seconds,
                               text.substr(dot + 1, static_cast<std::size_t>(column.width)));
        }
        case Kind::year: return fmt::format("{:04}", value.get<int>());
        case Kind::text: return binlog_quoted(value.get<std::string>());
        case Kind::latin1: return binlog_quoted(utf8_to_latin1(value.get<std::string>()));
        case Kind::binary: return binlog_quoted(unhex(value.get<std::string>()));
        case Kind::fixed_binary: {
            std::string bytes = unhex(value.get<std::string>());  // the binlog has no trailing zeros
            while (!bytes.empty() && bytes.back() == '\0') bytes.pop_back();
            return binlog_quoted(bytes);
        }
        case Kind::enum_: {
            auto name = value.get<std::string>();
            auto found = std::find(column.members.begin(), column.members.end(), name);
            return std::to_string(found - column.members.begin() + 1);
        }
        case Kind::set: {
            std::uint64_t mask = 0;
            std::string names = value.get<std::string>();
            for (std::size_t k = 0; k < column.members.size(); ++k) {
                std::string member = column.members[k];
                if (("," + names + ",").find("," + member + ",") != std::string::npos) mask |= 1ULL << k;
            }
            std::string out;  // the stored bytes, little-endian, each printed most significant bit first
            for (int k = 0; k < column.width; ++k) out += bits((mask >> (8 * k)) & 0xFF, 8);
            return "b'" + out + "'";
        }
        case Kind::bit: return "b'" + bits(value.get<std::uint64_t>(), column.width) + "'";
        case Kind::geometry: {
            auto srid = value["srid"].get<std::uint32_t>();
            std::string bytes;
            for (int k = 0; k < 4; ++k) bytes += static_cast<char>((srid >> (8 * k)) & 0xFF);
            return binlog_quoted(bytes + unhex(value["wkb"].get<std::string>()));
        }
    }
    return "?";
}

std::vector<json> row_events(const Process& watcher) {
    std::vector<json> events;
    for (const auto& line : lines_of(watcher.out())) {
        auto parsed = json::parse(line, nullptr, false);
        if (!parsed.is_discarded() && parsed.value("event", "") == "row") events.push_back(std::move(parsed));
    }
    return events;
}

// Compares every row event with mariadb-binlog's decoding; returns the number of values compared.
std::size_t expect_equal_rows(const std::vector<json>& ours, const std::vector<Row>& theirs,
                              const std::vector<Column>& columns) {
    std::size_t compared = 0;
    EXPECT_EQ(ours.size(), theirs.size());
    for (std::size_t r = 0; r < std::min(ours.size(), theirs.size()); ++r) {
        const json& event = ours[r];
        const Row& row = theirs[r];
        EXPECT_EQ(event["op"].get<std::string>(), std::string(1, row.op)) << "row " << r;
        for (int image = 0; image < 2; ++image) {
            const json& values = image == 0 ? event["before"] : event["after"];
            const Image& expected = image == 0 ? row.before : row.after;
            if (expected.empty()) {
                EXPECT_TRUE(values.is_null()) << "row " << r;
                continue;
            }
            EXPECT_EQ(values.size(), expected.size()) << "row " << r;
            for (const auto& [number, text] : expected) {
                const Column& column = columns.at(static_cast<std::size_t>(number - 1));
                if (!values.contains(column.name)) {
                    ADD_FAILURE() << "row " << r << " has no column " << column.name;
                    continue;
                }
                std::string mine = as_mariadb_binlog(column, values[column.name]);
                EXPECT_EQ(mine, text) << "row " << r << (image == 0 ? " before" : " after") << " column "
                                      << column.name << " = " << values[column.name].dump().substr(0, 200);
                ++compared;
            }
        }
    }
    return compared;
}

std::string mariadb_binlog_of(const MariaDbServer& server) {
    std::string text;
    for (const std::string& file : lines_of(read_file(server.datadir() + "/binlog.index"))) {
        std::string path =
            file[0] == '/' ? file : server.datadir() + "/" + std::filesystem::path(file).filename().string();
        auto result = run({"mariadb-binlog", "--no-defaults", "--base64-output=decode-rows", "-v", path}, {},
                          std::chrono::seconds(60));
        EXPECT_EQ(result.status, 0) << result.describe;
        text += result.out;
    }
    return text;
}

class MysqlWatchRows : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (!MariaDbServer::available()) return;
        server_ = new MariaDbServer({.binlog = true});
        server_->start();
        // FULL: column names and ENUM/SET members in TABLE_MAP; new sessions take it.
        server_->sql("SET GLOBAL binlog_row_metadata = 'FULL'");
    }
    static void TearDownTestSuite() {
        delete server_;
        server_ = nullptr;
    }
    void SetUp() override {
        if (!server_) GTEST_SKIP() << "needs root and MariaDB (mariadb-server, mariadb-client)";
    }
    Process start_watcher(const std::string& db, std::vector<std::string> extra = {}) {
        std::vector<std::string> argv = {KTRICKS_BINARY, "mysql-watch", "--datadir", server_->datadir(),
                                         "--json",       "--rows",      "--db",      db};
        argv.insert(argv.end(), extra.begin(), extra.end());
        Process watcher = Process::start(argv);
        if (!eventually([&] { return watcher.err().find("watching") != std::string::npos; }))
            ADD_FAILURE() << "the watcher did not start\n" << watcher.describe();
        return watcher;
    }
    static inline MariaDbServer* server_ = nullptr;
};

const std::vector<Column>& every_type() {
    static const std::vector<Column> columns = {
        {"id", Kind::int32},
        {"ti", Kind::int8},
        {"tu", Kind::uint8},
        {"si", Kind::int16},
        {"su", Kind::uint16},
        {"mi", Kind::int24},
        {"mu", Kind::uint24},
        {"i", Kind::int32},
        {"iu", Kind::uint32},
        {"bi", Kind::int64},
        {"bu", Kind::uint64},
        {"d1", Kind::decimal},
        {"d2", Kind::decimal},
        {"d3", Kind::decimal},
        {"d4", Kind::decimal},
        {"f", Kind::float32},
        {"db", Kind::float64},
        {"dt", Kind::date},
        {"tm", Kind::time},
        {"tm3", Kind::time},
        {"tm6", Kind::time},
        {"dtm", Kind::datetime},
        {"dtm6", Kind::datetime},
        {"ts", Kind::timestamp, 0},
        {"ts3", Kind::timestamp, 3},
        {"y", Kind::year},
        {"c", Kind::text},
        {"vc", Kind::text},
        {"cl", Kind::latin1},
        {"vl", Kind::latin1},
        {"bn", Kind::fixed_binary},
        {"vb", Kind::binary},
        {"tt", Kind::text},
        {"tx", Kind::text},
        {"mt", Kind::text},
        {"lt", Kind::text},
        {"tb", Kind::binary},
        {"b", Kind::binary},
        {"mb", Kind::binary},
        {"lb", Kind::binary},
        {"e", Kind::enum_, 0, {"a", "bé", "c"}},
        {"s", Kind::set, 2, {"x", "y", "z", "w", "v", "u", "t", "r", "q"}},
        {"b1", Kind::bit, 1},
        {"b13", Kind::bit, 13},
        {"b64", Kind::bit, 64},
        {"j", Kind::text},
        {"g", Kind::geometry},
        {"p", Kind::geometry},
        {"ip", Kind::fixed_binary},
        {"u", Kind::fixed_binary},
    };
    return columns;
}

TEST_F(MysqlWatchRows, EveryColumnTypeEqualsMariadbBinlogDecoding) {
    server_->sql(
        "CREATE DATABASE rowtypes; CREATE TABLE rowtypes.t ("
        " id INT NOT NULL PRIMARY KEY,"
        " ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT,"
        " mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,"
        " d1 DECIMAL(10,2), d2 DECIMAL(65,30), d3 DECIMAL(5,0), d4 DECIMAL(18,9) UNSIGNED,"
        " f FLOAT, db DOUBLE, dt DATE, tm TIME, tm3 TIME(3), tm6 TIME(6), dtm DATETIME, dtm6 DATETIME(6),"
        " ts TIMESTAMP NULL, ts3 TIMESTAMP(3) NULL, y YEAR,"
        " c CHAR(10), vc VARCHAR(300), cl CHAR(5) CHARACTER SET latin1, vl VARCHAR(20) CHARACTER SET latin1,"
        " bn BINARY(4), vb VARBINARY(20), tt TINYTEXT, tx TEXT, mt MEDIUMTEXT, lt LONGTEXT,"
        " tb TINYBLOB, b BLOB, mb MEDIUMBLOB, lb LONGBLOB,"
        " e ENUM('a','bé','c'), s SET('x','y','z','w','v','u','t','r','q'),"
        " b1 BIT(1), b13 BIT(13), b64 BIT(64), j JSON, g GEOMETRY, p POINT, ip INET6, u UUID"
        ") DEFAULT CHARSET=utf8mb4");
    Process watcher = start_watcher("rowtypes");
    // Edge values: all NULL; the extremes of every integer; negative decimals; zero dates; negative
    // and fractional times; 4-byte UTF-8; control characters; a 64 KiB blob; latin1 letters; an
    // update that sets NULL; a delete; a multi-row transaction.
    server_->sql(
        "SET NAMES utf8mb4; SET SESSION sql_mode = '';"
        "INSERT INTO rowtypes.t (id) VALUES (1);"
        "INSERT INTO rowtypes.t VALUES (2, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648,"
        " 4294967295,"
        " -9223372036854775808, 18446744073709551615, -12345678.91,"
        " -12345678901234567890123456789012345.123456789012345678901234567890, -99999, 123456789.123456789,"
        " -1.5e-10, 2.2250738585072014e-308, '0000-00-00', '-838:59:59', '-00:00:01.5', '12:34:56.000001',"
        " '0000-00-00 00:00:00', '9999-12-31 23:59:59.999999', '1970-01-01 00:00:01',"
        " '2038-01-19 03:14:07.999',"
        " 1901, 'ab', CONCAT('😀 ', REPEAT('x', 200), ' \\'\"\\\\', CHAR(10), CHAR(9), CHAR(0)), 'éà', 'ü',"
        " UNHEX('00FF7F80'), UNHEX('DEADBEEF00'), '', 'text ☃ 𝄞', 'm', REPEAT('L', 1000), UNHEX(''),"
        " REPEAT(UNHEX('00FF'), 32767), REPEAT(UNHEX('00FF'), 32768), UNHEX('02'), 'bé', 'x,y,q', b'1',"
        " b'1010101010101',"
        " b'1111111111111111111111111111111111111111111111111111111111111111', '{\"k\": [1, \"ü\", null]}',"
        " ST_GeomFromText('LINESTRING(0 0, 1 1, 2.5 -3)'), POINT(1.5, -2), '::ffff:1.2.3.4',"
        " '123e4567-e89b-12d3-a456-426655440000');"
        "INSERT INTO rowtypes.t (id, ti, tu, bi, bu, d1, d2, d3, f, db, dt, tm, tm6, dtm6, ts3, y, e, s,"
        " b13, g,"
        " bn, u) VALUES (5, 127, 0, 9223372036854775807, 0, 0.00, -0.000000000000000000000000000001, 0,"
        " 3.4028234e38, -1.7976931348623157e308, '2024-02-29', '838:59:59', '-00:00:00.000001',"
        " '1000-01-01 00:00:00.000001', '1970-01-01 00:00:00.001', 2155, 'a', 'q', 8191,"
        " ST_GeomFromText('POINT(1 2)', 4326), UNHEX('01000000'), '00000000-0000-0000-0000-000000000001');"
        "UPDATE rowtypes.t SET ti = ti + 1, vc = 'short', b = NULL, e = 'c', s = '' WHERE id = 2;"
        "UPDATE rowtypes.t SET i = 0 WHERE id = 1;"
        "DELETE FROM rowtypes.t WHERE id = 1;"
        "BEGIN; INSERT INTO rowtypes.t (id, d1) VALUES (3, 0.01), (4, -0.5); COMMIT;");
    // MariaDB's compressed row events (log_bin_compress; the v2 layout, with extra data).
    server_->sql(
        "SET GLOBAL log_bin_compress = ON; SET GLOBAL log_bin_compress_min_len = 10; SET NAMES utf8mb4;"
        "INSERT INTO rowtypes.t (id, vc, lt, d2, tm3)"
        " VALUES (6, REPEAT('ä', 100), REPEAT('z', 3000), -1.5, '-1:2:3.4');"
        "UPDATE rowtypes.t SET vc = '𝄞', b = REPEAT('b', 2000) WHERE id = 6;"
        "DELETE FROM rowtypes.t WHERE id = 6;"
        "SET GLOBAL log_bin_compress = OFF");
    constexpr std::size_t expected_rows = 11;
    EXPECT_TRUE(eventually([&] { return row_events(watcher).size() >= expected_rows; }, 20s, 50ms))
        << watcher.describe().substr(0, 4000);
    auto ours = row_events(watcher);
    std::string decoded = mariadb_binlog_of(*server_);
    EXPECT_NE(decoded.find("Write_compressed_rows"), std::string::npos);
    auto theirs = parse_mariadb_binlog(decoded, "`rowtypes`.`t`");
    ASSERT_EQ(theirs.size(), expected_rows);
    std::size_t compared = expect_equal_rows(ours, theirs, every_type());
    std::cout << "compared " << compared << " values of " << ours.size()
              << " row events with mariadb-binlog\n";
    EXPECT_GT(compared, 300U);
    // The envelope.
    ASSERT_GE(ours.size(), 2U);
    EXPECT_EQ(ours[1]["after"]["lt"].get<std::string>(), std::string(1000, 'L'));
    EXPECT_EQ(ours[1]["after"]["b"].get<std::string>().size(), 2U * 65534);   // BLOB's maximum is 65535
    EXPECT_EQ(ours[1]["after"]["mb"].get<std::string>().size(), 2U * 65536);  // 64 KiB
    EXPECT_EQ(ours[1]["after"]["tx"], "text ☃ 𝄞");
    EXPECT_EQ(ours[1]["after"]["cl"], "éà");
    EXPECT_EQ(ours[1]["after"]["e"], "bé");
    EXPECT_EQ(ours[1]["after"]["u"], "123e4567e89b12d3a456426655440000");
    for (const json& event : ours) {
        EXPECT_EQ(event["source"], "mysql");
        EXPECT_EQ(event["binlog"]["db"], "rowtypes");
        EXPECT_EQ(event["binlog"]["table"], "t");
        EXPECT_EQ(event["binlog"]["file"], event["binlog_file"]);
        EXPECT_EQ(event["binlog"]["pos"], event["binlog_pos"]);
        EXPECT_TRUE(event["binlog"]["gtid"].is_string());
    }
    // Each row has its own id; the two rows of one transaction share the position.
    std::set<std::string> ids;
    for (const json& event : ours) ids.insert(event["id"].get<std::string>());
    EXPECT_EQ(ids.size(), ours.size());
    EXPECT_EQ(ours[6]["binlog_pos"], ours[7]["binlog_pos"]);
}

// mariadb-binlog's quoted string back to its bytes (the inverse of binlog_quoted).
std::string binlog_unquoted(const std::string& value) {
    std::string out;
    if (value.size() < 2 || value.front() != '\'' || value.back() != '\'')
        return "<not a string: " + value + ">";
    for (std::size_t i = 1; i + 1 < value.size(); ++i) {
        if (value[i] == '\\' && i + 3 < value.size() && value[i + 1] == 'x') {
            out += static_cast<char>(std::stoi(value.substr(i + 2, 2), nullptr, 16));
            i += 3;
        } else {
            out += value[i];
        }
    }
    return out;
}

// The bytes converted from `charset` to UTF-8 with glibc's iconv, or "<iconv: ...>".
std::string iconv_to_utf8(const std::string& bytes, const char* charset) {
    iconv_t cd = ::iconv_open("UTF-8", charset);
    if (cd == reinterpret_cast<iconv_t>(-1)) return fmt::format("<iconv_open {}: {}>", charset, errno);
    std::string out(bytes.size() * 4 + 16, '\0');
    char* in = const_cast<char*>(bytes.data());
    std::size_t in_left = bytes.size(), out_left = out.size();
    char* to = out.data();
    std::size_t rc = ::iconv(cd, &in, &in_left, &to, &out_left);
    ::iconv_close(cd);
    if (rc == static_cast<std::size_t>(-1)) return fmt::format("<iconv {}: errno {}>", charset, errno);
    out.resize(out.size() - out_left);
    return out;
}

TEST_F(MysqlWatchRows, TextColumnsInEveryCharsetAreDecodedToUtf8) {
    struct Text {
        const char* column;
        const char* type;
        const char* iconv;  // the set's name for the test's own conversion of mariadb-binlog's bytes
        std::string first, second;
    };
    const std::vector<Text> texts = {
        {"c1", "CHAR(20) CHARACTER SET cp1251", "CP1251", "Привет, мир", "ёЁ №"},
        {"v2", "VARCHAR(20) CHARACTER SET gbk", "GBK", "中文测试", "简体"},
        {"t3", "TEXT CHARACTER SET ucs2", "UCS-2BE", "Ünïcødé Ж 中", "AΩ"},
        {"c4", "CHAR(10) CHARACTER SET utf16", "UTF-16BE", "😀 𝄞 Ж", "é"},
        {"v5", "VARCHAR(10) CHARACTER SET utf32", "UTF-32BE", "😀 ü", "𝄞"},
        {"t6", "TEXT CHARACTER SET sjis", "SJIS", "日本語テキスト", "ｶﾀｶﾅ"},
        {"c7", "CHAR(20) CHARACTER SET latin2", "ISO-8859-2", "Żółć łódź", "Ő"},
        {"v8", "VARCHAR(20) CHARACTER SET koi8r", "KOI8-R", "Съешь ещё", "Ъ"},
        {"t9", "TEXT CHARACTER SET big5", "BIG5", "繁體中文", "臺灣"},
        {"v10", "VARCHAR(10) CHARACTER SET euckr", "EUC-KR", "한국어", "가"},
        {"t11", "TINYTEXT CHARACTER SET eucjpms", "EUC-JP-MS", "①日本", "ア"},
        {"v12", "VARCHAR(10) CHARACTER SET utf16le", "UTF-16LE", "𝄞 Ж", "x"},
        {"c13", "CHAR(10) CHARACTER SET greek", "ISO-8859-7", "Ελληνικά", "Ω"},
    };
    std::string create = "CREATE DATABASE rowtext; CREATE TABLE rowtext.t (id INT PRIMARY KEY";
    std::string columns = "id", first = "1", second;
    for (const Text& text : texts) {
        create += fmt::format(", {} {}", text.column, text.type);
        columns += fmt::format(", {}", text.column);
        first += fmt::format(", '{}'", text.first);
        second += fmt::format("{}{} = '{}'", second.empty() ? "" : ", ", text.column, text.second);
    }
    server_->sql(create + ")");
    Process watcher = start_watcher("rowtext");
    server_->sql(
        fmt::format("SET NAMES utf8mb4; INSERT INTO rowtext.t ({}) VALUES ({});"
                    "UPDATE rowtext.t SET {} WHERE id = 1;",
                    columns, first, second));
    EXPECT_TRUE(eventually([&] { return row_events(watcher).size() >= 2; }, 20s, 20ms)) << watcher.describe();
    auto ours = row_events(watcher);
    ASSERT_EQ(ours.size(), 2U) << watcher.describe();
    auto theirs = parse_mariadb_binlog(mariadb_binlog_of(*server_), "`rowtext`.`t`");
    ASSERT_EQ(theirs.size(), 2U);
    for (std::size_t k = 0; k < texts.size(); ++k) {
        const Text& text = texts[k];
        int number = static_cast<int>(k) + 2;  // mariadb-binlog's @N; @1 is id
        EXPECT_EQ(ours[0]["after"][text.column], text.first) << text.type;
        EXPECT_EQ(ours[1]["before"][text.column], text.first) << text.type;
        EXPECT_EQ(ours[1]["after"][text.column], text.second) << text.type;
        EXPECT_EQ(iconv_to_utf8(binlog_unquoted(theirs[0].after[number]), text.iconv), text.first)
            << text.type;
        EXPECT_EQ(iconv_to_utf8(binlog_unquoted(theirs[1].after[number]), text.iconv), text.second)
            << text.type;
    }
}

TEST_F(MysqlWatchRows, WithoutRowMetadataColumnsArePositional) {
    server_->sql(
        "CREATE DATABASE rowplain; CREATE TABLE rowplain.t (a INT, b VARCHAR(10)) DEFAULT CHARSET=utf8mb4");
    Process watcher = start_watcher("rowplain");
    server_->sql(
        "SET GLOBAL binlog_row_metadata = 'NO_LOG'; SET NAMES utf8mb4;"
        "INSERT INTO rowplain.t VALUES (-5, 'hé'); UPDATE rowplain.t SET a = 7; DELETE FROM rowplain.t;"
        "SET GLOBAL binlog_row_metadata = 'FULL'");
    EXPECT_TRUE(eventually([&] { return row_events(watcher).size() >= 3; }, 20s, 20ms)) << watcher.describe();
    auto ours = row_events(watcher);
    ASSERT_EQ(ours.size(), 3U);
    EXPECT_EQ(ours[0]["op"], "c");
    EXPECT_EQ(ours[0]["after"], json::parse(R"({"@1":-5,"@2":"hé"})"));
    EXPECT_EQ(ours[1]["op"], "u");
    EXPECT_EQ(ours[1]["before"], json::parse(R"({"@1":-5,"@2":"hé"})"));
    EXPECT_EQ(ours[1]["after"], json::parse(R"({"@1":7,"@2":"hé"})"));
    EXPECT_EQ(ours[2]["op"], "d");
    EXPECT_TRUE(ours[2]["after"].is_null());
}

TEST_F(MysqlWatchRows, SysbenchWriteOnlyWorkloadMatchesMariadbBinlogRowForRow) {
    if (!std::filesystem::exists("/usr/bin/sysbench")) GTEST_SKIP() << "needs sysbench";
    server_->sql("CREATE DATABASE sbtest");
    Process watcher = start_watcher("sbtest");
    std::vector<std::string> common = {"--db-driver=mysql", "--mysql-socket=" + server_->socket(),
                                       "--mysql-user=root", "--mysql-db=sbtest",
                                       "--tables=2",        "--table-size=200"};
    auto sysbench = [&](std::vector<std::string> extra, const char* command) {
        std::vector<std::string> argv = {"sysbench", "oltp_write_only"};
        argv.insert(argv.end(), common.begin(), common.end());
        argv.insert(argv.end(), extra.begin(), extra.end());
        argv.push_back(command);
        auto result = run(argv, {}, std::chrono::seconds(120));
        ASSERT_EQ(result.status, 0) << result.describe;
    };
    sysbench({}, "prepare");
    sysbench({"--threads=2", "--events=300", "--time=0", "--rand-seed=1"}, "run");
    auto theirs = parse_mariadb_binlog(mariadb_binlog_of(*server_), "`sbtest`.`sbtest1`");
    auto theirs2 = parse_mariadb_binlog(mariadb_binlog_of(*server_), "`sbtest`.`sbtest2`");
    std::size_t total = theirs.size() + theirs2.size();
    EXPECT_TRUE(eventually([&] { return row_events(watcher).size() >= total; }, 60s, 100ms))
        << row_events(watcher).size() << " of " << total;
    std::vector<json> ours1, ours2;
    for (json& event : row_events(watcher))
        (event["table"] == "sbtest1" ? ours1 : ours2).push_back(std::move(event));
    std::vector<Column> columns = {
        {"id", Kind::int32}, {"k", Kind::int32}, {"c", Kind::text}, {"pad", Kind::text}};
    std::size_t compared =
        expect_equal_rows(ours1, theirs, columns) + expect_equal_rows(ours2, theirs2, columns);
    std::cout << "sysbench: " << total << " rows (" << ours1.size() + ours2.size() << " row events), "
              << compared << " values equal to mariadb-binlog's\n";
    EXPECT_GT(total, 1000U);
}

// --rows with --publish and --state: one stream entry per row with its own id; the watcher is
// SIGKILLed mid-workload and restarted from its state file; every row arrives, repeats bounded.
TEST_F(MysqlWatchRows, RowsThroughRedisWithStateSurviveKillNine) {
    if (!RedisServer::available()) GTEST_SKIP() << "needs redis-server (scripts/install-deps.sh)";
    constexpr int transactions = 300;
    server_->sql("CREATE DATABASE rowpub; CREATE TABLE rowpub.t (id INT PRIMARY KEY, v VARCHAR(20))");
    RedisServer redis;
    TempDir dir;
    std::string url = fmt::format("redis://127.0.0.1:{}/rows:{{db}}", redis.port());
    std::vector<std::string> args = {"--state", dir / "state", "--publish", url, "--spool", dir / "spool"};
    std::string script = "SET autocommit=1;";
    // Transaction i inserts ids 3i, 3i+1, 3i+2 with v = 'a3i', 'b3i', 'c3i'.
    for (int i = 0; i < transactions; ++i)
        script += fmt::format("INSERT INTO rowpub.t VALUES ({0}, 'a{0}'), ({1}, 'b{0}'), ({2}, 'c{0}');",
                              3 * i, 3 * i + 1, 3 * i + 2);
    auto watcher = std::make_unique<Process>(start_watcher("rowpub", args));
    Process workload =
        Process::start({"mariadb", "--no-defaults", "-S", server_->socket(), "-uroot", "-e", script});
    auto in_stream = [&] { return std::atoi(redis.cli({"XLEN", "rows:rowpub"}).c_str()); };
    ASSERT_TRUE(eventually([&] { return in_stream() >= transactions; }, 60s)) << watcher->describe();
    watcher.reset();  // SIGKILL
    watcher = std::make_unique<Process>(start_watcher("rowpub", args));
    EXPECT_EQ(workload.wait(90s), 0) << workload.describe();
    std::map<std::string, int> ids;
    std::set<int> rows;
    std::size_t entries = 0;
    auto collect = [&] {
        ids.clear();
        rows.clear();
        auto events = redis.stream("rows:rowpub");
        entries = events.size();
        for (const json& e : events) {
            if (e.value("event", "") != "row") continue;
            ++ids[e.value("id", "")];
            const json& after = e["after"];
            if (e["op"] == "c" &&
                after["v"].get<std::string>() ==
                    fmt::format("{}{}", "abc"[after["id"].get<int>() % 3], after["id"].get<int>() / 3 * 3))
                rows.insert(after["id"].get<int>());
        }
        return rows.size() == 3u * transactions;
    };
    EXPECT_TRUE(eventually(collect, 60s, 100ms)) << rows.size() << " of " << 3 * transactions << "\n"
                                                 << watcher->describe();
    EXPECT_EQ(ids.size(), 3u * transactions);  // one id per row
    EXPECT_LE(entries - ids.size(), 3u) << "repeats: at most the transaction not yet saved";
    std::cout << "stream entries " << entries << ", unique row ids " << ids.size() << "\n";
}

}  // namespace
}  // namespace ktricks::test
