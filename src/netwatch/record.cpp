#include "netwatch/record.hpp"

#include <fcntl.h>

#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "ktricks/core/error.hpp"

namespace ktricks::netwatch {

static constexpr std::string_view magic = "ktricks-netwatch-record 1\n";

const nlmsghdr* Record::message() const {
    static const nlmsghdr empty{NLMSG_HDRLEN, NLMSG_NOOP, 0, 0, 0};
    if (bytes.size() < NLMSG_HDRLEN) return &empty;
    auto* header = reinterpret_cast<const nlmsghdr*>(bytes.data());
    if (header->nlmsg_len < NLMSG_HDRLEN || header->nlmsg_len > bytes.size()) return &empty;
    return header;
}

Recorder::Recorder(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw_errno("open", path);
    file_ = ::fdopen(fd, "w");
    if (!file_) throw_errno("fdopen", path);
    std::fwrite(magic.data(), 1, magic.size(), file_);
    std::fflush(file_);
}

Recorder::~Recorder() {
    if (file_) std::fclose(file_);
}

void Recorder::write(RecordKind kind, std::string_view bytes) {
    auto now = std::chrono::system_clock::now().time_since_epoch();
    std::uint64_t nanoseconds =
        static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count());
    std::uint32_t length = static_cast<std::uint32_t>(bytes.size());
    auto k = static_cast<std::uint8_t>(kind);
    std::fwrite(&k, 1, 1, file_);
    std::fwrite(&nanoseconds, sizeof(nanoseconds), 1, file_);
    std::fwrite(&length, sizeof(length), 1, file_);
    std::fwrite(bytes.data(), 1, bytes.size(), file_);
    // Flushed per record: a bug report is most useful up to the moment things went wrong.
    std::fflush(file_);
}

void Recorder::message(RecordKind kind, const nlmsghdr& message) {
    write(kind, std::string_view(reinterpret_cast<const char*>(&message), message.nlmsg_len));
}

void Recorder::wifi(const Change& change) {
    nlohmann::json json = {{"kind", change.kind == Change::Kind::wifi_disconnect ? "disconnect"
                                    : change.kind == Change::Kind::wifi_roam     ? "roam"
                                                                                 : "connect"},
                           {"ifindex", change.wifi.index},
                           {"ssid", change.wifi.ssid},
                           {"bssid", change.wifi.bssid},
                           {"freq", change.wifi.freq}};
    if (change.wifi.signal) json["signal"] = *change.wifi.signal;
    write(RecordKind::wifi_change, json.dump());
}

std::optional<Record> parse_record(std::string_view data, std::size_t& offset, const std::string& source) {
    if (offset >= data.size()) return std::nullopt;
    constexpr std::size_t head = 1 + 8 + 4;
    if (data.size() - offset < head)
        throw InputError(fmt::format("{}: truncated record at byte {}", source, offset));
    Record record;
    auto kind = static_cast<std::uint8_t>(data[offset]);
    if (kind < 1 || kind > 8)
        throw InputError(fmt::format("{}: unknown record kind {} at byte {}", source, kind, offset));
    record.kind = static_cast<RecordKind>(kind);
    std::memcpy(&record.nanoseconds, data.data() + offset + 1, 8);
    std::uint32_t length;
    std::memcpy(&length, data.data() + offset + 9, 4);
    if (data.size() - offset - head < length)
        throw InputError(fmt::format("{}: record at byte {} claims {} bytes, the file ends first", source,
                                     offset, length));
    record.bytes.assign(data.data() + offset + head, length);
    offset += head + length;
    if (record.kind == RecordKind::wifi_change) {
        auto json = nlohmann::json::parse(record.bytes, nullptr, false);
        if (!json.is_object()) throw InputError(fmt::format("{}: bad wifi record", source));
        std::string kind_text = json.value("kind", "");
        record.change.kind = kind_text == "disconnect" ? Change::Kind::wifi_disconnect
                             : kind_text == "roam"     ? Change::Kind::wifi_roam
                                                       : Change::Kind::wifi_connect;
        auto number = [&](const char* key) {
            auto it = json.find(key);
            return it != json.end() && it->is_number_integer() ? it->get<int>() : 0;
        };
        auto text = [&](const char* key) {
            auto it = json.find(key);
            return it != json.end() && it->is_string() ? it->get<std::string>() : std::string();
        };
        record.change.wifi.index = number("ifindex");
        record.change.wifi.ssid = text("ssid");
        record.change.wifi.bssid = text("bssid");
        record.change.wifi.freq = number("freq");
        if (json.contains("signal")) record.change.wifi.signal = number("signal");
    }
    return record;
}

Player::Player(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_errno("open", path);
    file_ = ::fdopen(fd, "r");
    if (!file_) throw_errno("fdopen", path);
    std::string head(magic.size(), '\0');
    if (std::fread(head.data(), 1, head.size(), file_) != head.size() || head != magic)
        throw InputError(fmt::format("{}: not a netwatch recording (expected \"{}\" at the start)", path,
                                     magic.substr(0, magic.size() - 1)));
}

Player::~Player() {
    if (file_) std::fclose(file_);
}

std::optional<Record> Player::next() {
    char head[13];
    std::size_t got = std::fread(head, 1, sizeof(head), file_);
    if (got == 0) return std::nullopt;
    std::string data(head, got);
    if (got == sizeof(head)) {
        std::uint32_t length;
        std::memcpy(&length, head + 9, 4);
        std::string body(length, '\0');
        body.resize(std::fread(body.data(), 1, length, file_));
        data += body;
    }
    std::size_t offset = 0;
    return parse_record(data, offset, path_);
}

}  // namespace ktricks::netwatch
