// Publisher: one broker connection (backend.hpp: Redis or NATS JetStream), and an on-disk spool.
//
// Order is kept: once one event is spooled, every later one is spooled behind it until the spool
// has been sent. The spool is a directory of one file per event (20-digit sequence number, written
// to a temporary name and renamed, so a killed process leaves whole entries only); an entry is
// unlinked after the broker acknowledged it. Sending one entry twice (the reply was lost with the
// connection) is the only way to get a repeat.
#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <charconv>
#include <map>

#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/sinks.hpp"

#include "backend.hpp"

namespace ktricks::sinks {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string read_whole(const fs::path& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("open", path.string());
    std::string text;
    char buffer[16384];
    for (;;) {
        ssize_t got = ::read(fd.get(), buffer, sizeof buffer);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) throw_errno("read", path.string());
        if (got == 0) break;
        text.append(buffer, static_cast<std::size_t>(got));
    }
    return text;
}

}  // namespace

class Publisher::Impl {
public:
    Impl(EventLoop& loop, PublisherOptions options) : loop_(loop), options_(std::move(options)) {
        backend_ = options_.target.scheme == "nats" ? detail::make_nats(options_.target, options_.timeout)
                                                    : detail::make_redis(options_.target, options_.timeout);
        if (options_.host.empty()) {
            char name[256] = {};
            ::gethostname(name, sizeof name - 1);
            options_.host = name;
        }
    }
    ~Impl() { stop(); }

    void start() {
        std::error_code error;
        fs::create_directories(options_.spool, error);
        if (error) throw std::system_error(error, "create_directories " + options_.spool.string());
        for (const auto& entry : fs::directory_iterator(options_.spool)) {
            auto name = entry.path().filename().string();
            if (name.size() != 20 + 3 || !name.ends_with(".ev")) continue;  // temporaries, strangers
            std::uint64_t sequence = 0;
            auto [end, parse_error] = std::from_chars(name.data(), name.data() + 20, sequence);
            if (parse_error != std::errc() || end != name.data() + 20) continue;
            auto size = entry.file_size();
            spool_[sequence] = size;
            stats_.spool_bytes += size;
        }
        next_sequence_ = spool_.empty() ? 1 : spool_.rbegin()->first + 1;
        stats_.spool_entries = spool_.size();
        if (!spool_.empty()) {
            log(fmt::format("spool {}: {} events from before; sending them to {} first",
                            options_.spool.string(), spool_.size(), options_.target.display));
            drain();
        }
    }

    void stop() noexcept {
        loop_.remove(retry_timer_);
        retry_timer_ = 0;
        backend_->disconnect();
    }

    Accepted publish(const nlohmann::ordered_json& event, std::string_view line, std::string_view id) {
        std::string stream =
            expand(options_.target.name, event, options_.host, options_.target.scheme == "nats");
        std::string_view payload = line;
        if (!payload.empty() && payload.back() == '\n') payload.remove_suffix(1);
        if (!spool_.empty() && Clock::now() >= next_try_) drain();
        if (spool_.empty() && send(stream, id, payload)) {
            ++stats_.published;
            return Accepted::published;
        }
        spool(stream, id, payload);
        ++stats_.spooled;
        return Accepted::spooled;
    }

    const Stats& stats() const noexcept { return stats_; }

private:
    void log(const std::string& line) {
        if (options_.log) options_.log(line);
        else
            log_info("{}", line);
    }

    bool connect() {
        if (backend_->connected()) return true;
        if (Clock::now() < next_try_) return false;
        if (auto fault = backend_->connect(); !fault.empty()) {
            unreachable(fault);
            return false;
        }
        if (down_) {
            down_ = false;
            log(fmt::format("{} reachable again", options_.target.display));
        }
        return true;
    }

    void unreachable(const std::string& fault) {
        backend_->disconnect();
        next_try_ = Clock::now() + options_.retry;
        if (!down_) {
            down_ = true;
            log(fmt::format("{} unreachable ({}): spooling events in {}", options_.target.display, fault,
                            options_.spool.string()));
        }
    }

    bool send(const std::string& name, std::string_view id, std::string_view payload) {
        if (!connect()) return false;
        if (auto fault = backend_->send(name, id, payload); !fault.empty()) {
            unreachable(fault);
            return false;
        }
        stats_.duplicates += backend_->take_duplicates();
        return true;
    }

    fs::path entry_path(std::uint64_t sequence) const {
        return options_.spool / fmt::format("{:020}.ev", sequence);
    }

    // Entry: stream \n id \n payload.
    void spool(const std::string& stream, std::string_view id, std::string_view payload) {
        std::string text = fmt::format("{}\n{}\n{}", stream, id, payload);
        std::uint64_t dropped = 0;
        std::string first_dropped;
        while (!spool_.empty() && stats_.spool_bytes + text.size() > options_.spool_bytes) {
            auto oldest = spool_.begin();
            if (first_dropped.empty()) {
                try {
                    auto old = read_whole(entry_path(oldest->first));
                    auto a = old.find('\n'), b = old.find('\n', a + 1);
                    if (a != std::string::npos && b != std::string::npos)
                        first_dropped = old.substr(a + 1, b - a - 1);
                } catch (const std::exception&) {}
            }
            ::unlink(entry_path(oldest->first).c_str());
            stats_.spool_bytes -= oldest->second;
            spool_.erase(oldest);
            ++dropped;
        }
        write_entry(text);
        if (dropped) {
            // Reported in the stream itself, where the gap is noticed: in order, after what remains.
            stats_.dropped += dropped;
            log(fmt::format("spool {} full ({} bytes): dropped the {} oldest events", options_.spool.string(),
                            options_.spool_bytes, dropped));
            Event report("ktricks", "spool_dropped");
            report.set("host", options_.host).set("dropped", dropped).set("first_dropped_id", first_dropped);
            report.set("spool", options_.spool.string());
            std::string line = report.to_line();
            line.pop_back();
            write_entry(
                fmt::format("{}\n{}:spool_dropped:{}\n{}", stream, options_.host, next_sequence_, line));
        }
        arm_retry();
    }

    void write_entry(const std::string& text) {
        std::uint64_t sequence = next_sequence_++;
        fs::path path = entry_path(sequence);
        std::string temporary = path.string() + ".tmp";
        Fd fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        if (!fd) throw_errno("open", temporary);
        if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
            throw_errno("write", temporary);
        fd.reset();
        if (::rename(temporary.c_str(), path.c_str()) < 0) throw_errno("rename", path.string());
        spool_[sequence] = text.size();
        stats_.spool_bytes += text.size();
        stats_.spool_entries = spool_.size();
    }

    void arm_retry() {
        if (retry_timer_) return;
        retry_timer_ = loop_.add_timer(
            options_.retry, [this] { drain(); }, options_.retry);
    }

    // Sends spooled entries oldest first, until the spool is empty or the broker fails again.
    void drain() {
        std::uint64_t sent = 0;
        while (!spool_.empty()) {
            auto oldest = spool_.begin();
            fs::path path = entry_path(oldest->first);
            std::string text;
            try {
                text = read_whole(path);
            } catch (const std::exception& error) {
                log(fmt::format("spool entry unreadable, skipped: {}", error.what()));
                text.clear();
            }
            auto a = text.find('\n'), b = a == std::string::npos ? a : text.find('\n', a + 1);
            if (a != std::string::npos && b != std::string::npos) {
                if (!send(text.substr(0, a), std::string_view(text).substr(a + 1, b - a - 1),
                          std::string_view(text).substr(b + 1)))
                    break;
                ++sent;
            }
            ::unlink(path.c_str());
            stats_.spool_bytes -= oldest->second;
            spool_.erase(oldest);
        }
        stats_.drained += sent;
        stats_.spool_entries = spool_.size();
        if (sent && spool_.empty())
            log(fmt::format("spool {} sent ({} events)", options_.spool.string(), sent));
        if (spool_.empty()) {
            loop_.remove(retry_timer_);
            retry_timer_ = 0;
        } else {
            arm_retry();
        }
    }

    EventLoop& loop_;
    PublisherOptions options_;
    Stats stats_;
    std::unique_ptr<detail::Backend> backend_;
    bool down_ = false;
    Clock::time_point next_try_{};
    std::map<std::uint64_t, std::uint64_t> spool_;  // sequence -> bytes
    std::uint64_t next_sequence_ = 1;
    EventLoop::SourceId retry_timer_ = 0;
};

Publisher::Publisher(EventLoop& loop, PublisherOptions options)
    : impl_(std::make_unique<Impl>(loop, std::move(options))) {}
Publisher::~Publisher() = default;
void Publisher::start() { impl_->start(); }
void Publisher::stop() noexcept { impl_->stop(); }
Accepted Publisher::publish(const Event& event, std::string_view id) {
    return impl_->publish(event.json(), event.to_line(), id);
}
Accepted Publisher::publish(const nlohmann::ordered_json& event, std::string_view line, std::string_view id) {
    return impl_->publish(event, line, id);
}
const Publisher::Stats& Publisher::stats() const noexcept { return impl_->stats(); }

}  // namespace ktricks::sinks
