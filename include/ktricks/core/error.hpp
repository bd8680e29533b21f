// Errors: every failure names the call and the object it was made on, e.g.
// "bind @ktricks/once/u0/x: Address already in use". Library code throws; the CLI maps an
// exception to one stderr line and a sysexits.h exit status (exit_status_for).
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

namespace ktricks {

// Throws std::system_error(errno) with the message "CALL OBJECT" (object may be empty).
[[noreturn]] void throw_errno(std::string_view call, std::string_view object = {});
[[noreturn]] void throw_error(int error_number, std::string_view call, std::string_view object = {});

// Outside text as it may appear in a message: control bytes as \xNN. Raw, a NUL would cut the
// message short (what() is a C string), and a newline or an escape sequence would split the one
// stderr line or drive the reader's terminal (a squatter's argv, a hostile address).
std::string printable(std::string_view text);
// The first byte of `text` that printable() would escape (NUL included), or -1 if none.
int first_control_byte(std::string_view text) noexcept;

// Bad input from the user on the command line (an address, a name, an inline rule): the message
// says which input and what is wrong. EX_USAGE (64).
class InputError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Bad bytes in a file or a stream (a rules file, a profile, a probed medium): the message names
// the file (FILE:LINE where there is one) and the fault. EX_DATAERR (65). An InputError, so code
// that catches bad input of any origin still does.
class DataError : public InputError {
public:
    using InputError::InputError;
};

// A resource is held by someone else right now (a lock, a busy peer): EX_TEMPFAIL (75).
class BusyError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// sysexits.h codes the CLI uses.
namespace exit_code {
inline constexpr int ok = 0;
inline constexpr int usage = 64;          // EX_USAGE
inline constexpr int data = 65;           // EX_DATAERR
inline constexpr int no_input = 66;       // EX_NOINPUT
inline constexpr int unavailable = 69;    // EX_UNAVAILABLE
inline constexpr int software = 70;       // EX_SOFTWARE
inline constexpr int os_error = 71;       // EX_OSERR
inline constexpr int temp_fail = 75;      // EX_TEMPFAIL
inline constexpr int no_permission = 77;  // EX_NOPERM
}  // namespace exit_code

// The exit status for an exception escaping a subcommand.
int exit_status_for(const std::exception& error) noexcept;

}  // namespace ktricks

namespace ktricks {
// A program could not be executed. Shells exit 127 for "not found" and 126 for "not executable";
// exit_status_for follows them.
class SpawnError : public std::system_error {
public:
    using std::system_error::system_error;
};
}  // namespace ktricks
