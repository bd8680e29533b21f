// Sinks without a broker: URL parsing, placeholders, and the spool (the broker's port is closed,
// so every event is spooled; its cap drops the oldest and says so).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "ktricks/core/error.hpp"
#include "ktricks/sinks.hpp"

namespace ktricks::sinks {
namespace {

namespace fs = std::filesystem;

TEST(SinkTarget, RedisUrlWithOptions) {
    auto target = parse_target("redis://127.0.0.1:6379/ktricks:{host}:{table}?maxlen=5000");
    EXPECT_EQ(target.scheme, "redis");
    EXPECT_EQ(target.host, "127.0.0.1");
    EXPECT_EQ(target.port, 6379);
    EXPECT_EQ(target.name, "ktricks:{host}:{table}");
    EXPECT_EQ(target.maxlen, 5000u);
    EXPECT_EQ(target.display, "redis://127.0.0.1:6379/ktricks:{host}:{table}");
}

TEST(SinkTarget, SecretsOnTheCommandLineAndUnknownThingsAreRefused) {
    for (const char* url :
         {"redis://u:secret@h:1/s", "redis://h:1/s?password=x", "redis://h/s", "redis://h:0/s",
          "redis://h:1/", "http://h:1/s", "redis://h:1/s?bogus=1", "nats://h:4222/a b", "nats://h:4222/a.>",
          "nats://h:4222/a..b", "nats://h:4222/s?token=x", "nats://h:4222/s?maxlen=3",
          "nats://h:4222/s?replicas=9", "nats://h:4222/s?stream=a.b",
          "nats://h:4222/s?cert_file=/etc/hostname"})
        EXPECT_THROW(parse_target(url), InputError) << url;
}

TEST(SinkTarget, NatsUrlWithStreamAndReplicas) {
    auto target = parse_target("nats://[::1]:4222/ktricks.{host}.{db}?stream=EVENTS&replicas=3");
    EXPECT_EQ(target.scheme, "nats");
    EXPECT_EQ(target.host, "::1");
    EXPECT_EQ(target.port, 4222);
    EXPECT_EQ(target.name, "ktricks.{host}.{db}");
    EXPECT_EQ(target.stream, "EVENTS");
    EXPECT_EQ(target.replicas, 3);
    EXPECT_FALSE(target.tls);
    EXPECT_EQ(subject_filter(target.name), "ktricks.*.*");
    EXPECT_EQ(subject_filter("a.b-{table}x.c"), "a.*.c");
    EXPECT_EQ(subject_filter("events"), "events");
}

TEST(SinkTarget, NatsUrlMayListTheServersOfACluster) {
    auto target = parse_target("nats://127.0.0.1:4222,[::1]:4223,nats-b:4224/k.{host}?stream=K&replicas=3");
    EXPECT_EQ(target.host, "127.0.0.1");
    EXPECT_EQ(target.port, 4222);
    EXPECT_EQ(target.servers,
              (std::vector<std::string>{"nats://127.0.0.1:4222", "nats://[::1]:4223", "nats://nats-b:4224"}));
    EXPECT_EQ(target.display, "nats://127.0.0.1:4222,[::1]:4223,nats-b:4224/k.{host}");
    EXPECT_EQ(parse_target("nats://h:1/s?tls=1").servers, std::vector<std::string>{"tls://h:1"});
    for (const char* url : {"redis://a:1,b:2/s", "nats://a:1,/s", "nats://a:1,,b:2/s", "nats://,a:1/s",
                            "nats://a:1,b/s", "nats://a:1,b:0/s"})
        EXPECT_THROW(parse_target(url), InputError) << url;
}

TEST(SinkTarget, NatsSubjectPlaceholdersCannotAddTokensOrWildcards) {
    Event event("mysql", "change");
    event.set("db", "a b.c*d>e").set("table", "таблица");
    EXPECT_EQ(expand("k.{db}.{table}", event.json(), "h", true), "k.a_b_c_d_e.таблица");
    EXPECT_EQ(expand("k:{db}", event.json(), "h"), "k:a b.c*d>e");  // redis keys take anything
}

TEST(SinkTarget, NatsTokenAndTlsFilesComeFromFiles) {
    std::string path = fs::temp_directory_path() / ("ktricks-sink-tok-" + std::to_string(::getpid()));
    std::ofstream(path) << "t0ken\n";
    auto target = parse_target("nats://h:1/s?token_file=" + path + "&ca_file=" + path);
    fs::remove(path);
    EXPECT_EQ(target.token, "t0ken");
    EXPECT_TRUE(target.tls);
    EXPECT_EQ(target.display, "nats://h:1/s");
}

TEST(SinkTarget, PasswordComesFromAFile) {
    std::string path = fs::temp_directory_path() / ("ktricks-sink-pw-" + std::to_string(::getpid()));
    std::ofstream(path) << "s3cret\n";
    auto target = parse_target("redis://h:1/s?user=app&password_file=" + path);
    fs::remove(path);
    EXPECT_EQ(target.user, "app");
    EXPECT_EQ(target.password, "s3cret");
    EXPECT_EQ(target.display.find("s3cret"), std::string::npos);
}

TEST(SinkTarget, PlaceholdersTakeTheEventsFields) {
    Event event("mysql", "change");
    event.set("db", "shop").set("table", "orders");
    EXPECT_EQ(expand("{host}.{source}.{db}.{table}.{other}", event.json(), "h1"),
              "h1.mysql.shop.orders.{other}");
    Event bare("procwatch", "exec");
    EXPECT_EQ(expand("x:{db}", bare.json(), "h1"), "x:_");
}

TEST(SinkSpool, UnreachableBrokerSpoolsInOrderAndAFullSpoolDropsTheOldestWithAReport) {
    fs::path spool = fs::temp_directory_path() / ("ktricks-spool-" + std::to_string(::getpid()));
    fs::remove_all(spool);
    {
        EventLoop loop;
        PublisherOptions options;
        options.target = parse_target("redis://127.0.0.1:1/s");  // port 1: connection refused
        options.spool = spool;
        options.spool_bytes = 4096;
        std::vector<std::string> logs;
        options.log = [&](const std::string& line) { logs.push_back(line); };
        Publisher publisher(loop, options);
        publisher.start();
        for (int i = 0; i < 100; ++i) {
            Event event("test", "tick");
            event.set("n", i);
            EXPECT_EQ(publisher.publish(event, "id-" + std::to_string(i)), Accepted::spooled);
        }
        const auto& stats = publisher.stats();
        EXPECT_EQ(stats.spooled, 100u);
        EXPECT_GT(stats.dropped, 0u);
        EXPECT_LE(stats.spool_bytes, 4096u + 512u);  // the cap, plus the drop report written after it
        ASSERT_FALSE(logs.empty());
        EXPECT_NE(logs.front().find("unreachable"), std::string::npos) << logs.front();
        publisher.stop();
    }
    // The newest event survives; the entries are in order; a spool_dropped report is among them.
    std::vector<fs::path> entries;
    for (const auto& entry : fs::directory_iterator(spool)) entries.push_back(entry.path());
    std::sort(entries.begin(), entries.end());
    ASSERT_FALSE(entries.empty());
    std::string all;
    for (const auto& path : entries) {
        std::ifstream in(path);
        all += std::string(std::istreambuf_iterator<char>(in), {}) + "\n";
    }
    EXPECT_NE(all.find("id-99\n"), std::string::npos);
    EXPECT_EQ(all.find("id-0\n"), std::string::npos);
    EXPECT_NE(all.find("\"event\":\"spool_dropped\""), std::string::npos);
    // A second publisher on the same directory finds them (and would send them first).
    {
        EventLoop loop;
        PublisherOptions options;
        options.target = parse_target("redis://127.0.0.1:1/s");
        options.spool = spool;
        options.log = [](const std::string&) {};
        Publisher publisher(loop, options);
        publisher.start();
        EXPECT_EQ(publisher.stats().spool_entries, entries.size());
    }
    fs::remove_all(spool);
}

}  // namespace
}  // namespace ktricks::sinks
