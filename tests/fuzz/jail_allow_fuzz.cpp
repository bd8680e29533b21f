// Fuzzes the --allow rule parser: it must accept or throw InputError, and a rule it accepts must
// print as text that parses back to a rule allowing the same addresses.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ktricks/core/error.hpp"
#include "ktricks/jail.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        auto rule = ktricks::jail::AllowRule::parse(text);
        auto again = ktricks::jail::AllowRule::parse(rule.to_string());
        if (again.to_string() != rule.to_string()) std::abort();
        for (const char* probe :
             {"tcp://0.0.0.0:8000", "tcp://127.0.0.1:80", "udp6://[::1]:53", "tcp6://[::]:8080"}) {
            auto address = ktricks::SocketAddress::parse(probe);
            if (rule.allows(address) != again.allows(address)) std::abort();
        }
    } catch (const ktricks::InputError&) {}
    return 0;
}
