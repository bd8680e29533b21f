// Fuzzes the /proc/net/raw{,6} parser (sockets): any text, read as either table, must parse into
// rows or skip them with a description, never read outside the text (ASan) nor throw.
#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../../src/sockets/proc_raw.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // An exactly-sized heap copy, so ASan sees a read even one byte past it.
    std::unique_ptr<char[]> copy(new char[size ? size : 1]);
    for (std::size_t i = 0; i < size; ++i) copy[i] = static_cast<char>(data[i]);
    for (int family : {AF_INET, AF_INET6}) {
        std::vector<ktricks::sockets::SocketInfo> rows;
        std::vector<std::string> skipped;
        ktricks::sockets::detail::parse_proc_net_raw({copy.get(), size}, family, rows, skipped);
    }
    return 0;
}
