#!/usr/bin/python3
"""Known sockets for tests/integration/sockets_test.cpp, made inside the test network namespace.

Prints one JSON object (ports, inodes, pid), then obeys commands on stdin, one per line:
  recv_killed   -> prints the errno name recv() gives on the connection -K destroyed
  close_watched -> closes the connection the --watch test follows, prints "closed"
  churn         -> opens and closes a new connection from 127.0.0.5, prints its client port
  connect SRC   -> opens a connection from SRC that stays open, prints {"port", "inode", "server"}
  shared        -> a new listener held by this process twice (a dup) and by 3 forked children,
                   prints {"port", "children"} (the children exit when this process does)
"""
import errno
import json
import os
import socket
import sys

def inode(s):
    return os.fstat(s.fileno()).st_ino

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(16)
other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
other.bind(("127.0.0.1", 0))
other.listen(16)
port = listener.getsockname()[1]

def connect(source):
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.bind((source, 0))
    client.connect(("127.0.0.1", port))
    server, _ = listener.accept()
    return client, server

established, established_server = connect("127.0.0.2")
killed, killed_server = connect("127.0.0.3")
watched, watched_server = connect("127.0.0.4")
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
unix_path = sys.argv[1]
unix_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
unix_listener.bind(unix_path)
unix_listener.listen(4)
unix_a, unix_b = socket.socketpair()

print(json.dumps({
    "pid": os.getpid(),
    "port": port, "listener": inode(listener),
    "other_port": other.getsockname()[1], "other": inode(other),
    "client_port": established.getsockname()[1], "client": inode(established), "server": inode(established_server),
    "killed_port": killed.getsockname()[1], "killed": inode(killed), "killed_server": inode(killed_server),
    "watched_port": watched.getsockname()[1], "watched": inode(watched), "watched_server": inode(watched_server),
    "udp_port": udp.getsockname()[1], "udp": inode(udp),
    "unix_listener": inode(unix_listener), "unix_a": inode(unix_a), "unix_b": inode(unix_b),
}), flush=True)

for line in sys.stdin:
    command = line.strip()
    if command == "recv_killed":
        try:
            killed.recv(1)
            print("no error", flush=True)
        except OSError as error:
            print(errno.errorcode.get(error.errno, str(error.errno)), flush=True)
    elif command == "close_watched":
        watched.close()
        watched_server.close()
        print("closed", flush=True)
    elif command.startswith("connect "):
        client, server = connect(command.split()[1])
        kept = globals().setdefault("kept", [])
        kept += [client, server]
        print(json.dumps({"port": client.getsockname()[1], "inode": inode(client), "server": inode(server)}),
              flush=True)
    elif command == "shared":
        shared = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        shared.bind(("127.0.0.1", 0))
        shared.listen(4)
        duplicate = os.dup(shared.fileno())
        # The children block on a pipe whose write end only this process holds: EOF when it exits.
        read_end, write_end = os.pipe()
        children = []
        for _ in range(3):
            child = os.fork()
            if child == 0:
                os.close(write_end)
                os.read(read_end, 1)
                os._exit(0)
            children.append(child)
        os.close(read_end)
        globals().setdefault("kept", []).extend([shared, duplicate, write_end])
        print(json.dumps({"port": shared.getsockname()[1], "children": children}), flush=True)
    elif command == "churn":
        client, server = connect("127.0.0.5")
        churned = client.getsockname()[1]
        client.close()
        server.close()
        print(churned, flush=True)
