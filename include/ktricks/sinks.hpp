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
// Brokers: Redis Streams (hiredis; XADD) and NATS JetStream (libnats; a publish acknowledged by the
// stream, with Nats-Msg-Id = the id, so the stream itself drops repeats within its duplicate window).
// libnats runs threads of its own per connection: a caller that takes signals through a signalfd
// must block them before the first publish() or start() (the threads inherit the mask).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"

namespace ktricks::sinks {

// redis://HOST:PORT/STREAM[?maxlen=N&user=NAME&password_file=PATH]
// nats://HOST:PORT[,HOST:PORT...]/SUBJECT[?stream=NAME&replicas=N&user=NAME&password_file=PATH
//   &token_file=PATH&creds_file=PATH&tls=1&ca_file=PATH&cert_file=PATH&key_file=PATH]
// STREAM and SUBJECT may hold {host}, {source}, {db}, {table}: replaced per event by the host name
// and the event's fields. Secrets are only read from files (never on the command line, where ps(1)
// shows it). nats ?stream=NAME: the JetStream stream is created (file storage, `replicas` copies)
// if it does not exist, taking the subject with each placeholder token as `*`. Several nats servers
// (the members of a JetStream cluster), comma-separated: each connection tries them in the order
// written and takes the first that answers; after a failure (the server died, a publish timed
// out while the cluster elected a new stream leader) the next connection starts again from the
// first one. redis:// takes one server.
struct Target {
    std::string scheme;  // "redis" or "nats"
    std::string host;
    std::uint16_t port = 0;  // host and port: the first server
    // nats: every server of the URL, as libnats URLs (nats://HOST:PORT, tls://HOST:PORT with TLS).
    std::vector<std::string> servers;
    std::string name;                  // stream (redis) or subject (nats), a template
    std::uint64_t maxlen = 1'000'000;  // redis: XADD MAXLEN ~ maxlen
    std::string user;
    std::string password;
    // nats only
    std::string stream;  // create this stream if missing
    int replicas = 1;
    std::string token;
    std::string creds_file;
    bool tls = false;
    std::string ca_file, cert_file, key_file;
    std::string display;  // the URL without secrets, for log lines
};
// Throws InputError naming the URL and the fault (unknown scheme, no port, a secret in the URL...).
Target parse_target(std::string_view url);
// `name` with its placeholders replaced; a missing field becomes "_" (a stream name needs one).
// nats_subject: characters a NATS subject token cannot hold (whitespace, '.', '*', '>') in a
// field's value become '_' (the event itself carries the exact names).
std::string expand(std::string_view name, const nlohmann::ordered_json& event, std::string_view host,
                   bool nats_subject = false);
// The JetStream stream's subject filter for a subject template: each token holding a placeholder
// becomes `*` ("ktricks.{host}.mysql.{db}" -> "ktricks.*.mysql.*").
std::string subject_filter(std::string_view name);

struct PublisherOptions {
    Target target;
    std::filesystem::path spool;                  // required: where events wait for the broker
    std::uint64_t spool_bytes = 256ULL << 20;     // cap; when full the oldest entries go first
    std::chrono::milliseconds timeout{1000};      // connect and each command
    std::chrono::milliseconds retry{500};         // how often to try the broker while spooling
    std::string host;                             // for {host} and ids; default gethostname()
    std::function<void(const std::string&)> log;  // state changes, one line each
};

// What `--publish URL --spool DIR --spool-max MB` (the same flags on every event source) ask for.
// Throws InputError for a bad URL (as parse_target) or a missing spool directory.
PublisherOptions publisher_options(std::string_view url, const std::filesystem::path& spool,
                                   std::uint64_t spool_max_mb);

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
    // The same for an event that arrives as its JSON line (ktricks-publish): `line` is the payload
    // as it is, `event` its parsed form (for the placeholders).
    Accepted publish(const nlohmann::ordered_json& event, std::string_view line, std::string_view id);

    struct Stats {
        std::uint64_t published = 0, spooled = 0, drained = 0, dropped = 0;
        std::uint64_t duplicates = 0;  // nats: sends the stream recognised as repeats (by id)
        std::uint64_t spool_entries = 0, spool_bytes = 0;
    };
    const Stats& stats() const noexcept;

private:
    class Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace ktricks::sinks
