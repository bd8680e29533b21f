# Prints, as one JSON line, what a generation received: its pid, the inheritance variables and
# the addresses of its fds 3.. (then sleeps until killed).
import json
import os
import socket
import sys
import time

keys = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "NGINX", "EINHORN_FD_COUNT",
        "EINHORN_FD_0", "EINHORN_FD_1", "GUNICORN_FD", "KTRICKS_SERVE_GENERATION"]
fds = {}
for fd in range(3, 12):
    try:
        s = socket.socket(fileno=os.dup(fd))
        name = s.getsockname()
        if isinstance(name, bytes):
            name = "@" + name[1:].decode()
        fds[str(fd)] = name if isinstance(name, str) else f"{name[0]}:{name[1]}"
        s.close()
    except OSError:
        pass
print(json.dumps({"pid": os.getpid(), "env": {k: os.environ.get(k) for k in keys}, "fds": fds}), flush=True)
if len(sys.argv) > 1 and sys.argv[1] == "--store":
    # systemd's fd store: hand serve a descriptor to keep for our successor.
    from systemd import daemon
    r, w = os.pipe()
    daemon.notify("FDSTORE=1\nFDNAME=kept-pipe", fds=[r])
time.sleep(60)
