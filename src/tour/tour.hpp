// The tour: one stop per trick, each run live on built-in defaults, each printing what it measured.
// It runs as a helper program of its own (it links every component); the CLI parses the options.
#pragma once

#include <string>
#include <vector>

namespace ktricks::tour {

struct Options {
    bool list = false;              // print the stops (name, title) instead of running them
    std::vector<std::string> only;  // run only these stops, in tour order; empty: all
};

// Runs the stops (or lists them), printing to stdout. Returns the exit status: 0 if every stop
// that ran passed, 1 otherwise (skipped stops say why and do not count). Throws InputError for a
// name in `only` that is no stop.
int run(const Options& options);

}  // namespace ktricks::tour
