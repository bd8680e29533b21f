// Fuzzes the sock_diag decoders: a datagram of netlink messages as recv() would return it, each
// decoded as inet (TCP with tcp_info), unix and packet diag replies and, through Attributes, its
// nested attributes. Nothing may read outside the buffer (ASan) or throw.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "../../src/sockets/decode.hpp"
#include "ktricks/netlink.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // An exactly-sized heap copy (16-byte aligned), so ASan sees a read even one byte past it.
    std::unique_ptr<std::byte[]> copy(new std::byte[size ? size : 1]);
    if (size) std::memcpy(copy.get(), data, size);
    ktricks::netlink::for_each_message({copy.get(), size}, [](const nlmsghdr& message_ref) {
        const nlmsghdr* message = &message_ref;
        ktricks::sockets::SocketInfo info;
        ktricks::sockets::detail::decode_inet(*message, 0, info);
        ktricks::sockets::detail::decode_inet(*message, 6, info);
        ktricks::sockets::detail::decode_unix(*message, info);
        ktricks::sockets::detail::decode_packet(*message, info);
        ktricks::netlink::Attributes attributes(*message, 0, 40);
        for (std::uint16_t type = 0; type <= 40; ++type) {
            (void)attributes.string(type);
            ktricks::netlink::for_each_nested(attributes.get(type), [](const nlattr& nested) {
                ktricks::netlink::Attributes inner(&nested, 8);
                (void)inner.u32(1);
            });
        }
        return true;
    });
    return 0;
}
