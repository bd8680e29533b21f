// The broker's policy, shared by everything that grants listeners to a jail: the broker socket's
// "listen ADDRESS" requests and intercepted bind() calls that match no --listen address
// (intercept.hpp), in one `ktricks jail` or across all generations of `serve --jail`.
//
// A granted socket is kept and handed out again for the next grant of the same address (same
// transport, host, port, and for IPv6 the same IPV6_V6ONLY): the next generation of a reloaded
// server gets the very socket its predecessor serves, queue included, instead of EADDRINUSE, and
// no connection waiting in that queue is lost at the switch. Port 0 asks for a fresh port each
// time and is not kept. Kept sockets stay bound until the Grants object goes (the supervisor's
// end), like the --listen ones.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "ktricks/core/fd.hpp"
#include "ktricks/core/socket_address.hpp"
#include "ktricks/jail.hpp"

namespace ktricks::jail {

class Grants {
public:
    Grants(std::vector<AllowRule> allow, bool verbose) : allow_(std::move(allow)), verbose_(verbose) {}
    // The socket for `address` (owned here; dup or send it), or -1 with the reason in `refusal`.
    // `v6_only` is the IPV6_V6ONLY to bind an IPv6 address with.
    int grant(const SocketAddress& address, bool v6_only, std::string& refusal);
    bool verbose() const noexcept { return verbose_; }
    bool empty() const noexcept { return allow_.empty(); }

private:
    std::vector<AllowRule> allow_;
    bool verbose_;
    std::map<std::string, Fd> granted_;
};

}  // namespace ktricks::jail
