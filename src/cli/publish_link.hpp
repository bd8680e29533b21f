// --publish for the front door's watchers (procwatch, netwatch, sockets --watch) without linking a
// broker library into `ktricks`: the events go to the helper program ktricks-publish (which links
// ktricks::sinks) over a SOCK_SEQPACKET socketpair.
//
// Protocol (one socketpair, the helper's end is its fd 3):
//   watcher -> helper: one message per event: ID '\n' JSON (the event's line, no newline needed).
//   helper -> watcher: after each event is *accepted* (acknowledged by the broker or written to
//                      the spool), an 8-byte native-endian count of events accepted so far.
//   The watcher closing its end (exit, crash, kill -9) is the end of the stream: the helper still
//   reads and accepts every message already in the socket, then exits 0. So an event whose send()
//   returned is never lost with the watcher; finish() waits until all are accepted (SIGTERM).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "cli/cli11.hpp"

#include "ktricks/core/child.hpp"
#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/fd.hpp"

namespace ktricks::cli {

// The flags every front-door watcher takes for it.
struct PublishFlags {
    std::string url;
    std::string spool;
    std::uint64_t spool_max_mb = 256;
};
void add_publish_flags(CLI::App* sub, PublishFlags& flags);

class PublishLink {
public:
    // `source` names the watcher in ids: HOST:SOURCE:START:N (unique, not stable across restarts:
    // these watchers have no position to resume from).
    PublishLink(EventLoop& loop, PublishFlags flags, std::string source, bool quiet);
    ~PublishLink();
    PublishLink(const PublishLink&) = delete;
    PublishLink& operator=(const PublishLink&) = delete;

    // Starts ktricks-publish (it checks the URL and the spool first: a bad one fails here, with the
    // helper's own line on stderr). Throws InputError / std::system_error.
    void start();
    // Hands one event to the helper; blocks while the socket is full (the helper is slower than the
    // watcher). Throws std::system_error if the helper is gone.
    void send(const Event& event);
    // Ends the stream and waits, up to `limit`, until the helper accepted every event and exited.
    // Returns the number of events it did not confirm (0: all are on the broker or in the spool).
    std::uint64_t finish(std::chrono::milliseconds limit);

    pid_t helper_pid() const noexcept { return helper_ ? helper_->pid() : -1; }
    std::uint64_t sent() const noexcept { return sent_; }
    std::uint64_t accepted() const noexcept { return accepted_; }

private:
    void read_acks(bool block_until_done, std::chrono::steady_clock::time_point deadline);

    EventLoop& loop_;
    PublishFlags flags_;
    std::string source_;
    bool quiet_;
    std::string prefix_;  // HOST:SOURCE:START:
    Fd socket_;
    std::optional<Child> helper_;
    EventLoop::SourceId reader_ = 0;
    std::uint64_t sent_ = 0, accepted_ = 0;
};

// A watcher's last step with --publish: finish() (bounded), one line if events are unconfirmed;
// returns 0, or 75 (EX_TEMPFAIL) when some events may not have reached the broker or the spool.
int finish_publishing(PublishLink& link);

}  // namespace ktricks::cli
