#include "ktricks/core/error.hpp"

#include <fmt/format.h>

#include <system_error>

namespace ktricks {

void throw_error(int error_number, std::string_view call, std::string_view object) {
    std::string what = object.empty() ? std::string(call) : fmt::format("{} {}", call, object);
    throw std::system_error(error_number, std::system_category(), what);
}

void throw_errno(std::string_view call, std::string_view object) { throw_error(errno, call, object); }

std::string printable(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (unsigned char c : text) {
        if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
        else
            out += static_cast<char>(c);
    }
    return out;
}

int first_control_byte(std::string_view text) noexcept {
    for (unsigned char c : text)
        if (c < 0x20 || c == 0x7f) return c;
    return -1;
}

int exit_status_for(const std::exception& error) noexcept {
    if (dynamic_cast<const DataError*>(&error)) return exit_code::data;
    if (dynamic_cast<const InputError*>(&error)) return exit_code::usage;
    if (dynamic_cast<const BusyError*>(&error)) return exit_code::temp_fail;
    if (auto* spawn = dynamic_cast<const SpawnError*>(&error))
        return spawn->code().value() == ENOENT ? 127 : 126;
    if (auto* system = dynamic_cast<const std::system_error*>(&error)) {
        // Only errno values mean what the cases below say: std::ios_base::failure, for one, carries
        // io_errc::stream (1) in iostream_category, which is not EPERM.
        const auto& category = system->code().category();
        if (category != std::system_category() && category != std::generic_category())
            return exit_code::os_error;
        switch (system->code().value()) {
            case EACCES:
            case EPERM: return exit_code::no_permission;
            case ENOENT: return exit_code::no_input;
            case EADDRINUSE:
            case EAGAIN:
            case EBUSY:
            case ETIMEDOUT: return exit_code::temp_fail;
            case ENOSYS:
            case EOPNOTSUPP:
            case EAFNOSUPPORT:
            case EPROTONOSUPPORT:
            case ECONNREFUSED:
            case ECONNRESET:
            case EPIPE: return exit_code::unavailable;  // the peer is gone
            case EINVAL: return exit_code::data;
            default: return exit_code::os_error;
        }
    }
    return exit_code::software;
}

}  // namespace ktricks
