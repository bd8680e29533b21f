#!/usr/bin/python3
"""The long-running tricks behave under a service manager as their systemd units promise: each
sends READY=1 (with a STATUS=) on $NOTIFY_SOCKET once it actually works, writes its log lines with
journald priority prefixes when stderr is the $JOURNAL_STREAM, and exits 0 on SIGTERM."""
import os, shutil, signal, socket, subprocess, sys, tempfile, time

ktricks = os.environ["KTRICKS"]
failures = []


def check_daemon(name, argv, ready_check=None):
    scratch = tempfile.mkdtemp(prefix=f"ktricks-daemon-{name}.")
    os.makedirs(os.path.join(scratch, "mnt"))
    notify_path = os.path.join(scratch, "notify")
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(notify_path)
    manager.settimeout(0.2)
    log_path = os.path.join(scratch, "stderr")
    process = None
    try:
        with open(log_path, "wb") as log:
            info = os.fstat(log.fileno())
            env = dict(os.environ, NOTIFY_SOCKET=notify_path, JOURNAL_STREAM=f"{info.st_dev}:{info.st_ino}")
            process = subprocess.Popen([ktricks, *[a.replace("@SCRATCH@", scratch) for a in argv]],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                       env=env, start_new_session=True)
        messages, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline and not any("READY=1" in m for m in messages):
            try:
                messages.append(manager.recv(4096).decode())
            except socket.timeout:
                if process.poll() is not None:
                    break
        ready = [m for m in messages if "READY=1" in m]
        if not ready:
            failures.append(f"{name}: no READY=1 within 30 s (got {messages!r}, exit {process.poll()})")
            return
        if "STATUS=" not in ready[0]:
            failures.append(f"{name}: READY=1 without a STATUS= line: {ready[0]!r}")
        if ready_check and not ready_check(scratch):
            failures.append(f"{name}: said READY=1 but does not work yet")
        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            failures.append(f"{name}: still running 20 s after SIGTERM")
            return
        if status != 0:
            failures.append(f"{name}: exit status {status} after SIGTERM (want 0)")
        lines = [l for l in open(log_path, errors="replace").read().splitlines() if l]
        bad = [l for l in lines if not (l[:1] == "<" and l[2:3] == ">" and l[1:2].isdigit())]
        if bad:
            failures.append(f"{name}: log lines without a journald priority: {bad[:3]!r}")
        print(f"ok {name}: {ready[0]!r}; {len(lines)} log line(s), exit {status}")
    finally:
        if process and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        subprocess.run(["fusermount3", "-u", "-z", os.path.join(scratch, "mnt")], stderr=subprocess.DEVNULL)
        manager.close()
        shutil.rmtree(scratch, ignore_errors=True)


def tvfs_mounted(scratch):
    mnt = os.path.join(scratch, "mnt")
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == mnt for line in mounts)




# netwatch: rules that never fire, in our own namespace.
check_daemon("netwatch", ["netwatch", "--no-wifi", "--on", "link-add,iface=ktricks-never*", "--exec", "true"])
# mysql-watch: a data directory with no server yet; it is working (waiting for the server) at once.
check_daemon("mysql-watch", ["mysql-watch", "--datadir", "@SCRATCH@/datadir", "--mode", "files"])
# tvfs: an empty video folder mounted in the foreground; READY=1 means the mount is there.
src = tempfile.mkdtemp(prefix="ktricks-daemon-src.")
try:
    check_daemon("tvfs", ["tvfs", "-f", src, "@SCRATCH@/mnt", "--cache", "@SCRATCH@/cache"], tvfs_mounted)
finally:
    shutil.rmtree(src, ignore_errors=True)

for failure in failures:
    print("FAIL:", failure, file=sys.stderr)
sys.exit(1 if failures else 0)
