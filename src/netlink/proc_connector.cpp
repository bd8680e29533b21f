// The proc connector: a NETLINK_CONNECTOR socket bound to group CN_IDX_PROC receives nothing until
// it sends PROC_CN_MCAST_LISTEN (the kernel counts listeners and only then builds events). Each
// event is nlmsghdr + cn_msg + proc_event; the kernel sends them as NLMSG_DONE messages.
// procwatch reports these events; netwatch --all-netns uses exec and fork to find new namespaces.
#include <linux/cn_proc.h>
#include <linux/connector.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "ktricks/netlink.hpp"

namespace ktricks::netlink {

std::optional<ProcEvent> decode_proc_event(const nlmsghdr& message) {
    // Bounds: the payload must hold cn_msg, cn_msg.len must fit the payload, and the proc_event
    // header must fit cn_msg.len. The union part is copied zero-filled from what is present.
    std::size_t payload = message.nlmsg_len >= NLMSG_HDRLEN ? message.nlmsg_len - NLMSG_HDRLEN : 0;
    if (payload < sizeof(cn_msg)) return std::nullopt;
    cn_msg header;
    const auto* bytes = static_cast<const std::uint8_t*>(mnl_nlmsg_get_payload(&message));
    std::memcpy(&header, bytes, sizeof(header));
    if (header.id.idx != CN_IDX_PROC || header.id.val != CN_VAL_PROC) return std::nullopt;
    std::size_t length = std::min<std::size_t>(header.len, payload - sizeof(cn_msg));
    constexpr std::size_t head = offsetof(proc_event, event_data);
    if (length < head) return std::nullopt;
    proc_event event;
    std::memset(&event, 0, sizeof(event));
    std::memcpy(&event, bytes + sizeof(cn_msg), std::min(length, sizeof(event)));
    ProcEvent out;
    out.what = static_cast<std::uint32_t>(event.what);
    out.timestamp_ns = event.timestamp_ns;
    out.cpu = event.cpu;
    const auto& d = event.event_data;
    switch (event.what) {
        case proc_event::PROC_EVENT_FORK:
            out.pid = d.fork.child_pid;
            out.tgid = d.fork.child_tgid;
            out.parent_pid = d.fork.parent_pid;
            out.parent_tgid = d.fork.parent_tgid;
            break;
        case proc_event::PROC_EVENT_EXEC:
            out.pid = d.exec.process_pid;
            out.tgid = d.exec.process_tgid;
            break;
        case proc_event::PROC_EVENT_UID:
        case proc_event::PROC_EVENT_GID:
            out.pid = d.id.process_pid;
            out.tgid = d.id.process_tgid;
            out.uid = d.id.r.ruid;
            out.euid = d.id.e.euid;
            break;
        case proc_event::PROC_EVENT_SID:
            out.pid = d.sid.process_pid;
            out.tgid = d.sid.process_tgid;
            break;
        case proc_event::PROC_EVENT_PTRACE:
            out.pid = d.ptrace.process_pid;
            out.tgid = d.ptrace.process_tgid;
            out.tracer_pid = d.ptrace.tracer_pid;
            out.tracer_tgid = d.ptrace.tracer_tgid;
            break;
        case proc_event::PROC_EVENT_COMM: {
            out.pid = d.comm.process_pid;
            out.tgid = d.comm.process_tgid;
            const char* name = d.comm.comm;
            out.comm.assign(name, strnlen(name, sizeof(d.comm.comm)));
            break;
        }
        case proc_event::PROC_EVENT_COREDUMP:
            out.pid = d.coredump.process_pid;
            out.tgid = d.coredump.process_tgid;
            out.parent_pid = d.coredump.parent_pid;
            out.parent_tgid = d.coredump.parent_tgid;
            break;
        case proc_event::PROC_EVENT_EXIT:
            out.pid = d.exit.process_pid;
            out.tgid = d.exit.process_tgid;
            out.exit_code = d.exit.exit_code;
            out.exit_signal = d.exit.exit_signal;
            out.parent_pid = d.exit.parent_pid;
            out.parent_tgid = d.exit.parent_tgid;
            break;
        default: return std::nullopt;  // PROC_EVENT_NONE (the listen ack) and future types
    }
    return out;
}

ProcConnector ProcConnector::open(std::size_t receive_buffer) {
    auto socket = Socket::open(NETLINK_CONNECTOR, CN_IDX_PROC);
    socket.set_receive_buffer(receive_buffer);
    // The listen request: nlmsghdr + cn_msg + op, as one message. The kernel gives no error for
    // a missing privilege here on every version, so EPERM may only show up as silence; bind()
    // above already failed with EPERM on kernels that check there.
    Request request(NLMSG_DONE, 0);
    request.header()->nlmsg_flags = 0;  // the connector ignores flags; no ack is sent
    cn_msg header{};
    header.id = {CN_IDX_PROC, CN_VAL_PROC};
    header.len = sizeof(proc_cn_mcast_op);
    request.put_header(header);
    request.put_header(PROC_CN_MCAST_LISTEN);
    socket.send(request, "proc connector listen");
    socket.set_nonblocking();
    return ProcConnector(std::move(socket));
}

Received ProcConnector::receive(const std::function<void(const ProcEvent&)>& handler) {
    return socket_.receive([&](const nlmsghdr& message) {
        if (auto event = decode_proc_event(message)) handler(*event);
        return true;
    });
}

}  // namespace ktricks::netlink
