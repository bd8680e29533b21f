// MPEG-TS continuity counters that run on across independently muxed segments (private to tvfs).
#pragma once

#include <string>

namespace ktricks::tvfs {

// Makes the TS packets in DATA (one segment, a whole number of 188-byte packets, as FFmpeg's mpegts
// muxer wrote them) carry, on every PID, a number of payload packets that is a multiple of 16, with
// counters 0, 1, ... 15, 0, ... So every segment starts each PID at 0 exactly where the segment
// before it left off at 15, without knowing anything about that segment: a segment made alone (a
// seek, a cache eviction) has the same bytes as one made in sequence, and a demuxer reading the
// segments one after another sees no discontinuity (ISO/IEC 13818-1 2.4.3.3: the counter increases
// by one per packet with payload; a packet without payload repeats it).
// The extra packets carry no new data:
//   - PSI PIDs (PAT, PMT, SDT): a table packet repeated right after itself (a repeated section of
//     the same version, which decoders ignore);
//   - PES PIDs: a packet with a full payload split in two, each half padded by adaptation-field
//     stuffing (the elementary stream bytes are the same, only spread over one more packet).
// Null packets (PID 0x1FFF) are left alone: their counter is undefined. Throws std::runtime_error if
// DATA is not packet-aligned or a PES PID has no packet that can be split (never seen from FFmpeg).
void continue_counters(std::string& data);

}  // namespace ktricks::tvfs
