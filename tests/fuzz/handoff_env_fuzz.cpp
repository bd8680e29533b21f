// Fuzzes what a generation sends or inherits: NOTIFY_SOCKET datagrams, the answer to a readiness
// probe, the LISTEN_* variables, --listen/--ready/--server arguments and the /proc/net tables
// takeover reads.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "../../src/handoff/proc_sockets.hpp"
#include "../../src/handoff/protocol.hpp"  // private parsers: the fuzz targets see no src/ include path
#include "ktricks/core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    using namespace ktricks::handoff;
    using namespace ktricks::handoff::detail;
    (void)parse_notify(input);
    (void)parse_http_status(input);
    try {
        (void)parse_server(input);
    } catch (const ktricks::InputError&) {}
    // Three NUL-separated parts: LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES.
    std::string parts[3];
    std::size_t part = 0;
    for (char c : input) {
        if (c == '\0') {
            if (++part == 3) break;
        } else {
            parts[part] += c;
        }
    }
    (void)parse_listen_environment(parts[0].c_str(), parts[1].c_str(), parts[2].c_str(), 100);
    try {
        (void)ListenSpec::parse(input);
    } catch (const ktricks::InputError&) {}
    try {
        (void)ReadyCheck::parse(input);
    } catch (const ktricks::InputError&) {}
    (void)parse_proc_net_inet(input, ProcSocket::Kind::tcp, false);
    (void)parse_proc_net_inet(input, ProcSocket::Kind::udp, true);
    (void)unix_stream_sockets(ktricks::parse_proc_net_unix(input));
    return 0;
}
