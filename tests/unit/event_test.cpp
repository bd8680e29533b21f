// Event: the one JSON-lines shape every watcher prints with --json.
#include "ktricks/core/event.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ktricks {
namespace {

using namespace std::chrono;
using namespace std::chrono_literals;

// 2026-11-27T03:20:39.123456Z
const system_clock::time_point known_time =
    system_clock::time_point(sys_days(2026y / 11 / 27).time_since_epoch() + 3h + 20min + 39s + 123456us);

std::vector<std::string> keys_of(const std::string& line) {
    std::vector<std::string> keys;
    auto json = nlohmann::ordered_json::parse(line);
    for (const auto& [key, value] : json.items()) keys.push_back(key);
    return keys;
}

TEST(Event, TimestampSourceAndEventComeFirstThenFieldsInTheOrderSet) {
    Event event("once", "acquired", known_time);
    event.set("name", "backup").set("pid", 42).set("alpha", true);
    EXPECT_EQ(keys_of(event.to_line()),
              (std::vector<std::string>{"ts", "source", "event", "name", "pid", "alpha"}));
}

TEST(Event, LineIsExactlyTheCompactJsonObject) {
    Event event("once", "acquired", known_time);
    event.set("pid", 42).set("name", "a b");
    EXPECT_EQ(event.to_line(),
              "{\"ts\":\"2026-11-27T03:20:39.123456Z\",\"source\":\"once\",\"event\":\"acquired\",\"pid\":42,"
              "\"name\":\"a b\"}\n");
}

TEST(Event, SettingAKeyAgainReplacesItsValueInPlace) {
    Event event("w", "e", known_time);
    event.set("a", 1).set("b", 2).set("a", 3);
    auto json = nlohmann::ordered_json::parse(event.to_line());
    EXPECT_EQ(keys_of(event.to_line()), (std::vector<std::string>{"ts", "source", "event", "a", "b"}));
    EXPECT_EQ(json["a"], 3);
}

TEST(Event, JsonAccessorMatchesTheLine) {
    Event event("w", "e", known_time);
    event.set("k", "v");
    EXPECT_EQ(event.json()["source"], "w");
    EXPECT_EQ(event.json()["event"], "e");
    EXPECT_EQ(event.json()["k"], "v");
    EXPECT_EQ(nlohmann::ordered_json::parse(event.to_line()), event.json());
}

TEST(EventTimestamp, IsIso8601UtcWithMicrosecondsAndZ) {
    EXPECT_EQ(format_timestamp(known_time), "2026-11-27T03:20:39.123456Z");
    EXPECT_EQ(format_timestamp(system_clock::time_point{}), "1970-01-01T00:00:00.000000Z");
    EXPECT_EQ(format_timestamp(system_clock::time_point(sys_days(2000y / 2 / 29).time_since_epoch() + 23h +
                                                        59min + 59s + 999999us)),
              "2000-02-29T23:59:59.999999Z");
}

TEST(EventTimestamp, SubMicrosecondPartIsTruncated) {
    auto when = known_time + 999ns;
    EXPECT_EQ(format_timestamp(when), "2026-11-27T03:20:39.123456Z");
}

TEST(EventTimestamp, TimesBeforeTheEpochAreStillWellFormed) {
    // One microsecond before 1970 is 1969-12-31T23:59:59.999999Z, not a negative fraction.
    EXPECT_EQ(format_timestamp(system_clock::time_point{} - 1us), "1969-12-31T23:59:59.999999Z");
    EXPECT_EQ(format_timestamp(system_clock::time_point{} - 1s - 500000us), "1969-12-31T23:59:58.500000Z");
}

TEST(EventTimestamp, NowMatchesThePattern) {
    Event event("w", "e");
    std::string ts = event.json()["ts"];
    EXPECT_TRUE(std::regex_match(ts, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)"))) << ts;
}

TEST(Event, NewlinesInFieldsAreEscapedSoTheEventStaysOneLine) {
    Event event("w", "e\nf", known_time);
    event.set("command", "echo a\necho b\r\n").set("list", std::vector<std::string>{"x\ny"});
    std::string line = event.to_line();
    ASSERT_FALSE(line.empty());
    EXPECT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
    EXPECT_EQ(line.find('\r'), std::string::npos) << line;
    auto json = nlohmann::json::parse(line);
    EXPECT_EQ(json["command"], "echo a\necho b\r\n");
    EXPECT_EQ(json["event"], "e\nf");
}

TEST(Event, ControlCharactersAreEscaped) {
    Event event("w", "e", known_time);
    event.set("raw", std::string("a\0b\x1b[31m", 7));
    std::string line = event.to_line();
    for (std::size_t i = 0; i + 1 < line.size(); ++i)
        EXPECT_GE(static_cast<unsigned char>(line[i]), 0x20) << "raw control byte at " << i << " in " << line;
    EXPECT_EQ(nlohmann::json::parse(line)["raw"], std::string("a\0b\x1b[31m", 7));
}

TEST(Event, InvalidUtf8InAFieldIsReplacedNotThrown) {
    Event event("w", "e", known_time);
    event.set("path", std::string("caf\xe9.txt")).set("ok", "fine");
    std::string line;
    ASSERT_NO_THROW(line = event.to_line());
    EXPECT_EQ(line.find('\n'), line.size() - 1);
    auto json = nlohmann::json::parse(line);         // the line itself is valid JSON and UTF-8
    EXPECT_EQ(json["path"], "caf\xef\xbf\xbd.txt");  // U+FFFD REPLACEMENT CHARACTER
    EXPECT_EQ(json["ok"], "fine");
}

TEST(Event, InvalidUtf8InSourceOrEventIsReplacedToo) {
    Event event("w\xff", "e\xc3", known_time);
    EXPECT_NO_THROW((void)event.to_line());
}

TEST(Event, ValidUtf8IsKeptAsIs) {
    Event event("w", "e", known_time);
    event.set("name", "größe ✓");
    EXPECT_NE(event.to_line().find("größe ✓"), std::string::npos);
}

}  // namespace
}  // namespace ktricks

namespace ktricks {
namespace {

TEST(EventEnvironment, EveryFieldBecomesAKtricksVariable) {
    Event event("mysql", "change", known_time);
    event.set("db", "shop").set("new-table", "b").set("rows", 3).set("delayed", true).set("initial", false);
    event.set("command", std::vector<std::string>{"/bin/sh", "-c", "exit 7"});
    auto env = event.environment();
    for (const char* expected :
         {"KTRICKS_TS=2026-11-27T03:20:39.123456Z", "KTRICKS_SOURCE=mysql", "KTRICKS_EVENT=change",
          "KTRICKS_DB=shop", "KTRICKS_NEW_TABLE=b", "KTRICKS_ROWS=3", "KTRICKS_DELAYED=1",
          "KTRICKS_INITIAL=0", "KTRICKS_COMMAND=/bin/sh -c 'exit 7'"})
        EXPECT_NE(std::find(env.begin(), env.end(), expected), env.end()) << expected;
    EXPECT_EQ(env.size(), 9u);
}

}  // namespace
}  // namespace ktricks
