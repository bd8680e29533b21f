// A throwaway MariaDB for integration tests: its own data directory and unix socket under a
// TempDir, no TCP port, never the system service. The destructor kills the server (SIGKILL to its
// process group) and removes the directory, also when a test failed half-way.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "process_helpers.hpp"

namespace ktricks::test {

class MariaDbServer {
public:
    struct Options {
        bool binlog = true;
        bool install = true;  // false: leave the data directory for the test to create later
    };

    static bool available() {
        return ::geteuid() == 0 && std::filesystem::exists("/usr/sbin/mariadbd") &&
               std::filesystem::exists("/usr/bin/mariadb-install-db") &&
               std::filesystem::exists("/usr/bin/mariadb");
    }

    explicit MariaDbServer(Options options) : options_(options) {
        if (options_.install) install();
    }
    MariaDbServer(const MariaDbServer&) = delete;
    MariaDbServer& operator=(const MariaDbServer&) = delete;
    ~MariaDbServer() { server_.reset(); }

    std::string datadir() const { return dir_ / "data"; }
    std::string socket() const { return dir_ / "sock"; }

    void install() {
        auto result = run({"mariadb-install-db", "--no-defaults", "--datadir=" + datadir(), "--user=root",
                           "--auth-root-authentication-method=normal", "--skip-test-db"},
                          {}, std::chrono::seconds(60));
        if (result.status != 0) throw std::runtime_error("mariadb-install-db failed: " + result.describe);
    }

    void start() {
        std::vector<std::string> argv = {"mariadbd",
                                         "--no-defaults",
                                         "--datadir=" + datadir(),
                                         "--socket=" + socket(),
                                         "--skip-networking",
                                         "--user=root",
                                         "--pid-file=" + (dir_ / "pid"),
                                         "--log-error=" + (dir_ / "error.log"),
                                         "--innodb-buffer-pool-size=32M"};
        if (options_.binlog) {
            argv.push_back("--log-bin=" + (dir_ / "data/binlog"));
            argv.push_back("--binlog-format=ROW");
        }
        server_ = std::make_unique<Process>(Process::start(argv));
        if (!eventually([&] { return sql_status("SELECT 1") == 0; }, std::chrono::seconds(30)))
            throw std::runtime_error("mariadbd did not accept connections: " + read_file(dir_ / "error.log"));
    }

    // A clean shutdown (SIGTERM), as a restart does it.
    void stop() {
        if (!server_) return;
        server_->signal(SIGTERM);
        server_->wait(std::chrono::seconds(30));
        server_.reset();
    }

    int sql_status(const std::string& statements) const {
        return run({"mariadb", "--no-defaults", "-S", socket(), "-uroot", "-e", statements})
            .status.value_or(-1);
    }
    void sql(const std::string& statements) const {
        auto result = run({"mariadb", "--no-defaults", "-S", socket(), "-uroot", "-e", statements});
        if (result.status != 0) throw std::runtime_error("SQL failed: " + result.describe);
    }

private:
    Options options_;
    TempDir dir_;
    std::unique_ptr<Process> server_;
};

}  // namespace ktricks::test
