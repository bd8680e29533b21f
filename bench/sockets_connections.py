#!/usr/bin/python3
"""Opens N established loopback TCP connections and holds them until stdin closes.

Used by bench/sockets.sh, the tour and the tests, inside a private network namespace. The work is
split over worker processes of at most 9,000 connections each (18,000 descriptors: both ends), so
no process needs more than a 20k RLIMIT_NOFILE, which a container may not let us raise. Worker w
listens on 127.0.0.1:PORT+w and its clients bind to 127.0.0.(2+w), so source ports never run out.
Prints "ready PORT WORKERS" once every connection is established.
"""
import os
import resource
import socket
import struct
import sys

PER_WORKER = 9000
# SO_LINGER {on, 0 s}: closing (or the worker's death) resets the connection instead of leaving a
# TIME-WAIT socket for 60 s, so the next size's counts hold only that size's connections.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)

def worker(index, count, port, ready_fd):
    need = 2 * count + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port + index))
    listener.listen(4096)
    held = []
    pending = 0
    for i in range(count):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
        client.bind((f"127.0.0.{2 + index}", 0))
        client.connect(("127.0.0.1", port + index))
        held.append(client)
        pending += 1
        if pending >= 1000 or i == count - 1:  # accept as we go: the backlog never overflows
            for _ in range(pending):
                server = listener.accept()[0]
                server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
                held.append(server)
            pending = 0
    os.write(ready_fd, b"r")
    os.close(ready_fd)
    sys.stdin.read()  # until the parent's stdin closes (we share it)
    os._exit(0)

def main():
    count = int(sys.argv[1])
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    workers = max(1, (count + PER_WORKER - 1) // PER_WORKER)
    read_end, write_end = os.pipe()
    pids = []
    for w in range(workers):
        share = count // workers + (1 if w < count % workers else 0)
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            worker(w, share, port, write_end)
        pids.append(pid)
    os.close(write_end)
    got = 0
    while got < workers:
        chunk = os.read(read_end, workers)
        if not chunk:
            sys.exit("a worker failed")
        got += len(chunk)
    print(f"ready {port} {workers}", flush=True)
    sys.stdin.read()
    for pid in pids:
        os.waitpid(pid, 0)

if __name__ == "__main__":
    main()
