// CLI11, without <iostream>'s start-up cost.
//
// Why: libstdc++ up to GCC 12 (Debian 12) puts `static std::ios_base::Init __ioinit;` into every translation
// unit that includes <iostream>. The front door links libstdc++ statically, so that object's constructor
// builds the eight standard streams and their locale facets before main() on every run: about 0.5 ms of a
// ~4 ms start (docs/once.md). CLI11 includes <iostream> only to name std::cout and std::cerr as the default
// streams of App::exit() and for warnings about deprecated options, which ktricks does not declare.
//
// This header declares the standard streams the way <iostream> does and sets its include guard, so CLI11
// compiles unchanged but no translation unit of the CLI runs the initialiser. GCC 13 and later initialise
// the streams once inside the library instead, and other standard libraries do it their own way: there the
// real <iostream> is used and nothing changes.
//
// Guarantee the CLI keeps: nothing writes to std::cout/cerr/clog/cin without a StandardStreams object in
// scope (app.cpp creates one around App::exit(), the one place CLI11 prints). Everything else writes
// through {fmt} or the core logger, which use stdio.
#pragma once

#include <ios>

#if defined(__GLIBCXX__) && defined(_GLIBCXX_RELEASE) && _GLIBCXX_RELEASE <= 12 && !defined(_GLIBCXX_IOSTREAM)
#include <istream>
#include <ostream>
#define _GLIBCXX_IOSTREAM 1
// clang-format would take the visibility macro for the namespace's name.
// clang-format off
namespace std _GLIBCXX_VISIBILITY(default) {
_GLIBCXX_BEGIN_NAMESPACE_VERSION
extern istream cin;
extern ostream cout;
extern ostream cerr;
extern ostream clog;
extern wistream wcin;
extern wostream wcout;
extern wostream wcerr;
extern wostream wclog;
_GLIBCXX_END_NAMESPACE_VERSION
}  // namespace std
// clang-format on
#endif

#include <CLI/CLI.hpp>

namespace ktricks::cli {

// Constructs the standard streams for as long as it lives (reference-counted by libstdc++; the last one
// flushes std::cout). Create one before anything may write to std::cout or std::cerr.
using StandardStreams = std::ios_base::Init;

}  // namespace ktricks::cli
