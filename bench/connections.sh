# Sourced by the socket benchmarks: N established loopback connections held open by
# bench/sockets_connections.py (run inside the caller's private network namespace).
#   connections_open N PORT   returns once every connection is established (exit 1 if the helper fails)
#   connections_close         closes them (safe to call twice; call it from the caller's EXIT trap too)
connections_pid=

connections_open() {
    coproc CONNECTIONS { exec python3 "$(dirname "${BASH_SOURCE[0]}")/sockets_connections.py" "$1" "$2"; }
    connections_pid=$CONNECTIONS_PID
    # Our own copy of the helper's stdin: closing it is what tells the helper to let go.
    exec {connections_in}>&"${CONNECTIONS[1]}"
    local ready
    read -r ready _ _ <&"${CONNECTIONS[0]}" && [[ $ready == ready ]] \
        || { echo "$(basename "$0"): the connection helper failed" >&2; exit 1; }
}

connections_close() {
    [[ -n $connections_pid ]] || return 0
    # (An `exec` with a 2>/dev/null would silence this shell's stderr for good: braces scope it.)
    { exec {connections_in}>&-; } 2>/dev/null || true
    pkill -KILL -P "$connections_pid" 2>/dev/null || true
    kill -KILL "$connections_pid" 2>/dev/null || true
    wait "$connections_pid" 2>/dev/null || true
    connections_pid=
}
