// Steering a SO_REUSEPORT group: every new connection goes to one chosen socket of the group.
//
// serve gives each generation its own listening socket, all bound to the same address with
// SO_REUSEPORT (one group). A reuseport program (BPF_PROG_TYPE_SK_REUSEPORT) attached to the group
// selects the one socket in a one-entry REUSEPORT_SOCKARRAY map for every incoming connection, so
// only the generation that socket belongs to gets new connections; serve points the map at a new
// generation once it is ready (an atomic map update). The program is attached as
// BPF_SK_REUSEPORT_SELECT_OR_MIGRATE, so when a socket of the group closes, connections still in
// its accept queue (and half-open ones) are migrated to the map's socket by the kernel instead of
// being reset, whatever net.ipv4.tcp_migrate_req says.
//
// The program is eleven instructions, loaded with the bpf(2) syscall directly: the `ktricks` front
// door (where serve lives) maps only libc, libmnl and ld.so, so libbpf is not available to it.
// Loading needs CAP_BPF and CAP_NET_ADMIN (root); without them create() throws and serve keeps the
// shared-socket path.
#pragma once

#include "ktricks/core/fd.hpp"

namespace ktricks::handoff::detail {

class ReuseportSteering {
public:
    // Creates the map and loads the program. Throws std::system_error naming the bpf(2) command
    // that failed (EPERM without CAP_BPF/CAP_NET_ADMIN).
    static ReuseportSteering create();
    // Attaches the program to the reuseport group of `socket` (a bound, listening SO_REUSEPORT
    // socket): from then on it decides for the whole group. Throws std::system_error.
    void attach(int socket) const;
    // Every new connection to the group goes to `socket` (a listening member of the group) from now
    // on. Throws std::system_error.
    void steer_to(int socket) const;

private:
    Fd map_, program_;
};

}  // namespace ktricks::handoff::detail
