// Row images of ROWS events as JSON values (mysql-watch --rows).
//
// A ROWS event carries no column types: they come from the TABLE_MAP event before it (one type byte
// and 0-2 metadata bytes per column) and, when the server runs with binlog_row_metadata=MINIMAL or
// FULL, from TABLE_MAP's optional metadata: signedness, character sets, and with FULL the column
// names and the ENUM/SET member names. The storage formats decoded here are MariaDB's (and MySQL
// 5.6+'s) row format: little-endian integers, big-endian TIME2/DATETIME2/TIMESTAMP2 and DECIMAL
// (with its sign bit and 9-digit groups), length-prefixed strings and blobs.
#include "mysqlwatch/rows.hpp"

#include <errno.h>
#include <fmt/format.h>
#include <iconv.h>
#include <time.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cstring>
#include <map>
#include <memory>
#include <optional>

#include "ktricks/core/error.hpp"

namespace ktricks::mysqlwatch {
namespace {

using nlohmann::ordered_json;

enum : std::uint8_t {
    t_decimal = 0,
    t_tiny = 1,
    t_short = 2,
    t_long = 3,
    t_float = 4,
    t_double = 5,
    t_null = 6,
    t_timestamp = 7,
    t_longlong = 8,
    t_int24 = 9,
    t_date = 10,
    t_time = 11,
    t_datetime = 12,
    t_year = 13,
    t_newdate = 14,
    t_varchar = 15,
    t_bit = 16,
    t_timestamp2 = 17,
    t_datetime2 = 18,
    t_time2 = 19,
    t_json = 245,
    t_newdecimal = 246,
    t_enum = 247,
    t_set = 248,
    t_tiny_blob = 249,
    t_medium_blob = 250,
    t_long_blob = 251,
    t_blob = 252,
    t_var_string = 253,
    t_string = 254,
    t_geometry = 255,
};

// ENUM and SET travel as MYSQL_TYPE_STRING with the real type in the metadata's high byte.
std::uint8_t real_type(std::uint8_t type, std::uint16_t meta) {
    if (type == t_string && ((meta >> 8) == t_enum || (meta >> 8) == t_set)) return meta >> 8;
    return type;
}

bool is_numeric(std::uint8_t type) {
    switch (type) {
        case t_tiny:
        case t_short:
        case t_int24:
        case t_long:
        case t_longlong:
        case t_newdecimal:
        case t_float:
        case t_double: return true;
        default: return false;
    }
}

// Columns that have a character set in the optional metadata (ENUM/SET have their own fields).
bool is_character(std::uint8_t type, std::uint16_t meta) {
    switch (real_type(type, meta)) {
        case t_string:
        case t_var_string:
        case t_varchar:
        case t_blob:
        case t_tiny_blob:
        case t_medium_blob:
        case t_long_blob:
        case t_geometry: return true;
        default: return false;
    }
}

bool is_enum_or_set(std::uint8_t type, std::uint16_t meta) {
    auto real = real_type(type, meta);
    return real == t_enum || real == t_set;
}

std::uint64_t be(std::string_view bytes, std::size_t at, int size) {
    std::uint64_t value = 0;
    for (int k = 0; k < size; ++k) value = (value << 8) | static_cast<unsigned char>(bytes[at + k]);
    return value;
}

std::int64_t sign_extend(std::uint64_t value, int bytes) {
    int shift = 64 - 8 * bytes;
    return static_cast<std::int64_t>(value << shift) >> shift;
}

std::string hex(std::string_view bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (unsigned char c : bytes) {
        out += digits[c >> 4];
        out += digits[c & 0xF];
    }
    return out;
}

bool valid_utf8(std::string_view text) {
    std::size_t i = 0;
    while (i < text.size()) {
        auto c = static_cast<unsigned char>(text[i]);
        int extra = c < 0x80             ? 0
                    : (c & 0xE0) == 0xC0 ? 1
                    : (c & 0xF0) == 0xE0 ? 2
                    : (c & 0xF8) == 0xF0 ? 3
                                         : -1;
        if (extra < 0 || text.size() - i <= static_cast<std::size_t>(extra)) return false;
        std::uint32_t cp = extra == 0 ? c : c & (0x3F >> extra);
        for (int k = 1; k <= extra; ++k) {
            auto next = static_cast<unsigned char>(text[i + k]);
            if ((next & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (next & 0x3F);
        }
        // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
        static constexpr std::uint32_t minimum[] = {0, 0x80, 0x800, 0x10000};
        if (cp < minimum[extra] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return false;
        i += 1 + extra;
    }
    return true;
}

// MariaDB's latin1 is Windows-1252 (with the five undefined bytes mapped to C1 controls).
std::string latin1_to_utf8(std::string_view bytes) {
    static constexpr std::uint16_t high[32] = {
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
        0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};
    std::string out;
    out.reserve(bytes.size());
    for (unsigned char c : bytes) append_utf8(out, c >= 0x80 && c < 0xA0 ? high[c - 0x80] : c);
    return out;
}

// MariaDB's collation ids and their character sets (scripts/gen-mariadb-collations.sh).
struct CollationRange {
    int first;
    int last;
    const char* charset;
};
constexpr CollationRange collations[] = {
#include "mysqlwatch/collations.inc"
};

// The character set of a collation id; "" when the id is unknown (no metadata, or a newer server).
std::string_view charset_of(int collation) {
    auto it = std::upper_bound(std::begin(collations), std::end(collations), collation,
                               [](int id, const CollationRange& range) { return id < range.first; });
    if (it == std::begin(collations) || collation > std::prev(it)->last) return "";
    return std::prev(it)->charset;
}

// glibc iconv's name for a MariaDB character set; nullptr for the sets taken as UTF-8 (utf8mb3,
// utf8mb4, filename, unknown) and for keybcs2, which glibc does not have.
const char* iconv_name(std::string_view charset) {
    static constexpr std::pair<std::string_view, const char*> names[] = {
        {"armscii8", "ARMSCII-8"},  {"ascii", "ASCII"},
        {"big5", "BIG5"},           {"cp1250", "CP1250"},
        {"cp1251", "CP1251"},       {"cp1256", "CP1256"},
        {"cp1257", "CP1257"},       {"cp850", "CP850"},
        {"cp852", "CP852"},         {"cp866", "CP866"},
        {"cp932", "CP932"},         {"dec8", "DEC-MCS"},
        {"eucjpms", "EUC-JP-MS"},   {"euckr", "EUC-KR"},
        {"gb2312", "GB2312"},       {"gbk", "GBK"},
        {"geostd8", "GEORGIAN-PS"}, {"greek", "ISO-8859-7"},
        {"hebrew", "ISO-8859-8"},   {"hp8", "HP-ROMAN8"},
        {"koi8r", "KOI8-R"},        {"koi8u", "KOI8-U"},
        {"latin2", "ISO-8859-2"},   {"latin5", "ISO-8859-9"},
        {"latin7", "ISO-8859-13"},  {"macce", "MAC-CENTRALEUROPE"},
        {"macroman", "MACINTOSH"},  {"sjis", "SJIS"},
        {"swe7", "ISO646-SE"},      {"tis620", "TIS-620"},
        {"ucs2", "UCS-2BE"},        {"ujis", "EUC-JP"},
        {"utf16", "UTF-16BE"},      {"utf16le", "UTF-16LE"},
        {"utf32", "UTF-32BE"},
    };
    for (const auto& [name, iconv] : names)
        if (name == charset) return iconv;
    return nullptr;
}

// One iconv descriptor, closed on destruction.
class Iconv {
public:
    explicit Iconv(const char* from) : cd_(::iconv_open("UTF-8", from)) {}
    Iconv(const Iconv&) = delete;
    Iconv& operator=(const Iconv&) = delete;
    ~Iconv() {
        if (valid()) ::iconv_close(cd_);
    }
    bool valid() const { return cd_ != reinterpret_cast<iconv_t>(-1); }

    // The bytes in UTF-8, or nullopt when they are not text in the source set.
    std::optional<std::string> convert(std::string_view bytes) {
        ::iconv(cd_, nullptr, nullptr, nullptr, nullptr);  // the initial shift state
        std::string out(bytes.size() * 2 + 16, '\0');
        char* in = const_cast<char*>(bytes.data());
        std::size_t in_left = bytes.size();
        std::size_t done = 0;
        for (bool flushing = false;;) {
            char* to = out.data() + done;
            std::size_t to_left = out.size() - done;
            std::size_t rc = flushing ? ::iconv(cd_, nullptr, nullptr, &to, &to_left)
                                      : ::iconv(cd_, &in, &in_left, &to, &to_left);
            done = out.size() - to_left;
            if (rc != static_cast<std::size_t>(-1)) {
                if (flushing) break;
                flushing = true;
                continue;
            }
            if (errno != E2BIG) return std::nullopt;  // EILSEQ, EINVAL: not text in this set
            out.resize(out.size() * 2);
        }
        out.resize(done);
        return out;
    }

private:
    iconv_t cd_;
};

// A converter per character set, opened on first use and kept for the thread's lifetime;
// nullptr when iconv cannot open it.
Iconv* converter(const char* name) {
    thread_local std::map<std::string_view, std::unique_ptr<Iconv>> cache;
    auto [it, added] = cache.try_emplace(name);
    if (added) it->second = std::make_unique<Iconv>(name);
    return it->second->valid() ? it->second.get() : nullptr;
}

// Text columns become JSON strings in UTF-8, converted from their column's character set; binary
// ones, and bytes that are not text in their character set, lower-case hex. Sets without an iconv
// converter (utf8mb3/utf8mb4, filename, keybcs2, unknown collations) are given as text when the
// bytes are valid UTF-8.
ordered_json text_value(std::string_view bytes, int collation) {
    std::string_view charset = charset_of(collation);
    if (collation == 63 || charset == "binary") return hex(bytes);
    if (charset == "latin1") return latin1_to_utf8(bytes);
    if (const char* name = iconv_name(charset)) {
        if (Iconv* iconv = converter(name)) {
            if (auto text = iconv->convert(bytes)) return std::move(*text);
            return hex(bytes);
        }
    }
    if (valid_utf8(bytes)) return std::string(bytes);
    return hex(bytes);
}

std::string fraction(std::uint64_t micro, int digits) {
    if (digits <= 0) return "";
    return "." + fmt::format("{:06}", micro % 1000000).substr(0, static_cast<std::size_t>(digits));
}

std::string iso_timestamp(std::uint64_t seconds, std::uint64_t micro, int digits) {
    if (seconds == 0 && micro == 0) return "0000-00-00T00:00:00" + fraction(0, digits) + "Z";
    time_t t = static_cast<time_t>(seconds);
    struct tm tm {};
    ::gmtime_r(&t, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                       tm.tm_hour, tm.tm_min, tm.tm_sec, fraction(micro, digits));
}

// DECIMAL(precision, scale): groups of 9 digits in 4 bytes, leftover digits in 1-4 bytes, integral
// part first; the first bit is flipped, and every bit when the value is negative.
std::string decimal_value(std::string_view stored, int precision, int scale) {
    static constexpr int digit_bytes[] = {0, 1, 1, 2, 2, 3, 3, 4, 4, 4};
    int integral = precision - scale;
    if (stored.empty()) return "0";
    std::string bytes(stored);
    bool negative = (static_cast<unsigned char>(bytes[0]) & 0x80) == 0;
    bytes[0] = static_cast<char>(bytes[0] ^ 0x80);
    if (negative)
        for (char& c : bytes) c = static_cast<char>(~c);
    std::size_t at = 0;
    auto group = [&](int size) {
        std::uint64_t value = be(bytes, at, size);
        at += static_cast<std::size_t>(size);
        return value;
    };
    std::string digits;
    if (integral % 9) digits += fmt::format("{:0{}}", group(digit_bytes[integral % 9]), integral % 9);
    for (int k = 0; k < integral / 9; ++k) digits += fmt::format("{:09}", group(4));
    std::size_t first = digits.find_first_not_of('0');
    digits = first == std::string::npos ? "0" : digits.substr(first);
    std::string text = negative ? "-" + digits : digits;
    if (scale > 0) {
        text += '.';
        for (int k = 0; k < scale / 9; ++k) text += fmt::format("{:09}", group(4));
        if (scale % 9) text += fmt::format("{:0{}}", group(digit_bytes[scale % 9]), scale % 9);
    }
    return text;
}

// TIME2: 3 bytes big-endian (offset 0x800000) hours<<12 | minutes<<6 | seconds, then the fraction.
std::string time2_value(std::string_view v, int fsp) {
    std::int64_t packed = 0;
    std::int64_t intpart = static_cast<std::int64_t>(be(v, 0, 3)) - 0x800000;
    std::int64_t frac = 0;
    switch (fsp) {
        case 1:
        case 2:
            frac = static_cast<unsigned char>(v[3]);
            if (intpart < 0 && frac) {
                ++intpart;
                frac -= 0x100;
            }
            packed = intpart * (1 << 24) + frac * 10000;
            break;
        case 3:
        case 4:
            frac = static_cast<std::int64_t>(be(v, 3, 2));
            if (intpart < 0 && frac) {
                ++intpart;
                frac -= 0x10000;
            }
            packed = intpart * (1 << 24) + frac * 100;
            break;
        case 5:
        case 6: packed = static_cast<std::int64_t>(be(v, 0, 6)) - 0x800000000000LL; break;
        default: packed = intpart * (1 << 24);
    }
    bool negative = packed < 0;
    std::uint64_t magnitude =
        negative ? 0 - static_cast<std::uint64_t>(packed) : static_cast<std::uint64_t>(packed);
    std::uint64_t hms = magnitude >> 24;
    return fmt::format("{}{:02}:{:02}:{:02}{}", negative ? "-" : "", (hms >> 12) % 1024, (hms >> 6) % 64,
                       hms % 64, fraction(magnitude % (1 << 24), fsp));
}

// DATETIME2: 5 bytes big-endian (offset 0x8000000000): (year*13+month)<<22 | day<<17 | h<<12 | m<<6 | s.
std::string datetime2_value(std::string_view v, int fsp) {
    std::int64_t intpart = static_cast<std::int64_t>(be(v, 0, 5)) - 0x8000000000LL;
    std::int64_t frac = 0;
    if (fsp == 1 || fsp == 2) frac = sign_extend(be(v, 5, 1), 1) * 10000;
    if (fsp == 3 || fsp == 4) frac = sign_extend(be(v, 5, 2), 2) * 100;
    if (fsp == 5 || fsp == 6) frac = sign_extend(be(v, 5, 3), 3);
    std::int64_t packed = intpart * (1 << 24) + frac;
    std::uint64_t magnitude =
        packed < 0 ? 0 - static_cast<std::uint64_t>(packed) : static_cast<std::uint64_t>(packed);
    std::uint64_t ymdhms = magnitude >> 24, ymd = ymdhms >> 17, ym = ymd >> 5, hms = ymdhms % (1 << 17);
    return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02}{}", ym / 13, ym % 13, ymd % 32, hms >> 12,
                       (hms >> 6) % 64, hms % 64, fraction(magnitude % (1 << 24), fsp));
}

std::string names_of_set(std::uint64_t bits, const std::vector<std::string>& names) {
    std::string text;
    for (std::size_t k = 0; k < names.size() && k < 64; ++k)
        if ((bits >> k) & 1) {
            if (!text.empty()) text += ',';
            text += names[k];
        }
    return text;
}

double float_value(std::string_view v) {
    float value = std::bit_cast<float>(static_cast<std::uint32_t>(le(v, 0, 4)));
    // The shortest text that reads back as this float, as a double: 1.1 stays 1.1, not
    // 1.100000023841858.
    char text[32];
    auto [end, error] = std::to_chars(text, text + sizeof text, value);
    if (error != std::errc()) return value;
    *end = '\0';
    return std::strtod(text, nullptr);
}

ordered_json column_value(const TableMap& table, std::size_t column, std::string_view v) {
    auto type = static_cast<std::uint8_t>(table.types[column]);
    std::uint16_t meta = table.meta[column];
    bool is_unsigned = column < table.is_unsigned.size() && table.is_unsigned[column] == 1;
    int collation = column < table.collation.size() ? table.collation[column] : -1;
    auto integer = [&](std::uint64_t raw, int bytes) -> ordered_json {
        if (is_unsigned) return raw;
        return sign_extend(raw, bytes);
    };
    auto prefixed = [&](int length_bytes) { return v.substr(static_cast<std::size_t>(length_bytes)); };
    switch (real_type(type, meta)) {
        case t_tiny: return integer(le(v, 0, 1), 1);
        case t_short: return integer(le(v, 0, 2), 2);
        case t_int24: return integer(le(v, 0, 3), 3);
        case t_long: return integer(le(v, 0, 4), 4);
        case t_longlong: return integer(le(v, 0, 8), 8);
        case t_float: return float_value(v);
        case t_double: return std::bit_cast<double>(le(v, 0, 8));
        case t_newdecimal: return decimal_value(v, meta >> 8, meta & 0xFF);
        case t_year: {
            auto year = le(v, 0, 1);
            return year == 0 ? 0 : 1900 + year;
        }
        case t_date:
        case t_newdate: {
            auto packed = le(v, 0, 3);
            return fmt::format("{:04}-{:02}-{:02}", packed >> 9, (packed >> 5) & 15, packed & 31);
        }
        case t_time: {
            std::int64_t hhmmss = sign_extend(le(v, 0, 3), 3);
            std::uint64_t magnitude = hhmmss < 0 ? 0 - static_cast<std::uint64_t>(hhmmss) : hhmmss;
            return fmt::format("{}{:02}:{:02}:{:02}", hhmmss < 0 ? "-" : "", magnitude / 10000,
                               magnitude / 100 % 100, magnitude % 100);
        }
        case t_datetime: {
            std::uint64_t packed = le(v, 0, 8), date = packed / 1000000, time = packed % 1000000;
            return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", date / 10000, date / 100 % 100,
                               date % 100, time / 10000, time / 100 % 100, time % 100);
        }
        case t_timestamp: return iso_timestamp(le(v, 0, 4), 0, 0);
        case t_timestamp2: {
            std::uint64_t micro = 0;
            if (meta == 1 || meta == 2) micro = be(v, 4, 1) * 10000;
            if (meta == 3 || meta == 4) micro = be(v, 4, 2) * 100;
            if (meta == 5 || meta == 6) micro = be(v, 4, 3);
            return iso_timestamp(be(v, 0, 4), micro, meta);
        }
        case t_datetime2: return datetime2_value(v, meta);
        case t_time2: return time2_value(v, meta);
        case t_bit: return be(v, 0, static_cast<int>(v.size()));
        case t_enum: {
            auto index = le(v, 0, static_cast<int>(v.size()));
            const auto& names =
                column < table.enum_names.size() ? table.enum_names[column] : std::vector<std::string>{};
            if (names.empty()) return index;
            if (index == 0)
                return "";  // the "invalid value" MariaDB stores for a bad ENUM in non-strict mode
            if (index <= names.size()) return names[index - 1];
            return index;
        }
        case t_set: {
            auto bits = le(v, 0, static_cast<int>(v.size()));
            const auto& names =
                column < table.set_names.size() ? table.set_names[column] : std::vector<std::string>{};
            if (names.empty()) return bits;
            return names_of_set(bits, names);
        }
        case t_varchar: return text_value(prefixed(meta > 255 ? 2 : 1), collation);
        case t_string:
        case t_var_string: {
            std::size_t max_length = ((((meta >> 4) & 0x300) ^ 0x300) | (meta & 0xFF));
            std::string_view data = prefixed(max_length > 255 ? 2 : 1);
            // BINARY(N) (and INET6, UUID) lose their trailing zero bytes in the row image; the
            // column holds N bytes, so they are put back.
            if (collation == 63 && data.size() < max_length)
                return hex(std::string(data) + std::string(max_length - data.size(), '\0'));
            return text_value(data, collation);
        }
        case t_tiny_blob:
        case t_medium_blob:
        case t_long_blob:
        case t_blob: return text_value(prefixed(meta), collation);
        case t_geometry: {
            // MariaDB stores a 4-byte SRID before the WKB.
            std::string_view data = prefixed(meta);
            if (data.size() < 4) return hex(data);
            return ordered_json{{"srid", le(data, 0, 4)}, {"wkb", hex(data.substr(4))}};
        }
        case t_json: return hex(prefixed(meta));  // MySQL's binary JSON; MariaDB writes JSON as LONGTEXT
        case t_null: return nullptr;
        default: return hex(v);
    }
}

bool bit_at(std::string_view bitmap, std::size_t index) {
    return (static_cast<unsigned char>(bitmap[index / 8]) >> (index % 8)) & 1;
}

// Optional-metadata bitmaps are most-significant bit first.
bool msb_bit_at(std::string_view bitmap, std::size_t index) {
    if (index / 8 >= bitmap.size()) return false;
    return (static_cast<unsigned char>(bitmap[index / 8]) >> (7 - index % 8)) & 1;
}

}  // namespace

void parse_optional_metadata(TableMap& table, std::string_view fields) {
    std::size_t columns = table.types.size();
    table.is_unsigned.assign(columns, -1);
    table.collation.assign(columns, -1);
    table.enum_names.assign(columns, {});
    table.set_names.assign(columns, {});
    table.names.clear();
    auto type_of = [&](std::size_t column) { return static_cast<std::uint8_t>(table.types[column]); };
    // Columns a field lists, in order: the numeric ones, the character ones, ...
    auto columns_where = [&](auto predicate) {
        std::vector<std::size_t> list;
        for (std::size_t column = 0; column < columns; ++column)
            if (predicate(type_of(column), table.meta[column])) list.push_back(column);
        return list;
    };
    auto numeric = columns_where([](std::uint8_t type, std::uint16_t) { return is_numeric(type); });
    auto character = columns_where(is_character);
    auto enum_or_set = columns_where(is_enum_or_set);
    auto enums = columns_where([](std::uint8_t t, std::uint16_t m) { return real_type(t, m) == t_enum; });
    auto sets = columns_where([](std::uint8_t t, std::uint16_t m) { return real_type(t, m) == t_set; });

    std::size_t at = 0;
    while (at < fields.size()) {
        auto kind = static_cast<unsigned char>(fields[at++]);
        auto length = packed_int(fields, at);
        if (!length || *length > fields.size() - at) return;
        std::string_view value = fields.substr(at, *length);
        at += *length;
        std::size_t in = 0;
        // DEFAULT_CHARSET: the default collation, then (index among `list`, collation) exceptions.
        auto default_charset = [&](const std::vector<std::size_t>& list) {
            auto fallback = packed_int(value, in);
            if (!fallback) return;
            for (std::size_t column : list) table.collation[column] = static_cast<int>(*fallback);
            while (in < value.size()) {
                auto index = packed_int(value, in);
                auto collation = packed_int(value, in);
                if (!index || !collation) return;
                if (*index < list.size()) table.collation[list[*index]] = static_cast<int>(*collation);
            }
        };
        auto column_charset = [&](const std::vector<std::size_t>& list) {
            for (std::size_t column : list) {
                auto collation = packed_int(value, in);
                if (!collation) return;
                table.collation[column] = static_cast<int>(*collation);
            }
        };
        auto string_values = [&](const std::vector<std::size_t>& list,
                                 std::vector<std::vector<std::string>>& into) {
            for (std::size_t column : list) {
                auto count = packed_int(value, in);
                if (!count || *count > value.size()) return;
                std::vector<std::string> names;
                for (std::uint64_t k = 0; k < *count; ++k) {
                    auto size = packed_int(value, in);
                    if (!size || *size > value.size() - in) return;
                    names.emplace_back(value.substr(in, *size));
                    in += *size;
                }
                into[column] = std::move(names);
            }
        };
        switch (kind) {
            case 1:  // SIGNEDNESS
                for (std::size_t k = 0; k < numeric.size(); ++k)
                    table.is_unsigned[numeric[k]] = msb_bit_at(value, k) ? 1 : 0;
                break;
            case 2: default_charset(character); break;
            case 3: column_charset(character); break;
            case 4: {  // COLUMN_NAME
                std::vector<std::string> names;
                while (in < value.size() && names.size() < columns) {
                    auto size = packed_int(value, in);
                    if (!size || *size > value.size() - in) break;
                    names.emplace_back(value.substr(in, *size));
                    in += *size;
                }
                if (names.size() == columns) table.names = std::move(names);
                break;
            }
            case 5: string_values(sets, table.set_names); break;
            case 6: string_values(enums, table.enum_names); break;
            case 10: default_charset(enum_or_set); break;
            case 11: column_charset(enum_or_set); break;
            default: break;  // geometry types, primary key, visibility: not needed for the values
        }
    }
}

std::vector<RowImage> decode_rows(const TableMap& table, std::string_view body, RowsKind kind) {
    std::size_t at = 0;
    auto columns = packed_int(body, at);
    if (!columns || *columns != table.types.size() || table.meta.size() != table.types.size())
        throw DataError(fmt::format("rows event for {}.{}: {} columns, the table map has {}", table.db,
                                    table.table, columns ? *columns : 0, table.types.size()));
    bool update = kind == RowsKind::update;
    std::size_t bitmap_bytes = (*columns + 7) / 8;
    if (at + bitmap_bytes * (update ? 2 : 1) > body.size())
        throw DataError(fmt::format("rows event for {}.{}: truncated column bitmap", table.db, table.table));
    std::string_view present[2] = {body.substr(at, bitmap_bytes),
                                   body.substr(at + (update ? bitmap_bytes : 0), bitmap_bytes)};
    at += bitmap_bytes * (update ? 2 : 1);
    bool named = table.names.size() == *columns;
    auto name = [&](std::size_t column) {
        return named ? table.names[column] : fmt::format("@{}", column + 1);
    };
    auto fail = [&](std::size_t column, std::string_view fault) {
        return DataError(fmt::format(
            "rows event for {}.{}: column {} ({} type {}): {}", table.db, table.table, column + 1,
            name(column), static_cast<unsigned>(static_cast<unsigned char>(table.types[column])), fault));
    };

    std::vector<RowImage> rows;
    while (at < body.size()) {
        std::size_t row_start = at;
        RowImage row;
        for (int image = 0; image < (update ? 2 : 1); ++image) {
            std::size_t present_count = 0;
            for (std::size_t column = 0; column < *columns; ++column)
                present_count += bit_at(present[image], column);
            std::size_t null_bytes = (present_count + 7) / 8;
            if (at + null_bytes > body.size())
                throw DataError(
                    fmt::format("rows event for {}.{}: truncated null bitmap", table.db, table.table));
            std::string_view nulls = body.substr(at, null_bytes);
            at += null_bytes;
            ordered_json values = ordered_json::object();
            std::size_t present_index = 0;
            for (std::size_t column = 0; column < *columns; ++column) {
                if (!bit_at(present[image], column)) continue;
                bool is_null = bit_at(nulls, present_index++);
                if (is_null) {
                    values[name(column)] = nullptr;
                    continue;
                }
                auto type = static_cast<std::uint8_t>(table.types[column]);
                auto size = value_size(type, table.meta[column], body, at);
                if (!size) throw fail(column, "a type or metadata this decoder cannot size");
                if (*size > body.size() - at) throw fail(column, "value runs past the end of the event");
                values[name(column)] = column_value(table, column, body.substr(at, *size));
                at += *size;
            }
            bool before = kind == RowsKind::remove || (update && image == 0);
            (before ? row.before : row.after) = std::move(values);
        }
        if (at == row_start)
            throw DataError(fmt::format("rows event for {}.{}: no column present", table.db, table.table));
        rows.push_back(std::move(row));
    }
    return rows;
}

}  // namespace ktricks::mysqlwatch
