#!/usr/bin/env bash
# Events leaving the machine: commit-to-consumer latency of `ktricks mysql-watch --publish` through
# NATS JetStream and Redis Streams, and the end-to-end event rate of a burst of commits.
#
# A throwaway MariaDB (binlog ROW), `nats-server -js` and `redis-server` (appendfsync always, so an
# acknowledged XADD is on disk) on loopback ports; the consumer is the example
# build/examples/events_consume (a JetStream ordered consumer, or XREAD BLOCK). Latency: from the
# client sending a single-row autocommit INSERT (libmariadb through ctypes) to the consumer's line
# being read by this script; the same without --publish (mysql-watch's own stdout) is the baseline.
# Rate: BURST single-row transactions sent by one `mariadb` client as fast as it can; from the
# first statement to the consumer's BURST-th event.
#
# RUNS: single-row commits per path for latency (default 300). BURST: default 5000.
set -euo pipefail

KTRICKS=${KTRICKS:-$(dirname "$0")/../build/ktricks}
CONSUMER=${CONSUMER:-$(dirname "$KTRICKS")/examples/events_consume}
RUNS=${RUNS:-300}
BURST=${BURST:-5000}
for tool in mariadbd mariadb-install-db mariadb nats-server redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "bench events: $tool not installed" >&2; exit 77; }
done
if [ ! -x "$CONSUMER" ]; then
  echo "bench events: $CONSUMER not built (cmake --build build --target events_consume)" >&2
  exit 77
fi
[ "$(id -u)" = 0 ] || { echo "bench events: needs root (throwaway server runs as --user=root)" >&2; exit 77; }

DIR=$(mktemp -d /tmp/ktricks-bench-events-XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
NATS_PORT=$(free_port)
REDIS_PORT=$(free_port)

mariadb-install-db --no-defaults --datadir="$DIR/data" --user=root --auth-root-authentication-method=normal \
  --skip-test-db >/dev/null 2>&1
mariadbd --no-defaults --datadir="$DIR/data" --socket="$DIR/sock" --skip-networking --user=root \
  --pid-file="$DIR/pid" --log-error="$DIR/error.log" --log-bin="$DIR/data/binlog" --binlog-format=ROW &
PIDS+=($!)
mkdir -p "$DIR/nats" "$DIR/redis"
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$DIR/nats" 2>"$DIR/nats.log" &
PIDS+=($!)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DIR/redis" --appendonly yes --appendfsync always \
  --save '' --daemonize no >"$DIR/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  mariadb --no-defaults -S "$DIR/sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.1
done
for _ in $(seq 100); do grep -q "Server is ready" "$DIR/nats.log" && break; sleep 0.1; done
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1 && break; sleep 0.1; done

PYTHONPATH="$(cd "$(dirname "$0")" && pwd)" /usr/bin/python3 - "$KTRICKS" "$CONSUMER" "$DIR" "$RUNS" "$BURST" "$NATS_PORT" "$REDIS_PORT" <<'PY'
import json, os, select, statistics, subprocess, sys, time

ktricks, consumer, root, runs, burst, nats_port, redis_port = sys.argv[1:8]
runs, burst = int(runs), int(burst)
datadir, sock = os.path.join(root, "data"), os.path.join(root, "sock")

from mariadb_client import connect, query

conn = connect(sock)
def sql(statement):
    query(conn, statement, fetch=False)

from child_lines import Lines

sql("CREATE DATABASE bench")
paths = [("mysql-watch stdout (no --publish)", None, None),
         ("--publish nats:// (JetStream ack)",
          "nats://127.0.0.1:%s/bench.{db}.{table}?stream=BENCH" % nats_port,
          lambda table: "nats://127.0.0.1:%s/BENCH" % nats_port),
         ("--publish redis:// (XADD, appendfsync always)", "redis://127.0.0.1:%s/bench:{table}" % redis_port,
          lambda table: "redis://127.0.0.1:%s/bench:%s" % (redis_port, table))]
results = []
for index, (name, url, consumer_url) in enumerate(paths):
    lat_table, burst_table = "l%d" % index, "b%d" % index
    for t in (lat_table, burst_table):
        sql("CREATE TABLE bench.%s (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB" % t)
    argv = [ktricks, "mysql-watch", "--datadir", datadir, "--json", "--quiet", "--db", "bench"]
    if url:
        argv += ["--publish", url, "--spool", os.path.join(root, "spool%d" % index)]
    watcher = subprocess.Popen(argv, stdout=subprocess.DEVNULL if url else subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    time.sleep(0.7)
    if url:
        # One event first, so the stream exists (JetStream) before the consumer subscribes.
        sql("INSERT INTO bench.%s (v) VALUES (-1)" % lat_table)
        time.sleep(0.5)
        reader = Lines([consumer, consumer_url(lat_table)])
    else:
        reader = Lines(proc=watcher)
    time.sleep(0.5)
    latencies, commits, missed = [], [], 0
    for i in range(runs):
        sent = time.time()
        sql("INSERT INTO bench.%s (v) VALUES (%d)" % (lat_table, i))
        committed = time.time()
        commits.append((committed - sent) * 1000)
        tag = b'"table":"%s"' % lat_table.encode()
        line, arrived = reader.next_line(lambda l, tag=tag: tag in l and b'"event":"change"' in l,
                                         committed + 3.0)
        if line is None:
            missed += 1
            continue
        latencies.append((arrived - sent) * 1000)
    if url:
        reader.stop()
        reader = Lines([consumer, consumer_url(burst_table)])
        time.sleep(0.5)
    script = "SET autocommit=1;" + "".join("INSERT INTO bench.%s (v) VALUES (%d);" % (burst_table, i)
                                           for i in range(burst))
    with open(os.path.join(root, "burst.sql"), "w") as f: f.write(script)  # too long for one argument
    started = time.time()
    client = subprocess.Popen(["mariadb", "--no-defaults", "-S", sock, "-uroot", "-e",
                               "source " + os.path.join(root, "burst.sql")])
    seen, last = 0, None
    tag = b'"table":"%s"' % burst_table.encode()
    while seen < burst:
        line, arrived = reader.next_line(lambda l: tag in l, time.time() + 10.0)
        if line is None: break
        seen, last = seen + 1, arrived
    client.wait()
    reader.stop()
    if url: watcher.terminate(); watcher.wait(15)
    rate = seen / (last - started) if last else 0
    results.append((name, runs, latencies, statistics.median(commits), burst, seen, rate))
    print("measured %-48s latency %d/%d, burst %d/%d" % (name, len(latencies), runs, seen, burst),
          file=sys.stderr)

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p * (len(values) - 1))))] if values else float("nan")

print("| path | commits | seen | p50 ms | p99 ms | COMMIT round trip p50 ms | burst events | seen "
      "| events/s end to end |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, count, lat, commit, burst_n, seen, rate in results:
    print("| %s | %d | %d | %.2f | %.2f | %.2f | %d | %d | %.0f |" % (name, count, len(lat),
          statistics.median(lat) if lat else float("nan"), pct(lat, 0.99), commit, burst_n, seen, rate))
print()
print("Latency: from sending the single-row autocommit INSERT (libmariadb) to this script reading the "
      "consumer's line (examples/events_consume; for the baseline, mysql-watch's own stdout); the event "
      "often arrives before the COMMIT's reply (the server writes the binlog before it answers). "
      "Events/s: %d single-row commits from one mariadb client, first statement to the consumer's "
      "last event." % burst)
PY
