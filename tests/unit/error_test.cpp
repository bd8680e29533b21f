// Errors: messages that name the call and the object, and the sysexits.h status for each kind.
#include "ktricks/core/error.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <ios>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>

namespace ktricks {
namespace {

std::system_error caught_system_error(int error_number, std::string_view call, std::string_view object) {
    try {
        throw_error(error_number, call, object);
    } catch (const std::system_error& error) {
        return error;
    }
    throw std::logic_error("throw_error returned");
}

TEST(Error, ThrowErrnoNamesTheCallAndTheObjectThenTheReason) {
    errno = EADDRINUSE;
    try {
        throw_errno("bind", "unix:@ktricks/once/u0/x");
        FAIL() << "throw_errno returned";
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code(), std::error_code(EADDRINUSE, std::system_category()));
        EXPECT_EQ(std::string(error.what()), "bind unix:@ktricks/once/u0/x: Address already in use");
    }
}

TEST(Error, ThrowErrnoWithoutAnObjectNamesOnlyTheCall) {
    errno = EMFILE;
    try {
        throw_errno("epoll_create1");
        FAIL() << "throw_errno returned";
    } catch (const std::system_error& error) {
        EXPECT_EQ(std::string(error.what()), std::string("epoll_create1: ") + std::strerror(EMFILE));
    }
}

TEST(Error, ThrowErrorUsesTheGivenNumberNotErrno) {
    errno = 0;
    auto error = caught_system_error(ENOENT, "open", "/nonexistent");
    EXPECT_EQ(error.code().value(), ENOENT);
    EXPECT_EQ(error.code().category(), std::system_category());
    EXPECT_EQ(std::string(error.what()), "open /nonexistent: No such file or directory");
}

TEST(Error, CodeComparesEqualToThePortableCondition) {
    auto error = caught_system_error(EACCES, "open", "x");
    EXPECT_EQ(error.code(), std::errc::permission_denied);
}

TEST(ExitStatusFor, InputErrorIsUsage64) {
    EXPECT_EQ(exit_status_for(InputError("bad address")), 64);
    EXPECT_EQ(exit_code::usage, 64);
}

TEST(ExitStatusFor, DataErrorIsDataerr65AndStillAnInputError) {
    DataError error("rules.toml:3: unknown key");
    EXPECT_EQ(exit_status_for(error), 65);
    EXPECT_NE(dynamic_cast<const InputError*>(&error), nullptr);
}

TEST(ExitStatusFor, BusyErrorIsTempfail75) { EXPECT_EQ(exit_status_for(BusyError("held by pid 1")), 75); }

// ---- errno values: the sysexits.h status each maps to ----

struct ErrnoCase {
    const char* name;  // the test's name
    int error_number;
    int status;
};

void PrintTo(const ErrnoCase& test, std::ostream* out) { *out << test.name; }

const ErrnoCase errno_statuses[] = {
    // permission errors
    {"EaccesIsNoperm77", EACCES, 77},
    {"EpermIsNoperm77", EPERM, 77},
    // a missing file
    {"EnoentIsNoinput66", ENOENT, 66},
    // temporary conditions
    {"EaddrinuseIsTempfail75", EADDRINUSE, 75},
    {"EagainIsTempfail75", EAGAIN, 75},
    {"EbusyIsTempfail75", EBUSY, 75},
    {"EtimedoutIsTempfail75", ETIMEDOUT, 75},
    // missing kernel or peer support
    {"EnosysIsUnavailable69", ENOSYS, 69},
    {"EopnotsuppIsUnavailable69", EOPNOTSUPP, 69},
    {"EafnosupportIsUnavailable69", EAFNOSUPPORT, 69},
    {"EprotonosupportIsUnavailable69", EPROTONOSUPPORT, 69},
    {"EconnrefusedIsUnavailable69", ECONNREFUSED, 69},
    // bad data
    {"EinvalIsDataerr65", EINVAL, 65},
    // any other system error
    {"EmfileIsOserr71", EMFILE, 71},
    {"EioIsOserr71", EIO, 71},
};

class ExitStatusForErrno : public ::testing::TestWithParam<ErrnoCase> {};

TEST_P(ExitStatusForErrno, IsTheSysexitsStatusOfItsKind) {
    const auto& test = GetParam();
    EXPECT_EQ(exit_status_for(caught_system_error(test.error_number, "call", "x")), test.status);
}

INSTANTIATE_TEST_SUITE_P(, ExitStatusForErrno, ::testing::ValuesIn(errno_statuses),
                         [](const ::testing::TestParamInfo<ErrnoCase>& test) { return test.param.name; });

TEST(ExitStatusFor, SpawnErrorFollowsTheShell127NotFound126NotExecutable) {
    EXPECT_EQ(exit_status_for(SpawnError(ENOENT, std::system_category(), "exec nosuchprogram")), 127);
    EXPECT_EQ(exit_status_for(SpawnError(EACCES, std::system_category(), "exec ./file")), 126);
    EXPECT_EQ(exit_status_for(SpawnError(ENOEXEC, std::system_category(), "exec ./file")), 126);
}

TEST(ExitStatusFor, SpawnErrorIsASystemErrorWithTheMessageShape) {
    SpawnError error(ENOENT, std::system_category(), "exec nosuchprogram");
    const std::system_error& as_system = error;
    EXPECT_EQ(as_system.code().value(), ENOENT);
    EXPECT_EQ(std::string(error.what()), "exec nosuchprogram: No such file or directory");
}

TEST(ExitStatusFor, AnyOtherExceptionIsSoftware70) {
    EXPECT_EQ(exit_status_for(std::runtime_error("bug")), 70);
    EXPECT_EQ(exit_status_for(std::logic_error("bug")), 70);
    EXPECT_EQ(exit_status_for(std::bad_alloc()), 70);
}

TEST(ExitStatusFor, SystemErrorOfAnotherCategoryIsStillMappedByValue) {
    // std::errc values are errno values on Linux; generic_category must map like system_category.
    EXPECT_EQ(exit_status_for(std::system_error(std::make_error_code(std::errc::permission_denied))), 77);
}

TEST(ExitStatusFor, ErrorCodesOfNonErrnoCategoriesAreNotReadAsErrno) {
    // std::ios_base::failure carries io_errc::stream == 1, which as an errno would be EPERM (77).
    std::ios_base::failure stream_failure("read failed");
    ASSERT_EQ(stream_failure.code().value(), 1);
    EXPECT_EQ(exit_status_for(stream_failure), exit_code::os_error);
}

}  // namespace
}  // namespace ktricks
