#!/usr/bin/env bash
# bench/startup.sh — how fast `ktricks` starts, next to the tools it competes with.
#
#   KTRICKS=path/to/ktricks RUNS=30 SOCKETS="6000 18000" bench/startup.sh
#
# One markdown table of medians (p10–p90) and ratios, every pair timed with hyperfine -N interleaved
# (bench/interleave.py: chunks of 5 runs, order rotated), RUNS runs of each command:
#   - `ktricks --version` vs `ss -V`                 target: ktricks <= 1.5x ss
#   - `ktricks once NAME -- true` vs `flock FILE true` target: ktricks <= 1.2x flock
#   - `ktricks sockets -tan` vs `ss -tan`, and -tanp, at each SOCKETS count (in a private network
#     namespace holding SOCKETS/2 established loopback connections: both ends are sockets)
#                                                    target: ktricks faster than ss
# Takeover after SIGKILL of the lock holder is bench/once.sh's measurement (vs flock -o).
# Environment: KTRICKS (default ../build/ktricks), RUNS (default 30), SHORT_RUNS (runs of the two
# start-up rows, default 100: a 5 ms command needs more samples than a 50 ms one for a stable median),
# SOCKETS (default "6000 18000").
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K=${KTRICKS:-$(cd "$here/.." && pwd)/build/ktricks}
RUNS=${RUNS:-30}
SHORT_RUNS=${SHORT_RUNS:-100}
SOCKETS=${SOCKETS:-6000 18000}
[[ -x $K ]] || { echo "startup.sh: $K is not executable (build it, or set KTRICKS)" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ && $SHORT_RUNS =~ ^[1-9][0-9]*$ ]] ||
    { echo "startup.sh: RUNS and SHORT_RUNS must be positive integers" >&2; exit 1; }
for tool in hyperfine ss flock unshare python3; do
    command -v "$tool" >/dev/null || { echo "startup.sh: needs $tool (scripts/install-deps.sh)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "startup.sh: needs root (a private network namespace for the socket rows)" >&2; exit 77; }

if [[ -z ${KTRICKS_BENCH_INSIDE:-} ]]; then
    # A private network namespace: exact socket counts, nothing of the host's sockets in the rows.
    KTRICKS_BENCH_INSIDE=1 KTRICKS=$K RUNS=$RUNS SHORT_RUNS=$SHORT_RUNS SOCKETS=$SOCKETS exec unshare -n "$0" "$@"
fi
ip link set lo up
sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.core.somaxconn=65535 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ktricks-bench-startup.XXXXXX")
source "$here/connections.sh"
cleanup() {
    connections_close
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

rows=()
# compare WHAT TARGET_RATIO|faster OURS THEIRS: one table row from one interleaved measurement.
compare() {
    local what=$1 target=$2 ours=$3 theirs=$4 runs=${5:-$RUNS}
    echo "startup.sh: $what ..." >&2
    python3 "$here/interleave.py" --runs "$runs" "ktricks=$ours" "other=$theirs" >"$tmp/result.json"
    rows+=("$(python3 - "$tmp/result.json" "$what" "$target" "$ours" "$theirs" <<'PY'
import json, sys
result, what, target, ours, theirs = json.load(open(sys.argv[1])), *sys.argv[2:]
k, o = result["ktricks"], result["other"]
ratio = k["median_ms"] / o["median_ms"]
if target == "faster":
    goal, met = "< 1.0x", ratio < 1.0
else:
    goal, met = f"<= {target}x", ratio <= float(target)
cell = lambda r: f'{r["median_ms"]:.2f} ({r["p10_ms"]:.2f}–{r["p90_ms"]:.2f})'
print(f'| {what} | `{ours.split("/")[-1]}` | {cell(k)} | `{theirs}` | {cell(o)} | {ratio:.2f}x | {goal} | {"yes" if met else "**no**"} |')
PY
)")
}

lockfile=$tmp/flock.lock
compare "start-up" 1.5 "$K --version" "ss -V" "$SHORT_RUNS"
compare "lock, run, release" 1.2 "$K once ktricks-bench-startup-$$ -- true" "flock $lockfile true" "$SHORT_RUNS"

port=6000
for sockets in $SOCKETS; do
    connections=$((sockets / 2))
    echo "startup.sh: opening $connections connections ($sockets sockets) ..." >&2
    connections_open "$connections" "$port"
    k_rows=$("$K" sockets -tan | wc -l) s_rows=$(ss -tan | wc -l)
    [[ $k_rows == "$s_rows" ]] || { echo "startup.sh: ktricks sockets -tan has $k_rows lines, ss -tan $s_rows" >&2; exit 1; }
    compare "$sockets sockets, $((k_rows - 1)) rows" faster "$K sockets -tan" "ss -tan"
    compare "$sockets sockets, with processes" faster "$K sockets -tanp" "ss -tanp"
    connections_close
    port=$((port + 100))
done

echo "### ktricks start-up — $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) CPUs, $(ss -V)"
echo
echo "Binary: $K ($(ldd "$K" | wc -l) objects mapped). Wall time in ms, median (p10–p90) of $SHORT_RUNS runs each"
echo "for the start-up rows and $RUNS for the socket rows,"
echo "hyperfine -N, the two commands interleaved in chunks of 5. Ratio = ktricks / other."
echo
echo "| measurement | ktricks | median ms | other | median ms | ratio | target | met |"
echo "|---|---|---:|---|---:|---:|---|---|"
printf '%s\n' "${rows[@]}"
