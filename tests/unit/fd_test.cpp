// Fd ownership and the small descriptor helpers.
#include "ktricks/core/fd.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace ktricks {
namespace {

static_assert(!std::is_copy_constructible_v<Fd> && !std::is_copy_assignable_v<Fd>, "Fd is move-only");
static_assert(std::is_nothrow_move_constructible_v<Fd> && std::is_nothrow_move_assignable_v<Fd>);

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) >= 0 || errno != EBADF; }

// A fresh descriptor of /dev/null, close-on-exec unless asked otherwise.
int open_null(bool cloexec = true) {
    int fd = ::open("/dev/null", O_RDWR | (cloexec ? O_CLOEXEC : 0));
    if (fd < 0) throw std::system_error(errno, std::system_category(), "open /dev/null");
    return fd;
}

TEST(Fd, DefaultIsEmpty) {
    Fd fd;
    EXPECT_EQ(fd.get(), -1);
    EXPECT_FALSE(fd);
}

TEST(Fd, ClosesOnDestruction) {
    int raw = open_null();
    {
        Fd fd(raw);
        EXPECT_TRUE(fd);
        EXPECT_EQ(fd.get(), raw);
    }
    EXPECT_FALSE(is_open(raw));
}

TEST(Fd, MoveConstructionTransfersOwnership) {
    int raw = open_null();
    Fd from(raw);
    Fd to(std::move(from));
    EXPECT_EQ(to.get(), raw);
    EXPECT_EQ(from.get(), -1);  // NOLINT(bugprone-use-after-move): the moved-from state is the contract
    EXPECT_TRUE(is_open(raw));
}

TEST(Fd, MoveAssignmentClosesTheOldDescriptorAndTakesTheNew) {
    int old_raw = open_null(), new_raw = open_null();
    Fd target(old_raw);
    Fd source(new_raw);
    target = std::move(source);
    EXPECT_EQ(target.get(), new_raw);
    EXPECT_EQ(source.get(), -1);  // NOLINT(bugprone-use-after-move)
    EXPECT_FALSE(is_open(old_raw));
    EXPECT_TRUE(is_open(new_raw));
}

TEST(Fd, SelfMoveAssignmentKeepsTheDescriptor) {
    int raw = open_null();
    Fd fd(raw);
    Fd& alias = fd;
    fd = std::move(alias);
    EXPECT_EQ(fd.get(), raw);
    EXPECT_TRUE(is_open(raw));
}

TEST(Fd, ResetClosesAndAdoptsTheGivenDescriptor) {
    int first = open_null(), second = open_null();
    Fd fd(first);
    fd.reset(second);
    EXPECT_FALSE(is_open(first));
    EXPECT_EQ(fd.get(), second);
    fd.reset();
    EXPECT_FALSE(is_open(second));
    EXPECT_FALSE(fd);
    fd.reset();  // resetting an empty Fd is harmless
    EXPECT_FALSE(fd);
}

TEST(Fd, ReleaseGivesUpOwnershipWithoutClosing) {
    int raw = open_null();
    int released;
    {
        Fd fd(raw);
        released = fd.release();
        EXPECT_FALSE(fd);
    }
    EXPECT_EQ(released, raw);
    EXPECT_TRUE(is_open(raw));
    ::close(raw);
}

TEST(Fd, DuplicateIsANewCloexecDescriptorForTheSameOpenFile) {
    Fd original(open_null(false));
    ASSERT_FALSE(is_cloexec(original.get()));
    Fd copy = original.duplicate();
    ASSERT_TRUE(copy);
    EXPECT_NE(copy.get(), original.get());
    EXPECT_TRUE(is_cloexec(copy.get()));
    // Same open file description: a status flag set through one shows through the other.
    set_nonblocking(original.get());
    EXPECT_TRUE(::fcntl(copy.get(), F_GETFL) & O_NONBLOCK);
    original.reset();
    EXPECT_TRUE(is_open(copy.get()));
}

TEST(Fd, DuplicateOfAnEmptyFdThrowsNamingTheCall) {
    Fd empty;
    try {
        (void)empty.duplicate();
        FAIL() << "duplicate of -1 succeeded";
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), EBADF);
        EXPECT_EQ(std::string(error.what()), "fcntl(F_DUPFD_CLOEXEC) fd -1: Bad file descriptor");
    }
}

TEST(FdHelpers, SetNonblockingTurnsOnAndOff) {
    Fd fd(open_null());
    set_nonblocking(fd.get());
    EXPECT_TRUE(::fcntl(fd.get(), F_GETFL) & O_NONBLOCK);
    set_nonblocking(fd.get());  // idempotent
    EXPECT_TRUE(::fcntl(fd.get(), F_GETFL) & O_NONBLOCK);
    set_nonblocking(fd.get(), false);
    EXPECT_FALSE(::fcntl(fd.get(), F_GETFL) & O_NONBLOCK);
}

TEST(FdHelpers, SetNonblockingKeepsOtherStatusFlags) {
    Fd fd(::open("/dev/null", O_WRONLY | O_APPEND | O_CLOEXEC));
    ASSERT_TRUE(fd);
    set_nonblocking(fd.get());
    int flags = ::fcntl(fd.get(), F_GETFL);
    EXPECT_TRUE(flags & O_APPEND);
    EXPECT_EQ(flags & O_ACCMODE, O_WRONLY);
}

TEST(FdHelpers, SetCloexecAndIsCloexecAgree) {
    Fd fd(open_null(false));
    EXPECT_FALSE(is_cloexec(fd.get()));
    set_cloexec(fd.get());
    EXPECT_TRUE(is_cloexec(fd.get()));
    EXPECT_TRUE(::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
    set_cloexec(fd.get(), false);
    EXPECT_FALSE(is_cloexec(fd.get()));
    EXPECT_FALSE(::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
}

TEST(FdHelpers, HelpersOnAClosedDescriptorThrowEbadfNamingIt) {
    int raw = open_null();
    ::close(raw);
    const std::string suffix = " fd " + std::to_string(raw) + ": Bad file descriptor";
    try {
        set_nonblocking(raw);
        FAIL();
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), EBADF);
        EXPECT_EQ(std::string(error.what()), "fcntl(F_GETFL)" + suffix);
    }
    try {
        set_cloexec(raw);
        FAIL();
    } catch (const std::system_error& error) {
        EXPECT_EQ(std::string(error.what()), "fcntl(F_GETFD)" + suffix);
    }
    EXPECT_THROW(is_cloexec(raw), std::system_error);
}

TEST(FdHelpers, CountOpenFdsFollowsOpenAndClose) {
    int before = count_open_fds();
    EXPECT_GE(before, 3);  // stdin, stdout, stderr at least
    {
        Fd a(open_null()), b(open_null());
        EXPECT_EQ(count_open_fds(), before + 2);
    }
    EXPECT_EQ(count_open_fds(), before);
}

TEST(FdHelpers, CountOpenFdsDoesNotCountItsOwnDirectoryHandle) {
    // Calling it repeatedly neither grows nor leaks.
    int first = count_open_fds();
    for (int i = 0; i < 100; ++i) ASSERT_EQ(count_open_fds(), first);
}

}  // namespace
}  // namespace ktricks
