#!/usr/bin/env bash
# bench/handoff.sh — replacing a running HTTP server under wrk load, four ways:
#   naive       SIGTERM the old server, start the new one (it binds the port itself)
#   reuseport   start the new one on the same port with SO_REUSEPORT, wait until it is ready, SIGTERM the old
#   serve       `ktricks serve` + `ktricks reload` (the listener is passed, never closed)
#   takeover    `ktricks takeover --pid` of the running server, chained (each takes over the previous one)
# The server is the same small Python ThreadingHTTPServer in every case (graceful: on SIGTERM it answers each
# open connection's next request with "Connection: close" and exits when its handlers are done).
#
# A second table (PART=servers) replaces the servers people run, from Debian, each with the same wrk load:
#   nginx-native      nginx's own binary upgrade: USR2 (new master), WINCH (old workers stop), QUIT (old master)
#   gunicorn-native   gunicorn's own: USR2 (new master), WINCH, TERM (old master)
#   lighttpd-native   lighttpd's own graceful restart: USR1 (same process, keeps its listener)
#   <server>-serve    `ktricks serve --server <server>` + `ktricks reload`, for nginx, gunicorn, lighttpd, uwsgi
#
#   KTRICKS=path/to/ktricks RUNS=3 RELOADS=10 PART=all|python|servers bench/handoff.sh
#
# Per run: wrk (2 threads, 8 keep-alive connections) for the whole run while RELOADS replacements happen
# 0.3 s apart. Reported per approach, medians over RUNS: failed requests (wrk socket errors + non-2xx),
# p99 latency, and reload latency (replacement asked -> new server serving: for serve the `ktricks reload`
# round trip, for naive until the port answers again, for reuseport/takeover until the new one said ready).
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K=${KTRICKS:-$(cd "$here/.." && pwd)/build/ktricks}
RUNS=${RUNS:-3}
RELOADS=${RELOADS:-10}
PART=${PART:-all}
PY=/usr/bin/python3
[[ -x $K ]] || { echo "handoff.sh: $K is not executable (build it, or set KTRICKS)" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ && $RELOADS =~ ^[1-9][0-9]*$ ]] || { echo "handoff.sh: RUNS and RELOADS must be positive integers" >&2; exit 1; }
for tool in wrk curl awk sort; do command -v "$tool" >/dev/null || { echo "handoff.sh: needs $tool" >&2; exit 1; }; done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ktricks-bench-handoff.XXXXXX")
cp "$K" "$tmp/ktricks"
K=$tmp/ktricks
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
log() { printf '%s\n' "$*" >&2; }

cat >"$tmp/server.py" <<'PY'
import http.server, os, signal, socket, socketserver, sys
draining = []  # set by SIGTERM; a handler that starts threads can deadlock (it runs inside any lock)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"hello\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        if draining:
            self.send_header("Connection", "close"); self.close_connection = True
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = False; block_on_close = True; request_queue_size = 1024
    def server_bind(self):
        if "--reuseport" in sys.argv: self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()
if "--bind" in sys.argv:
    s = S(("127.0.0.1", int(sys.argv[sys.argv.index("--bind") + 1])), H)
else:
    s = S(("", 0), H, bind_and_activate=False); s.socket.close(); s.socket = socket.socket(fileno=3)
s.socket.setblocking(False)
signal.signal(signal.SIGTERM, lambda *a: draining.append(1))
n = os.environ.get("NOTIFY_SOCKET")
if n:
    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", "\0" + n[1:] if n[0] == "@" else n)
if os.environ.get("READY_FILE"):
    open(os.environ["READY_FILE"], "w").close()
s.timeout = 0.05
while not draining: s.handle_request()
s.server_close()
PY

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { echo "${EPOCHREALTIME/./}" | awk '{ printf "%.3f\n", $1 / 1000 }'; }
wait_port() { local i; for ((i = 0; i < 1000; i++)); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.005; done; return 1; }
wait_gone() { local i; for ((i = 0; i < 2000; i++)); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.005; done; return 1; }
wait_file() { local i; for ((i = 0; i < 2000; i++)); do [[ -e $1 ]] && return 0; sleep 0.005; done; return 1; }
start() { setsid "$@" >/dev/null 2>&1 & pids+=($!); echo $!; }

# wrk in the background for the whole run, however long the replacements take; its report goes to $1.
# A fixed -d once ended before the slower native upgrades did, and reloads after wrk's end cannot fail.
# stop_wrk ends it with SIGINT (wrk then prints its report) 0.5 s after the last replacement.
start_wrk() { wrk -t2 -c8 -d600s --latency "http://127.0.0.1:$2/" >"$1" 2>&1 & wrk_pid=$!; sleep 0.5; }
stop_wrk() { sleep 0.5; kill -INT "$wrk_pid" 2>/dev/null || true; wait "$wrk_pid" || true; }
# failed p99_ms requests from a wrk report
parse_wrk() {
    awk '/Socket errors/ { gsub(",", ""); f += $4 + $6 + $8 + $10 }
         /Non-2xx/ { f += $5 }
         /requests in/ { n = $1 }
         $1 == "99%" { v = $2; u = v; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", v);
                       p = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v }
         END { printf "%d %.2f %d\n", f, p, n }' "$1"
}

run_naive() {  # $1 = result file for reload latencies
    local port old new t0; port=$(free_port)
    old=$(start $PY "$tmp/server.py" --bind "$port"); wait_port "$port"
    start_wrk "$tmp/wrk.out" "$port"
    for ((i = 0; i < RELOADS; i++)); do
        t0=$(now_ms); kill -TERM "$old"; wait_gone "$old" || kill -KILL "$old"
        new=$(start $PY "$tmp/server.py" --bind "$port"); wait_port "$port"
        echo "$(now_ms) $t0" | awk '{ print $1 - $2 }' >>"$1"; old=$new; sleep 0.3
    done
    stop_wrk; kill -TERM "$old"; wait_gone "$old" || true
}

run_reuseport() {
    local port old new t0; port=$(free_port)
    old=$(start $PY "$tmp/server.py" --bind "$port" --reuseport); wait_port "$port"
    start_wrk "$tmp/wrk.out" "$port"
    for ((i = 0; i < RELOADS; i++)); do
        t0=$(now_ms); rm -f "$tmp/ready"
        new=$(READY_FILE=$tmp/ready start $PY "$tmp/server.py" --bind "$port" --reuseport); wait_file "$tmp/ready"
        echo "$(now_ms) $t0" | awk '{ print $1 - $2 }' >>"$1"
        kill -TERM "$old"; old=$new; sleep 0.3
    done
    stop_wrk; kill -TERM "$old"; wait_gone "$old" || true
}

run_serve() {
    local port sv t0; port=$(free_port)
    sv=$(start "$K" serve --listen "tcp://127.0.0.1:$port" --control "$tmp/ctl" --drain-timeout 5 -- $PY "$tmp/server.py")
    wait_port "$port"
    start_wrk "$tmp/wrk.out" "$port"
    for ((i = 0; i < RELOADS; i++)); do
        t0=$(now_ms); "$K" reload --control "$tmp/ctl" >/dev/null
        echo "$(now_ms) $t0" | awk '{ print $1 - $2 }' >>"$1"; sleep 0.3
    done
    stop_wrk; kill -TERM "$sv"; wait_gone "$sv" || true
}

run_takeover() {
    local port target t0 out; port=$(free_port)
    target=$(start $PY "$tmp/server.py" --bind "$port"); wait_port "$port"
    start_wrk "$tmp/wrk.out" "$port"
    for ((i = 0; i < RELOADS; i++)); do
        out=$tmp/takeover.$i.json; t0=$(now_ms)
        # not start(): its JSON events (the new generation's pid) are needed for the next round
        setsid "$K" takeover --json --pid "$target" --drain-timeout 5 -- $PY "$tmp/server.py" >"$out" 2>/dev/null &
        pids+=($!)
        local j; for ((j = 0; j < 2000; j++)); do grep -q '"event":"ready"' "$out" 2>/dev/null && break; sleep 0.005; done
        echo "$(now_ms) $t0" | awk '{ print $1 - $2 }' >>"$1"
        wait_gone "$target" || true
        target=$(awk -F'"pid":' '/"event":"started"/ { split($2, a, /[,}]/); print a[1]; exit }' "$out")
        sleep 0.3
    done
    stop_wrk
}

# --- the servers people run -------------------------------------------------------------------------
cat >"$tmp/app.py" <<'PY'
def app(environ, start_response):
    body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
application = app
PY
mkdir -p "$tmp/www"; echo hello >"$tmp/www/index.html"
nginx_conf() {  # $1 port, $2 config file, $3 daemon on|off; a unix probe listener for `serve --server nginx`
    cat >"$2" <<CONF
daemon ${3:-off}; master_process on; worker_processes 2; pid $tmp/nginx.pid; error_log $tmp/nginx.err;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $tmp/b; proxy_temp_path $tmp/p; fastcgi_temp_path $tmp/f;
       uwsgi_temp_path $tmp/u; scgi_temp_path $tmp/s;
       server { listen 127.0.0.1:$1; listen unix:$tmp/probe.sock; location / { return 200 "hello\n"; } } }
CONF
}
wait_pidfile() {  # $1 file, $2 a pid it must not hold; prints the pid in it
    local i p; for ((i = 0; i < 4000; i++)); do
        p=$(cat "$1" 2>/dev/null || true); [[ -n $p && $p != "$2" ]] && { echo "$p"; return 0; }; sleep 0.005
    done; return 1
}

run_nginx_native() {
    # Daemonized: with `daemon off` nginx ignores USR2 while its parent is the one it started with.
    local port old new t0; port=$(free_port); nginx_conf "$port" "$tmp/nginx.conf" on; rm -f "$tmp/nginx.pid"
    /usr/sbin/nginx -p "$tmp" -e "$tmp/nginx.err" -c "$tmp/nginx.conf"; wait_port "$port"
    old=$(wait_pidfile "$tmp/nginx.pid" ""); pids+=("$old")
    start_wrk "$tmp/wrk.out" "$port"
    for ((i = 0; i < RELOADS; i++)); do
        t0=$(now_ms); kill -USR2 "$old"; new=$(wait_pidfile "$tmp/nginx.pid" "$old"); pids+=("$new")
        echo "$(now_ms) $t0" | awk '{ print $1 - $2 }' >>"$1"
        kill -WINCH "$old"; kill -QUIT "$old"; wait_gone "$old" || true; old=$new; sleep 0.3
    done
    stop_wrk; kill -QUIT "$old"; wait_gone "$old" || true
}

run_gunicorn_native() {
    # gunicorn 20.1: on USR2 the old master renames its pid file to .oldbin and the new one writes PID.2
    # until the old master is gone, then renames it back. WINCH stops workers only when daemonized.
    local port old new t0; port=$(free_port); rm -f "$tmp/g.pid" "$tmp/g.pid.2" "$tmp/g.pid.oldbin"
    start /usr/bin/gunicorn --chdir "$tmp" --workers 2 --bind "127.0.0.1:$port" --pid "$tmp/g.pid" app:app >/dev/null
    wait_port "$port"; old=$(wait_pidfile "$tmp/g.pid" "")
    start_wrk "$tmp/wrk.out" "$port"
    for ((i = 0; i < RELOADS; i++)); do
        t0=$(now_ms); kill -USR2 "$old"; new=$(wait_pidfile "$tmp/g.pid.2" "")
        echo "$(now_ms) $t0" | awk '{ print $1 - $2 }' >>"$1"
        kill -WINCH "$old"; kill -TERM "$old"; wait_gone "$old" || true; wait_pidfile "$tmp/g.pid" "$old" >/dev/null || true
        rm -f "$tmp/g.pid.2"; old=$new; sleep 0.3
    done
    stop_wrk; kill -TERM "$old"; wait_gone "$old" || true
}

lighttpd_conf() {  # $1 port, $2 config file, $3 "socket" to take the listener from serve (systemd protocol)
    printf 'server.document-root = "%s/www"\nserver.bind = "127.0.0.1"\nserver.port = %s\n' "$tmp" "$1" >"$2"
    echo 'index-file.names = ("index.html")' >>"$2"
    [[ ${3:-} == socket ]] && echo 'server.systemd-socket-activation = "enable"' >>"$2"
    return 0
}

run_lighttpd_native() {
    # lighttpd's own graceful restart: SIGUSR1 (1.4.46+) keeps the listener, lets requests in flight finish,
    # closes idle keep-alive connections, re-reads its configuration and serves again in the same process.
    local port lp t0; port=$(free_port); lighttpd_conf "$port" "$tmp/lighttpd.conf"
    lp=$(start /usr/sbin/lighttpd -D -f "$tmp/lighttpd.conf"); wait_port "$port"
    start_wrk "$tmp/wrk.out" "$port"
    for ((i = 0; i < RELOADS; i++)); do
        t0=$(now_ms); kill -USR1 "$lp"; sleep 0.01; wait_port "$port"
        echo "$(now_ms) $t0" | awk '{ print $1 - $2 }' >>"$1"; sleep 0.3
    done
    stop_wrk; kill -INT "$lp"; wait_gone "$lp" || true
}

run_server_serve() {  # $1 result file, $2 server
    local port sv t0 cmd=() extra=(); port=$(free_port)
    case $2 in
        nginx) nginx_conf "$port" "$tmp/nginx.conf"; extra=(--probe "unix:$tmp/probe.sock")
               cmd=(/usr/sbin/nginx -p "$tmp" -e "$tmp/nginx.err" -c "$tmp/nginx.conf") ;;
        gunicorn) cmd=(/usr/bin/gunicorn --chdir "$tmp" --workers 2 app:app) ;;
        lighttpd) lighttpd_conf "$port" "$tmp/lighttpd.conf" socket
                  cmd=(/usr/sbin/lighttpd -D -f "$tmp/lighttpd.conf") ;;
        uwsgi) cmd=(/usr/bin/uwsgi --plugin python3 --wsgi-file "$tmp/app.py" --need-app --master --workers 2 --protocol http
                    --disable-logging --add-header "Connection: close") ;;
    esac
    sv=$(start "$K" serve --server "$2" --listen "tcp://127.0.0.1:$port" --control "$tmp/ctl" --drain-timeout 5 \
         "${extra[@]}" -- "${cmd[@]}")
    wait_port "$port"
    local j; for ((j = 0; j < 2000; j++)); do "$K" reload --control "$tmp/ctl" --status 2>/dev/null | grep -q '"generation":1' && break; sleep 0.01; done
    start_wrk "$tmp/wrk.out" "$port"
    for ((i = 0; i < RELOADS; i++)); do
        t0=$(now_ms); "$K" reload --control "$tmp/ctl" >/dev/null || log "handoff.sh: $2 reload $i failed"
        echo "$(now_ms) $t0" | awk '{ print $1 - $2 }' >>"$1"; sleep 0.3
    done
    stop_wrk; kill -TERM "$sv"; wait_gone "$sv" || true
}
run_nginx_serve() { run_server_serve "$1" nginx; }
run_gunicorn_serve() { run_server_serve "$1" gunicorn; }
run_lighttpd_serve() { run_server_serve "$1" lighttpd; }
run_uwsgi_serve() { run_server_serve "$1" uwsgi; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } if (NR % 2) printf "%.2f\n", v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A failed p99 reload total
approaches=()
[[ $PART == all || $PART == python ]] && approaches+=(naive reuseport serve takeover)
if [[ $PART == all || $PART == servers ]]; then
    for tool in /usr/sbin/nginx /usr/bin/gunicorn /usr/sbin/lighttpd /usr/bin/uwsgi; do
        [[ -x $tool ]] || { echo "handoff.sh: PART=servers needs $tool (scripts/install-deps.sh)" >&2; exit 1; }
    done
    approaches+=(nginx_native nginx_serve gunicorn_native gunicorn_serve lighttpd_native lighttpd_serve
                 uwsgi_serve)
fi
# ONLY=nginx_native,nginx_serve: run just these approaches (the tables show the others as -)
if [[ -n ${ONLY:-} ]]; then
    kept=()
    for approach in "${approaches[@]}"; do [[ ,$ONLY, == *,$approach,* ]] && kept+=("$approach"); done
    approaches=("${kept[@]}")
fi
for approach in "${approaches[@]}"; do
    : >"$tmp/$approach.failed"; : >"$tmp/$approach.p99"; : >"$tmp/$approach.reload"; : >"$tmp/$approach.total"
    for ((run = 1; run <= RUNS; run++)); do
        log "handoff.sh: $approach run $run/$RUNS ($RELOADS replacements under wrk)"
        "run_$approach" "$tmp/$approach.reload"
        read -r f p n < <(parse_wrk "$tmp/wrk.out")
        errors=$(grep -h 'Socket errors' "$tmp/wrk.out" || echo 'no socket errors')
        log "handoff.sh: $approach run $run: $errors"
        echo "$f" >>"$tmp/$approach.failed"; echo "$p" >>"$tmp/$approach.p99"; echo "$n" >>"$tmp/$approach.total"
    done
    failed[$approach]=$(median <"$tmp/$approach.failed" | sed "s/\\.00$//")
    p99[$approach]=$(median <"$tmp/$approach.p99")
    reload[$approach]=$(median <"$tmp/$approach.reload")
    total[$approach]=$(median <"$tmp/$approach.total" | sed "s/\\.00$//")
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.1fx\n", a / b }'; }
server_table() {
    echo
    echo "Reloading Debian's servers $RELOADS times under wrk (-t2 -c8 keep-alive), medians of $RUNS runs ($(uname -r), $(nproc) CPUs)"
    echo
    echo "| approach | requests served | failed requests | p99 latency | reload latency |"
    echo "|---|---|---|---|---|"
    local approach name
    for approach in nginx_native nginx_serve gunicorn_native gunicorn_serve lighttpd_native lighttpd_serve \
                    uwsgi_serve; do
        case $approach in
            nginx_native) name="nginx native upgrade (USR2+WINCH+QUIT)" ;;
            gunicorn_native) name="gunicorn native (USR2+WINCH+TERM)" ;;
            lighttpd_native) name="lighttpd native graceful restart (USR1)" ;;
            *) name="\`ktricks serve --server ${approach%_serve}\` + \`ktricks reload\`" ;;
        esac
        echo "| $name | ${total[$approach]:--} | ${failed[$approach]:--} | ${p99[$approach]:--} ms |" \
             "${reload[$approach]:--} ms |"
    done
}
if [[ $PART == servers ]]; then server_table; exit 0; fi
echo
echo "Replacing a Python HTTP server $RELOADS times under wrk (-t2 -c8), medians of $RUNS runs ($(uname -r), $(nproc) CPUs)"
echo
echo "| approach | requests served | failed requests | p99 latency | p99 vs serve | reload latency | reload vs serve |"
echo "|---|---|---|---|---|---|---|"
for approach in naive reuseport serve takeover; do
    name=$approach
    case $approach in
        naive) name="naive stop + start" ;;
        reuseport) name="SO_REUSEPORT start-new-then-stop-old" ;;
        serve) name='`ktricks serve` + `ktricks reload`' ;;
        takeover) name='`ktricks takeover` (chained)' ;;
    esac
    echo "| $name | ${total[$approach]:--} | ${failed[$approach]:--} | ${p99[$approach]:--} ms | $(ratio "${p99[$approach]:--}" "${p99[serve]:-0}") | ${reload[$approach]:--} ms | $(ratio "${reload[$approach]:--}" "${reload[serve]:-0}") |"
done
[[ $PART == all ]] && server_table
exit 0
