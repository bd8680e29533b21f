// The faststart head of a streamed remux, built from the boxes of a plain MP4 (private to tvfs).
//
// libavformat's MP4 muxer without `+faststart` writes: ftyp, a `free`/`wide` placeholder, the mdat
// header, mdat's payload (the packets), and moov at the trailer. `+faststart` moves moov in front of
// the placeholder and adds moov's size to every chunk offset (stco, co64) of every track; a 32-bit
// stco whose offsets no longer fit becomes co64, which makes moov larger, so the size is iterated
// (as libavformat's own compute_moov_size does). These functions do that move on bytes: the head is
// ftyp + moov' + placeholder + mdat header, and the faststart file is the head followed by mdat's
// payload exactly as the plain muxer writes it. The bytes come from libavformat fed by outside media:
// a malformed box is refused with a DataError, never read past.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ktricks::tvfs {

// Where mdat's payload lies in the plain MP4.
struct PlainMdat {
    std::uint64_t ftyp_bytes = 0;     // the ftyp box, first in the file
    std::uint64_t payload_start = 0;  // = the size of HEADER below
    std::uint64_t payload_bytes = 0;  // from mdat's (patched) size
};

// HEADER: the plain MP4's bytes before mdat's payload (ftyp, placeholders, mdat header).
PlainMdat parse_plain_header(std::string_view header);

// MOOV (one moov box) with every stco/co64 entry raised by SHIFT; an stco entry that would exceed
// 32 bits turns its table into co64. Boxes outside moov/trak/mdia/minf/stbl are copied unchanged.
std::string shift_chunk_offsets(std::string_view moov, std::uint64_t shift);

// The faststart head from the plain MP4's HEADER and its MOOV (written right after the payload).
std::string faststart_head(std::string_view header, std::string_view moov);

// What a head made by faststart_head says: where the payload lies in the plain MP4 (payload_start,
// payload_bytes) and, in the faststart file, the payload starts at HEAD's size.
PlainMdat parse_faststart_head(std::string_view head);

}  // namespace ktricks::tvfs
