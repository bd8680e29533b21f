// send_fds / recv_fds: SCM_RIGHTS over real unix socketpairs.
#include "ktricks/core/scm_rights.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "ktricks/core/error.hpp"
#include "ktricks/core/fd.hpp"
#include "test_support.hpp"

namespace ktricks {
namespace {

using namespace test_support;

struct SocketPair {
    explicit SocketPair(int type) {
        int fds[2];
        if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds) < 0)
            throw std::system_error(errno, std::system_category(), "socketpair");
        sender.reset(fds[0]);
        receiver.reset(fds[1]);
    }
    Fd sender, receiver;
};

std::span<const std::byte> bytes(std::string_view text) {
    return std::as_bytes(std::span(text.data(), text.size()));
}

// The first `size` bytes of `buffer` as text.
std::string text(const std::vector<std::byte>& buffer, std::size_t size) {
    return std::string(reinterpret_cast<const char*>(buffer.data()), size);
}

const char* type_name(int type) { return type == SOCK_STREAM ? "Stream" : "Seqpacket"; }
std::string type_name_of(const ::testing::TestParamInfo<int>& test) { return type_name(test.param); }

// Receives the next message with room for only `max_fds` descriptors when more were sent: recv_fds
// must refuse it with EMSGSIZE and leave none of the received descriptors open. Returns the message
// of the error.
std::string expect_too_many_fds_refused(int receiver, std::size_t max_fds, const char* if_accepted) {
    int before = count_open_fds();
    std::vector<std::byte> buffer(16);
    std::string message;
    try {
        recv_fds(receiver, buffer, max_fds);
        ADD_FAILURE() << if_accepted;
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), EMSGSIZE);
        message = error.what();
    }
    EXPECT_EQ(count_open_fds(), before);
    return message;
}

// ---- round trips ----

struct RoundTripCase {
    int socket_type;
    std::size_t fd_count;
};

// Without this gtest prints the struct's raw bytes, padding included, into the test's listing.
void PrintTo(const RoundTripCase& c, std::ostream* out) {
    *out << type_name(c.socket_type) << " x" << c.fd_count;
}

std::string round_trip_name(const ::testing::TestParamInfo<RoundTripCase>& test) {
    return std::string(type_name(test.param.socket_type)) + std::to_string(test.param.fd_count) + "Fds";
}

class ScmRightsRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(ScmRightsRoundTrip, ReceivedDescriptorsAreCloexecInOrderAndReferToTheSameOpenFiles) {
    const auto [socket_type, fd_count] = GetParam();
    SocketPair pair(socket_type);
    std::vector<Pipe> pipes(fd_count);
    std::vector<int> to_send = write_ends(pipes);

    send_fds(pair.sender.get(), bytes("hello"), to_send);
    std::vector<std::byte> buffer(64);
    auto message = recv_fds(pair.receiver.get(), buffer, fd_count);

    EXPECT_EQ(message.size, 5u);
    EXPECT_EQ(text(buffer, message.size), "hello");
    EXPECT_FALSE(message.data_truncated);
    ASSERT_EQ(message.fds.size(), fd_count);
    for (std::size_t i = 0; i < fd_count; ++i) {
        SCOPED_TRACE("fd #" + std::to_string(i));
        EXPECT_TRUE(is_cloexec(message.fds[i].get()));
        EXPECT_NE(message.fds[i].get(), to_send[i]);
        EXPECT_TRUE(same_file(message.fds[i].get(), to_send[i]));
    }
    // Writing through the first and the last received descriptor reaches their pipes' read ends.
    for (std::size_t i : {std::size_t{0}, fd_count - 1}) {
        char sent = static_cast<char>('a' + i % 26), got = 0;
        ASSERT_EQ(::write(message.fds[i].get(), &sent, 1), 1);
        ASSERT_EQ(::read(pipes[i].read_end.get(), &got, 1), 1);
        EXPECT_EQ(got, sent);
    }
}

INSTANTIATE_TEST_SUITE_P(, ScmRightsRoundTrip,
                         ::testing::Values(RoundTripCase{SOCK_STREAM, 1}, RoundTripCase{SOCK_STREAM, 3},
                                           RoundTripCase{SOCK_STREAM, 253}, RoundTripCase{SOCK_SEQPACKET, 1},
                                           RoundTripCase{SOCK_SEQPACKET, 3},
                                           RoundTripCase{SOCK_SEQPACKET, 253}),
                         round_trip_name);

TEST(ScmRights, DataWithoutDescriptorsArrivesWithNone) {
    SocketPair pair(SOCK_SEQPACKET);
    send_fds(pair.sender.get(), bytes("plain"), {});
    std::vector<std::byte> buffer(16);
    auto message = recv_fds(pair.receiver.get(), buffer, 4);
    EXPECT_EQ(message.size, 5u);
    EXPECT_TRUE(message.fds.empty());
}

TEST(ScmRights, ReceivingWithNoRoomForDescriptorsWorksWhenNoneWereSent) {
    SocketPair pair(SOCK_STREAM);
    send_fds(pair.sender.get(), bytes("x"), {});
    std::vector<std::byte> buffer(4);
    auto message = recv_fds(pair.receiver.get(), buffer, 0);
    EXPECT_EQ(message.size, 1u);
    EXPECT_TRUE(message.fds.empty());
}

TEST(ScmRights, MaxFdsAboveTheKernelLimitIsCappedNotRefused) {
    SocketPair pair(SOCK_SEQPACKET);
    Pipe pipe;
    int fd = pipe.write_end.get();
    send_fds(pair.sender.get(), bytes("x"), std::span(&fd, 1));
    std::vector<std::byte> buffer(4);
    auto message = recv_fds(pair.receiver.get(), buffer, 100000);
    EXPECT_EQ(message.fds.size(), 1u);
}

TEST(ScmRights, TheSameDescriptorMayBeSentSeveralTimes) {
    SocketPair pair(SOCK_SEQPACKET);
    Pipe pipe;
    std::vector<int> same(3, pipe.write_end.get());
    send_fds(pair.sender.get(), bytes("x"), same);
    std::vector<std::byte> buffer(4);
    auto message = recv_fds(pair.receiver.get(), buffer, 3);
    ASSERT_EQ(message.fds.size(), 3u);
    for (auto& fd : message.fds) EXPECT_TRUE(same_file(fd.get(), pipe.write_end.get()));
    EXPECT_NE(message.fds[0].get(), message.fds[1].get());
}

TEST(ScmRights, EndOfStreamIsZeroBytesAndNoDescriptors) {
    SocketPair pair(SOCK_STREAM);
    pair.sender.reset();
    std::vector<std::byte> buffer(4);
    auto message = recv_fds(pair.receiver.get(), buffer, 1);
    EXPECT_EQ(message.size, 0u);
    EXPECT_TRUE(message.fds.empty());
}

// ---- refusals before any syscall ----

TEST(ScmRights, EmptyDataIsRefusedAndNothingIsSent) {
    SocketPair pair(SOCK_SEQPACKET);
    Pipe pipe;
    int fd = pipe.write_end.get();
    EXPECT_THROW(send_fds(pair.sender.get(), {}, std::span(&fd, 1)), InputError);
    set_nonblocking(pair.receiver.get());
    std::vector<std::byte> buffer(4);
    try {
        recv_fds(pair.receiver.get(), buffer, 1);
        FAIL() << "something was sent";
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), EAGAIN);
    }
}

TEST(ScmRights, MoreThan253DescriptorsAreRefusedNamingTheLimit) {
    SocketPair pair(SOCK_SEQPACKET);
    Pipe pipe;
    std::vector<int> too_many(254, pipe.write_end.get());
    try {
        send_fds(pair.sender.get(), bytes("x"), too_many);
        FAIL() << "254 descriptors were accepted";
    } catch (const InputError& error) {
        std::string message = error.what();
        EXPECT_NE(message.find("254"), std::string::npos) << message;
        EXPECT_NE(message.find("253"), std::string::npos) << message;
    }
}

// ---- truncation ----

class ScmRightsTruncatedControlData : public ::testing::TestWithParam<int> {};

TEST_P(ScmRightsTruncatedControlData, ClosesEveryReceivedFd) {
    SocketPair pair(GetParam());
    std::vector<Pipe> pipes(3);
    send_fds(pair.sender.get(), bytes("three"), write_ends(pipes));

    auto message =
        expect_too_many_fds_refused(pair.receiver.get(), 1, "truncated control data was not reported");
    EXPECT_NE(message.find("MSG_CTRUNC"), std::string::npos) << message;
    // No copy of a write end survives anywhere but in `pipes`: closing them gives the readers EOF.
    for (auto& pipe : pipes) {
        pipe.write_end.reset();
        char c;
        EXPECT_EQ(::read(pipe.read_end.get(), &c, 1), 0);
    }
}

INSTANTIATE_TEST_SUITE_P(, ScmRightsTruncatedControlData, ::testing::Values(SOCK_SEQPACKET, SOCK_STREAM),
                         type_name_of);

TEST(ScmRights, DescriptorsSentToAReceiverExpectingNoneAreClosedAndReported) {
    SocketPair pair(SOCK_SEQPACKET);
    Pipe pipe;
    int fd = pipe.write_end.get();
    send_fds(pair.sender.get(), bytes("x"), std::span(&fd, 1));
    expect_too_many_fds_refused(pair.receiver.get(), 0, "unexpected descriptor was not reported");
}

TEST(ScmRights, MoreDescriptorsThanAskedForIsAnErrorEvenWhenTheyFitTheRoundedBuffer) {
    // CMSG_SPACE(sizeof(int)) has room for two ints on 64-bit, so two fds arrive without MSG_CTRUNC.
    SocketPair pair(SOCK_SEQPACKET);
    Pipe pipe;
    std::vector<int> two(2, pipe.write_end.get());
    send_fds(pair.sender.get(), bytes("x"), two);
    expect_too_many_fds_refused(pair.receiver.get(), 1,
                                "two descriptors were accepted where one was expected");
}

TEST(ScmRights, SeqpacketRecordLargerThanTheBufferIsFlaggedAndItsRestDiscarded) {
    SocketPair pair(SOCK_SEQPACKET);
    Pipe pipe;
    int fd = pipe.write_end.get();
    send_fds(pair.sender.get(), bytes("0123456789"), std::span(&fd, 1));
    send_fds(pair.sender.get(), bytes("next"), {});

    std::vector<std::byte> small(4);
    auto first = recv_fds(pair.receiver.get(), small, 1);
    EXPECT_TRUE(first.data_truncated);
    EXPECT_EQ(first.size, 4u);
    EXPECT_EQ(text(small, 4), "0123");
    EXPECT_EQ(first.fds.size(), 1u);  // the descriptors still arrive with the truncated record

    std::vector<std::byte> buffer(16);
    auto second = recv_fds(pair.receiver.get(), buffer, 1);
    EXPECT_FALSE(second.data_truncated);
    EXPECT_EQ(text(buffer, second.size), "next");
}

TEST(ScmRights, StreamKeepsBytesThatDidNotFitForTheNextReceive) {
    SocketPair pair(SOCK_STREAM);
    send_fds(pair.sender.get(), bytes("0123456789"), {});
    std::vector<std::byte> small(4);
    auto first = recv_fds(pair.receiver.get(), small, 1);
    EXPECT_FALSE(first.data_truncated);
    EXPECT_EQ(first.size, 4u);
    std::vector<std::byte> buffer(16);
    auto rest = recv_fds(pair.receiver.get(), buffer, 1);
    EXPECT_EQ(text(buffer, rest.size), "456789");
}

// ---- errors from the syscalls ----

TEST(ScmRights, EmptyNonblockingSocketThrowsEagainNamingTheSocket) {
    SocketPair pair(SOCK_STREAM);
    set_nonblocking(pair.receiver.get());
    std::vector<std::byte> buffer(4);
    try {
        recv_fds(pair.receiver.get(), buffer, 1);
        FAIL() << "recv_fds returned on an empty socket";
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), EAGAIN);
        EXPECT_EQ(std::string(error.what()).rfind("recvmsg fd " + std::to_string(pair.receiver.get()), 0), 0u)
            << error.what();
    }
}

TEST(ScmRights, SendingToAClosedPeerThrowsEpipeInsteadOfRaisingSigpipe) {
    SocketPair pair(SOCK_STREAM);
    pair.receiver.reset();
    try {
        send_fds(pair.sender.get(), bytes("x"), {});
        FAIL() << "send to a closed peer succeeded";
    } catch (const std::system_error& error) {
        EXPECT_EQ(error.code().value(), EPIPE);
    }
}

TEST(ScmRights, FullNonblockingSeqpacketSocketThrowsEagain) {
    SocketPair pair(SOCK_SEQPACKET);
    set_nonblocking(pair.sender.get());
    std::string record(4096, 'r');
    bool got_eagain = false;
    for (int i = 0; i < 100000 && !got_eagain; ++i) {
        try {
            send_fds(pair.sender.get(), bytes(record), {});
        } catch (const std::system_error& error) {
            ASSERT_EQ(error.code().value(), EAGAIN) << error.what();
            got_eagain = true;
        }
    }
    EXPECT_TRUE(got_eagain);
}

TEST(ScmRights, LargeMessageOnANonblockingStreamIsSentWhole) {
    // The descriptors ride on the first byte; if the rest were abandoned on EAGAIN, the receiver
    // would hold the fds of a message whose payload never completes.
    SocketPair pair(SOCK_STREAM);
    set_nonblocking(pair.sender.get());
    Pipe pipe;
    int fd = pipe.write_end.get();
    const std::string payload(4 << 20, 'p');

    std::size_t received = 0;
    std::size_t fds_received = 0;
    std::string receive_error;
    std::thread reader([&] {
        std::vector<std::byte> buffer(64 << 10);
        // However the reader ends, the sender must not wait for room forever: a shut-down peer
        // turns its wait into EPIPE.
        struct ShutdownOnExit {
            int fd;
            ~ShutdownOnExit() { ::shutdown(fd, SHUT_RDWR); }
        } shutdown_on_exit{pair.receiver.get()};
        try {
            while (received < payload.size()) {
                if (!readable_within(pair.receiver.get(), std::chrono::seconds(10))) {
                    receive_error = "no data for 10 s";
                    return;
                }
                auto message = recv_fds(pair.receiver.get(), buffer, 1);
                if (message.size == 0) {
                    receive_error = "end of stream";
                    return;
                }
                received += message.size;
                fds_received += message.fds.size();
            }
        } catch (const std::exception& error) {
            receive_error = error.what();
        }
    });
    try {
        send_fds(pair.sender.get(), bytes(payload), std::span(&fd, 1));
    } catch (const std::exception& error) {
        ADD_FAILURE() << "send_fds: " << error.what();
        ::shutdown(pair.sender.get(), SHUT_WR);  // lets the reader see end of stream
    }
    reader.join();
    EXPECT_EQ(receive_error, "");
    EXPECT_EQ(received, payload.size());
    EXPECT_EQ(fds_received, 1u);
}

}  // namespace
}  // namespace ktricks
