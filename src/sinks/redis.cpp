// Redis Streams through hiredis' blocking API with timeouts: XADD with a bounded MAXLEN ~.
#include <hiredis/hiredis.h>

#include <fmt/format.h>

#include "backend.hpp"

namespace ktricks::sinks::detail {
namespace {

struct RedisFree {
    void operator()(redisContext* context) const noexcept { redisFree(context); }
};
struct ReplyFree {
    void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

timeval to_timeval(std::chrono::milliseconds duration) {
    return {static_cast<time_t>(duration.count() / 1000),
            static_cast<suseconds_t>(duration.count() % 1000 * 1000)};
}

class Redis final : public Backend {
public:
    Redis(const Target& target, std::chrono::milliseconds timeout) : target_(target), timeout_(timeout) {}

    bool connected() const noexcept override { return context_ != nullptr; }

    std::string connect() override {
        timeval timeout = to_timeval(timeout_);
        context_.reset(redisConnectWithTimeout(target_.host.c_str(), target_.port, timeout));
        std::string fault;
        if (!context_) fault = "out of memory";
        else if (context_->err)
            fault = context_->errstr;
        else if (redisSetTimeout(context_.get(), timeout) != REDIS_OK)
            fault = "cannot set the command timeout";
        if (fault.empty() && !target_.password.empty()) {
            Reply reply(static_cast<redisReply*>(
                target_.user.empty() ? redisCommand(context_.get(), "AUTH %s", target_.password.c_str())
                                     : redisCommand(context_.get(), "AUTH %s %s", target_.user.c_str(),
                                                    target_.password.c_str())));
            if (!reply) fault = context_->errstr;
            else if (reply->type == REDIS_REPLY_ERROR)
                fault = fmt::format("AUTH: {}", reply->str);
        }
        if (!fault.empty()) context_.reset();
        return fault;
    }

    // XADD with the stable id as a field: Redis assigns the entry id, consumers de-duplicate on ours.
    std::string send(const std::string& stream, std::string_view id, std::string_view payload) override {
        Reply reply(static_cast<redisReply*>(
            redisCommand(context_.get(), "XADD %b MAXLEN ~ %llu * id %b event %b", stream.data(),
                         stream.size(), static_cast<unsigned long long>(target_.maxlen), id.data(), id.size(),
                         payload.data(), payload.size())));
        if (!reply) return context_->errstr[0] ? context_->errstr : "connection lost";
        if (reply->type == REDIS_REPLY_ERROR) return fmt::format("XADD {}: {}", stream, reply->str);
        return {};
    }

    void disconnect() noexcept override { context_.reset(); }

private:
    Target target_;
    std::chrono::milliseconds timeout_;
    std::unique_ptr<redisContext, RedisFree> context_;
};

}  // namespace

std::unique_ptr<Backend> make_redis(const Target& target, std::chrono::milliseconds timeout) {
    return std::make_unique<Redis>(target, timeout);
}

}  // namespace ktricks::sinks::detail
