// Fuzzes the proc connector decoder on whole datagrams: cn_msg lengths that lie, truncated
// proc_events, unknown event types. Nothing may read outside the buffer.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "ktricks/netlink.hpp"

#include "ktricks/procwatch.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // An exactly-sized heap copy (16-byte aligned), so ASan sees a read even one byte past it.
    std::unique_ptr<std::byte[]> copy(new std::byte[size ? size : 1]);
    if (size) std::memcpy(copy.get(), data, size);
    ktricks::netlink::for_each_message({copy.get(), size}, [](const nlmsghdr& message_ref) {
        const nlmsghdr* message = &message_ref;
        if (auto event = ktricks::procwatch::decode(*message))
            (void)ktricks::procwatch::to_string(event->type);
        return true;
    });
    return 0;
}
