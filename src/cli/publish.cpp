// ktricks publish (the helper program ktricks-publish): the far end of a front-door watcher's
// --publish (publish_link.hpp has the protocol). It owns the broker connection and the spool, so
// that `ktricks` itself never links libnats or hiredis.
#include <sys/socket.h>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <csignal>
#include <vector>

#include "cli/common.hpp"
#include "cli/publish_wire.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/sinks.hpp"

namespace ktricks::cli {
namespace {

struct PublishOptions {
    std::string url, spool;
    std::uint64_t spool_max_mb = 256;
    int link_fd = -1;
    bool quiet = false;
};

int run_publish(const PublishOptions& options) {
    sinks::PublisherOptions publish =
        sinks::publisher_options(options.url, options.spool, options.spool_max_mb);
    publish.log = [quiet = options.quiet](const std::string& line) {
        if (!quiet) log_info("{}", line);
    };
    Fd link(options.link_fd);
    EventLoop loop;
    // Blocked (through the signalfd) before libnats starts its threads. The watcher's Ctrl-C or
    // SIGTERM reaches this process too: it is ignored, the stream's end is what stops it.
    loop.add_signals({SIGINT, SIGTERM, SIGHUP}, [](const signalfd_siginfo&) {});
    sinks::Publisher publisher(loop, std::move(publish));
    publisher.start();
    publish_wire::Ack accepted = 0;
    bool watcher_gone = false;
    std::vector<char> buffer(publish_wire::max_message);
    loop.add_fd(link.get(), EPOLLIN, [&](std::uint32_t) {
        for (;;) {
            ssize_t got = ::recv(link.get(), buffer.data(), buffer.size(), MSG_DONTWAIT | MSG_TRUNC);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            if (got <= 0) {  // the end of the stream (or a broken one): everything before it was read
                loop.stop();
                return;
            }
            auto message = static_cast<std::size_t>(got) > buffer.size()
                               ? std::nullopt
                               : publish_wire::decode(std::string_view(buffer.data(), got));
            auto event = message ? nlohmann::ordered_json::parse(message->line, nullptr, false)
                                 : nlohmann::ordered_json();
            if (!event.is_object()) {
                log_warning("dropped a malformed message from the watcher ({} bytes)", got);
            } else {
                publisher.publish(event, message->line, message->id);
            }
            ++accepted;
            if (!watcher_gone &&
                ::send(link.get(), &accepted, sizeof accepted, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
                errno == EPIPE)
                watcher_gone = true;  // keep reading what it left in the socket
        }
    });
    loop.run();
    publisher.stop();
    return exit_code::ok;
}

}  // namespace

Subcommand add_publish(CLI::App& app) {
    auto* sub = add_subcommand(app, "publish");
    auto options = std::make_shared<PublishOptions>();
    sub->add_option("--publish", options->url,
                    "nats://HOST:PORT/SUBJECT[?...] or redis://HOST:PORT/STREAM[?...]")
        ->required();
    sub->add_option("--spool", options->spool, "Directory where events wait while the broker is unreachable")
        ->required();
    sub->add_option("--spool-max", options->spool_max_mb, "Spool cap in MiB")->capture_default_str();
    sub->add_option("--link-fd", options->link_fd,
                    "The SOCK_SEQPACKET socket the watcher writes events to (publish_link.hpp)")
        ->required();
    sub->add_flag("--quiet", options->quiet, "No log lines on stderr");
    sub->footer(
        "Started by a watcher's --publish (procwatch, netwatch, sockets --watch); "
        "not meant to be run by hand.");
    return {sub, [options] { return run_publish(*options); }};
}

}  // namespace ktricks::cli
