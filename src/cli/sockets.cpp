// ktricks sockets: argument parsing for socket listing (library: ktricks/sockets.hpp).
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string_view>

#include "cli/common.hpp"
#include "cli/publish_link.hpp"
#include "ktricks/core/error.hpp"
#include "ktricks/core/event.hpp"
#include "ktricks/core/event_loop.hpp"
#include "ktricks/core/heap.hpp"
#include "ktricks/sockets.hpp"

namespace ktricks::cli {
namespace {

struct SocketsOptions {
    bool tcp = false, udp = false, unix_sockets = false, raw = false, packet = false;
    bool listening = false, all = false, numeric = false, processes = false, extended = false;
    bool info = false, memory = false, ipv4 = false, ipv6 = false, kill = false, json = false;
    bool all_netns = false, watch = false, no_header = false, timers = false, cgroups = false;
    bool verbose = false, proc_walk = false;
    // ss's "preferred family": the last of -x, -4, -6, -0 on the command line (AF_UNSPEC if none).
    int family = 0;
    // Whether -a or -l came last (ss: the last one wins).
    bool all_last = false;
    std::string netns;
    std::vector<std::string> filter;
    PublishFlags publish;  // --watch only
};

int run_sockets(const SocketsOptions& options) {
    // A listing fills its result and exits: cheap page faults matter more than returning memory.
    // (--watch is a long-running process and keeps the allocator's defaults.)
    if (!options.watch) prefer_huge_page_heap();
    sockets::Query query;
    query.tcp = options.tcp;
    query.udp = options.udp;
    query.unix_sockets = options.unix_sockets;
    query.raw = options.raw;
    query.packet = options.packet;
    if (options.ipv4 || options.ipv6) {
        query.ipv4 = options.ipv4;
        query.ipv6 = options.ipv6;
    }
    query.states = options.all ? sockets::all_states : options.listening ? sockets::listening_states : 0;
    query.tcp_info = options.info;
    query.memory = options.memory;
    query.processes = options.processes;
    // --proc-walk, or KTRICKS_SOCKETS_PROC_WALK=1 in the environment (tests, benchmarks, a kernel
    // where the BPF path misbehaves): owners from /proc/*/fd only.
    const char* proc_walk_variable = ::getenv("KTRICKS_SOCKETS_PROC_WALK");
    query.processes_bpf =
        !options.proc_walk && !(proc_walk_variable && std::string_view(proc_walk_variable) == "1");
    // -e prints each inet socket's cgroup path too (ss 6.1's sock_details_print).
    query.cgroups = options.cgroups || options.extended;
    query.details = options.extended;
    std::string expression;
    for (const auto& word : options.filter) expression += (expression.empty() ? "" : " ") + word;
    bool any_kind = options.tcp || options.udp || options.unix_sockets || options.raw || options.packet;
    if (!expression.empty()) {
        // ss resolves :service names in the tables of the kinds listed (every kind when none is).
        bool inet_kinds = !any_kind || options.ipv4 || options.ipv6;
        sockets::FilterContext context{
            .family = options.family, .tcp = options.tcp || inet_kinds, .udp = options.udp || inet_kinds};
        query.filter = sockets::Filter::parse(expression, context);
    }
    // ss's states: each kind adds its default (TCP and unix connected sockets, UDP and raw
    // established ones, packet sockets unconnected), -a or -l (whichever came last) replaces them,
    // and `state`/`exclude` clauses replace those.
    std::uint32_t defaults = 0;
    if (options.tcp || options.unix_sockets || options.ipv4 || options.ipv6)
        defaults |= sockets::connected_states;
    if (options.udp || options.raw) defaults |= 1u << sockets::established;
    if (options.packet) defaults |= 1u << sockets::closed;
    if (!defaults) defaults = sockets::connected_states;
    std::uint32_t flag_states = 0;
    if (options.all && (options.all_last || !options.listening)) flag_states = sockets::all_states;
    else if (options.listening)
        flag_states = sockets::listening_states;
    std::uint32_t states = query.filter && query.filter->states() ? query.filter->states()
                           : flag_states                          ? flag_states
                                                                  : defaults;
    query.states = states;
    if (options.all_netns && !options.netns.empty())
        throw InputError("--netns and --all-netns exclude each other");
    if (options.kill && options.all_netns)
        throw InputError("-K works on one namespace at a time (use --netns)");

    if (options.watch) {
        if (options.unix_sockets || options.raw || options.packet)
            throw InputError(
                "--watch follows TCP and UDP only: the kernel broadcasts destroy events for inet sockets");
        // Destroyed sockets arrive in their last state (often CLOSE): only `state` clauses narrow them.
        query.states = query.filter ? query.filter->states() : 0;
        sockets::TableOptions table{
            .numeric = true, .netid = true, .extended = options.extended, .header = false};
        EventLoop loop;
        std::optional<PublishLink> link;
        if (!options.publish.url.empty()) {
            link.emplace(loop, options.publish, "sockets", false);
            link->start();
        }
        sockets::WatchCallbacks callbacks;
        callbacks.on_socket = [&](const sockets::SocketInfo& socket) {
            Event event = sockets::to_event(socket);  // one event: the same line printed and published
            if (link) link->send(event);
            if (options.json) {
                fmt::print("{}", event.to_line());
            } else {
                fmt::print("{} closed ", format_timestamp(std::chrono::system_clock::now()));
                std::fflush(stdout);
                sockets::write_table({socket}, table, STDOUT_FILENO);
            }
            std::fflush(stdout);
        };
        callbacks.on_lost = [&] {
            if (link) link->send(sockets::lost_event());
            if (options.json) fmt::print("{}", sockets::lost_event().to_line());
            else
                fmt::print("{} lost events: the kernel dropped destroy events (receive buffer overrun)\n",
                           format_timestamp(std::chrono::system_clock::now()));
            std::fflush(stdout);
        };
        loop.add_signals({SIGINT, SIGTERM}, [&](const signalfd_siginfo&) { loop.stop(); });
        sockets::Watcher watcher(loop, {.query = query, .netns = options.netns}, callbacks);
        watcher.start();
        loop.run();
        if (link) {
            watcher.stop();
            return finish_publishing(*link);
        }
        return 0;
    }
    if (!options.publish.url.empty()) throw InputError("--publish goes with --watch");

    sockets::Listing listing =
        options.all_netns ? sockets::list_all_namespaces(query) : sockets::list(query, options.netns);
    for (const auto& warning : listing.warnings) fmt::print(stderr, "ktricks sockets: {}\n", warning);
    if (options.verbose && !listing.raw_source.empty())
        fmt::print(stderr, "ktricks sockets: raw sockets: {}{}\n", listing.raw_source,
                   listing.raw_source == "sock_diag" ? "" : " (the kernel has no raw_diag)");
    if (options.verbose && options.processes) {
        if (listing.owners_method == "bpf")
            fmt::print(stderr, "ktricks sockets: -p: BPF task_file iterator\n");
        else
            fmt::print(stderr, "ktricks sockets: -p: /proc walk; {}\n", listing.owners_why_not_bpf);
    }
    std::vector<sockets::SocketInfo>* shown = &listing.sockets;
    std::vector<sockets::SocketInfo> destroyed;
    if (options.kill) {
        destroyed = sockets::destroy(listing.sockets, options.netns);
        shown = &destroyed;
    }
    if (options.json) {
        std::string out;
        for (const auto& socket : *shown) {
            out += sockets::to_json_line(socket);
            if (out.size() > 64 * 1024) {
                fmt::print("{}", out);
                out.clear();
            }
        }
        fmt::print("{}", out);
        return 0;
    }
    // ss drops Netid when one kind of socket is listed (-x and -0 are three and two kinds) and
    // State when one state is (SYN-RECV's two kernel states are one to ss).
    bool one_kind = options.tcp + options.udp + options.raw == 1 && !options.unix_sockets && !options.packet;
    std::uint32_t shown_states = states & ~(1u << sockets::new_syn_recv);
    bool one_state = shown_states && !(shown_states & (shown_states - 1));
    sockets::TableOptions table{.numeric = options.numeric,
                                .netid = !one_kind,
                                .state = !one_state,
                                .timers = options.timers || options.extended,  // ss: -e implies -o
                                .cgroups = options.cgroups,
                                .extended = options.extended,
                                .netns = options.all_netns,
                                .header = !options.no_header};
    std::fflush(stdout);
    sockets::write_table(*shown, table, STDOUT_FILENO);
    return 0;
}

}  // namespace

Subcommand add_sockets(CLI::App& app) {
    auto options = std::make_shared<SocketsOptions>();
    auto* sub = add_subcommand(app, "sockets");
    sub->add_flag("-t,--tcp", options->tcp, "TCP sockets");
    sub->add_flag("-u,--udp", options->udp, "UDP sockets");
    sub->add_flag("-x,--unix", options->unix_sockets, "unix sockets");
    sub->add_flag("-w,--raw", options->raw, "raw sockets");
    sub->add_flag("-0,--packet", options->packet, "packet sockets");
    sub->add_flag("-l,--listening", options->listening, "listening (and unconnected) sockets only");
    sub->add_flag("-a,--all", options->all, "sockets in every state");
    sub->add_flag("-n,--numeric", options->numeric, "numeric ports (no service names)");
    sub->add_flag("-p,--processes", options->processes,
                  "owning processes (by socket inode: a BPF task_file iterator, else /proc/*/fd)");
    sub->add_flag("--proc-walk", options->proc_walk,
                  "-p from /proc/*/fd only, no BPF (also KTRICKS_SOCKETS_PROC_WALK=1)");
    sub->add_flag("-v,--verbose", options->verbose,
                  "say on stderr how -p found the processes, and why not by BPF");
    sub->add_flag("-e,--extended", options->extended,
                  "socket details as ss -e: uid, inode, cookie, cgroup, v6only, shutdown, unix peers");
    sub->add_flag("-i,--info", options->info, "TCP internals (tcp_info, congestion control)");
    sub->add_flag("-m,--memory", options->memory, "socket memory (skmem)");
    sub->add_flag("-4,--ipv4", options->ipv4, "IPv4 only");
    sub->add_flag("-6,--ipv6", options->ipv6, "IPv6 only");
    sub->add_flag("-H,--no-header", options->no_header, "no column titles");
    sub->add_flag("-c,--cgroup", options->cgroups,
                  "each TCP/UDP socket's cgroup, and the systemd unit or container it names");
    sub->add_flag("-o,--options", options->timers, "TCP timers: timer:(NAME,EXPIRES,RETRANSMITS)");
    sub->add_flag("-K,--kill", options->kill,
                  "destroy the matching TCP/UDP sockets (SOCK_DESTROY) and list them");
    sub->add_flag("--json", options->json, "one JSON object per socket");
    sub->add_option("-N,--netns", options->netns, "list the network namespace NAME (/run/netns) or PATH");
    sub->add_flag(
        "--all-netns", options->all_netns,
        "list ours, every namespace in /run/netns, and those only processes hold (labelled pid:PID(unit))");
    sub->add_flag("--watch", options->watch, "stream TCP/UDP socket destroy events until interrupted");
    add_publish_flags(sub, options->publish);
    sub->add_option("filter", options->filter,
                    "[state NAME]... EXPRESSION, as in ss (sport = :443, dst 10.0.0.0/8, and/or/not)");
    // ss reads flags in order: the last of -x/-4/-6/-0 sets how src/dst values are read, and the
    // last of -a/-l wins.
    sub->parse_complete_callback([sub, options] {
        for (const CLI::Option* option : sub->parse_order()) {
            const std::string& name = option->get_name();
            if (name == "--unix") options->family = AF_UNIX;
            else if (name == "--ipv4")
                options->family = AF_INET;
            else if (name == "--ipv6")
                options->family = AF_INET6;
            else if (name == "--packet")
                options->family = AF_PACKET;
            else if (name == "--all")
                options->all_last = true;
            else if (name == "--listening")
                options->all_last = false;
        }
    });
    sub->footer(
        "Examples:\n"
        "  ktricks sockets -tan                              # like ss -tan\n"
        "  ktricks sockets -tlnp                             # listeners and their processes\n"
        "  ktricks sockets -t state established '( dport = :443 or dport = :80 )'\n"
        "  ktricks sockets -tn dst 10.0.0.0/8 --json         # filtered by the kernel, as JSON\n"
        "  ktricks sockets -K -t dst 192.0.2.7               # destroy those connections\n"
        "  ktricks sockets --watch -t                        # closed TCP sockets as they close\n"
        "  ktricks sockets --watch -t --publish redis://127.0.0.1:6379/closed --spool /var/spool/kt\n"
        "Exit status: 0; 64 bad flags or filter; 69 a diag module asked for is missing; 77 not permitted.");
    return {sub, [options] { return run_sockets(*options); }};
}

}  // namespace ktricks::cli
