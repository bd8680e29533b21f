#!/usr/bin/env bash
# bench/jail.sh — the same HTTP server on the same kind of socket, three ways, under wrk:
#   native  `ktricks serve` hands it the listener (no namespaces; the same core bind_socket, so the
#           very same socket options and backlog as the jailed run)
#   jailed  `ktricks jail` hands it the listener inside an empty network namespace, every default
#           on (user namespace, no capabilities, read-only root, minimal /dev, seccomp deny list,
#           init as pid 1), --intercept-bind=false: LISTEN_FDS only
#   intercept  `ktricks jail` (defaults) and the server binds the port itself (serve --bind): the
#           bind() is answered with the host listener through seccomp user notification
#   proxy   native server on a second port, clients go through a userspace proxy (socat), which is
#           what a sandbox without socket passing would need
# The server is build/jail_test_server (epoll, keep-alive, tiny body). Prints a markdown table of
# medians over RUNS runs (default 5) of throughput and p99 latency, with ratios against native.
# The modes run in turn within each round (ABCD ABCD ...), and the ratio to native is also taken
# per round: its median and its spread (lowest-highest) say how much of a difference is noise.
#   KTRICKS=build/ktricks RUNS=5 DURATION=3 CONNECTIONS=32 bench/jail.sh
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K=${KTRICKS:-$(cd "$here/.." && pwd)/build/ktricks}
SERVER=${SERVER:-$(dirname "$K")/jail_test_server}
RUNS=${RUNS:-5}
DURATION=${DURATION:-3}
CONNECTIONS=${CONNECTIONS:-32}
for tool in wrk socat awk sort; do
    command -v "$tool" >/dev/null || { echo "jail.sh: needs $tool" >&2; exit 1; }
done
[[ -x $K && -x $SERVER ]] || { echo "jail.sh: build ktricks and jail_test_server first (or set KTRICKS/SERVER)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ktricks-bench-jail.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.02; done; echo "jail.sh: nothing on port $1" >&2; return 1; }
stop_all() {
    local pid
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}

# start MODE PORT: the server reachable on 127.0.0.1:PORT.
start() {
    local mode=$1 port=$2 inner
    case $mode in
        native) setsid "$K" serve --ready tcp --listen "tcp://127.0.0.1:$port" -- "$SERVER" serve >/dev/null 2>&1 & pids+=($!) ;;
        jailed) setsid "$K" jail --quiet --intercept-bind=false --listen "tcp://127.0.0.1:$port" -- "$SERVER" serve >/dev/null 2>&1 & pids+=($!) ;;
        intercept) setsid "$K" jail --quiet --listen "tcp://127.0.0.1:$port" -- "$SERVER" serve --bind "tcp://127.0.0.1:$port" >/dev/null 2>&1 & pids+=($!) ;;
        proxy)
            inner=$(free_port)
            setsid "$K" serve --ready tcp --listen "tcp://127.0.0.1:$inner" -- "$SERVER" serve >/dev/null 2>&1 & pids+=($!)
            wait_port "$inner"
            setsid socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,backlog=1024" "TCP:127.0.0.1:$inner" >/dev/null 2>&1 & pids+=($!) ;;
    esac
    wait_port "$port"
}

# One wrk run: "RPS P99_MS".
measure() {
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$1/" | awk '
        /Requests\/sec:/ { rps = $2 }
        $1 == "99%" { v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v);
                      ms = unit == "us" ? v / 1000 : unit == "s" ? v * 1000 : v; p99 = ms }
        END { printf "%s %s\n", rps, p99 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

modes=(native jailed intercept proxy)
for ((run = 1; run <= RUNS; run++)); do
    for mode in "${modes[@]}"; do  # interleaved, so a noisy moment hits all three alike
        port=$(free_port)
        start "$mode" "$port"
        measure "$port" >>"$tmp/$mode"
        stop_all
    done
done

declare -A rps p99
for mode in "${modes[@]}"; do
    rps[$mode]=$(awk '{ print $1 }' "$tmp/$mode" | median)
    p99[$mode]=$(awk '{ print $2 }' "$tmp/$mode" | median)
done
echo "jail.sh: wrk -t2 -c$CONNECTIONS -d${DURATION}s against jail_test_server, median of $RUNS runs each ($(nproc) CPUs)"
echo
echo "| mode | requests/s | vs native | per-round ratio: median (lowest-highest) | p99 latency (ms) | vs native |"
echo "|---|---:|---:|---:|---:|---:|"
for mode in "${modes[@]}"; do
    # The ratio of this mode's run to the native run of the same round.
    spread=$(paste -d' ' "$tmp/$mode" "$tmp/native" | awk '{ print $1 / $3 }' | sort -g |
             awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f (%.3f-%.3f)", m, v[1], v[NR] }')
    awk -v m="$mode" -v r="${rps[$mode]}" -v nr="${rps[native]}" -v p="${p99[$mode]}" -v np="${p99[native]}" -v s="$spread" \
        'BEGIN { printf "| %s | %.0f | %.3f | %s | %.2f | %.2f |\n", m, r, r / nr, s, p, p / np }'
done
for mode in jailed intercept; do
    awk -v m="$mode" -v r="${rps[$mode]}" -v nr="${rps[native]}" 'BEGIN { d = (1 - r / nr) * 100; printf "\n%s throughput is %.1f%% %s native (target: within 5%%)", m, (d < 0 ? -d : d), (d < 0 ? "above" : "below") }'
done
echo
