// Fuzzes the rtnetlink decoder and the state cache fed by it: any bytes, as a buffer of netlink
// messages, must decode (or be ignored) and update the cache without crashing.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ktricks/netlink.hpp"
#include "netwatch/decode.hpp"
#include "netwatch/state.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // The kernel hands us 4-byte aligned buffers; so do we.
    std::vector<std::uint32_t> buffer(size / 4 + 1);
    std::memcpy(buffer.data(), data, size);
    ktricks::netwatch::State state;
    std::vector<ktricks::netwatch::NetEvent> events;
    ktricks::netlink::for_each_message({reinterpret_cast<const std::byte*>(buffer.data()), size},
                                       [&](const nlmsghdr& message) {
                                           state.apply(ktricks::netwatch::decode_rtnl(&message), events);
                                           return true;
                                       });
    ktricks::netwatch::State empty;
    state.resync(empty, events, {.initial = false, .resync = true});
    return 0;
}
