// once::LockName (the abstract socket name a lock stands for) and once::Message (the inbox record).
#include <fcntl.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ktricks/core/error.hpp"
#include "ktricks/once.hpp"

namespace ktricks::once {
namespace {

using namespace std::string_literals;

// sun_path minus the leading NUL of an abstract name.
constexpr std::size_t abstract_room = sizeof(sockaddr_un::sun_path) - 1;
static_assert(abstract_room == 107);

// Expects make() to throw an InputError whose message contains every one of `parts` and is one line.
void expect_rejected(std::string_view name, Scope scope, uid_t uid, const std::vector<std::string>& parts) {
    try {
        LockName::make(name, scope, uid);
        ADD_FAILURE() << "accepted a name of " << name.size() << " bytes";
    } catch (const InputError& error) {
        std::string message = error.what();
        for (const auto& part : parts) EXPECT_NE(message.find(part), std::string::npos) << message;
        EXPECT_EQ(message.find('\n'), std::string::npos) << "message spans lines: " << message;
    }
}

// ---- LockName ----

TEST(LockName, UserScopeNameCarriesTheUid) {
    auto name = LockName::make("backup", Scope::user, 1000);
    EXPECT_EQ(name.name(), "backup");
    EXPECT_EQ(name.scope(), Scope::user);
    EXPECT_EQ(name.expected_uid(), std::optional<uid_t>(1000));
    EXPECT_EQ(name.socket_name(), "@ktricks/once/u1000/backup");
    EXPECT_TRUE(name.address().is_abstract());
    EXPECT_EQ(name.address().to_string(), "unix:@ktricks/once/u1000/backup");
    EXPECT_TRUE(name.address() == SocketAddress::unix_abstract("ktricks/once/u1000/backup"));
}

TEST(LockName, UserScopeDefaultsToTheEffectiveUid) {
    auto name = LockName::make("backup");
    EXPECT_EQ(name.scope(), Scope::user);
    EXPECT_EQ(name.expected_uid(), std::optional<uid_t>(::geteuid()));
    EXPECT_EQ(name.socket_name(), "@ktricks/once/u" + std::to_string(::geteuid()) + "/backup");
}

TEST(LockName, GlobalScopeHasNoUidAndAnyoneMayHoldIt) {
    auto name = LockName::make("backup", Scope::global, 1000);
    EXPECT_EQ(name.scope(), Scope::global);
    EXPECT_FALSE(name.expected_uid());
    EXPECT_EQ(name.socket_name(), "@ktricks/once/global/backup");
}

TEST(LockName, SameNameInDifferentScopesOrUidsIsADifferentSocket) {
    auto a = LockName::make("x", Scope::user, 1000);
    auto b = LockName::make("x", Scope::user, 1001);
    auto c = LockName::make("x", Scope::global, 1000);
    EXPECT_FALSE(a.address() == b.address());
    EXPECT_FALSE(a.address() == c.address());
}

TEST(LockName, SlashesSpacesAndUtf8AreAllowed) {
    EXPECT_EQ(LockName::make("nightly/db backup", Scope::global).socket_name(),
              "@ktricks/once/global/nightly/db backup");
    EXPECT_EQ(LockName::make("größe", Scope::global).name(), "größe");
}

TEST(LockName, EmptyNameIsRejected) { expect_rejected("", Scope::user, 1000, {"lock name is empty"}); }

TEST(LockName, NulByteIsRejected) { expect_rejected("a\0b"s, Scope::user, 1000, {"NUL"}); }

TEST(LockName, ControlCharacterIsRejectedNamingTheByteAndShowingItEscaped) {
    expect_rejected("a\nb", Scope::user, 1000, {"control character", "0x0a", "a\\x0ab"});
    expect_rejected("\x1b[31mred", Scope::user, 1000, {"control character", "0x1b", "\\x1b[31mred"});
    expect_rejected("del\x7f", Scope::global, 1000, {"control character", "0x7f"});
    expect_rejected("tab\t", Scope::global, 1000, {"0x09"});
}

TEST(LockName, LongestUserNameFillsTheAbstractNameExactly) {
    const std::string prefix = "ktricks/once/u1000/";
    const std::size_t longest = abstract_room - prefix.size();
    ASSERT_EQ(longest, 88u);
    auto name = LockName::make(std::string(longest, 'n'), Scope::user, 1000);
    EXPECT_EQ(name.socket_name().size(), 1 + abstract_room);
    EXPECT_EQ(name.address().length(), sizeof(sockaddr_un));
    expect_rejected(std::string(longest + 1, 'n'), Scope::user, 1000,
                    {"lock name is 89 bytes", "at most 88 fit", "\"ktricks/once/u1000/\" takes 19"});
}

TEST(LockName, LongestGlobalNameFillsTheAbstractNameExactly) {
    const std::size_t longest = abstract_room - std::string("ktricks/once/global/").size();
    ASSERT_EQ(longest, 87u);
    EXPECT_NO_THROW(LockName::make(std::string(longest, 'g'), Scope::global));
    expect_rejected(std::string(longest + 1, 'g'), Scope::global, 0,
                    {"lock name is 88 bytes", "at most 87 fit"});
}

TEST(LockName, RoomDependsOnTheLengthOfTheUid) {
    EXPECT_NO_THROW(LockName::make(std::string(91, 'r'), Scope::user, 0));  // "ktricks/once/u0/" is 16 bytes
    expect_rejected(std::string(92, 'r'), Scope::user, 0, {"at most 91 fit"});
    const uid_t largest = std::numeric_limits<uid_t>::max() - 1;  // 4294967294: 10 digits
    EXPECT_NO_THROW(LockName::make(std::string(82, 'r'), Scope::user, largest));
    expect_rejected(std::string(83, 'r'), Scope::user, largest, {"at most 82 fit"});
}

TEST(LockName, LengthIsCountedInBytesNotCharacters) {
    std::string two_byte_chars;
    for (int i = 0; i < 44; ++i) two_byte_chars += "ß";  // 88 bytes
    EXPECT_NO_THROW(LockName::make(two_byte_chars, Scope::user, 1000));
    expect_rejected(two_byte_chars + "x", Scope::user, 1000, {"89 bytes"});
}

// ---- Message ----

TEST(OnceMessage, JsonLineHasTheDocumentedKeysInOrderAndEndsWithNewline) {
    Message message;
    message.pid = 1;
    message.uid = 0;
    message.gid = 0;
    message.cwd = "/home/me";
    message.args = {"a.txt"};
    EXPECT_EQ(message.to_json_line(),
              "{\"pid\":1,\"uid\":0,\"gid\":0,\"cwd\":\"/home/me\",\"args\":[\"a.txt\"],\"stdio\":false}\n");
}

TEST(OnceMessage, RoundTripsThroughJson) {
    Message message;
    message.pid = 4242;
    message.uid = 1000;
    message.gid = 100;
    message.cwd = "/srv/data dir";
    message.args = {"a.txt", "with space", "quote\"and\\backslash", "line\nbreak", "", "größe"};
    std::string line = message.to_json_line();
    EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
    auto again = Message::from_json(line);
    EXPECT_EQ(again.pid, message.pid);
    EXPECT_EQ(again.uid, message.uid);
    EXPECT_EQ(again.gid, message.gid);
    EXPECT_EQ(again.cwd, message.cwd);
    EXPECT_EQ(again.args, message.args);
    EXPECT_TRUE(again.fds.empty());
}

TEST(OnceMessage, StdioFlagFollowsTheFourDescriptors) {
    Message message;
    for (int i = 0; i < 4; ++i) message.fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    EXPECT_TRUE(message.has_stdio());
    EXPECT_EQ(nlohmann::json::parse(message.to_json_line())["stdio"], true);
    message.fds.pop_back();
    EXPECT_FALSE(message.has_stdio());
}

TEST(OnceMessage, InvalidUtf8IsReplacedNotThrown) {
    Message message;
    message.args = {"caf\xe9"};
    message.cwd = "/tmp/\xff";
    std::string line;
    ASSERT_NO_THROW(line = message.to_json_line());
    auto again = Message::from_json(line);
    EXPECT_EQ(again.args.at(0), "caf\xef\xbf\xbd");
}

TEST(OnceMessage, MissingFieldsTakeDefaults) {
    auto message = Message::from_json("{}");
    EXPECT_EQ(message.pid, 0);
    EXPECT_EQ(message.cwd, "");
    EXPECT_TRUE(message.args.empty());
    EXPECT_NO_THROW(Message::from_json(R"({"cwd":"/tmp","args":["a","b"],"stdio":false,"unknown":1})"));
}

void expect_bad_message(std::string_view text, const std::string& reason) {
    SCOPED_TRACE(std::string(text));
    try {
        Message::from_json(text);
        ADD_FAILURE() << "accepted";
    } catch (const InputError& error) {
        EXPECT_NE(std::string(error.what()).find(reason), std::string::npos) << error.what();
    }
}

TEST(OnceMessage, MalformedJsonIsRejected) {
    expect_bad_message("", "not valid JSON");
    expect_bad_message("{", "not valid JSON");
    expect_bad_message("{\"args\":[\"a\"]", "not valid JSON");
    expect_bad_message("{} {}", "not valid JSON");
    expect_bad_message("{\"cwd\":\"caf\xe9\"}", "not valid JSON");  // invalid UTF-8 inside a string
}

TEST(OnceMessage, NonObjectIsRejected) {
    expect_bad_message("[1,2]", "not a JSON object");
    expect_bad_message("\"text\"", "not a JSON object");
    expect_bad_message("42", "not a JSON object");
    expect_bad_message("null", "not a JSON object");
}

TEST(OnceMessage, ArgsMustBeAnArrayOfStrings) {
    expect_bad_message(R"({"args":[1]})", "\"args\" holds a non-string");
    expect_bad_message(R"({"args":["a",null]})", "\"args\" holds a non-string");
    expect_bad_message(R"({"args":[["nested"]]})", "\"args\" holds a non-string");
    expect_bad_message(R"({"args":"a b"})", "\"args\" is not an array");
}

TEST(OnceMessage, CwdMustBeAString) {
    expect_bad_message(R"({"cwd":1})", "\"cwd\" is not a string");
    expect_bad_message(R"({"cwd":["/"]})", "\"cwd\" is not a string");
}

TEST(OnceMessage, IdsMustBeNonNegativeWholeNumbers) {
    expect_bad_message(R"({"pid":-1})", "\"pid\" is not a whole number");
    expect_bad_message(R"({"uid":1.5})", "\"uid\" is not a whole number");
    expect_bad_message(R"({"gid":"0"})", "\"gid\" is not a whole number");
}

TEST(OnceMessage, IdsOutOfRangeAreRejectedNotWrapped) {
    // 4294967296 would wrap to uid 0 (root); 2147483648 to a negative pid.
    expect_bad_message(R"({"uid":4294967296})", "\"uid\" is out of range");
    expect_bad_message(R"({"gid":18446744073709551615})", "\"gid\" is out of range");
    expect_bad_message(R"({"pid":2147483648})", "\"pid\" is out of range");
    auto largest = Message::from_json(R"({"pid":2147483647,"uid":4294967295})");
    EXPECT_EQ(largest.pid, 2147483647);
    EXPECT_EQ(largest.uid, 4294967295u);
}

TEST(OnceDelivery, EveryOutcomeHasAName) {
    EXPECT_STREQ(to_string(Delivery::delivered), "delivered");
    EXPECT_STREQ(to_string(Delivery::no_inbox), "no-inbox");
    EXPECT_STREQ(to_string(Delivery::inbox_full), "inbox-full");
    EXPECT_STREQ(to_string(Delivery::inbox_closed), "inbox-closed");
    EXPECT_STREQ(to_string(Delivery::refused), "refused");
}

}  // namespace
}  // namespace ktricks::once
