// --record / --replay: the raw netlink stream with timestamps.
//
// File format (all integers little-endian, as on the machines that run this):
//   "ktricks-netwatch-record 1\n"
//   then records: u8 kind, u64 wall-clock nanoseconds, u32 length, `length` bytes.
// rtnetlink messages are stored exactly as the kernel sent them (one nlmsghdr each); dumps are
// bracketed by dump_begin/dump_end so a replay rebuilds the cache the same way. nl80211 messages
// are stored raw too, but a connect needs the answers of our own follow-up queries, so the
// decoded result of each connect/disconnect is stored as well (wifi_change, a JSON object), and
// that is what the replay applies.
#pragma once

#include <linux/netlink.h>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include "netwatch/state.hpp"

namespace ktricks::netwatch {

enum class RecordKind : std::uint8_t {
    event = 1,
    dump_begin,
    dump,
    dump_end,
    overrun,
    wifi_event,
    wifi_query,
    wifi_change
};
struct Record {
    static constexpr RecordKind event = RecordKind::event, dump_begin = RecordKind::dump_begin,
                                dump = RecordKind::dump, dump_end = RecordKind::dump_end,
                                overrun = RecordKind::overrun, wifi_event = RecordKind::wifi_event,
                                wifi_query = RecordKind::wifi_query, wifi_change = RecordKind::wifi_change;
    RecordKind kind = RecordKind::event;
    std::uint64_t nanoseconds = 0;
    std::string bytes;  // aligned copy for message()
    Change change;      // wifi_change only

    // The stored message, or a harmless empty one if the bytes are too short to be one.
    const nlmsghdr* message() const;
};

class Recorder {
public:
    explicit Recorder(const std::string& path);
    ~Recorder();
    Recorder(const Recorder&) = delete;
    Recorder& operator=(const Recorder&) = delete;

    void message(RecordKind kind, const nlmsghdr& message);
    void begin_dump() { write(RecordKind::dump_begin, {}); }
    void end_dump() { write(RecordKind::dump_end, {}); }
    void overrun() { write(RecordKind::overrun, {}); }
    void wifi(const Change& change);

private:
    void write(RecordKind kind, std::string_view bytes);
    std::FILE* file_ = nullptr;
    std::string path_;
};

class Player {
public:
    explicit Player(const std::string& path);
    ~Player();
    Player(const Player&) = delete;
    Player& operator=(const Player&) = delete;
    // The next record; nullopt at the end. Throws InputError "FILE: ..." for a damaged file.
    std::optional<Record> next();

private:
    std::FILE* file_ = nullptr;
    std::string path_;
};

// Decodes one record body from memory (for the fuzzer and Player): kind, time, bytes.
std::optional<Record> parse_record(std::string_view data, std::size_t& offset, const std::string& source);

}  // namespace ktricks::netwatch
