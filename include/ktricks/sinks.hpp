// Event sinks: events leave the machine with at-least-once delivery.
//
// A Publisher sends each event to a broker and answers only when the event is *accepted*: either
// the broker acknowledged it (Redis: the XADD reply; the entry is then the broker's to keep), or it
// was written to the on-disk spool, from which it is sent, in order, when the broker is reachable
// again. A caller that records its own progress (mysql-watch --state) after publish() returned
// therefore never skips an event, across broker restarts and its own restarts (the spool is drained
// by the next Publisher on the same directory). Repeats are possible (a reply lost with the
// connection), and each event carries a stable id so consumers can drop them.
//
// Implemented: Redis Streams (hiredis). NATS JetStream is not yet (see docs/events.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"

namespace ktricks::sinks {

// redis://HOST:PORT/STREAM[?maxlen=N&user=NAME&password_file=PATH]. STREAM may hold {host},
// {source}, {db}, {table}: replaced per event by the host name and the event's fields. A password
// is only read from a file (never on the command line, where ps(1) shows it).
struct Target {
    std::string scheme;  // "redis"
    std::string host;
    std::uint16_t port = 0;
    std::string name;                  // stream (template)
    std::uint64_t maxlen = 1'000'000;  // XADD MAXLEN ~ maxlen
    std::string user;
    std::string password;
    std::string display;  // the URL without secrets, for log lines
};
// Throws InputError naming the URL and the fault (unknown scheme, no port, nats://, ...).
Target parse_target(std::string_view url);
// `name` with its placeholders replaced; a missing field becomes "_" (a stream name needs one).
std::string expand(std::string_view name, const nlohmann::ordered_json& event, std::string_view host);

struct PublisherOptions {
    Target target;
    std::filesystem::path spool;                  // required: where events wait for the broker
    std::uint64_t spool_bytes = 256ULL << 20;     // cap; when full the oldest entries go first
    std::chrono::milliseconds timeout{1000};      // connect and each command
    std::chrono::milliseconds retry{500};         // how often to try the broker while spooling
    std::string host;                             // for {host} and ids; default gethostname()
    std::function<void(const std::string&)> log;  // state changes, one line each
};

enum class Accepted { published, spooled };

// On the caller's EventLoop (a retry timer while the spool holds events). publish() talks to the
// broker synchronously, bounded by `timeout`: a broker that hangs costs one timeout per `retry`,
// then events go to the spool without waiting for it.
class Publisher {
public:
    Publisher(EventLoop& loop, PublisherOptions options);
    ~Publisher();
    Publisher(const Publisher&) = delete;
    Publisher& operator=(const Publisher&) = delete;

    // Opens (creates) the spool directory and counts what is in it; sending starts at once.
    // Throws std::system_error if the spool cannot be used.
    void start();
    void stop() noexcept;
    // Sends `event` (its JSON line is the payload) under `id` (stable: the same event, the same
    // id); returns once it is accepted. Throws std::system_error only if the spool cannot be written.
    Accepted publish(const Event& event, std::string_view id);

    struct Stats {
        std::uint64_t published = 0, spooled = 0, drained = 0, dropped = 0;
        std::uint64_t spool_entries = 0, spool_bytes = 0;
    };
    const Stats& stats() const noexcept;

private:
    class Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace ktricks::sinks
