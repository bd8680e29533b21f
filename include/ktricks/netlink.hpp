// netlink: the kernel's bulk-information and event channel, on libmnl.
//
// A netlink socket is a datagram socket whose peer is the kernel. Two conversations happen on it:
//   - request/dump: we send one request (NLM_F_DUMP for "all of them"), the kernel answers with as
//     many multi-part messages as it takes, ending with NLMSG_DONE (or NLMSG_ERROR). A dump is not
//     a snapshot: if the table changes while the kernel walks it, replies carry NLM_F_DUMP_INTR and
//     the only correct answer is to read to the end and start again (Socket::dump does that).
//   - multicast: after subscribing to a group, the kernel pushes events as they happen. If we read
//     slower than the kernel writes, the socket buffer overflows, recv fails with ENOBUFS and the
//     lost events are gone for good: the caller must resynchronise (dump again). Socket::receive
//     reports that as Received::overrun; it is never swallowed.
//
// Guarantees of this layer:
//   - every socket is SOCK_CLOEXEC; errors name the call and what it was about; NLMSG_ERROR
//     carries the kernel's extended-ack text when it gave one (NetlinkError::extack()).
//   - replies are matched by sequence number and port id; stale replies of an abandoned dump are
//     drained and dropped, never handed to the caller.
//   - attribute access never reads past a message: Attributes is built with libmnl's bounds
//     checks, and struct-valued attributes (tcp_info grows with every kernel) are copied with
//     `read_struct`, which takes what the kernel sent and zero-fills what it did not.
//
// Message construction is libmnl's (mnl_attr_put_* on Request::header()); this header adds what
// libmnl leaves to every caller: the dump loop, error decoding, groups, namespaces.
#pragma once

#include <linux/netlink.h>
#include <sys/types.h>

#include <libmnl/libmnl.h>

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "ktricks/core/fd.hpp"

namespace ktricks::netlink {

// An NLMSG_ERROR (or an error in NLMSG_DONE) from the kernel. what() is
// "WHAT: strerror (extack)"; code() is the errno.
class NetlinkError : public std::system_error {
public:
    NetlinkError(int error_number, const std::string& what, std::string extack);
    // The kernel's extended-ack message ("Unknown family"...), empty if it sent none.
    const std::string& extack() const noexcept { return extack_; }
    const char* what() const noexcept override { return message_.c_str(); }

private:
    std::string extack_;
    std::string message_;
};

// A request being built: one nlmsghdr in an aligned buffer. Use libmnl on header() to add
// attributes (mnl_attr_put_u32(request.header(), ...)).
class Request {
public:
    // `flags` gets NLM_F_REQUEST added. `capacity` bounds the whole message.
    Request(std::uint16_t type, std::uint16_t flags, std::size_t capacity = MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* header() noexcept { return reinterpret_cast<nlmsghdr*>(buffer_.data()); }
    const nlmsghdr* header() const noexcept { return reinterpret_cast<const nlmsghdr*>(buffer_.data()); }
    // Appends the family header (inet_diag_req_v2, genlmsghdr, ...) right after nlmsghdr.
    template <typename T>
    T& put_header(const T& value) {
        void* place = mnl_nlmsg_put_extra_header(header(), sizeof(T));
        std::memcpy(place, &value, sizeof(T));
        return *static_cast<T*>(place);
    }
    std::size_t capacity() const noexcept { return buffer_.size(); }
    // Throws InputError if `extra` more bytes would not fit (attributes are added unchecked by
    // libmnl's mnl_attr_put; the checked mnl_attr_put_check variants take capacity()).
    void ensure_room(std::size_t extra) const;

private:
    std::vector<std::uint64_t> storage_;  // 8-byte alignment for every header we put in it
    std::span<std::byte> buffer_;
};

// Outcome of one Socket::receive on a subscription socket.
enum class Received {
    messages,     // at least one message was handed to the callback
    would_block,  // non-blocking socket, nothing queued
    overrun,      // ENOBUFS: the kernel dropped events; resynchronise (dump again)
};

struct DumpOptions {
    // How often a dump interrupted by a concurrent change (NLM_F_DUMP_INTR) is started again
    // before giving up with EINTR. on_restart (if set) runs before each restart so the caller can
    // discard what it collected from the inconsistent pass.
    int max_restarts = 8;
    std::function<void()> on_restart;
};

// Called for every reply message that is not NLMSG_DONE/NLMSG_ERROR/NLMSG_NOOP. `message` is
// valid only during the call. Return false to stop early (the rest of the dump is drained).
using MessageHandler = std::function<bool(const nlmsghdr& message)>;

class Socket {
public:
    // socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol) bound to an automatic port id, with
    // extended acks turned on. `protocol`: NETLINK_ROUTE, NETLINK_SOCK_DIAG, NETLINK_GENERIC,
    // NETLINK_CONNECTOR... `groups` is the legacy bind-time group mask (NETLINK_CONNECTOR needs it).
    // Throws std::system_error ("socket netlink sock_diag: Protocol not supported").
    static Socket open(int protocol, std::uint32_t groups = 0);

    Socket(Socket&&) noexcept;
    Socket& operator=(Socket&&) noexcept;
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    ~Socket();

    int fd() const noexcept;
    std::uint32_t port_id() const noexcept;
    int protocol() const noexcept { return protocol_; }
    mnl_socket* get() const noexcept { return socket_; }

    // Sends `request` with NLM_F_DUMP set and a fresh sequence number, hands every reply to
    // `handler` until NLMSG_DONE, restarting on NLM_F_DUMP_INTR (see DumpOptions). Throws
    // NetlinkError for an NLMSG_ERROR reply or a negative NLMSG_DONE status; `what` names the
    // request in errors ("dump tcp sockets").
    void dump(Request& request, const MessageHandler& handler, std::string_view what,
              const DumpOptions& options = {});

    // Sends `request` with NLM_F_ACK and a fresh sequence number; hands replies other than the
    // ack to `handler` (may be empty). Throws NetlinkError if the kernel answers with an error.
    void transact(Request& request, const MessageHandler& handler, std::string_view what);

    // Sends `request` as is (fresh sequence number) without waiting for an answer; returns the
    // sequence number used. For fire-and-forget messages such as the proc connector's LISTEN.
    std::uint32_t send(Request& request, std::string_view what);

    // Joins a multicast group (NETLINK_ADD_MEMBERSHIP); `name` is for the error message.
    void subscribe(std::uint32_t group, std::string_view name = {});
    void unsubscribe(std::uint32_t group) noexcept;

    // Sets SO_RCVBUF to `bytes`; as root SO_RCVBUFFORCE lifts the net.core.rmem_max cap, so an
    // event stream survives a burst. Returns the size the kernel granted (it doubles the request
    // for bookkeeping, as socket(7) explains).
    std::size_t set_receive_buffer(std::size_t bytes);

    void set_nonblocking(bool on = true);

    // Reads one datagram (possibly several messages) and hands each message to `handler`; reports
    // ENOBUFS as Received::overrun (the socket stays usable). Multicast messages have sequence
    // number 0 and are not filtered; error messages are thrown as NetlinkError.
    Received receive(const MessageHandler& handler);

private:
    Socket() = default;
    std::uint32_t next_sequence() noexcept { return ++sequence_; }
    // Reads replies for `sequence` until DONE/ACK; returns false if the dump was interrupted.
    bool read_replies(std::uint32_t sequence, bool dump, const MessageHandler& handler,
                      std::string_view what);

    mnl_socket* socket_ = nullptr;
    int protocol_ = 0;
    std::uint32_t sequence_ = 0;
    std::vector<std::byte> buffer_;
};

// --- decoding ---

// Whether a message of `remaining` bytes starts with a complete nlmsghdr whose length fits.
// (libmnl's mnl_nlmsg_ok casts nlmsg_len to int, so a length near 4 GiB passes it.)
inline bool message_fits(const nlmsghdr* message, std::size_t remaining) noexcept {
    return remaining >= sizeof(nlmsghdr) && message->nlmsg_len >= sizeof(nlmsghdr) &&
           message->nlmsg_len <= remaining;
}
// Calls visit(message) for each complete message in a datagram; stops at the first that does not
// fit, or when visit returns false.
void for_each_message(std::span<const std::byte> datagram, const std::function<bool(const nlmsghdr&)>& visit);

// -----------------------------------------------------------------------------------------------

// The family header that follows nlmsghdr, copied out; nullopt if the message is too short.
template <typename T>
std::optional<T> read_header(const nlmsghdr& message) {
    if (message.nlmsg_len < MNL_NLMSG_HDRLEN + sizeof(T)) return std::nullopt;
    T value;
    std::memcpy(&value, mnl_nlmsg_get_payload(&message), sizeof(T));
    return value;
}

// Attributes of one message (or one nested attribute) indexed by type, each validated to lie inside
// its container. Types above `max_type` are ignored (a newer kernel's additions); a repeated type
// keeps the last occurrence.
class Attributes {
public:
    static constexpr std::uint16_t limit = 128;
    // Attributes of `message` that start `header_size` bytes into its payload (the family header).
    // Returns an empty table if the header does not fit or the attribute stream is malformed up to
    // that point (what was valid before the damage is kept).
    Attributes(const nlmsghdr& message, std::size_t header_size, std::uint16_t max_type);
    // Attributes nested in `nest`.
    Attributes(const nlattr* nest, std::uint16_t max_type);

    const nlattr* get(std::uint16_t type) const noexcept {
        return type <= max_type_ ? table_[type] : nullptr;
    }
    bool has(std::uint16_t type) const noexcept { return get(type) != nullptr; }

    // Scalar values; nullopt if absent or of the wrong size.
    std::optional<std::uint8_t> u8(std::uint16_t type) const noexcept;
    std::optional<std::uint16_t> u16(std::uint16_t type) const noexcept;
    std::optional<std::uint32_t> u32(std::uint16_t type) const noexcept;
    std::optional<std::uint64_t> u64(std::uint16_t type) const noexcept;
    // A string attribute up to its first NUL (or its whole length if the kernel sent none).
    std::optional<std::string_view> string(std::uint16_t type) const noexcept;
    std::span<const std::byte> bytes(std::uint16_t type) const noexcept;

    // A struct attribute of any length: the bytes present (up to sizeof(T)) are copied, the rest of
    // T is zero. So an older kernel's shorter tcp_info reads as "field 0" and a newer kernel's
    // longer one is cut, never overread. `present` (optional) receives the bytes copied.
    template <typename T>
    std::optional<T> read_struct(std::uint16_t type, std::size_t* present = nullptr) const noexcept {
        auto raw = bytes(type);
        if (!has(type)) return std::nullopt;
        T value{};
        std::size_t n = raw.size() < sizeof(T) ? raw.size() : sizeof(T);
        std::memcpy(&value, raw.data(), n);
        if (present) *present = n;
        return value;
    }

private:
    std::array<const nlattr*, limit + 1> table_{};
    std::uint16_t max_type_ = 0;
};

// Visits each attribute nested in `nest` (bounds-checked; stops at the first malformed one).
void for_each_nested(const nlattr* nest, const std::function<void(const nlattr&)>& visit);

// --- generic netlink ----------------------------------------------------------------------------

struct GenericFamily {
    std::uint16_t id = 0;
    std::uint32_t version = 0;
    std::string name;
    std::map<std::string, std::uint32_t> groups;  // multicast group name -> id

    // The id of multicast group `name`; throws std::system_error(ENOENT) naming family and group.
    std::uint32_t group(std::string_view name) const;
};

// CTRL_CMD_GETFAMILY on a NETLINK_GENERIC socket. Throws NetlinkError(ENOENT) if the family is not
// registered (its module is not loaded): "resolve generic netlink family nl80211: No such file...".
GenericFamily resolve_family(Socket& generic_socket, std::string_view name);

// --- network namespaces -------------------------------------------------------------------------

// "NAME" (a file in /run/netns, as `ip netns add` makes), or a path ("/proc/PID/ns/net",
// "/run/netns/x"): anything containing '/' is a path. Throws InputError for an empty or bad NAME,
// std::system_error if it cannot be opened.
Fd open_netns(std::string_view name_or_path);
// The names in /run/netns, sorted; empty if the directory does not exist.
std::vector<std::string> list_netns();

// Moves the calling thread into a network namespace and back on destruction (setns(2) acts on
// one thread). Sockets opened inside stay in that namespace after the guard is gone, so the usual
// pattern is: guard, open the sockets, leave. Needs CAP_SYS_ADMIN. Throws std::system_error
// ("setns NAME: ...") and, if returning fails, terminates: a thread silently left in a foreign
// namespace would act on the wrong network.
class NetnsGuard {
public:
    explicit NetnsGuard(int netns_fd, std::string_view name = {});
    NetnsGuard(const NetnsGuard&) = delete;
    NetnsGuard& operator=(const NetnsGuard&) = delete;
    ~NetnsGuard();

private:
    Fd original_;
};

// Runs `work` on a fresh thread that has entered the namespace, and waits for it: the caller's own
// threads never change namespace. Exceptions from `work` propagate.
void run_in_netns(int netns_fd, std::string_view name, const std::function<void()>& work);

// Opens a netlink socket inside a namespace (the socket keeps it) without moving the caller.
Socket open_in_netns(int netns_fd, std::string_view name, int protocol, std::uint32_t groups = 0);

// A network namespace's identity: the device and inode of its nsfs file (/proc/PID/ns/net,
// /run/netns/NAME or an fd of either), stable for its whole life and never reused while anything
// holds it. Compare both: the inode alone is unique only within nsfs.
struct NetnsId {
    dev_t dev = 0;
    ino_t ino = 0;
    friend auto operator<=>(const NetnsId&, const NetnsId&) = default;
};
// stat(2) of `path`; nullopt if it is gone or hidden from us (another user's process).
std::optional<NetnsId> netns_id(const std::string& path) noexcept;
std::optional<NetnsId> netns_id(int netns_fd) noexcept;

// One network namespace that processes are in, found by reading /proc/PID/ns/net.
struct ProcessNetns {
    pid_t pid = 0;  // the lowest pid in it (at the time of the scan)
    NetnsId id;
};
// Every network namespace some process is in, one entry each (ours included), ordered by pid.
// Processes that exit meanwhile or hide their namespaces (hidepid, another user) are skipped.
// Cost: one readdir of /proc and one stat per process.
std::vector<ProcessNetns> process_namespaces();

// --- proc connector -----------------------------------------------------------------------------

// One proc connector event (struct proc_event of <linux/cn_proc.h>) with its union spelled out.
struct ProcEvent {
    std::uint32_t what = 0;  // PROC_EVENT_FORK, PROC_EVENT_EXEC, ... (enum proc_event::what)
    std::uint64_t timestamp_ns = 0;
    std::uint32_t cpu = 0;
    pid_t pid = 0, tgid = 0;                       // the process (fork: the child)
    pid_t parent_pid = 0, parent_tgid = 0;         // fork, exit, coredump
    std::uint32_t uid = 0, euid = 0;               // uid (gid: rgid, egid)
    pid_t tracer_pid = 0, tracer_tgid = 0;         // ptrace
    std::uint32_t exit_code = 0, exit_signal = 0;  // exit
    std::string comm;                              // comm: the new name
};
// Decodes one proc connector message; nullopt for anything else (the listen ack, short or foreign
// messages, event types this build does not know). Reads nothing beyond message.nlmsg_len.
std::optional<ProcEvent> decode_proc_event(const nlmsghdr& message);

// A subscription to the proc connector: a NETLINK_CONNECTOR socket bound to CN_IDX_PROC that has
// sent PROC_CN_MCAST_LISTEN (until then the kernel builds no events). Closing it unsubscribes.
// Receiving needs CAP_NET_ADMIN: without it the kernel ignores the listen request (older kernels
// fail the bind with EPERM), so an unprivileged subscription may simply stay silent.
class ProcConnector {
public:
    // Throws std::system_error naming the call ("bind netlink connector: Operation not permitted").
    static ProcConnector open(std::size_t receive_buffer);
    int fd() const noexcept { return socket_.fd(); }
    // Reads one datagram and hands each decoded event to `handler`; Received::overrun means
    // events were lost (the socket stays usable).
    Received receive(const std::function<void(const ProcEvent&)>& handler);

private:
    explicit ProcConnector(Socket socket) : socket_(std::move(socket)) {}
    Socket socket_;
};

}  // namespace ktricks::netlink
