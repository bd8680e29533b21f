// /proc/net/raw and /proc/net/raw6 (private): the raw sockets of the reader's network namespace,
// as ss reads them when the kernel has no raw_diag (iproute2 misc/ss.c, raw_show). Text from the
// kernel, parsed without trusting it: a row that does not parse is skipped and described, never fatal.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ktricks/sockets.hpp"

namespace ktricks::sockets::detail {

// Appends one SocketInfo (Netid::raw, SocketInfo::from_proc) per row of TEXT, a whole
// /proc/net/raw (FAMILY AF_INET) or /proc/net/raw6 (AF_INET6) table, in the kernel's order; the
// first line is the header. Each malformed row adds one line to SKIPPED ("line 3: ...").
// Guarantees: never throws on any input but std::bad_alloc; fills local/peer addresses (the
// kernel's hex words, host order, as /proc prints them), local.port = the protocol, state, Recv-Q
// (rx_queue), Send-Q (tx_queue), uid and inode.
void parse_proc_net_raw(std::string_view text, int family, std::vector<SocketInfo>& out,
                        std::vector<std::string>& skipped);

// Reads /proc/thread-self/net/raw or raw6 (the calling thread's namespace: list() enters a
// namespace with setns on this thread) and parses it as above. Throws std::system_error naming the
// file if it cannot be read.
void read_proc_net_raw(int family, std::vector<SocketInfo>& out, std::vector<std::string>& skipped);

}  // namespace ktricks::sockets::detail
