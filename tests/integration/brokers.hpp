// Throwaway brokers on loopback ports for the sink tests: redis-server, and nats-server with JetStream
// (one, or a 3-node cluster) with a reader of a stream's messages through libnats. Each server is
// killed with its group on destruction.
#pragma once

#include <arpa/inet.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "free_port.hpp"

#include "process_helpers.hpp"

namespace ktricks::test {

// A throwaway redis-server on a loopback port, with every write fsynced to its append-only file
// (so an acknowledged XADD survives the SIGKILL the test gives it). Killed with its group on exit.
class RedisServer {
public:
    static bool available() { return std::filesystem::exists("/usr/bin/redis-server"); }
    explicit RedisServer(int port = free_port()) : port_(port) { start(); }
    void start() {
        process_ = std::make_unique<Process>(
            Process::start({"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1", "--dir",
                            dir_.path().string(), "--appendonly", "yes", "--appendfsync", "always", "--save",
                            "", "--daemonize", "no"}));
        if (!eventually([&] { return cli({"PING"}).find("PONG") != std::string::npos; }))
            throw std::runtime_error("redis-server did not start: " + process_->describe());
    }
    void kill() { process_.reset(); }  // SIGKILL to its group
    int port() const { return port_; }
    std::string cli(std::vector<std::string> args) const {
        std::vector<std::string> argv = {"redis-cli", "-p", std::to_string(port_), "--raw"};
        argv.insert(argv.end(), args.begin(), args.end());
        return run(argv).out;
    }
    // The events of a stream (the "event" field of every entry), in stream order.
    std::vector<nlohmann::json> stream(const std::string& name) const {
        std::vector<nlohmann::json> events;
        auto lines = lines_of(cli({"XRANGE", name, "-", "+"}));
        for (std::size_t i = 0; i + 1 < lines.size(); ++i)
            if (lines[i] == "event") events.push_back(nlohmann::json::parse(lines[i + 1], nullptr, false));
        return events;
    }

private:
    TempDir dir_;
    int port_;
    std::unique_ptr<Process> process_;
};

class NatsServer {
public:
    static constexpr const char* program = "/usr/sbin/nats-server";  // Debian's nats-server
    static bool available() { return std::filesystem::exists(program); }
    // cluster_port/routes: for a cluster node (name, its own route port, the other nodes' route ports).
    explicit NatsServer(int port, std::string name = "n1", int cluster_port = 0, std::vector<int> routes = {})
        : port_(port), name_(std::move(name)), cluster_port_(cluster_port), routes_(std::move(routes)) {
        start();
    }
    void start() {
        std::vector<std::string> argv = {
            program, "-js", "-a",  "127.0.0.1",         "-p", std::to_string(port_),
            "-n",    name_, "-sd", dir_.path().string()};
        if (cluster_port_) {
            std::string route_list;
            for (int route : routes_)
                route_list += (route_list.empty() ? "" : ",") + fmt::format("nats://127.0.0.1:{}", route);
            argv.insert(argv.end(),
                        {"--cluster_name", "ktricks", "--cluster",
                         fmt::format("nats://127.0.0.1:{}", cluster_port_), "--routes", route_list});
        }
        process_ = std::make_unique<Process>(Process::start(argv));
        if (!eventually([&] { return process_->err().find("Server is ready") != std::string::npos; }, 20s))
            throw std::runtime_error("nats-server did not start: " + process_->describe());
    }
    void kill() { process_.reset(); }  // SIGKILL to its group
    int port() const { return port_; }
    const std::string& name() const { return name_; }
    std::string log() const { return process_ ? process_->err() : std::string(); }

private:
    TempDir dir_;
    int port_;
    std::string name_;
    int cluster_port_;
    std::vector<int> routes_;
    std::unique_ptr<Process> process_;
};

// Every message of `stream`, oldest first, as JSON (its payload), read by sequence number through the
// server at `port`. nullopt if the stream cannot be read (no connection, no stream, no leader yet).
inline std::optional<std::vector<nlohmann::json>> jetstream_events(int port, const std::string& stream,
                                                                   std::string* leader = nullptr) {
    natsConnection* connection = nullptr;
    jsCtx* js = nullptr;
    jsStreamInfo* info = nullptr;
    std::optional<std::vector<nlohmann::json>> events;
    std::string url = fmt::format("nats://127.0.0.1:{}", port);
    if (natsConnection_ConnectTo(&connection, url.c_str()) == NATS_OK &&
        natsConnection_JetStream(&js, connection, nullptr) == NATS_OK &&
        js_GetStreamInfo(&info, js, stream.c_str(), nullptr, nullptr) == NATS_OK) {
        if (leader && info->Cluster && info->Cluster->Leader) *leader = info->Cluster->Leader;
        events.emplace();
        for (std::uint64_t seq = info->State.FirstSeq; seq && seq <= info->State.LastSeq; ++seq) {
            natsMsg* message = nullptr;
            if (js_GetMsg(&message, js, stream.c_str(), seq, nullptr, nullptr) != NATS_OK)
                continue;  // deleted
            events->push_back(nlohmann::json::parse(
                std::string_view(natsMsg_GetData(message), natsMsg_GetDataLength(message)), nullptr, false));
            natsMsg_Destroy(message);
        }
    }
    if (info) jsStreamInfo_Destroy(info);
    if (js) jsCtx_Destroy(js);
    if (connection) natsConnection_Destroy(connection);
    return events;
}

}  // namespace ktricks::test
