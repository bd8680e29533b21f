// The netlink layer: socket setup, the dump loop, error decoding, subscriptions, attribute tables,
// generic netlink lookup and network-namespace entry. See include/ktricks/netlink.hpp.
#include "ktricks/netlink.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/genetlink.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <set>
#include <thread>

#include "ktricks/core/error.hpp"
#include "ktricks/core/proc.hpp"
#include "ktricks/core/service.hpp"

namespace ktricks::netlink {
namespace {

const char* protocol_name(int protocol) {
    switch (protocol) {
        case NETLINK_ROUTE: return "route";
        case NETLINK_SOCK_DIAG: return "sock_diag";
        case NETLINK_GENERIC: return "generic";
        case NETLINK_CONNECTOR: return "connector";
        case NETLINK_AUDIT: return "audit";
        case NETLINK_KOBJECT_UEVENT: return "kobject_uevent";
        default: return "protocol";
    }
}

// The receive buffer. The kernel sizes a dump's datagrams to what the reader asked for last time,
// capped at 32 KiB (netlink_recvmsg's max_recvmsg_len), so larger buffers gain nothing for dumps;
// multicast messages are small. 64 KiB leaves room for both and for a jumbo nl80211 scan result.
constexpr std::size_t receive_buffer_size = 64 * 1024;

// Text of an NLMSGERR_ATTR_MSG in the TLVs that follow `offset` bytes of payload, if any.
std::string extack_of(const nlmsghdr& message, std::size_t offset) {
    if (!(message.nlmsg_flags & NLM_F_ACK_TLVS)) return {};
    Attributes tlvs(message, offset, NLMSGERR_ATTR_MAX);
    std::string text(tlvs.string(NLMSGERR_ATTR_MSG).value_or(""));
    if (auto where = tlvs.u32(NLMSGERR_ATTR_OFFS); where && text.empty())
        text = fmt::format("invalid attribute at offset {}", *where);
    else if (where)
        text += fmt::format(", at offset {}", *where);
    return text;
}

[[noreturn]] void throw_netlink(int error_number, std::string_view what, std::string extack) {
    throw NetlinkError(error_number, std::string(what), std::move(extack));
}

// The message after `message`; `remaining` shrinks by its aligned length (to 0 past the end).
const nlmsghdr* next_message(const nlmsghdr* message, std::size_t& remaining) noexcept {
    std::size_t step = NLMSG_ALIGN(message->nlmsg_len);
    remaining = step < remaining ? remaining - step : 0;
    return reinterpret_cast<const nlmsghdr*>(reinterpret_cast<const char*>(message) + (remaining ? step : 0));
}

}  // namespace

void for_each_message(std::span<const std::byte> datagram,
                      const std::function<bool(const nlmsghdr&)>& visit) {
    std::size_t remaining = datagram.size();
    for (auto* message = reinterpret_cast<const nlmsghdr*>(datagram.data()); message_fits(message, remaining);
         message = next_message(message, remaining))
        if (!visit(*message)) return;
}

NetlinkError::NetlinkError(int error_number, const std::string& what, std::string extack)
    : std::system_error(error_number, std::generic_category(), what), extack_(std::move(extack)) {
    message_ = fmt::format("{}: {}", what, std::generic_category().message(error_number));
    if (!extack_.empty()) message_ += fmt::format(" ({})", printable(extack_));
}

// --- Request ------------------------------------------------------------------------------------

Request::Request(std::uint16_t type, std::uint16_t flags, std::size_t capacity)
    : storage_((std::max<std::size_t>(capacity, MNL_NLMSG_HDRLEN) + 7) / 8) {
    buffer_ = std::span<std::byte>(reinterpret_cast<std::byte*>(storage_.data()), storage_.size() * 8);
    nlmsghdr* header = mnl_nlmsg_put_header(buffer_.data());
    header->nlmsg_type = type;
    header->nlmsg_flags = static_cast<std::uint16_t>(flags | NLM_F_REQUEST);
}

void Request::ensure_room(std::size_t extra) const {
    if (header()->nlmsg_len + MNL_ALIGN(extra) > buffer_.size())
        throw InputError(fmt::format("netlink request too large: {} + {} bytes exceeds {}",
                                     header()->nlmsg_len, extra, buffer_.size()));
}

// --- Socket -------------------------------------------------------------------------------------

Socket Socket::open(int protocol, std::uint32_t groups) {
    Socket result;
    result.protocol_ = protocol;
    result.socket_ = mnl_socket_open2(protocol, SOCK_CLOEXEC);
    if (!result.socket_) throw_errno("socket", fmt::format("netlink {}", protocol_name(protocol)));
    if (mnl_socket_bind(result.socket_, groups, MNL_SOCKET_AUTOPID) < 0)
        throw_errno("bind", fmt::format("netlink {}", protocol_name(protocol)));
    int on = 1;
    // Extended acks: the kernel explains an EINVAL in words. Older kernels lack it; not fatal.
    (void)mnl_socket_setsockopt(result.socket_, NETLINK_EXT_ACK, &on, sizeof(on));
    // The ack need not echo our whole request back (a 4 KiB filter would double every error).
    (void)mnl_socket_setsockopt(result.socket_, NETLINK_CAP_ACK, &on, sizeof(on));
    result.buffer_.resize(receive_buffer_size);
    return result;
}

Socket::Socket(Socket&& other) noexcept
    : socket_(std::exchange(other.socket_, nullptr)),
      protocol_(other.protocol_),
      sequence_(other.sequence_),
      buffer_(std::move(other.buffer_)) {}

Socket& Socket::operator=(Socket&& other) noexcept {
    if (this != &other) {
        if (socket_) mnl_socket_close(socket_);
        socket_ = std::exchange(other.socket_, nullptr);
        protocol_ = other.protocol_;
        sequence_ = other.sequence_;
        buffer_ = std::move(other.buffer_);
    }
    return *this;
}

Socket::~Socket() {
    if (socket_) mnl_socket_close(socket_);
}

int Socket::fd() const noexcept { return mnl_socket_get_fd(socket_); }
std::uint32_t Socket::port_id() const noexcept { return mnl_socket_get_portid(socket_); }

std::uint32_t Socket::send(Request& request, std::string_view what) {
    nlmsghdr* header = request.header();
    header->nlmsg_seq = next_sequence();
    header->nlmsg_pid = 0;
    if (mnl_socket_sendto(socket_, header, header->nlmsg_len) < 0) throw_errno("send netlink request", what);
    return header->nlmsg_seq;
}

bool Socket::read_replies(std::uint32_t sequence, bool dump, const MessageHandler& handler,
                          std::string_view what) {
    bool interrupted = false;
    bool stopped = false;
    while (true) {
        ssize_t got = mnl_socket_recvfrom(socket_, buffer_.data(), buffer_.size());
        if (got < 0) {
            if (errno == EINTR) continue;
            // ENOBUFS on a request socket means our own replies were dropped: the dump is
            // incomplete and unrecoverable in place; the caller's retry is a new dump.
            throw_errno("receive netlink reply", what);
        }
        std::size_t remaining = static_cast<std::size_t>(got);
        for (auto* message = reinterpret_cast<const nlmsghdr*>(buffer_.data());
             message_fits(message, remaining); message = next_message(message, remaining)) {
            // Stale replies of an abandoned request (or a stray multicast) carry another sequence.
            if (message->nlmsg_seq != sequence) continue;
            if (message->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
            if (message->nlmsg_type == NLMSG_ERROR) {
                auto error = read_header<nlmsgerr>(*message);
                if (!error)
                    throw_netlink(EBADMSG, fmt::format("{}: truncated netlink error message", what), {});
                if (error->error == 0) return !interrupted;  // the ack
                std::size_t offset = sizeof(nlmsgerr);
                if (!(message->nlmsg_flags & NLM_F_CAPPED)) offset += error->msg.nlmsg_len - sizeof(nlmsghdr);
                throw_netlink(-error->error, what, extack_of(*message, offset));
            }
            if (message->nlmsg_type == NLMSG_DONE) {
                // A dump ends with DONE whose payload is the dump's status (negative errno).
                if (auto status = read_header<int>(*message); status && *status < 0)
                    throw_netlink(-*status, what, extack_of(*message, sizeof(int)));
                if (dump) return !interrupted;
                continue;
            }
            if (message->nlmsg_type < NLMSG_MIN_TYPE) continue;  // NOOP, OVERRUN
            if (stopped || interrupted) continue;                // drained, not delivered
            if (handler && !handler(*message)) stopped = true;
        }
    }
}

void Socket::dump(Request& request, const MessageHandler& handler, std::string_view what,
                  const DumpOptions& options) {
    request.header()->nlmsg_flags |= NLM_F_DUMP;
    for (int attempt = 0;; ++attempt) {
        std::uint32_t sequence = send(request, what);
        if (read_replies(sequence, true, handler, what)) return;
        if (attempt >= options.max_restarts)
            throw_netlink(EINTR,
                          fmt::format("{}: the table kept changing during {} dumps", what, attempt + 1), {});
        if (options.on_restart) options.on_restart();
    }
}

void Socket::transact(Request& request, const MessageHandler& handler, std::string_view what) {
    request.header()->nlmsg_flags |= NLM_F_ACK;
    std::uint32_t sequence = send(request, what);
    read_replies(sequence, false, handler, what);
}

void Socket::subscribe(std::uint32_t group, std::string_view name) {
    if (mnl_socket_setsockopt(socket_, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) < 0)
        throw_errno("subscribe", fmt::format("netlink {} group {}", protocol_name(protocol_),
                                             name.empty() ? std::to_string(group) : std::string(name)));
}

void Socket::unsubscribe(std::uint32_t group) noexcept {
    (void)mnl_socket_setsockopt(socket_, NETLINK_DROP_MEMBERSHIP, &group, sizeof(group));
}

std::size_t Socket::set_receive_buffer(std::size_t bytes) {
    int size = static_cast<int>(std::min<std::size_t>(bytes, 1u << 30));
    // SO_RCVBUFFORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN; fall back to the capped one.
    if (::setsockopt(fd(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0 &&
        ::setsockopt(fd(), SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)) < 0)
        throw_errno("setsockopt SO_RCVBUF", fmt::format("netlink {}", protocol_name(protocol_)));
    int granted = 0;
    socklen_t length = sizeof(granted);
    if (::getsockopt(fd(), SOL_SOCKET, SO_RCVBUF, &granted, &length) < 0) throw_errno("getsockopt SO_RCVBUF");
    return static_cast<std::size_t>(granted);
}

void Socket::set_nonblocking(bool on) { ktricks::set_nonblocking(fd(), on); }

Received Socket::receive(const MessageHandler& handler) {
    ssize_t got;
    do {
        got = ::recv(fd(), buffer_.data(), buffer_.size(), 0);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        if (errno == ENOBUFS) return Received::overrun;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return Received::would_block;
        throw_errno("receive netlink", protocol_name(protocol_));
    }
    std::size_t remaining = static_cast<std::size_t>(got);
    for (auto* message = reinterpret_cast<const nlmsghdr*>(buffer_.data()); message_fits(message, remaining);
         message = next_message(message, remaining)) {
        if (message->nlmsg_type == NLMSG_ERROR) {
            auto error = read_header<nlmsgerr>(*message);
            if (!error || error->error == 0) continue;
            throw_netlink(-error->error, fmt::format("netlink {}", protocol_name(protocol_)), {});
        }
        if (message->nlmsg_type == NLMSG_OVERRUN) return Received::overrun;
        // NLMSG_DONE is a real message for the proc connector (it sends every event as DONE).
        if (message->nlmsg_type == NLMSG_NOOP) continue;
        if (handler && !handler(*message)) break;
    }
    return Received::messages;
}

// --- Attributes ---------------------------------------------------------------------------------

namespace {
struct TableFill {
    std::array<const nlattr*, Attributes::limit + 1>* table;
    std::uint16_t max_type;
};
int fill_table(const nlattr* attribute, void* data) {
    auto* fill = static_cast<TableFill*>(data);
    auto type = mnl_attr_get_type(attribute);
    if (type <= fill->max_type) (*fill->table)[type] = attribute;
    return MNL_CB_OK;
}
}  // namespace

Attributes::Attributes(const nlmsghdr& message, std::size_t header_size, std::uint16_t max_type)
    : max_type_(std::min(max_type, limit)) {
    if (message.nlmsg_len < MNL_NLMSG_HDRLEN + MNL_ALIGN(header_size)) return;
    // Walked here rather than with mnl_attr_parse, whose end is the *aligned* message length: for
    // a last message of unaligned length that is up to 3 bytes past the datagram.
    const char* start = reinterpret_cast<const char*>(&message) + MNL_NLMSG_HDRLEN + MNL_ALIGN(header_size);
    const char* end = reinterpret_cast<const char*>(&message) + message.nlmsg_len;
    for (auto* attribute = reinterpret_cast<const nlattr*>(start);
         mnl_attr_ok(attribute, static_cast<int>(end - reinterpret_cast<const char*>(attribute)));
         attribute = mnl_attr_next(attribute)) {
        auto type = mnl_attr_get_type(attribute);
        if (type <= max_type_) table_[type] = attribute;
    }
}

Attributes::Attributes(const nlattr* nest, std::uint16_t max_type) : max_type_(std::min(max_type, limit)) {
    if (!nest) return;
    TableFill fill{&table_, max_type_};
    mnl_attr_parse_nested(nest, fill_table, &fill);
}

namespace {
template <typename T>
std::optional<T> scalar(const nlattr* attribute) noexcept {
    if (!attribute || mnl_attr_get_payload_len(attribute) != sizeof(T)) return std::nullopt;
    T value;
    std::memcpy(&value, mnl_attr_get_payload(attribute), sizeof(T));
    return value;
}
}  // namespace

std::optional<std::uint8_t> Attributes::u8(std::uint16_t type) const noexcept {
    return scalar<std::uint8_t>(get(type));
}
std::optional<std::uint16_t> Attributes::u16(std::uint16_t type) const noexcept {
    return scalar<std::uint16_t>(get(type));
}
std::optional<std::uint32_t> Attributes::u32(std::uint16_t type) const noexcept {
    return scalar<std::uint32_t>(get(type));
}
std::optional<std::uint64_t> Attributes::u64(std::uint16_t type) const noexcept {
    return scalar<std::uint64_t>(get(type));
}

std::optional<std::string_view> Attributes::string(std::uint16_t type) const noexcept {
    const nlattr* attribute = get(type);
    if (!attribute) return std::nullopt;
    auto* text = static_cast<const char*>(mnl_attr_get_payload(attribute));
    std::size_t length = mnl_attr_get_payload_len(attribute);
    auto* nul = static_cast<const char*>(std::memchr(text, 0, length));
    return std::string_view(text, nul ? static_cast<std::size_t>(nul - text) : length);
}

std::span<const std::byte> Attributes::bytes(std::uint16_t type) const noexcept {
    const nlattr* attribute = get(type);
    if (!attribute) return {};
    return {static_cast<const std::byte*>(mnl_attr_get_payload(attribute)),
            mnl_attr_get_payload_len(attribute)};
}

void for_each_nested(const nlattr* nest, const std::function<void(const nlattr&)>& visit) {
    if (!nest) return;
    const auto* payload = static_cast<const char*>(mnl_attr_get_payload(nest));
    const char* end = payload + mnl_attr_get_payload_len(nest);
    for (auto* entry = reinterpret_cast<const nlattr*>(payload);
         mnl_attr_ok(entry, static_cast<int>(end - reinterpret_cast<const char*>(entry)));
         entry = mnl_attr_next(entry))
        visit(*entry);
}

// --- generic netlink ----------------------------------------------------------------------------

std::uint32_t GenericFamily::group(std::string_view group_name) const {
    auto found = groups.find(std::string(group_name));
    if (found == groups.end())
        throw_error(ENOENT, "find multicast group",
                    fmt::format("{} of generic netlink family {}", group_name, name));
    return found->second;
}

GenericFamily resolve_family(Socket& generic_socket, std::string_view name) {
    Request request(GENL_ID_CTRL, 0);
    request.put_header(genlmsghdr{CTRL_CMD_GETFAMILY, 1, 0});
    request.ensure_room(MNL_ATTR_HDRLEN + name.size() + 1);
    std::string name_z(name);
    mnl_attr_put_strz(request.header(), CTRL_ATTR_FAMILY_NAME, name_z.c_str());
    GenericFamily family;
    family.name = name_z;
    generic_socket.transact(
        request,
        [&](const nlmsghdr& message) {
            Attributes attributes(message, sizeof(genlmsghdr), CTRL_ATTR_MAX);
            family.id = attributes.u16(CTRL_ATTR_FAMILY_ID).value_or(0);
            family.version = attributes.u32(CTRL_ATTR_VERSION).value_or(0);
            if (const nlattr* groups = attributes.get(CTRL_ATTR_MCAST_GROUPS)) {
                for_each_nested(groups, [&](const nlattr& entry) {
                    Attributes group(&entry, CTRL_ATTR_MCAST_GRP_MAX);
                    auto group_name = group.string(CTRL_ATTR_MCAST_GRP_NAME);
                    auto id = group.u32(CTRL_ATTR_MCAST_GRP_ID);
                    if (group_name && id) family.groups[std::string(*group_name)] = *id;
                });
            }
            return true;
        },
        fmt::format("resolve generic netlink family {}", printable(name)));
    if (family.id == 0) throw_error(ENOENT, "resolve generic netlink family", name_z);
    return family;
}

// --- network namespaces -------------------------------------------------------------------------

Fd open_netns(std::string_view name_or_path) {
    std::string path;
    if (name_or_path.find('/') != std::string_view::npos) {
        path = name_or_path;
    } else {
        if (name_or_path.empty() || name_or_path == "." || name_or_path == ".." ||
            first_control_byte(name_or_path) >= 0)
            throw InputError(fmt::format("network namespace \"{}\": not a valid name (see `ip netns list`)",
                                         printable(name_or_path)));
        path = fmt::format("/run/netns/{}", name_or_path);
    }
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("open network namespace", path);
    return fd;
}

std::vector<std::string> list_netns() {
    std::vector<std::string> names;
    DIR* directory = ::opendir("/run/netns");
    if (!directory) return names;
    while (dirent* entry = ::readdir(directory))
        if (entry->d_name[0] != '.') names.emplace_back(entry->d_name);
    ::closedir(directory);
    std::sort(names.begin(), names.end());
    return names;
}

NetnsGuard::NetnsGuard(int netns_fd, std::string_view name) {
    original_ = Fd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!original_) throw_errno("open", "/proc/thread-self/ns/net");
    if (::setns(netns_fd, CLONE_NEWNET) < 0)
        throw_errno("setns", name.empty() ? std::string("network namespace") : std::string(name));
}

NetnsGuard::~NetnsGuard() {
    if (::setns(original_.get(), CLONE_NEWNET) < 0) {
        log_error("setns back to the original network namespace: {}", std::strerror(errno));
        std::terminate();
    }
}

void run_in_netns(int netns_fd, std::string_view name, const std::function<void()>& work) {
    std::exception_ptr failure;
    std::thread worker([&] {
        try {
            // The thread dies in the namespace; nothing to restore, and no other thread moved.
            if (::setns(netns_fd, CLONE_NEWNET) < 0)
                throw_errno("setns", name.empty() ? std::string("network namespace") : std::string(name));
            work();
        } catch (...) {
            failure = std::current_exception();
        }
    });
    worker.join();
    if (failure) std::rethrow_exception(failure);
}

Socket open_in_netns(int netns_fd, std::string_view name, int protocol, std::uint32_t groups) {
    NetnsGuard guard(netns_fd, name);
    return Socket::open(protocol, groups);
}

std::optional<NetnsId> netns_id(const std::string& path) noexcept {
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0) return std::nullopt;
    return NetnsId{status.st_dev, status.st_ino};
}

std::optional<NetnsId> netns_id(int netns_fd) noexcept {
    struct stat status {};
    if (::fstat(netns_fd, &status) != 0) return std::nullopt;
    return NetnsId{status.st_dev, status.st_ino};
}

std::vector<ProcessNetns> process_namespaces() {
    std::vector<ProcessNetns> out;
    std::set<NetnsId> seen;
    for (pid_t pid : process_ids()) {
        auto id = netns_id(fmt::format("/proc/{}/ns/net", pid));
        if (id && seen.insert(*id).second) out.push_back({pid, *id});
    }
    return out;
}

}  // namespace ktricks::netlink
