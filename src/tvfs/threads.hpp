// What every thread tvfs starts does first (private to tvfs).
#pragma once

#include <pthread.h>
#include <signal.h>

namespace ktricks::tvfs {

// Names the calling thread (so tests and ps can count them: "tvfs-segment", "tvfs-probe", ...; at
// most 15 bytes) and blocks every signal in it: signals are the embedding program's, and none of
// them may land on a thread of ours.
inline void enter_tvfs_thread(const char* name) noexcept {
    if (name) ::pthread_setname_np(::pthread_self(), name);
    ::sigset_t all;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
}

}  // namespace ktricks::tvfs
