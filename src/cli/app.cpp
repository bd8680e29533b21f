// The top-level `ktricks` app shared by the front door and the helper programs: parsing errors become
// one line and exit 64; each subcommand does its own work.
#include <signal.h>

#include <fmt/format.h>

#include <algorithm>
#include <string>

#include "cli/common.hpp"
#include "cli/subcommands.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/version.hpp"

namespace ktricks::cli {

CLI::App* add_subcommand(CLI::App& app, std::string_view name) {
    const auto* info = find_subcommand(name);
    return app.add_subcommand(std::string(name), info ? std::string(info->summary) : std::string());
}

int run(int argc, char** argv, std::span<const Registration> built_in, bool list_others) {
    // A reader that went away (`ktricks ... | head`) must end us quietly, not kill us mid-cleanup.
    ::signal(SIGPIPE, SIG_IGN);

    CLI::App app{
        "ktricks: the Linux kernel's lesser-known networking, IPC and filesystem services, put to work.",
        "ktricks"};
    app.set_version_flag("--version", fmt::format("ktricks {}", version));
    app.require_subcommand(1);
    app.fallthrough(false);
    app.footer(
        "Run 'ktricks SUBCOMMAND --help' for a subcommand's options. Exit status follows sysexits.h:\n"
        "64 usage, 65 bad data, 66 no input, 69 unavailable, 75 temporary failure (e.g. a held lock),\n"
        "77 no permission.");

    // Only the subcommand being run registers its options: building every subcommand's options is
    // most of what a light subcommand would otherwise spend before doing its work. Without one
    // (--help, --version, a typo), every subcommand is listed by name and summary.
    auto named = [&](std::string_view name) {
        return std::find_if(built_in.begin(), built_in.end(),
                            [&](const Registration& r) { return r.name == name; });
    };
    auto chosen = argc > 1 ? named(argv[1]) : built_in.end();
    std::vector<Subcommand> registered;
    for (const auto& info : subcommands) {
        auto own = named(info.name);
        if (chosen != built_in.end()) {
            if (own == chosen) registered.push_back(own->add(app));
        } else if (own != built_in.end() || list_others) {
            add_subcommand(app, info.name);  // a helper's subcommand: the front door execs it before parsing
        }
    }

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& help) {
        StandardStreams streams;  // App::exit() prints to std::cout (cli/cli11.hpp)
        return app.exit(help);
    } catch (const CLI::CallForAllHelp& help) {
        StandardStreams streams;
        return app.exit(help);
    } catch (const CLI::CallForVersion& version_request) {
        StandardStreams streams;
        return app.exit(version_request);
    } catch (const CLI::ParseError& error) {
        std::string where = "ktricks";
        for (auto& sub : registered)
            if (sub.app->parsed()) where = "ktricks " + sub.app->get_name();
        std::string message = error.what();
        bool unknown_subcommand = where == "ktricks" && argc > 1 && argv[1][0] != '-';
        if (unknown_subcommand) message = fmt::format("unknown subcommand \"{}\"", argv[1]);
        else if (dynamic_cast<const CLI::RequiredError*>(&error) &&
                 message.find("subcommand") != std::string::npos)
            message = "a subcommand is required";
        fmt::print(stderr, "{}: {} (see '{} --help')\n", where, message, where);
        return exit_code::usage;
    }

    for (auto& sub : registered)
        if (sub.app->parsed()) {
            set_log_program("ktricks " + sub.app->get_name());
            try {
                return sub.action();
            } catch (const std::exception& error) {
                return report_error(sub.app->get_name(), error);
            }
        }
    fmt::print(stderr, "ktricks: a subcommand is required (see 'ktricks --help')\n");
    return exit_code::usage;
}

}  // namespace ktricks::cli
