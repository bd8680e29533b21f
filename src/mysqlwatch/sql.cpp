#include "mysqlwatch/sql.hpp"

#include <mysql.h>

#include <fmt/format.h>

#include <stdexcept>

namespace ktricks::mysqlwatch {

Connection::Connection(const Credentials& credentials) {
    mysql_ = ::mysql_init(nullptr);
    if (!mysql_) throw std::runtime_error("mysql_init: out of memory");
    unsigned int timeout = 2;
    ::mysql_options(mysql_, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    ::mysql_options(mysql_, MYSQL_OPT_READ_TIMEOUT, &timeout);
    if (!credentials.defaults_file.empty()) {
        ::mysql_options(mysql_, MYSQL_READ_DEFAULT_FILE, credentials.defaults_file.c_str());
        ::mysql_options(mysql_, MYSQL_READ_DEFAULT_GROUP, "client");
    }
    const char* user = credentials.user.empty() ? nullptr : credentials.user.c_str();
    const char* password = credentials.password.empty() ? nullptr : credentials.password.c_str();
    const char* socket = credentials.socket.empty() ? nullptr : credentials.socket.c_str();
    if (!::mysql_real_connect(mysql_, socket || credentials.defaults_file.empty() ? "localhost" : nullptr,
                              user, password, nullptr, 0, socket, 0)) {
        std::string message = fmt::format(
            "connect {}: {}", socket ? fmt::format("unix:{}", socket) : "(defaults)", ::mysql_error(mysql_));
        ::mysql_close(mysql_);
        mysql_ = nullptr;
        throw std::runtime_error(message);
    }
}

Connection::~Connection() {
    if (mysql_) ::mysql_close(mysql_);
}

std::vector<Connection::Row> Connection::query(const std::string& sql) {
    if (::mysql_real_query(mysql_, sql.data(), sql.size()) != 0)
        throw std::runtime_error(fmt::format("query: {}", ::mysql_error(mysql_)));
    std::vector<Row> rows;
    MYSQL_RES* result = ::mysql_store_result(mysql_);
    if (!result) return rows;
    unsigned int fields = ::mysql_num_fields(result);
    while (MYSQL_ROW row = ::mysql_fetch_row(result)) {
        unsigned long* lengths = ::mysql_fetch_lengths(result);
        Row out;
        for (unsigned int i = 0; i < fields; ++i)
            out.push_back(row[i] ? std::optional<std::string>(std::string(row[i], lengths[i]))
                                 : std::nullopt);
        rows.push_back(std::move(out));
    }
    ::mysql_free_result(result);
    return rows;
}

void Connection::execute(const std::string& sql) { query(sql); }

std::string Connection::server_version() { return ::mysql_get_server_info(mysql_); }

}  // namespace ktricks::mysqlwatch
