// Two tricks in one program on one event loop: network changes, and processes that fail, as JSON
// lines until Ctrl-C. The watchers take no signal and write nothing: this program decides both.
// Needs root (the proc connector wants CAP_NET_ADMIN).
#include <signal.h>

#include <cstdio>

#include "ktricks/netwatch.hpp"
#include "ktricks/procwatch.hpp"

int main() try {
    using namespace ktricks;
    EventLoop loop;
    loop.add_signals({SIGINT, SIGTERM}, [&](const signalfd_siginfo&) { loop.stop(); });
    auto print = [](const Event& event) { std::fputs(event.to_line().c_str(), stdout), std::fflush(stdout); };

    netwatch::WatchOptions network;
    network.initial = false;
    netwatch::Callbacks on_network;
    on_network.on_event = [&](const netwatch::NetEvent& e) { print(e.to_event()); };
    netwatch::Watcher net(loop, network, on_network);

    procwatch::Options processes;
    processes.events = {procwatch::EventType::exit};
    procwatch::Callbacks on_exit;
    on_exit.on_event = [&](const procwatch::ProcessEvent& ended, const procwatch::Enrichment& about) {
        if (ended.exit_status() != 0 || ended.killed_by()) print(procwatch::to_event(ended, about));
    };
    procwatch::Watcher proc(loop, processes, on_exit);

    net.start();
    proc.start();
    loop.run();
    return 0;
} catch (const std::exception& error) {
    std::fprintf(stderr, "two_tricks: %s\n", error.what());
    return 1;
}
