// Fuzzes the nl80211 decoder (connect/roam/disconnect events, GET_INTERFACE and GET_SCAN answers
// with their nested BSS and information elements).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ktricks/netlink.hpp"
#include "netwatch/decode.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<std::uint32_t> buffer(size / 4 + 1);
    std::memcpy(buffer.data(), data, size);
    ktricks::netlink::for_each_message({reinterpret_cast<const std::byte*>(buffer.data()), size},
                                       [](const nlmsghdr& message) {
                                           (void)ktricks::netwatch::decode_nl80211(&message);
                                           return true;
                                       });
    return 0;
}
