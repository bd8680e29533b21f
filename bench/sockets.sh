#!/usr/bin/env bash
# bench/sockets.sh — `ktricks sockets` next to `ss` and `netstat` on N established TCP connections.
#
#   KTRICKS=path/to/ktricks RUNS=5 SIZES="1000 10000 100000" bench/sockets.sh
#
# Runs inside a private network namespace (unshare -n: it re-executes itself there), so the counts
# are exact and nothing of the host is touched. For each N it opens N loopback connections with
# bench/sockets_connections.py (2N sockets: both ends; workers of <= 9000 connections, each from its
# own 127.0.0.x, so neither RLIMIT_NOFILE nor the ephemeral port range runs out), then times RUNS
# runs of each command, interleaved (bench/interleave.py: hyperfine, every command once per chunk,
# rotating order, so a busy minute on this shared machine hits all of them), and prints one markdown
# table of medians and ratios against ktricks. Queries: -tan, -tanp, a filtered -tan and -tan
# --cgroup. Row counts of ktricks, ss and netstat are compared first, for each query.
# Environment: KTRICKS (default ../build/ktricks), RUNS (default 10), SIZES (default 1000 10000 100000),
# NETSTAT_P_MAX (largest N at which `netstat -tanp` is timed, default 10000: it takes minutes beyond).
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K=${KTRICKS:-$(cd "$here/.." && pwd)/build/ktricks}
RUNS=${RUNS:-10}
SIZES=${SIZES:-1000 10000 100000}
NETSTAT_P_MAX=${NETSTAT_P_MAX:-10000}
[[ -x $K ]] || { echo "sockets.sh: $K is not executable (build it, or set KTRICKS)" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "sockets.sh: RUNS must be a positive integer" >&2; exit 1; }
for tool in ss netstat unshare /usr/bin/python3 awk sort hyperfine; do
    command -v "$tool" >/dev/null || { echo "sockets.sh: needs $tool" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "sockets.sh: needs root (network namespace)" >&2; exit 77; }

if [[ -z ${KTRICKS_BENCH_INSIDE:-} ]]; then
    # Copy the binary: it may be rebuilt while we run.
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/ktricks-bench-sockets.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    cp "$K" "$tmp/ktricks"
    KTRICKS_BENCH_INSIDE=1 KTRICKS="$tmp/ktricks" RUNS=$RUNS SIZES=$SIZES NETSTAT_P_MAX=$NETSTAT_P_MAX unshare -n "$0" "$@"
    exit
fi

ip link set lo up
# Per namespace: room for every connection.
sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.core.somaxconn=65535 2>/dev/null || true
# Descriptors: as many as the hard limit lets us (raising it needs CAP_SYS_RESOURCE, which a
# container may withhold; the helper's workers stay under 20k each either way).
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

source "$here/connections.sh"
cleanup() {
    connections_close
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Interleaved medians: sets k, s and t (ms) from LABEL=COMMAND arguments labelled k, s, t.
time_all() {
    local json
    json=$(/usr/bin/python3 "$here/interleave.py" --runs "$RUNS" --chunk 2 --warmup 1 "$@" 2>/dev/null) || {
        echo "sockets.sh: timing failed: $*" >&2; exit 1; }
    read -r k s t < <(/usr/bin/python3 -c 'import json, sys
j = json.loads(sys.argv[1])
print(*("%.1f" % j[l]["median_ms"] if l in j else "-" for l in "kst"))' "$json")
}
rows() { "$@" 2>/dev/null | wc -l; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b + 0 > 0) printf "%.1fx", b / a; else print "-" }'; }

table="| N connections | query | ktricks (ms) | ss (ms) | netstat (ms) | ss / ktricks | netstat / ktricks |
|---:|---|---:|---:|---:|---:|---:|"
round=0
for n in $SIZES; do
    echo "sockets.sh: opening $n connections..." >&2
    # A fresh port range per size: the previous size's sockets may still be closing (FIN-WAIT).
    port=$((5000 + 100 * round++))
    connections_open "$n" "$port"
    # Row counts: 2n established + listeners; ktricks and ss print one header line, netstat two.
    k_rows=$(( $(rows "$KTRICKS" sockets -tan) - 1 ))
    s_rows=$(( $(rows ss -tan) - 1 ))
    n_rows=$(( $(rows netstat -tan) - 2 ))
    kf=$(( $(rows "$KTRICKS" sockets -tan "sport = :$port") - 1 ))
    sf=$(( $(rows ss -tan "sport = :$port") - 1 ))
    echo "sockets.sh: N=$n rows: ktricks $k_rows, ss $s_rows, netstat $n_rows; filtered: ktricks $kf, ss $sf" >&2
    if [[ $k_rows != "$s_rows" || $k_rows != "$n_rows" || $kf != "$sf" ]]; then
        echo "sockets.sh: row counts disagree" >&2
        exit 1
    fi
    kc=$(( $(rows "$KTRICKS" sockets -tan --cgroup) - 1 ))
    sc=$(( $(rows ss -tan --cgroup) - 1 ))
    [[ $kc == "$sc" ]] || { echo "sockets.sh: --cgroup row counts disagree: ktricks $kc, ss $sc" >&2; exit 1; }
    time_all "k=$KTRICKS sockets -tan" "s=ss -tan" "t=netstat -tan"
    table+=$'\n'"| $n | \`-tan\` ($k_rows rows) | $k | $s | $t | $(ratio "$k" "$s") | $(ratio "$k" "$t") |"
    # netstat -p takes minutes per run at 100k connections; past NETSTAT_P_MAX it is not timed.
    if ((n <= NETSTAT_P_MAX)); then
        time_all "k=$KTRICKS sockets -tanp" "s=ss -tanp" "t=netstat -tanp"
    else
        time_all "k=$KTRICKS sockets -tanp" "s=ss -tanp"; t="(not run)"
    fi
    table+=$'\n'"| $n | \`-tanp\` (with processes) | $k | $s | $t | $(ratio "$k" "$s") | $(ratio "$k" "$t") |"
    time_all "k=$KTRICKS sockets -tan sport = :$port" "s=ss -tan sport = :$port"
    table+=$'\n'"| $n | \`-tan sport = :$port\` ($kf rows) | $k | $s | - | $(ratio "$k" "$s") | - |"
    # netstat has no cgroups; ss --cgroup prints the path, ktricks also the unit/container.
    time_all "k=$KTRICKS sockets -tan --cgroup" "s=ss -tan --cgroup"
    table+=$'\n'"| $n | \`-tan --cgroup\` ($kc rows) | $k | $s | - | $(ratio "$k" "$s") | - |"
    connections_close
done
echo
echo "ktricks sockets vs ss vs netstat, median of $RUNS interleaved runs each (hyperfine), wall time, output to /dev/null"
echo "($(nproc) CPUs, kernel $(uname -r), $(ss -V))"
echo
echo "$table"
