#include "ktricks/core/heap.hpp"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <cstdlib>

namespace ktricks {

void prefer_huge_page_heap(std::size_t reserve) noexcept {
    constexpr std::uintptr_t huge_page = 2 << 20;
    // Above the mmap threshold every block gets its own mapping, faulted in page by page and
    // unmapped (with a TLB flush) on free; below it, freed blocks are reused. 32 MiB is the
    // largest threshold glibc accepts on 64-bit.
    ::mallopt(M_MMAP_THRESHOLD, 32 << 20);
    ::mallopt(M_TRIM_THRESHOLD, INT_MAX);
    ::mallopt(M_TOP_PAD, 96 << 20);
    // Threads would otherwise get arenas of their own, mapped outside the prepared heap.
    ::mallopt(M_ARENA_MAX, 1);
    // One block of the reserve moves the break past it now; freed, it stays on the heap (no
    // trimming) for the allocations to come, in address space already marked for huge pages.
    if (reserve >= (32u << 20)) reserve = (32u << 20) - 4096;
    void* block = std::malloc(reserve);
    if (!block) return;
    auto low = (reinterpret_cast<std::uintptr_t>(block) + huge_page - 1) & ~(huge_page - 1);
    auto high = reinterpret_cast<std::uintptr_t>(::sbrk(0)) & ~(huge_page - 1);
    // glibc's glibc.malloc.hugetlb=1 tunable marks the heap too, but tunables are read only at exec.
    if (high > low) ::madvise(reinterpret_cast<void*>(low), high - low, MADV_HUGEPAGE);
    std::free(block);
}

}  // namespace ktricks
