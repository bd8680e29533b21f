// The faststart head builder of the streamed remux (src/tvfs/mp4_boxes.cpp) on arbitrary bytes: the
// first two bytes split the input into the plain MP4's header and its moov. It builds a head or
// throws DataError, never reads past a box; a head it builds parses back to the same payload.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ktricks/core/error.hpp"
#include "tvfs/mp4_boxes.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    std::size_t split = (std::size_t{data[0]} << 8 | data[1]) % (size - 1);
    std::string_view input(reinterpret_cast<const char*>(data) + 2, size - 2);
    auto header = input.substr(0, split), moov = input.substr(split);
    try {
        (void)ktricks::tvfs::shift_chunk_offsets(moov, 0xfffffff0u);
    } catch (const ktricks::DataError&) {}
    try {
        auto head = ktricks::tvfs::faststart_head(header, moov);
        auto plain = ktricks::tvfs::parse_plain_header(header);
        auto back = ktricks::tvfs::parse_faststart_head(head);
        if (back.payload_bytes != plain.payload_bytes || back.payload_start != plain.payload_start)
            std::abort();
    } catch (const ktricks::DataError&) {}
    try {
        (void)ktricks::tvfs::parse_faststart_head(input);
    } catch (const ktricks::DataError&) {}
    return 0;
}
