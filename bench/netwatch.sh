#!/usr/bin/env bash
# bench/netwatch.sh — `ktricks netwatch` next to what people use instead: an `ip monitor`-driven
# shell loop, and ifplugd (which polls the link every second by default).
#
#   KTRICKS=path/to/ktricks RUNS=20 bench/netwatch.sh
#
# Setup: a veth pair va/vb in a private network namespace. Each run takes vb down (so va loses its
# carrier: link-down), T0 = $EPOCHREALTIME just before `ip link set vb down`, T1 = the time the
# tool's action script wrote (the same script for every tool: `date +%s.%N`). Latency = T1 - T0,
# p50 and p99 over RUNS. Then idle cost: context switches of each watcher process over IDLE_S
# seconds with nothing happening, scaled to one minute (a process that sleeps in the kernel until
# an event has none).
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K=${KTRICKS:-$(cd "$here/.." && pwd)/build/ktricks}
RUNS=${RUNS:-20}
IDLE_S=${IDLE_S:-10}
[[ -x $K ]] || { echo "netwatch.sh: $K is not executable (build it, or set KTRICKS)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "netwatch.sh: needs root (network namespaces)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ktricks-bench-netwatch.XXXXXX")
ns="ktnw-bench-$$"
watcher=""
cleanup() {
    [[ -n $watcher ]] && kill -KILL -- "-$watcher" 2>/dev/null || true
    wait 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

ip netns add "$ns"
ipn() { ip -n "$ns" "$@"; }
ipn link set lo up
# No IPv6: its link-local address and DAD would add address/route events seconds after each
# toggle, which the idle measurement would count against the tools that listen to them.
ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ipn link add va type veth peer name vb
ipn link set va up
ipn link set vb up

cat >"$tmp/stamp" <<EOF
#!/bin/sh
date +%s.%N >> $tmp/stamps
EOF
chmod +x "$tmp/stamp"
# ifplugd calls its action as `ACTION IFACE up|down`: only "down" counts.
cat >"$tmp/ifplugd.action" <<EOF
#!/bin/sh
[ "\$2" = down ] && date +%s.%N >> $tmp/stamps
exit 0
EOF
chmod +x "$tmp/ifplugd.action"

# start_watcher NAME COMMAND...: runs it in its own process group inside the namespace.
start_watcher() {
    : >"$tmp/stamps"
    setsid ip netns exec "$ns" "$@" >"$tmp/watcher.log" 2>&1 &
    watcher=$!
    sleep 1.5  # let it subscribe (or take its first poll)
}
stop_watcher() {
    kill -KILL -- "-$watcher" 2>/dev/null || true
    wait "$watcher" 2>/dev/null || true
    watcher=""
}

# measure: RUNS toggles; prints the latencies in ms, one per line.
measure() {
    local i before t0 deadline
    for ((i = 0; i < RUNS; i++)); do
        before=$(wc -l <"$tmp/stamps")
        t0=$EPOCHREALTIME
        ipn link set vb down
        deadline=$((SECONDS + 5))
        while (($(wc -l <"$tmp/stamps") <= before)) && ((SECONDS < deadline)); do sleep 0.005; done
        if (($(wc -l <"$tmp/stamps") > before)); then
            awk -v t0="$t0" -v n="$before" 'NR == n + 1 { printf "%.3f\n", ($1 - t0) * 1000 }' "$tmp/stamps"
        fi
        ipn link set vb up
        sleep 0.3
        # The up transition may stamp too (ip monitor loop); skip to the end.
    done
}

# idle_wakeups PID: context switches of PID over IDLE_S seconds, per minute.
idle_wakeups() {
    local pid=$1 a b
    a=$(awk '/ctxt_switches/ { s += $2 } END { print s }' "/proc/$pid/status")
    sleep "$IDLE_S"
    b=$(awk '/ctxt_switches/ { s += $2 } END { print s }' "/proc/$pid/status")
    echo $(((b - a) * 60 / IDLE_S))
}

stats() { # file -> "p50 p99"
    sort -n "$1" | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "- -"; exit }
        p50 = v[int((NR - 1) * 0.50) + 1]; p99 = v[int((NR - 1) * 0.99) + 1]; printf "%.2f %.2f\n", p50, p99 }'
}

declare -A p50 p99 wake
run_tool() {
    local name=$1 pid_pattern=$2
    shift 2
    start_watcher "$@"
    measure >"$tmp/$name.lat"
    local pid
    sleep 2  # let the last toggle's events settle before measuring idle
    pid=$(pgrep -g "$watcher" -f "$pid_pattern" | head -1)
    wake[$name]=$( [[ -n $pid ]] && idle_wakeups "$pid" || echo "-")
    read -r p50[$name] p99[$name] < <(stats "$tmp/$name.lat")
    stop_watcher
}

run_tool ktricks "ktricks netwatch" "$K" netwatch --no-initial --no-wifi --on "link-down,iface=va" --exec "$tmp/stamp"
# What people write instead: ip monitor piped into a shell loop.
cat >"$tmp/ipmon.sh" <<EOF
#!/bin/bash
ip monitor link | while read -r line; do
    case "\$line" in *" va@"*"NO-CARRIER"*) $tmp/stamp ;; esac
done
EOF
chmod +x "$tmp/ipmon.sh"
run_tool ip-monitor "ip monitor" "$tmp/ipmon.sh"
tools=(ktricks ip-monitor)
if command -v ifplugd >/dev/null; then
    run_tool ifplugd "ifplugd" ifplugd -n -s -i va -r "$tmp/ifplugd.action" -I -p -q -u 0 -d 0 -f
    tools+=(ifplugd)
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == 0) print "-"; else printf "%.1fx", b / a }'; }
echo "netwatch: link-down on a veth, event to action script ($RUNS runs; idle over ${IDLE_S} s; $(uname -r))"
echo
echo "| tool | latency p50 (ms) | latency p99 (ms) | p50 vs ktricks | idle wakeups/min |"
echo "|---|---|---|---|---|"
for tool in "${tools[@]}"; do
    echo "| $tool | ${p50[$tool]} | ${p99[$tool]} | $(ratio "${p50[ktricks]}" "${p50[$tool]}") | ${wake[$tool]} |"
done

# --- a network namespace without a name, created after start-up (--all-netns) --------------------
# T0 = $EPOCHREALTIME just before `unshare -n` starts, T1 = the `ts` of netwatch's first JSON event
# tagged with that namespace (netns=pid:PID; its lo, from the dump taken when the exec revealed it).
# NS_RUNS namespaces, one after the other; each lives 0.3 s.
NS_RUNS=${NS_RUNS:-10}
setsid ip netns exec "$ns" "$K" netwatch --all-netns --json --no-initial --no-wifi >"$tmp/nw.json" 2>"$tmp/nw.err" &
watcher=$!
for ((i = 0; i < 500; i++)); do grep -q '"event":"ready"' "$tmp/nw.json" && break; sleep 0.01; done
: >"$tmp/ns.lat"
for ((i = 0; i < NS_RUNS; i++)); do
    t0=$EPOCHREALTIME
    unshare -n sleep 0.3 &
    pid=$!
    deadline=$((SECONDS + 5))
    while ! grep -q "\"netns\":\"pid:$pid\"" "$tmp/nw.json" && ((SECONDS < deadline)); do sleep 0.002; done
    ts=$(grep -m1 "\"netns\":\"pid:$pid\"" "$tmp/nw.json" | sed -n 's/.*"ts":"\([^"]*\)".*/\1/p')
    [[ -n $ts ]] && awk -v t0="$t0" -v t1="$(date -d "$ts" +%s.%N)" 'BEGIN { printf "%.3f\n", (t1 - t0) * 1000 }' >>"$tmp/ns.lat"
    wait "$pid"
done
stop_watcher
read -r ns50 ns99 < <(stats "$tmp/ns.lat")
echo
echo "netwatch --all-netns: \`unshare -n\` started to the namespace's first event ($(wc -l <"$tmp/ns.lat") of $NS_RUNS seen)"
echo
echo "| | p50 (ms) | p99 (ms) |"
echo "|---|---|---|"
echo "| namespace created → first event | $ns50 | $ns99 |"

# --- wifi roam in the qemu guest (tests/integration/netwatch_wifi_vm.sh) --------------------------
# The guest runs under TCG on shared cores, so only the relative order means something: from the
# moment before `wpa_cli roam BSSID` to cfg80211's connect event (`iw event -t`), to netwatch's
# wifi-roam script (a `date` in it), and to wpa_supplicant's CTRL-EVENT-CONNECTED (its own log
# stamp, after the 4-way handshake). p50 and max over VM_ROAMS roams, alternating between the APs.
VM_ROAMS=${VM_ROAMS:-10}
vm_cache=${KTRICKS_VM_CACHE:-$(dirname "$K")/netwatch-vm}
if ! command -v qemu-system-x86_64 >/dev/null; then
    echo
    echo "wifi roam: skipped (qemu-system-x86_64 is not installed)"
    exit 0
fi
echo
# The scenario's own checks may fail on a loaded host (a roam that needed more than 3 tries):
# the timings of the roams that happened are still reported, with the failures after the table.
vm_status=0
"$here/../tests/integration/netwatch_wifi_vm.sh" "$K" "$vm_cache" "$VM_ROAMS" >"$tmp/vm.log" 2>&1 || vm_status=$?
if ((vm_status == 77)) || ! grep -q '^NWROAM ' "$vm_cache/console.txt" 2>/dev/null; then
    echo "wifi roam: the VM scenario was skipped or did not roam:"; tail -20 "$tmp/vm.log"; exit 1
fi
awk -v roams="$VM_ROAMS" '
    function stamp(text) { sub(/:$/, "", text); return text + 0 }
    # One line per try of roam i: the last try is the one that went through.
    /^NWROAM [0-9]+ / { i = $2 + 0; if (i > n) n = i; target[i] = $3; split($4, kv, "="); t0[i] = kv[2] + 0; next }
    /^[0-9.]+: wlan1 \(phy #[0-9]+\): connected to / { iw_t[++iw] = stamp($1); iw_b[iw] = $NF; next }
    /^NWEVENT roam / {
        for (f = 3; f <= NF; f++) { split($f, kv, "="); if (kv[1] == "bssid") b = kv[2]; if (kv[1] == "at") t = kv[2] }
        nw_t[++nw] = t + 0; nw_b[nw] = b; next }
    /^NWWPA .*CTRL-EVENT-CONNECTED/ {
        wp_t[++wp] = stamp($2); match($0, /Connection to [0-9a-f:]+/); wp_b[wp] = substr($0, RSTART + 14, 17); next }
    function first_after(times, bssids, count, after, bssid,    k) {
        for (k = 1; k <= count; k++) if (times[k] > after && bssids[k] == bssid) return times[k]
        return -1 }
    function report(name, values, count,    k, j, swap, sorted) {
        for (k = 1; k <= count; k++) sorted[k] = values[k]
        for (k = 1; k <= count; k++) for (j = k + 1; j <= count; j++)
            if (sorted[j] < sorted[k]) { swap = sorted[k]; sorted[k] = sorted[j]; sorted[j] = swap }
        if (count == 0) { printf "| %s | - | - | 0 |\n", name; return }
        printf "| %s | %.0f | %.0f | %d |\n", name, sorted[int((count - 1) / 2) + 1], sorted[count], count }
    END {
        for (i = 1; i <= n; i++) {
            a = first_after(iw_t, iw_b, iw, t0[i], target[i]); if (a > 0) iwl[++ci] = (a - t0[i]) * 1000
            c = first_after(nw_t, nw_b, nw, t0[i], target[i]); if (c > 0) nwl[++cn] = (c - t0[i]) * 1000
            if (a > 0 && c > 0) nwa[++cna] = (c - a) * 1000
            d = first_after(wp_t, wp_b, wp, t0[i], target[i]); if (d > 0) wpl[++cw] = (d - t0[i]) * 1000
        }
        printf "netwatch: wifi roam in a qemu TCG guest (%d roams; relative numbers only)\n\n", n
        print "| from `wpa_cli roam` to | p50 (ms) | max (ms) | roams seen |"
        print "|---|---|---|---|"
        report("cfg80211 connect event (`iw event`)", iwl, ci)
        report("ktricks netwatch wifi-roam script", nwl, cn)
        report("wpa_supplicant CTRL-EVENT-CONNECTED", wpl, cw)
        print ""
        print "| netwatch after cfg80211 connect event | p50 (ms) | max (ms) | roams |"
        print "|---|---|---|---|"
        report("wifi-roam script start", nwa, cna)
    }' "$vm_cache/console.txt"
if ((vm_status != 0)); then
    echo
    echo "(the scenario's checks failed: $(grep -E '^FAILED' "$tmp/vm.log" | head -3 | tr '\n' ' '))"
fi
