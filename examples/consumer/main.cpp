// A program that refuses to run twice, using libktricks' once lock from an installed package.
#include <ktricks/core.hpp>
#include <ktricks/once.hpp>

#include <fmt/format.h>

int main(int argc, char** argv) {
    auto name = ktricks::once::LockName::make(argc > 1 ? argv[1] : "ktricks-consumer-example");
    auto lock = ktricks::once::Lock::try_acquire(name);
    if (!lock) {
        auto holder = ktricks::once::find_holder(name);
        fmt::print("already running: {}\n", holder ? holder->describe() : "just released");
        return 75;
    }
    fmt::print("holding {} (libktricks {})\n", name.socket_name(), ktricks::version);
    return 0;
}
