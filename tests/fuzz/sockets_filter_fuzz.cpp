// Fuzzes the filter language: any text either parses or is refused with InputError; what parses
// compiles to bytecode whose jumps all land on op boundaries, the end (accept) or end + 4 (reject),
// as the kernel's inet_diag_bc_audit demands.
#include <linux/inet_diag.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string_view>

#include "ktricks/core/error.hpp"
#include "ktricks/sockets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // The first byte picks the context: plain, -x (unix names), -4, -6; no host name lookups.
    if (size == 0) return 0;
    static constexpr int families[] = {0, 1 /* AF_UNIX */, 2 /* AF_INET */, 10 /* AF_INET6 */};
    ktricks::sockets::FilterContext context{.family = families[data[0] % 4], .resolve_names = false};
    std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
    try {
        auto filter = ktricks::sockets::Filter::parse(text, context);
        auto code = filter.bytecode();
        std::set<std::size_t> boundaries;
        for (std::size_t at = 0; at < code.size();) {
            boundaries.insert(at);
            inet_diag_bc_op op;
            std::memcpy(&op, code.data() + at, sizeof(op));
            if (op.yes < 4 || op.yes % 4) std::abort();
            at += op.yes;  // every op falls through on yes
        }
        for (std::size_t at : boundaries) {
            inet_diag_bc_op op;
            std::memcpy(&op, code.data() + at, sizeof(op));
            std::size_t target = at + op.no;
            if (op.no < 4 || op.no % 4 ||
                (target != code.size() && target != code.size() + 4 && !boundaries.count(target)))
                std::abort();
        }
        ktricks::sockets::SocketInfo socket;
        socket.local.family = socket.peer.family = 2;
        (void)filter.matches(socket);
        ktricks::sockets::SocketInfo unix_socket;
        unix_socket.netid = ktricks::sockets::Netid::u_dgr;
        unix_socket.local.name = "@0001f";
        unix_socket.inode = 1234;
        (void)filter.matches(unix_socket);
    } catch (const ktricks::InputError&) {}
    return 0;
}
