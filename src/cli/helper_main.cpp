// A helper program: one heavy subcommand (KTRICKS_HELPER_NAME, registered by KTRICKS_HELPER_ADD) in
// a binary of its own, so that its libraries load only when it runs. The front door execs it with its
// own argv ("ktricks NAME ARGS..."); run directly ("ktricks-tvfs ARGS..."), it behaves the same.
#include <string_view>
#include <vector>

#include "cli/common.hpp"

int main(int argc, char** argv) {
    using namespace ktricks::cli;
    static const Registration own[] = {{KTRICKS_HELPER_NAME, KTRICKS_HELPER_ADD}};
    if (argc < 2 || std::string_view(argv[1]) != KTRICKS_HELPER_NAME) {
        static char name[] = KTRICKS_HELPER_NAME;
        std::vector<char*> with_name(argv, argv + argc + 1);  // keeps the terminating nullptr
        with_name.insert(with_name.begin() + 1, name);
        return run(argc + 1, with_name.data(), own, false);
    }
    return run(argc, argv, own, false);
}
