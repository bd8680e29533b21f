// Helpers shared by the watcher and the self-check.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ktricks::mysqlwatch {

bool is_system_schema(std::string_view db);
// The binlog index in the data directory (log_bin=NAME writes NAME.index), relay logs excluded.
std::optional<std::filesystem::path> find_binlog_index(const std::filesystem::path& datadir);
// Its entries, made absolute against the data directory.
std::vector<std::filesystem::path> read_binlog_index(const std::filesystem::path& index,
                                                     const std::filesystem::path& datadir);
// The engine as the table's files tell it (InnoDB, MyISAM, Aria, ...), "" if no file says.
std::string engine_of(const std::filesystem::path& datadir, const std::string& db, const std::string& table);
bool credentials_given(const struct Credentials& credentials);

}  // namespace ktricks::mysqlwatch
