#include <sys/un.h>

#include <fmt/format.h>

#include "ktricks/core/error.hpp"
#include "ktricks/once.hpp"

namespace ktricks::once {

LockName LockName::make(std::string_view name, Scope scope, uid_t uid) {
    if (name.empty()) throw InputError("lock name is empty");
    if (name.find('\0') != std::string_view::npos) throw InputError("lock name contains a NUL byte");
    if (int c = first_control_byte(name); c >= 0)
        throw InputError(fmt::format("lock name \"{}\" contains a control character (byte 0x{:02x})",
                                     printable(name.substr(0, 40)), c));
    std::string prefix =
        scope == Scope::user ? fmt::format("ktricks/once/u{}/", uid) : "ktricks/once/global/";
    // sun_path is 108 bytes and an abstract name spends the first on its leading NUL.
    constexpr std::size_t room = sizeof(sockaddr_un::sun_path) - 1;
    if (prefix.size() + name.size() > room)
        throw InputError(
            fmt::format("lock name is {} bytes; at most {} fit (an abstract socket name is at most "
                        "{} bytes, and the scope prefix \"{}\" takes {})",
                        name.size(), room - prefix.size(), room, prefix, prefix.size()));
    auto address = SocketAddress::unix_abstract(prefix + std::string(name));
    return LockName(std::string(name), scope, scope == Scope::user ? std::optional<uid_t>(uid) : std::nullopt,
                    std::move(address));
}

}  // namespace ktricks::once
