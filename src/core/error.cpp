#include "ktricks/core/error.hpp"

#include <fmt/format.h>

#include <system_error>

namespace ktricks {

void throw_error(int error_number, std::string_view call, std::string_view object) {
    std::string what = object.empty() ? std::string(call) : fmt::format("{} {}", call, object);
    throw std::system_error(error_number, std::system_category(), what);
}

void throw_errno(std::string_view call, std::string_view object) { throw_error(errno, call, object); }

int exit_status_for(const std::exception& error) noexcept {
    if (dynamic_cast<const InputError*>(&error)) return exit_code::usage;
    if (dynamic_cast<const BusyError*>(&error)) return exit_code::temp_fail;
    if (auto* spawn = dynamic_cast<const SpawnError*>(&error)) return spawn->code().value() == ENOENT ? 127 : 126;
    if (auto* system = dynamic_cast<const std::system_error*>(&error)) {
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
            case ECONNREFUSED: return exit_code::unavailable;
            case EINVAL: return exit_code::data;
            default: return exit_code::os_error;
        }
    }
    return exit_code::software;
}

}  // namespace ktricks
