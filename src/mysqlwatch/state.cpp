// The --state file: where a restarted watcher continues. Written after every delivered
// transaction, so it must be cheap (one small write and a rename) and never torn.
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/mysqlwatch.hpp"

namespace ktricks::mysqlwatch {

std::optional<Position> load_position(const std::filesystem::path& path) {
    std::error_code error;
    if (!std::filesystem::exists(path, error) && !error) return std::nullopt;
    std::ifstream in(path);
    if (!in) throw_errno("open", path.string());
    std::stringstream text;
    text << in.rdbuf();
    auto json = nlohmann::json::parse(text.str(), nullptr, false);
    auto fault = [&](std::string_view what) {
        return DataError(fmt::format("state file {}: {}", path.string(), what));
    };
    if (json.is_discarded() || !json.is_object()) throw fault("not a JSON object");
    if (!json.contains("file") || !json["file"].is_string() || json["file"].get<std::string>().empty())
        throw fault("no \"file\" (the binlog file name)");
    if (!json.contains("pos") || !json["pos"].is_number_unsigned())
        throw fault("no \"pos\" (an offset in the file)");
    Position position;
    position.file = json["file"].get<std::string>();
    if (position.file.find('/') != std::string::npos) throw fault("\"file\" must be a file name, not a path");
    position.offset = json["pos"].get<std::uint64_t>();
    if (position.offset < 4) throw fault("\"pos\" is inside the binlog's magic number");
    if (json.contains("gtid") && json["gtid"].is_string()) position.gtid = json["gtid"].get<std::string>();
    return position;
}

void save_position(const std::filesystem::path& path, const Position& position, bool durable) {
    nlohmann::ordered_json json;
    json["file"] = position.file;
    json["pos"] = position.offset;
    if (!position.gtid.empty()) json["gtid"] = position.gtid;
    std::string text = json.dump() + "\n";
    std::string temporary = path.string() + ".tmp";
    Fd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) throw_errno("open", temporary);
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
        throw_errno("write", temporary);
    if (durable && ::fsync(fd.get()) < 0) throw_errno("fsync", temporary);
    fd.reset();
    if (::rename(temporary.c_str(), path.c_str()) < 0) throw_errno("rename", path.string());
    if (durable) {
        auto parent = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
        Fd directory(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!directory) throw_errno("open", parent.string());
        if (::fsync(directory.get()) < 0) throw_errno("fsync", parent.string());
    }
}

}  // namespace ktricks::mysqlwatch
