#!/usr/bin/env bash
# bench/once.sh — `ktricks once` next to what people use instead: flock(1), flock -o, and a pidfile script.
#
#   KTRICKS=path/to/ktricks RUNS=30 bench/once.sh
#
# Prints one markdown table of medians over RUNS (never single runs) and ratios against ktricks:
#   1. acquire+release latency: one whole `tool LOCK true` invocation (hyperfine -N, or a bash loop).
#   2. takeover latency: a waiter queued behind a holder; T0 = just before `kill -9` of the holder
#      wrapper, T1 = $EPOCHREALTIME printed by the waiter's CMD (`bash -c ...`, so every tool pays the
#      exec of a shell equally).
#   3. what SIGKILL of the holder wrapper leaves behind: lock still held? CMD still running? file?
#      can a new starter get in?
# Environment: KTRICKS (default ../build/ktricks next to this script), RUNS (default 30),
# SETTLE_MS (how long the waiter gets to queue up before the kill, default 50).
# Everything runs locally in a private temp dir; a trap kills whatever is left and removes it.
# shellcheck disable=SC2016  # backticks in single quotes are markdown, not command substitutions
# shellcheck disable=SC2154  # holder/waiter are assigned through start_group's nameref
set -euo pipefail
set +m            # no job control: background children stay in our group, so setsid need not fork
export LC_ALL=C  # $EPOCHREALTIME and awk must use a '.' decimal point

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K=${KTRICKS:-$(cd "$here/.." && pwd)/build/ktricks}
RUNS=${RUNS:-30}
SETTLE_MS=${SETTLE_MS:-50}
[[ -x $K ]] || { echo "once.sh: $K is not executable (build it, or set KTRICKS)" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "once.sh: RUNS must be a positive integer" >&2; exit 1; }
for tool in flock awk sort setsid; do
    command -v "$tool" >/dev/null || { echo "once.sh: needs $tool" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ktricks-bench-once.XXXXXX")
# Work on a copy: the binary may be rebuilt while we run, and one run should measure one binary.
K_source=$K
K_stamp="$(date -u -r "$K" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$K" | cut -c1-12)"
cp "$K" "$tmp/ktricks"
K=$tmp/ktricks
"$K" --version >/dev/null 2>&1 || { echo "once.sh: $K_source does not run (being rebuilt?)" >&2; exit 1; }
tag="bench-$$-$RANDOM"      # unique ktricks lock names for this run
pgids=()                    # process groups still to stop (every holder/waiter runs under setsid)
all_pgids=()                # every process group we started, for the final check
bgpids=()                   # other children (watchdog timers)

cleanup() {
    local p
    for p in "${pgids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
    for p in "${bgpids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # Anything of ours still running (not a zombie) in any group we ever started?
    local left=()
    read -r -a left < <(ps -e -o pid=,pgid=,stat= | awk -v groups=" ${all_pgids[*]} " \
        'index(groups, " " $2 " ") && $3 !~ /^Z/ { printf "%s ", $1 }') || true
    if ((${#left[@]})); then
        echo "once.sh: killing leftover processes: ${left[*]}" >&2
        kill -KILL "${left[@]}" 2>/dev/null || true
    fi
    if [[ -n ${snooze_fd:-} ]]; then exec {snooze_fd}>&-; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# A sleep that forks nothing (read times out on a FIFO nobody writes), so the harness does not
# compete for the two CPUs while a measurement is in flight.
mkfifo "$tmp/snooze"
exec {snooze_fd}<>"$tmp/snooze"
snooze() { read -r -t "$1" -u "$snooze_fd" _ || true; }

log() { printf '%s\n' "$*" >&2; }

# Median of the numbers in a file (one per line); "nan" if empty.
median() {
    sort -g "$1" | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) printf "%.2f\n", v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# Percentile P (0-100, nearest rank) of the numbers in a file.
percentile() {
    sort -g "$1" | awk -v p="$2" '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        i = int(p / 100 * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; printf "%.1f\n", v[i] }'
}
count() { if [[ -f $1 ]]; then wc -l <"$1" | tr -d ' '; else echo 0; fi; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "n/a"; else printf "%.2fx\n", a / b }'; }

# ---------------------------------------------------------------------------------------------
# The pidfile approach, as such scripts are commonly written: check the pidfile, `kill -0` the pid
# in it, write $$, run, remove. (Not atomic: two starters can both pass the check. Not what is
# measured here, but a reason people move off it.)
# write_pid_script FILE USAGE CHECK: an executable pidfile wrapper. USAGE is its comment line, CHECK
# the code that decides whether (or when) it may go on; what follows is the same for every variant:
# write $$ to the pidfile, run CMD, remove the pidfile, exit with CMD's status.
write_pid_script() {
    {
        printf '#!/usr/bin/env bash\n# %s\npidfile=$1; shift\n%s\n' "$2" "$3"
        cat <<'EOF'
echo $$ >"$pidfile"
"$@"
rc=$?
rm -f "$pidfile"
exit $rc
EOF
    } >"$1"
    chmod +x "$1"
}
write_pid_script "$tmp/pidlock.sh" \
    'pidlock.sh PIDFILE CMD [ARGS...]: run CMD unless the pid in PIDFILE is alive (then exit 75).' \
    'if [[ -f $pidfile ]]; then
    pid=$(cat "$pidfile" 2>/dev/null)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        echo "already running as pid $pid" >&2
        exit 75
    fi
    # else: a stale pidfile from a process that died without cleaning up; take it over
fi'
# The waiting variant: poll the pidfile until its process is gone, then take over.
write_pid_script "$tmp/pidwait.sh" \
    'pidwait.sh PIDFILE CMD [ARGS...]: wait until the pid in PIDFILE is gone, then run CMD.' \
    'while kill -0 $(cat "$pidfile" 2>/dev/null) 2>/dev/null; do sleep 0.1; done'

# ---------------------------------------------------------------------------------------------
# Tools: each knows how to hold a lock, wait for it, and probe it without waiting.
tools=(ktricks flock flock_o pidfile)
declare -A label=(
    [ktricks]='`ktricks once NAME -- CMD`'
    [flock]='`flock LOCKFILE CMD`'
    [flock_o]='`flock -o LOCKFILE CMD`'
    [pidfile]='pidfile script (`kill -0`)'
)

# lock_of TOOL ID: the lock name or file for this tool and round.
lock_of() {
    case $1 in
        ktricks) echo "$tag-$2" ;;
        flock | flock_o) echo "$tmp/$2.lock" ;;
        pidfile) echo "$tmp/$2.pid" ;;
    esac
}
# locked_argv TOOL LOCK CMD...: argv := take the lock (fail at once if held), run CMD.
locked_argv() {
    local tool=$1 lock=$2; shift 2
    case $tool in
        ktricks) argv=("$K" once "$lock" -- "$@") ;;
        flock) argv=(flock -n "$lock" "$@") ;;
        flock_o) argv=(flock -n -o "$lock" "$@") ;;
        pidfile) argv=(bash "$tmp/pidlock.sh" "$lock" "$@") ;;
    esac
}
# waiting_argv TOOL LOCK CMD...: argv := wait for the lock, then run CMD.
waiting_argv() {
    local tool=$1 lock=$2; shift 2
    case $tool in
        ktricks) argv=("$K" once --wait "$lock" -- "$@") ;;
        flock) argv=(flock "$lock" "$@") ;;
        flock_o) argv=(flock -o "$lock" "$@") ;;
        pidfile) argv=(bash "$tmp/pidwait.sh" "$lock" "$@") ;;
    esac
}

# start_group VAR: run "${argv[@]}" in a new session and process group; VAR := its pid (= its pgid).
# A background child of a non-interactive shell is no group leader, so setsid execs without
# forking: the pid is the wrapper's own (ktricks, flock or bash).
start_group() {
    local -n out=$1
    setsid "${argv[@]}" </dev/null &
    out=$!
    pgids+=("$out")
    all_pgids+=("$out")
}

# wait_for_child PID: PID has forked its CMD, i.e. it took the lock (all four take it before forking).
wait_for_child() {
    local pid=$1 i children
    for ((i = 0; i < 1000; i++)); do
        children=''  # procfs files have size 0, so read them rather than test -s
        read -r children <"/proc/$pid/task/$pid/children" 2>/dev/null || true
        [[ -n $children ]] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        snooze 0.005
    done
    return 1
}
# stop_group PGID: kill a whole group we started (the wrapper and any orphaned CMD), reap the wrapper.
# (Orphans are reaped by pid 1, here lazily: a killed orphan may linger as a zombie for a second or
# two. A zombie holds no lock and no file, so nothing waits for that.)
stop_group() {
    kill -KILL -- "-$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=() p
    for p in "${pgids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    pgids=("${keep[@]}")
}

# ---------------------------------------------------------------------------------------------
# 1. acquire + release: one whole `tool LOCK true`.
log "1/3 acquire+release, $RUNS runs each ..."
acq_cmds=(
    "$K once $tag-acq -- true"
    "flock $tmp/acq.lock true"
    "flock -o $tmp/acq-o.lock true"
    "bash $tmp/pidlock.sh $tmp/acq.pid true"
    "true"
)
acq_keys=(ktricks flock flock_o pidfile none)
if command -v hyperfine >/dev/null && command -v python3 >/dev/null; then
    # hyperfine runs one command after the other; on a noisy machine that lets a slow minute hit
    # one tool only. So: chunks of 5 runs, all tools per chunk, the order rotated each chunk.
    acq_method="hyperfine -N in chunks of 5 runs, tools interleaved, 2 warmup runs each"
    n=${#acq_cmds[@]}
    for ((done_runs = 0, chunk = 0; done_runs < RUNS; chunk++)); do
        runs=$((RUNS - done_runs < 5 ? RUNS - done_runs : 5))
        order=()
        for ((i = 0; i < n; i++)); do order+=("${acq_cmds[(i + chunk) % n]}"); done
        if ! hyperfine -N --style none --warmup 2 --runs "$runs" --export-json "$tmp/acq-$chunk.json" "${order[@]}" \
            >"$tmp/hyperfine.log" 2>&1; then
            cat "$tmp/hyperfine.log" >&2
            echo "once.sh: hyperfine failed (a command above exited non-zero)" >&2
            exit 1
        fi
        done_runs=$((done_runs + runs))
    done
    python3 - "$tmp" "${acq_keys[@]}" -- "${acq_cmds[@]}" <<'PY'
import glob, json, sys
tmp, rest = sys.argv[1], sys.argv[2:]
split = rest.index("--")
keys, commands = rest[:split], rest[split + 1:]
key_of = dict(zip(commands, keys))
times = {key: [] for key in keys}
cpu = {key: [0.0, 0] for key in keys}  # hyperfine reports CPU time (user + system) as a mean per chunk
for path in glob.glob(f"{tmp}/acq-*.json"):
    for result in json.load(open(path))["results"]:
        key = key_of[result["command"]]
        times[key] += result["times"]
        cpu[key][0] += (result["user"] + result["system"]) * len(result["times"])
        cpu[key][1] += len(result["times"])
for key, values in times.items():
    with open(f"{tmp}/acq-{key}.ms", "w") as out:
        out.writelines(f"{t * 1000:.4f}\n" for t in values)
    with open(f"{tmp}/acq-{key}.cpu", "w") as out:
        out.write(f"{cpu[key][0] / cpu[key][1] * 1000:.2f}\n")
PY
else
    acq_method="bash loop with \$EPOCHREALTIME (includes bash's fork), tools interleaved"
    for ((r = 0; r < RUNS + 3; r++)); do
        for i in "${!acq_cmds[@]}"; do
            read -r -a argv <<<"${acq_cmds[$i]}"
            t0=$EPOCHREALTIME
            "${argv[@]}" >/dev/null 2>&1 || true
            t1=$EPOCHREALTIME
            ((r < 3)) || awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", (b - a) * 1000 }' >>"$tmp/acq-${acq_keys[$i]}.ms"
        done
    done
fi

# ---------------------------------------------------------------------------------------------
# 2. takeover after SIGKILL of the holder wrapper. Tools are interleaved within each round so
# that the machine's noise hits them alike. Plain flock is left out: its CMD inherits the lock
# and keeps it (section 3), so a waiter would wait for the whole CMD.
log "2/3 takeover after SIGKILL, $RUNS rounds ..."
takeover_tools=(ktricks flock_o pidfile)
declare -A takeover_fail=()
# takeover_failed TOOL: one more round of TOOL that measured nothing.
takeover_failed() { takeover_fail[$1]=$((${takeover_fail[$1]:-0} + 1)); }
# stop_watchdog: kill and reap the round's watchdog timer.
stop_watchdog() {
    kill -KILL "$watchdog" 2>/dev/null || true
    wait "$watchdog" 2>/dev/null || true
    bgpids=()
}
settle=$(awk -v ms="$SETTLE_MS" 'BEGIN { printf "%.3f", ms / 1000 }')
for ((r = 1; r <= RUNS; r++)); do
    order=()  # rotate the order each round
    for ((i = 0; i < ${#takeover_tools[@]}; i++)); do order+=("${takeover_tools[(i + r) % ${#takeover_tools[@]}]}"); done
    for tool in "${order[@]}"; do
        id="tk-$tool-$r"
        lock=$(lock_of "$tool" "$id")
        out="$tmp/$id.t1"
        locked_argv "$tool" "$lock" sleep 60; start_group holder
        if ! wait_for_child "$holder"; then
            takeover_failed "$tool"; stop_group "$holder"; continue
        fi
        # $EPOCHREALTIME and $1 are expanded by the waiter's bash, not here
        waiting_argv "$tool" "$lock" bash -c 'echo "$EPOCHREALTIME" >"$1"' _ "$out"
        start_group waiter
        sleep 10 & watchdog=$!  # a timeout for the wait below; started now, so its exec is over by T0
        bgpids+=("$watchdog")
        snooze "$settle"
        if [[ -e $out ]] || ! kill -0 "$waiter" 2>/dev/null; then  # the waiter must still be waiting
            takeover_failed "$tool"
            stop_watchdog
            stop_group "$waiter"; stop_group "$holder"; continue
        fi
        t0=$EPOCHREALTIME
        kill -KILL "$holder"
        wait -n "$waiter" "$watchdog" 2>/dev/null || true
        stop_watchdog
        if [[ -s $out ]]; then
            ms=$(awk -v a="$t0" -v b="$(<"$out")" 'BEGIN { printf "%.4f", (b - a) * 1000 }')
            # $EPOCHREALTIME is the wall clock: a clock step in between would make nonsense of one sample.
            if awk -v ms="$ms" 'BEGIN { exit !(ms >= 0 && ms < 10000) }'; then
                echo "$ms" >>"$tmp/tk-$tool.ms"
            else
                takeover_failed "$tool"
            fi
        else
            takeover_failed "$tool"
        fi
        stop_group "$waiter"
        stop_group "$holder"  # reaps the killed wrapper and kills its orphaned `sleep 60`
        rm -f "$out" "$tmp/$id.lock" "$tmp/$id.pid"
    done
done

# ---------------------------------------------------------------------------------------------
# 3. what SIGKILL of the holder wrapper (not of its CMD) leaves behind.
log "3/3 stale-lock behaviour after SIGKILL of the wrapper ..."
declare -A stale=() starter=() orphan=() leftover=()
yesno() { if "$@"; then echo yes; else echo no; fi; }
alive_not_zombie() { local stat; stat=$(cat "/proc/$1/stat" 2>/dev/null) && [[ ${stat##*) } != Z* ]]; }
for tool in "${tools[@]}"; do
    id="st-$tool"
    lock=$(lock_of "$tool" "$id")
    locked_argv "$tool" "$lock" sleep 60; start_group holder
    wait_for_child "$holder" || { log "once.sh: the $tool holder did not start"; exit 1; }
    cmd_pid=$(tr -d ' \n' <"/proc/$holder/task/$holder/children")
    kill -KILL "$holder"
    wait "$holder" 2>/dev/null || true
    snooze 0.02
    # A killed CMD may linger as a zombie until init reaps it: only a live one "survives".
    orphan[$tool]=$(yesno alive_not_zombie "$cmd_pid")
    # Leftovers first: the probe below would create a lock file or remove a pidfile.
    case $tool in
        ktricks)
            leftover[$tool]="no (abstract socket)"
            if grep -qF "@ktricks/once/u$(id -u)/$lock" /proc/net/unix; then leftover[$tool]="yes (socket still bound)"; fi ;;
        flock | flock_o) leftover[$tool]=$(if [[ -e $lock ]]; then echo "yes (lock file; harmless)"; else echo no; fi) ;;
        pidfile) leftover[$tool]=$(if [[ -s $lock ]]; then echo "yes (pidfile with a dead pid: pid reuse would make it look held)"; else echo no; fi) ;;
    esac
    # A new, non-waiting starter: exit 0 means it got in. (Its "held" complaint is not wanted here.)
    rc=0
    locked_argv "$tool" "$lock" true
    "${argv[@]}" >/dev/null 2>&1 || rc=$?
    if ((rc == 0)); then stale[$tool]=no; starter[$tool]=yes; else stale[$tool]=yes; starter[$tool]="no (exit $rc)"; fi
    stop_group "$holder"  # kills the orphaned CMD too
done

# ---------------------------------------------------------------------------------------------
# The table.
declare -A acq_med=() tk_med=() acq_spread=() tk_spread=() acq_cpu=()
for key in "${acq_keys[@]}"; do
    f="$tmp/acq-$key.ms"
    acq_med[$key]=$(median "$f")
    acq_spread[$key]="$(percentile "$f" 10)–$(percentile "$f" 90)"
    acq_cpu[$key]=n/a
    if [[ -s $tmp/acq-$key.cpu ]]; then acq_cpu[$key]=$(<"$tmp/acq-$key.cpu"); fi
done
for tool in "${takeover_tools[@]}"; do
    f="$tmp/tk-$tool.ms"
    tk_med[$tool]=$(median "$f")
    tk_spread[$tool]="$(percentile "$f" 10)–$(percentile "$f" 90), n=$(count "$f")"
    if [[ -n ${takeover_fail[$tool]:-} ]]; then tk_spread[$tool]+=", ${takeover_fail[$tool]} failed"; fi
done

echo "### ktricks once vs flock / pidfile — $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) CPUs"
echo
echo "Binary: $K_source (built $K_stamp). RUNS=$RUNS per cell (medians; p10–p90 in parentheses). Acquire+release: one whole \`tool LOCK true\` ($acq_method)."
echo "Takeover: holder \`tool LOCK sleep 60\` SIGKILLed after a waiter queued for ${SETTLE_MS} ms; T0 = just before \`kill -9\`,"
echo "T1 = \$EPOCHREALTIME printed by the waiter's \`bash -c\` CMD (every tool pays that shell's exec). Ratio = tool / ktricks."
echo
echo "CPU = user+system time of the whole invocation (mean over the same runs; hardly moved by other load, unlike wall time)."
echo
echo "| tool | acquire+release median (ms) | ratio vs ktricks | acquire+release CPU (ms) | takeover after SIGKILL median (ms) | ratio vs ktricks | lock stale after SIGKILL of wrapper? | new starter gets in? | CMD survives the wrapper? | file left behind? |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for tool in "${tools[@]}"; do
    if [[ -n ${tk_med[$tool]:-} ]]; then
        tk="${tk_med[$tool]} (${tk_spread[$tool]})"
        tkr=$(ratio "${tk_med[$tool]}" "${tk_med[ktricks]}")
    else
        tk="never while CMD runs (CMD keeps the lock)"; tkr="—"
    fi
    printf '| %s | %s (%s) | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${label[$tool]}" \
        "${acq_med[$tool]}" "${acq_spread[$tool]}" "$(ratio "${acq_med[$tool]}" "${acq_med[ktricks]}")" "${acq_cpu[$tool]}" \
        "$tk" "$tkr" "${stale[$tool]}" "${starter[$tool]}" "${orphan[$tool]}" "${leftover[$tool]}"
done
printf '| %s | %s (%s) | %s | %s | — | — | — | — | — | — |\n' 'baseline: `true`, no lock' \
    "${acq_med[none]}" "${acq_spread[none]}" "$(ratio "${acq_med[none]}" "${acq_med[ktricks]}")" "${acq_cpu[none]}"
