// Fuzzes the broker's request handling (bytes any process inside a jail can send to the broker):
// with an allow-list that grants nothing, every request must get a one-line refusal, never a socket
// and never a crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ktricks/jail.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static ktricks::jail::Broker broker({}, false);
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto answer = broker.answer(text);
    if (answer.socket || !answer.reply.starts_with("refused ") || answer.reply.size() > 512) std::abort();
    for (char c : answer.reply)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) std::abort();
    return 0;
}
