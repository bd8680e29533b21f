// The probe on arbitrary bytes (as a file: the same libavformat path tvfs uses on SRC): it returns a
// MediaInfo (then decided against every profile) or throws InputError.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "ktricks/core/error.hpp"
#include "ktricks/tvfs.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    int fd = ::memfd_create("tvfs-probe-fuzz", MFD_CLOEXEC);
    if (fd < 0) return 0;
    if (::write(fd, data, size) == static_cast<ssize_t>(size)) {
        try {
            auto media = ktricks::tvfs::probe("/proc/self/fd/" + std::to_string(fd));
            for (const auto& name : ktricks::tvfs::builtin_profile_names())
                (void)ktricks::tvfs::decide(media, ktricks::tvfs::builtin_profile(name));
        } catch (const ktricks::InputError&) {}
    }
    ::close(fd);
    return 0;
}
