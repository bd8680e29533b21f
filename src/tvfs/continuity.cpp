#include "tvfs/continuity.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string_view>
#include <vector>

namespace ktricks::tvfs {
namespace {

constexpr std::size_t packet_size = 188;
constexpr int null_pid = 0x1fff;

int pid_of(std::string_view p) { return (std::uint8_t(p[1]) & 0x1f) << 8 | std::uint8_t(p[2]); }
bool unit_start(std::string_view p) { return std::uint8_t(p[1]) & 0x40; }
int field_control(std::string_view p) { return std::uint8_t(p[3]) >> 4 & 3; }
bool has_payload(std::string_view p) { return field_control(p) & 1; }
std::string_view payload(std::string_view p) {
    std::size_t start = 4;
    if (field_control(p) & 2) start += 1 + std::uint8_t(p[4]);
    return start < packet_size ? p.substr(start) : std::string_view();
}

// One packet of PID carrying PIECE, the rest of its 184 bytes adaptation-field stuffing.
void append_piece(std::string& out, std::string_view header, bool start, std::string_view piece) {
    std::size_t at = out.size();
    out.append(header.substr(0, 4));
    out[at + 1] = static_cast<char>((std::uint8_t(header[1]) & ~0x40) | (start ? 0x40 : 0));
    if (piece.size() == 184) {
        out[at + 3] = static_cast<char>((std::uint8_t(header[3]) & 0xcf) | 0x10);
    } else {
        out[at + 3] = static_cast<char>((std::uint8_t(header[3]) & 0xcf) | 0x30);
        std::size_t length = 183 - piece.size();  // adaptation_field_length
        out += static_cast<char>(length);
        if (length > 0) {
            out += '\0';  // no flags: no PCR, no discontinuity, no random access mark
            out.append(length - 1, '\xff');
        }
    }
    out.append(piece);
}

// The first piece of a packet with an adaptation field: its header and adaptation field as they
// were (flags, PCR, random access mark), more stuffing, then PIECE.
void append_first_piece(std::string& out, std::string_view packet, std::string_view piece) {
    std::size_t at = out.size();
    out.append(packet.substr(0, 4));
    out[at + 3] = static_cast<char>((std::uint8_t(packet[3]) & 0xcf) | 0x30);
    std::size_t old_length = std::uint8_t(packet[4]), length = 183 - piece.size();  // piece <= old payload
    out += static_cast<char>(length);
    std::size_t written = 0;
    if (old_length > 0) out.append(packet.substr(5, old_length)), written = old_length;
    else if (length > 0)
        out += '\0', written = 1;
    out.append(length - written, '\xff');
    out.append(piece);
}

// Bytes of a PES packet's header at the front of PAYLOAD (a unit start), 0 if it is not one.
std::size_t pes_header_size(std::string_view payload) {
    if (payload.size() < 9 || !payload.starts_with(std::string_view("\0\0\1", 3))) return 0;
    std::size_t size = 9 + std::uint8_t(payload[8]);
    return size <= payload.size() ? size : 0;
}

}  // namespace

void continue_counters(std::string& data) {
    if (data.size() % packet_size != 0) throw std::runtime_error("MPEG-TS segment not packet aligned");
    const std::size_t count = data.size() / packet_size;
    auto packet = [&](std::size_t i) { return std::string_view(data).substr(i * packet_size, packet_size); };
    struct Pid {
        bool pes = false;
        std::size_t payload_packets = 0;
        // Full-payload packets without adaptation field (continuations first, then unit starts); table starts.
        std::vector<std::size_t> whole, whole_starts, starts;
        // PES starts with an adaptation field (random access mark, PCR): split, keeping the field
        // and the PES header in the first piece, only when there is no whole packet (a short last
        // segment whose few AAC frames each fit one packet; issue 19).
        std::vector<std::size_t> field_starts;
    };
    std::map<int, Pid> pids;
    for (std::size_t i = 0; i < count; ++i) {
        auto p = packet(i);
        if (p[0] != 0x47)
            throw std::runtime_error(fmt::format("MPEG-TS segment: no sync byte in packet {}", i));
        int pid = pid_of(p);
        if (pid == null_pid || !has_payload(p)) continue;
        auto& state = pids[pid];
        ++state.payload_packets;
        if (unit_start(p)) {
            state.starts.push_back(i);
            if (field_control(p) == 1) state.whole_starts.push_back(i);
            if (payload(p).starts_with(std::string_view("\0\0\1", 3))) state.pes = true;
            if (field_control(p) == 3 && pes_header_size(payload(p)) > 0) state.field_starts.push_back(i);
        } else if (field_control(p) == 1) {
            state.whole.push_back(i);
        }
    }
    // extra[i]: how many packets packet i becomes beyond itself.
    std::vector<int> extra(count, 0);
    for (auto& [pid, state] : pids) {
        std::size_t needed = (16 - state.payload_packets % 16) % 16;
        if (needed == 0) continue;
        // PSI: repeat table starts (sections here fit one packet); PES: split full packets, spread out.
        // A PES packet with an adaptation field (PCR, random access mark) is never split.
        if (state.pes)
            state.whole.insert(state.whole.end(), state.whole_starts.begin(), state.whole_starts.end());
        if (state.pes && state.whole.empty()) state.whole = state.field_starts;
        auto& candidates = state.pes ? state.whole : state.starts;
        if (candidates.empty())
            throw std::runtime_error(
                fmt::format("MPEG-TS segment: PID {} has no packet to repeat or split", pid));
        for (std::size_t j = 0; j < needed; ++j)
            ++extra[candidates[(j * candidates.size() / needed + candidates.size() / (2 * needed)) %
                               candidates.size()]];
    }
    std::string out;
    out.reserve(data.size() + packet_size * 16 * pids.size());
    for (std::size_t i = 0; i < count; ++i) {
        auto p = packet(i);
        if (extra[i] == 0) {
            out.append(p);
        } else if (!pids[pid_of(p)].pes) {
            for (int copy = 0; copy <= extra[i]; ++copy) out.append(p);
        } else {
            auto bytes = payload(p);
            std::size_t pieces = static_cast<std::size_t>(extra[i]) + 1;
            if (field_control(p) == 1) {
                for (std::size_t piece = 0, done = 0; piece < pieces; ++piece) {
                    std::size_t size = bytes.size() * (piece + 1) / pieces - done;
                    append_piece(out, p, piece == 0 && unit_start(p), bytes.substr(done, size));
                    done += size;
                }
                continue;
            }
            // A start with an adaptation field: the PES header stays whole in the first piece, the
            // elementary bytes after it are shared out, at least one per piece.
            std::size_t keep = pes_header_size(bytes), rest = bytes.size() - keep;
            if (rest < pieces)
                throw std::runtime_error(fmt::format(
                    "MPEG-TS segment: PID {} has too few bytes to split into {} packets", pid_of(p), pieces));
            std::size_t done = keep + rest / pieces;
            append_first_piece(out, p, bytes.substr(0, done));
            for (std::size_t piece = 1; piece < pieces; ++piece) {
                std::size_t size = keep + rest * (piece + 1) / pieces - done;
                append_piece(out, p, false, bytes.substr(done, size));
                done += size;
            }
        }
    }
    // Number them: payload packets count up from 0; a packet without payload repeats the last value.
    std::map<int, unsigned> next;
    for (std::size_t at = 0; at < out.size(); at += packet_size) {
        std::string_view p(out.data() + at, packet_size);
        int pid = pid_of(p);
        if (pid == null_pid) continue;
        unsigned& counter = next[pid];
        unsigned cc = has_payload(p) ? counter++ & 15 : (counter + 15) & 15;
        out[at + 3] = static_cast<char>((std::uint8_t(out[at + 3]) & 0xf0) | cc);
    }
    data = std::move(out);
}

}  // namespace ktricks::tvfs
