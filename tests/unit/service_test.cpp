// The notify protocol and journald-friendly log lines, against real sockets and a real stderr.
#include "ktricks/core/service.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>

#include "ktricks/core/fd.hpp"

namespace ktricks {
namespace {

class ScopedEnv {
public:
    ScopedEnv(const char* name, const std::string& value) : name_(name) {
        if (const char* old = std::getenv(name)) old_ = old;
        ::setenv(name, value.c_str(), 1);
    }
    ~ScopedEnv() { old_.empty() ? ::unsetenv(name_) : ::setenv(name_, old_.c_str(), 1); }

private:
    const char* name_;
    std::string old_;
};

// A datagram socket bound to NAME ("/path" or "@abstract"), as a service manager would have.
Fd bound_datagram_socket(const std::string& name) {
    Fd fd{::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, name.data(), name.size());
    if (name[0] == '@') address.sun_path[0] = '\0';
    auto length =
        static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + (name[0] == '/' ? 1 : 0));
    EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), length), 0) << std::strerror(errno);
    return fd;
}

std::string receive(int fd) {
    char buffer[512];
    ssize_t size = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    return size < 0 ? std::string("<nothing>") : std::string(buffer, static_cast<size_t>(size));
}

TEST(Notify, DoesNothingWithoutNotifySocket) {
    ::unsetenv("NOTIFY_SOCKET");
    EXPECT_FALSE(notify_ready());
}

TEST(Notify, SendsReadyAndStatusToAPathSocket) {
    std::string path =
        std::filesystem::temp_directory_path() / ("ktricks-notify-" + std::to_string(::getpid()));
    ::unlink(path.c_str());
    Fd manager = bound_datagram_socket(path);
    ScopedEnv env("NOTIFY_SOCKET", path);
    EXPECT_TRUE(notify_ready("watching 2 interfaces"));
    EXPECT_EQ(receive(manager.get()), "READY=1\nSTATUS=watching 2 interfaces");
    EXPECT_TRUE(notify_stopping());
    EXPECT_EQ(receive(manager.get()), "STOPPING=1");
    ::unlink(path.c_str());
}

TEST(Notify, SendsToAnAbstractSocket) {
    std::string name = "@ktricks-notify-test-" + std::to_string(::getpid());
    Fd manager = bound_datagram_socket(name);
    ScopedEnv env("NOTIFY_SOCKET", name);
    EXPECT_TRUE(notify_status("busy"));
    EXPECT_EQ(receive(manager.get()), "STATUS=busy");
}

TEST(Notify, ReportsAnUnreachableManager) {
    ScopedEnv env("NOTIFY_SOCKET", "/nonexistent/ktricks/notify");
    try {
        notify_ready();
        FAIL() << "expected an error";
    } catch (const std::system_error& error) {
        EXPECT_NE(std::string(error.what()).find("/nonexistent/ktricks/notify"), std::string::npos)
            << error.what();
    }
}

TEST(Notify, RejectsARelativeSocketName) {
    ScopedEnv env("NOTIFY_SOCKET", "relative/name");
    EXPECT_THROW(notify_ready(), std::system_error);
}

// Runs BODY with stderr redirected to a file; returns what was written.
template <typename Body>
std::string captured_stderr(Body body, bool announce_as_journal) {
    std::string path = std::filesystem::temp_directory_path() / ("ktricks-log-" + std::to_string(::getpid()));
    Fd file{::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)};
    Fd saved{::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3)};
    ::dup2(file.get(), STDERR_FILENO);
    struct stat status {};
    ::fstat(file.get(), &status);
    {
        ScopedEnv env("JOURNAL_STREAM",
                      announce_as_journal ? fmt::format("{}:{}", status.st_dev, status.st_ino) : "1:1");
        body();
    }
    ::dup2(saved.get(), STDERR_FILENO);
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    ::unlink(path.c_str());
    return text.str();
}

TEST(Log, PrefixesPriorityWhenStderrIsTheJournalStream) {
    set_log_program("ktricks test");
    auto text = captured_stderr(
        [] {
            log_error("cannot read {}", "x.conf");
            log_info("started");
        },
        true);
    EXPECT_EQ(text, "<3>ktricks test: cannot read x.conf\n<6>ktricks test: started\n");
}

TEST(Log, PlainLinesWhenStderrIsSomethingElse) {
    set_log_program("ktricks test");
    auto text = captured_stderr([] { log_warning("slow script"); }, false);
    EXPECT_EQ(text, "ktricks test: warning: slow script\n");
}

TEST(Log, EscapesControlBytesSoOneEventIsOneLine) {
    set_log_program("ktricks test");
    auto text = captured_stderr([] { log_info("name {}", "evil\nline"); }, false);
    EXPECT_EQ(text, "ktricks test: name evil\\x0aline\n");
}

}  // namespace
}  // namespace ktricks
