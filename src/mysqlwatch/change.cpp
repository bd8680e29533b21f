#include <fmt/format.h>

#include "ktricks/core/error.hpp"
#include "ktricks/mysqlwatch.hpp"

namespace ktricks::mysqlwatch {

std::string_view to_string(Via via) noexcept {
    switch (via) {
        case Via::binlog: return "binlog";
        case Via::redo: return "redo";
        case Via::file: return "file";
    }
    return "?";
}

Mode parse_mode(std::string_view text) {
    if (text == "auto") return Mode::automatic;
    if (text == "binlog") return Mode::binlog;
    if (text == "redo") return Mode::redo;
    if (text == "files") return Mode::files;
    throw InputError(fmt::format("--mode {}: expected auto, binlog, redo or files", printable(text)));
}

Event to_event(const Change& change) {
    Event event("mysql", change.event, change.when);
    event.set("db", change.db);
    if (!change.table.empty()) event.set("table", change.table);
    if (!change.new_table.empty()) event.set("new_table", change.new_table);
    if (!change.new_db.empty()) event.set("new_db", change.new_db);
    event.set("engine", change.engine);
    event.set("via", std::string(to_string(change.via)));
    if (change.rows && change.op.empty()) event.set("rows", *change.rows);
    if (!change.op.empty()) {
        // Debezium's envelope: op, before, after; its `source` block is `binlog` here, because
        // `source` names the watcher in every ktricks event.
        event.set("op", change.op);
        event.set("before", change.before);
        event.set("after", change.after);
        nlohmann::ordered_json binlog = nlohmann::ordered_json::object();
        if (change.position) {
            binlog["file"] = change.position->file;
            binlog["pos"] = change.position->offset;
            binlog["gtid"] = change.position->gtid.empty() ? nlohmann::ordered_json()
                                                           : nlohmann::ordered_json(change.position->gtid);
        }
        binlog["ts"] =
            format_timestamp(std::chrono::system_clock::time_point(std::chrono::seconds(change.binlog_time)));
        binlog["db"] = change.db;
        binlog["table"] = change.table;
        event.set("binlog", std::move(binlog));
    }
    if (change.delayed) event.set("delayed", true);
    if (change.position) {
        // Stable across restarts: the same committed change always gets the same id.
        event.set("id",
                  fmt::format("{}:{}:{}", change.position->file, change.position->offset, change.index));
        event.set("binlog_file", change.position->file);
        event.set("binlog_pos", change.position->offset);
        if (!change.position->gtid.empty()) event.set("gtid", change.position->gtid);
    }
    return event;
}

}  // namespace ktricks::mysqlwatch
