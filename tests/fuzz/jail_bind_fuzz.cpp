// Fuzzes the reading of a bind() address taken from a jailed process's memory (--intercept-bind):
// the first byte picks the socket type, the rest is the address as the process passed it. It must
// return nullopt (not intercepted), an address, or throw InputError; an address it returns must
// print as text that parses back to an equal address, and matching must not depend on more than
// the address.
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "jail/intercept.hpp"
#include "ktricks/core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    int type = data[0] & 1 ? SOCK_DGRAM : SOCK_STREAM;
    try {
        auto address = ktricks::jail::parse_bind_address(data + 1, size - 1, type);
        if (!address) return 0;
        auto again = ktricks::SocketAddress::parse(address->to_string());
        if (again.to_string() != address->to_string()) std::abort();
        std::vector<ktricks::jail::InterceptListener> listeners{{again, 0}};
        if (!ktricks::jail::match_bind(listeners, *address)) std::abort();  // same host, any port
    } catch (const ktricks::InputError&) {}
    return 0;
}
