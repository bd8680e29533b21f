// Table and database names as MariaDB stores them on disk. The server converts an identifier to its
// "filename" character set before it touches the file system: [0-9A-Za-z_] stay, letters of the
// common alphabets become `@` plus two characters from a fixed table, everything else `@` plus four
// lower-case hex digits. Partitions add `#P#name` (and `#SP#name`), work files start with `#sql`.
#include <array>
#include <cstdint>
#include <map>
#include <unordered_map>

#include "ktricks/mysqlwatch.hpp"
#include "mysqlwatch/rows.hpp"

namespace ktricks::mysqlwatch {
namespace {

struct Run {
    std::uint16_t index;
    std::uint16_t first;
    std::uint16_t count;
    std::uint16_t step;
};

constexpr Run letter_runs[] = {
#include "mysqlwatch/filename_table.inc"
};

// Two-character codes index 0..(0x7F-0x30)*80+(0x7F-0x30); the table uses far fewer.
constexpr int code_space = (0x80 - 0x30) * 80;

struct Tables {
    std::array<std::uint16_t, code_space> to_unicode{};
    std::unordered_map<std::uint32_t, std::uint16_t> to_index;
    Tables() {
        for (const Run& run : letter_runs)
            for (int i = 0; i < run.count; ++i) {
                std::uint32_t code_point = run.first + i * run.step;
                to_unicode[run.index + i] = static_cast<std::uint16_t>(code_point);
                to_index.emplace(code_point, static_cast<std::uint16_t>(run.index + i));
            }
    }
};

const Tables& tables() {
    static const Tables instance;
    return instance;
}

bool is_safe(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

// MariaDB writes lower-case hex and reads nothing else.
int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

}  // namespace

void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

namespace {

// One UTF-8 character from `text` at `i` (advanced); nullopt if malformed or beyond the BMP
// (the filename set has no encoding for those: the server stores `?`).
std::optional<std::uint32_t> next_utf8(std::string_view text, std::size_t& i) {
    auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
    unsigned char lead = byte(i);
    int extra = lead < 0x80 ? 0 : (lead & 0xE0) == 0xC0 ? 1 : (lead & 0xF0) == 0xE0 ? 2 : -1;
    if (extra < 0 || i + extra >= text.size()) return std::nullopt;
    std::uint32_t cp = extra == 0 ? lead : extra == 1 ? (lead & 0x1F) : (lead & 0x0F);
    for (int k = 1; k <= extra; ++k) {
        if ((byte(i + k) & 0xC0) != 0x80) return std::nullopt;
        cp = (cp << 6) | (byte(i + k) & 0x3F);
    }
    if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800)) return std::nullopt;  // overlong
    i += extra + 1;
    return cp;
}

}  // namespace

std::optional<std::string> decode_filename(std::string_view name) {
    const Tables& table = tables();
    std::string out;
    out.reserve(name.size());
    for (std::size_t i = 0; i < name.size();) {
        unsigned char c = static_cast<unsigned char>(name[i]);
        if (c != '@') {
            // The server writes only safe characters unescaped; names it reads back may hold others
            // (a table file created by hand). They are kept as they are when they are ASCII.
            if (c >= 0x80 || c < 0x20) return std::nullopt;
            out += static_cast<char>(c);
            ++i;
            continue;
        }
        if (i + 2 < name.size()) {
            unsigned char a = static_cast<unsigned char>(name[i + 1]),
                          b = static_cast<unsigned char>(name[i + 2]);
            if (a >= 0x30 && a <= 0x7F && b >= 0x30 && b <= 0x7F) {
                int index = (a - 0x30) * 80 + (b - 0x30);
                if (table.to_unicode[index] != 0) {
                    append_utf8(out, table.to_unicode[index]);
                    i += 3;
                    continue;
                }
            }
        }
        if (i + 4 < name.size()) {
            int d1 = hex_digit(name[i + 1]), d2 = hex_digit(name[i + 2]), d3 = hex_digit(name[i + 3]),
                d4 = hex_digit(name[i + 4]);
            if (d1 >= 0 && d2 >= 0 && d3 >= 0 && d4 >= 0) {
                std::uint32_t cp = (d1 << 12) | (d2 << 8) | (d3 << 4) | d4;
                if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) return std::nullopt;
                append_utf8(out, cp);
                i += 5;
                continue;
            }
        }
        return std::nullopt;
    }
    return out;
}

std::optional<std::string> encode_filename(std::string_view identifier) {
    const Tables& table = tables();
    std::string out;
    for (std::size_t i = 0; i < identifier.size();) {
        auto cp = next_utf8(identifier, i);
        if (!cp || *cp == 0 || (*cp >= 0xD800 && *cp <= 0xDFFF)) return std::nullopt;
        if (*cp < 0x80 && is_safe(static_cast<unsigned char>(*cp))) {
            out += static_cast<char>(*cp);
        } else if (auto found = table.to_index.find(*cp); found != table.to_index.end()) {
            out += '@';
            out += static_cast<char>(found->second / 80 + 0x30);
            out += static_cast<char>(found->second % 80 + 0x30);
        } else {
            static constexpr char digits[] = "0123456789abcdef";
            out += '@';
            for (int shift = 12; shift >= 0; shift -= 4) out += digits[(*cp >> shift) & 0xF];
        }
    }
    return out;
}

std::optional<TableFile> parse_table_file(std::string_view file_name) {
    auto dot = file_name.rfind('.');
    if (dot == std::string_view::npos || dot == 0) return std::nullopt;
    TableFile file;
    file.extension = std::string(file_name.substr(dot + 1));
    std::string_view stem = file_name.substr(0, dot);
    static const std::map<std::string, std::string, std::less<>> engines = {
        {"ibd", "InnoDB"}, {"MYD", "MyISAM"}, {"MYI", "MyISAM"}, {"MAD", "Aria"},    {"MAI", "Aria"},
        {"frm", ""},       {"par", ""},       {"CSV", "CSV"},    {"ARZ", "ARCHIVE"}, {"isl", "InnoDB"},
    };
    auto engine = engines.find(file.extension);
    if (engine == engines.end()) return std::nullopt;
    file.engine = engine->second;
    if (stem.starts_with("#sql")) {
        file.temporary = true;
        file.table = std::string(stem);
        return file;
    }
    // `t#P#p0`, `t#P#p0#SP#p0sp0`; servers before 5.1 wrote `#p#`/`#sp#`.
    for (std::string_view marker : {"#P#", "#p#"}) {
        if (auto at = stem.find(marker); at != std::string_view::npos) {
            file.partition = true;
            stem = stem.substr(0, at);
            break;
        }
    }
    // Names from before MySQL 5.1.6 kept their raw bytes behind this prefix.
    if (stem.starts_with("#mysql50#")) {
        file.table = std::string(stem.substr(9));
        return file;
    }
    auto decoded = decode_filename(stem);
    if (!decoded || decoded->empty()) return std::nullopt;
    file.table = std::move(*decoded);
    return file;
}

}  // namespace ktricks::mysqlwatch
