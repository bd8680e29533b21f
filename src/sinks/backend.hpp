// One broker connection behind the Publisher: connect, send one event, forget the connection.
// Internal to ktricks::sinks. Every call is synchronous and bounded by the timeout it was made with.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "ktricks/sinks.hpp"

namespace ktricks::sinks::detail {

class Backend {
public:
    virtual ~Backend() = default;
    virtual bool connected() const noexcept = 0;
    // "" once connected; otherwise the fault, in one phrase (the connection is then dropped).
    virtual std::string connect() = 0;
    // "" once the broker acknowledged the event under `name` (stream or subject, expanded);
    // otherwise the fault. The caller then calls disconnect() and retries later.
    virtual std::string send(const std::string& name, std::string_view id, std::string_view payload) = 0;
    virtual void disconnect() noexcept = 0;
    // Sends the broker recognised as repeats of an id it already holds (nats), since the last call.
    virtual std::uint64_t take_duplicates() noexcept { return 0; }
};

std::unique_ptr<Backend> make_redis(const Target& target, std::chrono::milliseconds timeout);
std::unique_ptr<Backend> make_nats(const Target& target, std::chrono::milliseconds timeout);

}  // namespace ktricks::sinks::detail
