// ktricks: one binary, one subcommand per trick. This file only routes: parsing errors become one
// line and exit 64; each subcommand does its own work.
#include <signal.h>

#include <fmt/format.h>

#include <CLI/CLI.hpp>

#include <vector>

#include "cli/common.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/service.hpp"
#include "ktricks/version.hpp"

int main(int argc, char** argv) {
    using namespace ktricks;
    // A reader that went away (`ktricks ... | head`) must end us quietly, not kill us mid-cleanup.
    ::signal(SIGPIPE, SIG_IGN);

    CLI::App app{"ktricks: the Linux kernel's lesser-known networking, IPC and filesystem services, put to work.",
                 "ktricks"};
    app.set_version_flag("--version", fmt::format("ktricks {}", version));
    app.require_subcommand(1);
    app.fallthrough(false);
    app.footer("Run 'ktricks SUBCOMMAND --help' for a subcommand's options. Exit status follows sysexits.h:\n"
               "64 usage, 66 no input, 69 unavailable, 75 temporary failure (e.g. a held lock), 77 no permission.");

    // Order here is the order of `ktricks --help`.
    std::vector<cli::Subcommand> subcommands;
    subcommands.push_back(cli::add_once(app));

    // handoff: serve, reload, takeover
    subcommands.push_back(cli::add_serve(app));
    subcommands.push_back(cli::add_reload(app));
    subcommands.push_back(cli::add_takeover(app));

    // jail
    subcommands.push_back(cli::add_jail(app));

    // netlink: sockets, procwatch
    subcommands.push_back(cli::add_sockets(app));
    subcommands.push_back(cli::add_procwatch(app));

    // netwatch
    subcommands.push_back(cli::add_netwatch(app));

    // mysql-watch
    subcommands.push_back(cli::add_mysql_watch(app));

    // tvfs
    subcommands.push_back(cli::add_tvfs(app));

    subcommands.push_back(cli::add_tour(app));

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& help) {
        return app.exit(help);
    } catch (const CLI::CallForAllHelp& help) {
        return app.exit(help);
    } catch (const CLI::CallForVersion& version_request) {
        return app.exit(version_request);
    } catch (const CLI::ParseError& error) {
        std::string where = "ktricks";
        for (auto& sub : subcommands)
            if (sub.app->parsed()) where = "ktricks " + sub.app->get_name();
        std::string message = error.what();
        bool unknown_subcommand = where == "ktricks" && argc > 1 && argv[1][0] != '-';
        if (unknown_subcommand) message = fmt::format("unknown subcommand \"{}\"", argv[1]);
        else if (dynamic_cast<const CLI::RequiredError*>(&error) && message.find("subcommand") != std::string::npos)
            message = "a subcommand is required";
        fmt::print(stderr, "{}: {} (see '{} --help')\n", where, message, where);
        return exit_code::usage;
    }

    for (auto& sub : subcommands)
        if (sub.app->parsed()) {
            set_log_program("ktricks " + sub.app->get_name());
            try {
                return sub.action();
            } catch (const std::exception& error) {
                return cli::report_error(sub.app->get_name(), error);
            }
        }
    return exit_code::usage;
}
