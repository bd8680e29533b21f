// A small owner of a libmariadb connection, for the redo path's one query and for --check.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ktricks/mysqlwatch.hpp"

struct st_mysql;

namespace ktricks::mysqlwatch {

class Connection {
public:
    // Throws std::runtime_error with the server's message ("connect unix:/run/mysqld/mysqld.sock: ...").
    explicit Connection(const Credentials& credentials);
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    using Row = std::vector<std::optional<std::string>>;
    std::vector<Row> query(const std::string& sql);
    void execute(const std::string& sql);
    std::string server_version();

private:
    st_mysql* mysql_ = nullptr;
};

}  // namespace ktricks::mysqlwatch
