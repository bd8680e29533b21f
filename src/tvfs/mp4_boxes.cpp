#include "tvfs/mp4_boxes.hpp"

#include <fmt/format.h>

#include <cstring>
#include <limits>

#include "ktricks/core/error.hpp"

namespace ktricks::tvfs {
namespace {

[[noreturn]] void refuse(std::string_view what) {
    throw DataError(fmt::format("MP4 boxes of the remux: {}", what));
}

std::uint32_t be32(std::string_view data, std::size_t at) {
    auto* p = reinterpret_cast<const unsigned char*>(data.data() + at);
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}
std::uint64_t be64(std::string_view data, std::size_t at) {
    return (std::uint64_t{be32(data, at)} << 32) | be32(data, at + 4);
}
void put32(std::string& out, std::uint32_t value) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((value >> shift) & 0xff));
}
void put64(std::string& out, std::uint64_t value) {
    put32(out, static_cast<std::uint32_t>(value >> 32));
    put32(out, static_cast<std::uint32_t>(value));
}

struct Box {
    std::string_view type;
    std::size_t header = 0;  // 8, or 16 with a 64-bit size
    std::uint64_t size = 0;  // header included
};

// The box header at DATA[AT]. Unless OPEN_ENDED (an mdat whose payload lies beyond DATA), the box
// must fit in DATA. A size of 0 ("to the end of the file") is refused: libavformat never writes it.
Box read_box(std::string_view data, std::size_t at, bool open_ended = false) {
    if (data.size() - at < 8) refuse("a box header is cut short");
    Box box{data.substr(at + 4, 4), 8, be32(data, at)};
    if (box.size == 1) {
        if (data.size() - at < 16) refuse("a 64-bit box size is cut short");
        box.header = 16;
        box.size = be64(data, at + 8);
    }
    if (box.size < box.header) refuse(fmt::format("box '{}' has size {}", box.type, box.size));
    if (!open_ended && box.size > data.size() - at)
        refuse(fmt::format("box '{}' ({} bytes) overruns its parent", box.type, box.size));
    return box;
}

void put_box(std::string& out, std::string_view type, std::string_view payload) {
    std::uint64_t size = 8 + payload.size();
    if (size > std::numeric_limits<std::uint32_t>::max()) {
        put32(out, 1);
        out.append(type);
        put64(out, size + 8);
    } else {
        put32(out, static_cast<std::uint32_t>(size));
        out.append(type);
    }
    out.append(payload);
}

// A chunk offset table (stco or co64 payload) with SHIFT added to every entry.
void shift_table(std::string& out, std::string_view type, std::string_view payload, std::uint64_t shift) {
    bool wide = type == "co64";
    std::size_t entry = wide ? 8 : 4;
    if (payload.size() < 8) refuse(fmt::format("'{}' is cut short", type));
    std::uint64_t count = be32(payload, 4);
    if (count != (payload.size() - 8) / entry || (payload.size() - 8) % entry != 0)
        refuse(fmt::format("'{}' says {} entries in {} bytes", type, count, payload.size()));
    bool grow = false;
    for (std::uint64_t i = 0; i < count && !wide; ++i)
        grow |= be32(payload, 8 + i * 4) + shift > std::numeric_limits<std::uint32_t>::max();
    std::string table(payload.substr(0, 8));
    for (std::uint64_t i = 0; i < count; ++i) {
        std::uint64_t value = wide ? be64(payload, 8 + i * 8) : be32(payload, 8 + i * 4);
        if (value > std::numeric_limits<std::uint64_t>::max() - shift) refuse("a chunk offset overflows");
        if (wide || grow) put64(table, value + shift);
        else
            put32(table, static_cast<std::uint32_t>(value + shift));
    }
    put_box(out, wide || grow ? "co64" : "stco", table);
}

// The children of a container box (PAYLOAD), with chunk offsets shifted down the path to stco.
std::string shift_children(std::string_view payload, std::uint64_t shift, int depth) {
    std::string out;
    for (std::size_t at = 0; at < payload.size();) {
        auto box = read_box(payload, at);
        auto body = payload.substr(at + box.header, static_cast<std::size_t>(box.size) - box.header);
        if (box.type == "stco" || box.type == "co64") {
            shift_table(out, box.type, body, shift);
        } else if (depth < 4 &&
                   (box.type == "trak" || box.type == "mdia" || box.type == "minf" || box.type == "stbl")) {
            put_box(out, box.type, shift_children(body, shift, depth + 1));
        } else {
            out.append(payload.substr(at, static_cast<std::size_t>(box.size)));
        }
        at += static_cast<std::size_t>(box.size);
    }
    return out;
}

}  // namespace

PlainMdat parse_plain_header(std::string_view header) {
    PlainMdat mdat;
    auto ftyp = read_box(header, 0);
    if (ftyp.type != "ftyp") refuse("the file does not start with 'ftyp'");
    mdat.ftyp_bytes = ftyp.size;
    for (std::size_t at = static_cast<std::size_t>(ftyp.size); at < header.size();) {
        auto box = read_box(header, at, true);
        if (box.type == "mdat") {
            if (at + box.header != header.size()) refuse("'mdat' is not where its payload starts");
            mdat.payload_start = header.size();
            mdat.payload_bytes = box.size - box.header;
            return mdat;
        }
        if (box.type != "free" && box.type != "wide" && box.type != "skip")
            refuse(fmt::format("unexpected box '{}' before 'mdat'", box.type));
        if (box.size > header.size() - at) refuse(fmt::format("box '{}' overruns the header", box.type));
        at += static_cast<std::size_t>(box.size);
    }
    refuse("no 'mdat' after 'ftyp'");
}

std::string shift_chunk_offsets(std::string_view moov, std::uint64_t shift) {
    auto box = read_box(moov, 0);
    if (box.type != "moov" || box.size != moov.size()) refuse("not exactly one 'moov' box");
    std::string out;
    put_box(
        out, "moov",
        shift_children(moov.substr(box.header, static_cast<std::size_t>(box.size) - box.header), shift, 0));
    return out;
}

std::string faststart_head(std::string_view header, std::string_view moov) {
    auto mdat = parse_plain_header(header);
    // Moving moov in front shifts every chunk by moov's new size, which itself grows when a table
    // becomes co64; tables only ever grow, so this reaches a fixed point in a few rounds.
    std::uint64_t shift = moov.size();
    std::string shifted = shift_chunk_offsets(moov, shift);
    for (int round = 0; shifted.size() != shift; ++round) {
        if (round == 8) refuse("moov's size does not settle");
        shift = shifted.size();
        shifted = shift_chunk_offsets(moov, shift);
    }
    std::string head(header.substr(0, static_cast<std::size_t>(mdat.ftyp_bytes)));
    head += shifted;
    head += header.substr(static_cast<std::size_t>(mdat.ftyp_bytes));
    return head;
}

PlainMdat parse_faststart_head(std::string_view head) {
    auto ftyp = read_box(head, 0);
    if (ftyp.type != "ftyp") refuse("the head does not start with 'ftyp'");
    auto moov = read_box(head, static_cast<std::size_t>(ftyp.size));
    if (moov.type != "moov") refuse("no 'moov' after 'ftyp' in the head");
    std::string plain(head.substr(0, static_cast<std::size_t>(ftyp.size)));
    plain += head.substr(static_cast<std::size_t>(ftyp.size + moov.size));
    return parse_plain_header(plain);
}

}  // namespace ktricks::tvfs
