// Heap policy for short-lived programs that build a large result and exit (`ktricks sockets`).
#pragma once

#include <cstddef>

namespace ktricks {

// Makes the process's heap cheap to fill: large blocks stay on the brk heap instead of being mapped
// and unmapped one by one, the heap grows in one step of at least RESERVE bytes of address space,
// and that space is marked for transparent huge pages. A program that fills tens of megabytes then
// takes a few hundred page faults instead of thousands; on virtual machines, where each fault is a
// trip to the hypervisor, that is most of a socket listing's time. Never releases memory to the
// kernel before exit, so it is for programs that exit soon, not for daemons: the caller owns the
// process and decides (library code never calls it). Best effort: each step that the kernel or
// the allocator refuses is skipped.
void prefer_huge_page_heap(std::size_t reserve = 30 << 20) noexcept;

}  // namespace ktricks
