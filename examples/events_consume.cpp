// Reads the events that `--publish` sent (a Redis stream or a JetStream stream) and prints each as
// one JSON line, oldest first, dropping repeats by the event's id. A starting point for a consumer:
//
//   events_consume redis://127.0.0.1:6379/ktricks:mydb
//   events_consume nats://127.0.0.1:4222/KTRICKS      (the JetStream stream's name, not a subject)
//   events_consume nats://127.0.0.1:4222,127.0.0.1:4223/KTRICKS   (a cluster: any server that answers)
//
// --idle-exit MS ends it after MS without a new event (scripts, tests); otherwise it follows the
// stream until interrupted. Credentials: the same ?user=&password_file= / ?creds_file= options.
#include <hiredis/hiredis.h>
#include <nats/nats.h>

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_set>
#include <vector>

#include "ktricks/core/error.hpp"
#include "ktricks/sinks.hpp"

namespace {

std::unordered_set<std::string> seen;

// Prints the event unless its id (the publisher's stable id) was printed already.
void print(std::string_view id, std::string_view event) {
    if (!id.empty() && !seen.emplace(id).second) return;
    std::fwrite(event.data(), 1, event.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
}

int consume_redis(const ktricks::sinks::Target& target, long idle_ms) {
    redisContext* redis = redisConnect(target.host.c_str(), target.port);
    if (!redis || redis->err) {
        fmt::print(stderr, "events_consume: {}: {}\n", target.display,
                   redis ? redis->errstr : "out of memory");
        return 69;
    }
    if (!target.password.empty()) {
        auto* reply = static_cast<redisReply*>(
            target.user.empty()
                ? redisCommand(redis, "AUTH %s", target.password.c_str())
                : redisCommand(redis, "AUTH %s %s", target.user.c_str(), target.password.c_str()));
        bool ok = reply && reply->type != REDIS_REPLY_ERROR;
        if (reply) freeReplyObject(reply);
        if (!ok) {
            fmt::print(stderr, "events_consume: {}: AUTH failed\n", target.display);
            return 77;
        }
    }
    std::string last = "0";  // entry id: everything after it
    long block = idle_ms > 0 ? idle_ms : 0;
    for (;;) {
        auto* reply = static_cast<redisReply*>(redisCommand(redis, "XREAD COUNT 1000 BLOCK %ld STREAMS %s %s",
                                                            block, target.name.c_str(), last.c_str()));
        if (!reply) {
            fmt::print(stderr, "events_consume: {}: {}\n", target.display, redis->errstr);
            return 69;
        }
        bool got = false;
        // [[stream, [[entry-id, [field, value, ...]], ...]]]
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1) {
            redisReply* entries = reply->element[0]->element[1];
            for (std::size_t i = 0; i < entries->elements; ++i) {
                redisReply* entry = entries->element[i];
                last = entry->element[0]->str;
                std::string_view id, event;
                redisReply* fields = entry->element[1];
                for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
                    std::string_view key(fields->element[f]->str, fields->element[f]->len);
                    std::string_view value(fields->element[f + 1]->str, fields->element[f + 1]->len);
                    if (key == "id") id = value;
                    if (key == "event") event = value;
                }
                print(id, event);
                got = true;
            }
        }
        freeReplyObject(reply);
        if (!got && idle_ms > 0) break;
    }
    redisFree(redis);
    return 0;
}

int consume_nats(const ktricks::sinks::Target& target, long idle_ms) {
    natsOptions* options = nullptr;
    natsConnection* connection = nullptr;
    jsCtx* js = nullptr;
    jsStreamInfo* info = nullptr;
    natsSubscription* subscription = nullptr;
    auto fail = [&](std::string_view what, natsStatus status) {
        fmt::print(stderr, "events_consume: {}: {}: {}\n", target.display, what, natsStatus_GetText(status));
        return 69;
    };
    natsOptions_Create(&options);
    std::vector<const char*> servers;  // every server of the URL (a cluster): the first that answers
    for (const auto& server : target.servers) servers.push_back(server.c_str());
    natsOptions_SetServers(options, servers.data(), static_cast<int>(servers.size()));
    if (!target.user.empty()) natsOptions_SetUserInfo(options, target.user.c_str(), target.password.c_str());
    if (!target.token.empty()) natsOptions_SetToken(options, target.token.c_str());
    if (!target.creds_file.empty())
        natsOptions_SetUserCredentialsFromFiles(options, target.creds_file.c_str(), nullptr);
    if (!target.ca_file.empty()) natsOptions_LoadCATrustedCertificates(options, target.ca_file.c_str());
    if (natsStatus s = natsConnection_Connect(&connection, options); s != NATS_OK) return fail("connect", s);
    if (natsStatus s = natsConnection_JetStream(&js, connection, nullptr); s != NATS_OK)
        return fail("JetStream", s);
    // The stream's own subjects are the filter: an ordered consumer of all of it, from the first message.
    if (natsStatus s = js_GetStreamInfo(&info, js, target.name.c_str(), nullptr, nullptr); s != NATS_OK)
        return fail("stream " + target.name, s);
    jsSubOptions sub_options;
    jsSubOptions_Init(&sub_options);
    sub_options.Stream = target.name.c_str();
    sub_options.Ordered = true;
    sub_options.Config.DeliverPolicy = js_DeliverAll;
    const char* subject = info->Config->SubjectsLen ? info->Config->Subjects[0] : ">";
    if (natsStatus s = js_SubscribeSync(&subscription, js, subject, nullptr, &sub_options, nullptr);
        s != NATS_OK)
        return fail("subscribe", s);
    for (;;) {
        natsMsg* message = nullptr;
        natsStatus s = natsSubscription_NextMsg(&message, subscription, idle_ms > 0 ? idle_ms : 60'000);
        if (s == NATS_TIMEOUT) {
            if (idle_ms > 0) break;
            continue;
        }
        if (s != NATS_OK) return fail("next message", s);
        const char* id = nullptr;
        natsMsgHeader_Get(message, "Nats-Msg-Id", &id);
        print(id ? id : "", std::string_view(natsMsg_GetData(message), natsMsg_GetDataLength(message)));
        natsMsg_Destroy(message);
    }
    natsSubscription_Destroy(subscription);
    jsStreamInfo_Destroy(info);
    jsCtx_Destroy(js);
    natsConnection_Destroy(connection);
    natsOptions_Destroy(options);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    long idle_ms = 0;
    std::string url;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--idle-exit") == 0 && i + 1 < argc) idle_ms = std::atol(argv[++i]);
        else if (url.empty())
            url = argv[i];
        else
            url.clear(), i = argc;
    }
    if (url.empty()) {
        fmt::print(
            stderr,
            "usage: events_consume [--idle-exit MS] redis://HOST:PORT/STREAM | nats://HOST:PORT/STREAM\n");
        return 64;
    }
    try {
        auto target = ktricks::sinks::parse_target(url);
        return target.scheme == "nats" ? consume_nats(target, idle_ms) : consume_redis(target, idle_ms);
    } catch (const ktricks::InputError& error) {
        fmt::print(stderr, "events_consume: {}\n", error.what());
        return 64;
    }
}
