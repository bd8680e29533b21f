// /proc readers in core: process_status_field (one /proc/PID/status line by key) and the
// /proc/net/unix table, one parser for every reader of those files.
#include <unistd.h>

#include <gtest/gtest.h>

#include "ktricks/core/proc.hpp"

namespace ktricks {
namespace {

TEST(ProcessStatusField, ReadsOurOwnUidAndName) {
    auto uids = process_status_field(::getpid(), "Uid");
    ASSERT_TRUE(uids.has_value());
    EXPECT_EQ(std::stoul(*uids), ::getuid());
    EXPECT_EQ(process_status_field(::getpid(), "Name"), "test_unit");
}

TEST(ProcessStatusField, KeyMustMatchAWholeKey) {
    EXPECT_FALSE(process_status_field(::getpid(), "Ui").has_value());  // not a prefix of "Uid"
    EXPECT_FALSE(process_status_field(::getpid(), "NoSuchKey").has_value());
}

TEST(ProcessStatusField, GoneProcessHasNoFields) {
    EXPECT_FALSE(process_status_field(0x3ffffff, "Uid").has_value());
}

TEST(ProcNetUnix, LinesParseWithTheirHexFieldsAndPathsWithSpaces) {
    auto entries = parse_proc_net_unix(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0005 01 12345 @ktricks/once/u0/a name\n"
        "0000000000000000: 00000003 00000000 00000000 0001 03 777\n"
        "garbage\n");
    ASSERT_EQ(entries.size(), 2u);
    EXPECT_EQ(entries[0].flags, 0x10000u);
    EXPECT_EQ(entries[0].type, 5u);  // SOCK_SEQPACKET
    EXPECT_EQ(entries[0].state, 1u);
    EXPECT_EQ(entries[0].inode, 12345u);
    EXPECT_EQ(entries[0].path, "@ktricks/once/u0/a name");
    EXPECT_EQ(entries[1].path, "");
}

}  // namespace
}  // namespace ktricks
