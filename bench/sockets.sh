#!/usr/bin/env bash
# bench/sockets.sh — `ktricks sockets` next to `ss` and `netstat` on N TCP sockets (N/2 connections).
#
#   KTRICKS=path/to/ktricks RUNS=10 SIZES="1000 18000 100000" bench/sockets.sh
#
# Runs inside a private network namespace (unshare -n: it re-executes itself there), so the counts
# are exact and nothing of the host is touched. For each N (sockets, as issue 17 counts them) it
# opens N/2 loopback connections with bench/sockets_connections.py (both ends are sockets, plus one
# listener per worker; workers of <= 9000 connections, each from its
# own 127.0.0.x, so neither RLIMIT_NOFILE nor the ephemeral port range runs out), then times RUNS
# runs of each command, interleaved (bench/interleave.py: hyperfine -N, every command once per
# chunk, rotating order, so a busy minute on this shared machine hits all of them), and prints one
# markdown table of medians and of ratios against ktricks. Queries:
#   -tan                      ktricks, ss, netstat -tan
#   -tanp                     ktricks (BPF task_file iterator; -v must say so), ss, netstat -tanp
#   -tanp --proc-walk         ktricks's /proc/*/fd walk, timed in the same interleaved set as -tanp
#   state established '( dport = :P or sport = :P )'   ss(8)'s example on a real port (the first
#                             worker's listener: both ends of its connections); netstat has no filter
#   -tan --cgroup             ktricks, ss --cgroup; netstat has no cgroups
# Before timing, each query's output is checked: ktricks and ss must print the same rows (sorted
# text identical; for --cgroup, up to ktricks's added unit:/container: fields), netstat the same
# number of rows. Any difference stops the script (exit 1) before a number is printed.
# Environment: KTRICKS (default ../build/ktricks), RUNS (default 10), SIZES (sockets, default 1000
# 18000 100000), NETSTAT_P_MAX (largest N at which `netstat -tanp` is timed, default 18000: it takes
# tens of seconds a run beyond).
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K=${KTRICKS:-$(cd "$here/.." && pwd)/build/ktricks}
RUNS=${RUNS:-10}
SIZES=${SIZES:-1000 18000 100000}
NETSTAT_P_MAX=${NETSTAT_P_MAX:-18000}
[[ -x $K ]] || { echo "sockets.sh: $K is not executable (build it, or set KTRICKS)" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "sockets.sh: RUNS must be a positive integer" >&2; exit 1; }
for tool in ss netstat unshare /usr/bin/python3 awk sort cmp hyperfine; do
    command -v "$tool" >/dev/null || { echo "sockets.sh: needs $tool (scripts/install-deps.sh)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "sockets.sh: needs root (network namespace, BPF)" >&2; exit 77; }

if [[ -z ${KTRICKS_BENCH_INSIDE:-} ]]; then
    # Copy the binary: it may be rebuilt while we run (sockets runs in the front door, no helper).
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/ktricks-bench-sockets.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    cp "$K" "$tmp/ktricks"
    KTRICKS_BENCH_INSIDE=1 KTRICKS="$tmp/ktricks" RUNS=$RUNS SIZES=$SIZES NETSTAT_P_MAX=$NETSTAT_P_MAX \
        BENCH_TMP=$tmp unshare -n "$0" "$@"
    exit
fi

ip link set lo up
# Per namespace: room for every connection.
sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.core.somaxconn=65535 2>/dev/null || true
# Descriptors: as many as the hard limit lets us (raising it needs CAP_SYS_RESOURCE, which a
# container may withhold; the helper's workers stay under 20k each either way).
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

out=${BENCH_TMP:?}
source "$here/connections.sh"
cleanup() {
    connections_close
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

fail() {
    echo "sockets.sh: $*" >&2
    exit 1
}

# time_all LABEL=COMMAND...: RUNS interleaved runs of each; sets med[LABEL] to its median wall time
# and cpu[LABEL] to its mean user+system time, in ms.
declare -A med cpu
time_all() {
    local json
    json=$(/usr/bin/python3 "$here/interleave.py" --runs "$RUNS" --chunk 2 --warmup 1 "$@") ||
        fail "timing failed: $*"
    med=() cpu=()
    eval "$(/usr/bin/python3 -c 'import json, sys
for label, result in json.loads(sys.argv[1]).items():
    print("med[%s]=%.1f cpu[%s]=%.1f" % (label, result["median_ms"], label, result["cpu_ms"]))' "$json")"
}
# rows FILE HEADER_LINES: the number of rows in a saved output.
rows() { echo $(($(wc -l <"$1") - $2)); }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b + 0 > 0) printf "%.1fx", b / a; else print "n/a" }'; }
# same_rows NAME FILE_A FILE_B: the two outputs hold the same rows (sorted, title line included).
same_rows() {
    cmp -s <(sort "$2") <(sort "$3") && return
    diff <(sort "$2") <(sort "$3") | head -6 >&2
    fail "$1: ktricks (<) and ss (>) print different rows (first differences above)"
}
add_row() { # N QUERY ROWS K S T K_CPU S_CPU
    local t_cell=$6 t_ratio
    if [[ $t_cell == n/a || $t_cell == "not run" ]]; then t_ratio=n/a; else t_ratio=$(ratio "$4" "$6"); fi
    table+=$'\n'"| $1 | $2 | $3 | $4 | $5 | $t_cell | $(ratio "$4" "$5") | $t_ratio | $(ratio "$7" "$8") |"
}

table="| N sockets | query | rows | ktricks (ms) | ss (ms) | netstat (ms) | ss / ktricks | netstat / ktricks | ss / ktricks, CPU time |
|---:|---|---:|---:|---:|---:|---:|---:|---:|"
round=0
for n in $SIZES; do
    c=$((n / 2))
    echo "sockets.sh: opening $c connections ($n sockets)..." >&2
    # A fresh port range per size: the previous size's sockets may still be closing (FIN-WAIT).
    port=$((5000 + 100 * round++))
    connections_open "$c" "$port"
    filter="state established ( dport = :$port or sport = :$port )"
    shown_filter="state established '( dport = :$port or sport = :$port )'"

    # -tan: ktricks and ss the same rows; netstat (two title lines) as many.
    "$KTRICKS" sockets -tan >"$out/k" && ss -tan >"$out/s" && netstat -tan >"$out/t"
    same_rows "-tan" "$out/k" "$out/s"
    rows_tan=$(rows "$out/k" 1)
    # Both ends of every connection and one listener per worker of 9000: nothing else is open here.
    ((rows_tan == 2 * c + (c + 8999) / 9000)) || fail "-tan: $rows_tan rows, expected $((2 * c + (c + 8999) / 9000))"
    [[ $(rows "$out/t" 2) == "$rows_tan" ]] ||
        fail "-tan: ktricks and ss $rows_tan rows, netstat $(rows "$out/t" 2)"
    echo "sockets.sh: N=$n -tan: $rows_tan rows in all three" >&2
    time_all "k=$KTRICKS sockets -tan" "s=ss -tan" "t=netstat -tan"
    add_row "$n" '`-tan`' "$rows_tan" "${med[k]}" "${med[s]}" "${med[t]}" "${cpu[k]}" "${cpu[s]}"

    # -tanp: both ways of ktricks give ss's rows and processes; -v says the BPF iterator ran.
    "$KTRICKS" sockets -tanp -v >"$out/k" 2>"$out/k.err" && ss -tanp >"$out/s"
    grep -q 'BPF task_file iterator' "$out/k.err" || fail "-tanp did not use BPF: $(cat "$out/k.err")"
    same_rows "-tanp" "$out/k" "$out/s"
    "$KTRICKS" sockets -tanp --proc-walk >"$out/w"
    same_rows "-tanp --proc-walk" "$out/w" "$out/s"
    rows_tanp=$(rows "$out/k" 1)
    # netstat -p takes tens of seconds per run at 100k connections; past NETSTAT_P_MAX it is not timed.
    netstat_p=()
    if ((n <= NETSTAT_P_MAX)); then
        netstat -tanp >"$out/t"
        [[ $(rows "$out/t" 2) == "$rows_tanp" ]] ||
            fail "-tanp: ktricks and ss $rows_tanp rows, netstat $(rows "$out/t" 2)"
        netstat_p=("t=netstat -tanp")
    fi
    echo "sockets.sh: N=$n -tanp: $rows_tanp rows (BPF, /proc walk, ss${netstat_p:+, netstat})" >&2
    time_all "k=$KTRICKS sockets -tanp" "w=$KTRICKS sockets -tanp --proc-walk" "s=ss -tanp" "${netstat_p[@]}"
    add_row "$n" '`-tanp` (BPF iterator)' "$rows_tanp" "${med[k]}" "${med[s]}" "${med[t]:-not run}" "${cpu[k]}" "${cpu[s]}"
    add_row "$n" '`-tanp --proc-walk`' "$rows_tanp" "${med[w]}" "${med[s]}" "${med[t]:-not run}" "${cpu[w]}" "${cpu[s]}"

    # ss(8)'s filter example on a real port.
    "$KTRICKS" sockets -tan $filter >"$out/k" && ss -tan $filter >"$out/s"
    same_rows "$shown_filter" "$out/k" "$out/s"
    rows_filter=$(rows "$out/k" 1)
    ((rows_filter > 0)) || fail "$shown_filter selected no rows"
    echo "sockets.sh: N=$n filter: $rows_filter rows" >&2
    time_all "k=$KTRICKS sockets -tan $shown_filter" "s=ss -tan $shown_filter"
    add_row "$n" "\`-tan $shown_filter\`" "$rows_filter" "${med[k]}" "${med[s]}" n/a "${cpu[k]}" "${cpu[s]}"

    # --cgroup: ss prints cgroup:PATH, ktricks that and the unit or container it names.
    "$KTRICKS" sockets -tan --cgroup >"$out/k" && ss -tan --cgroup >"$out/s"
    sed -E -i 's/ unit:[^ ]+//; s/ container:[^ ]+//; s/ +$//' "$out/k"
    sed -E -i 's/ +$//' "$out/s"
    same_rows "-tan --cgroup" "$out/k" "$out/s"
    rows_cgroup=$(rows "$out/k" 1)
    echo "sockets.sh: N=$n --cgroup: $rows_cgroup rows" >&2
    time_all "k=$KTRICKS sockets -tan --cgroup" "s=ss -tan --cgroup"
    add_row "$n" '`-tan --cgroup`' "$rows_cgroup" "${med[k]}" "${med[s]}" n/a "${cpu[k]}" "${cpu[s]}"
    connections_close
    # The helper resets its connections (SO_LINGER 0: no TIME-WAIT); wait until they are gone.
    for _ in {1..300}; do
        [[ -z $(ss -Htan) ]] && break
        sleep 0.1
    done
done
echo
echo "ktricks sockets vs ss vs netstat: medians of $RUNS interleaved runs each (hyperfine -N, output"
echo "to /dev/null), wall time; CPU time (user+system) ratio of the means; rows checked equal first. $(nproc) CPUs, kernel $(uname -r), $(ss -V),"
echo "$(netstat --version 2>&1 | head -1), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
echo
echo "$table"
