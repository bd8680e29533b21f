// Decoders of sock_diag replies (private): each takes one netlink message as the kernel sent it
// and fills a SocketInfo, or returns false if the message is too short for its family header.
// Attributes are read through netlink::Attributes, so no length is trusted beyond the message.
#pragma once

#include <linux/netlink.h>

#include "ktricks/sockets.hpp"

namespace ktricks::sockets::detail {

// `protocol` is what the request asked for (IPPROTO_TCP...); 0 takes INET_DIAG_PROTOCOL from the
// message (destroy broadcasts carry it).
bool decode_inet(const nlmsghdr& message, std::uint8_t protocol, SocketInfo& out);
bool decode_unix(const nlmsghdr& message, SocketInfo& out);
bool decode_packet(const nlmsghdr& message, SocketInfo& out);

// ss's is_ephemeral: PORT lies in net.ipv4.ip_local_port_range (read once). ss neither names such
// ports after services nor calls them anything but autobound.
bool is_ephemeral(long port);

}  // namespace ktricks::sockets::detail
