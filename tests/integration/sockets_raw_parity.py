#!/usr/bin/python3
"""ktricks sockets -w against ss -w, byte for byte, in the network namespace this runs in (the test
starts it under `unshare -n`). This process holds raw sockets of several protocols (ICMP, ICMPv6,
255, a connected IPPROTO_UDP one with a queued datagram, a connected IPv6 one, IPv4 and IPv6, bound
and not); ss and ktricks run as its children, so -p names this process for both.
Usage: sockets_raw_parity.py KTRICKS. Prints one line per case and "N cases, N identical, 0 differ"."""
import os
import socket
import subprocess
import sys
import time

ktricks = sys.argv[1]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

held = []
def raw(family, protocol, bind=None, connect=None):
    s = socket.socket(family, socket.SOCK_RAW, protocol)
    if bind:
        s.bind(bind)
    if connect:
        s.connect(connect)
    held.append(s)
    return s

raw(socket.AF_INET, socket.IPPROTO_ICMP)
raw(socket.AF_INET6, socket.IPPROTO_ICMPV6)
raw(socket.AF_INET, 255)
queued = raw(socket.AF_INET, socket.IPPROTO_UDP, connect=("127.0.0.1", 0))
raw(socket.AF_INET6, socket.IPPROTO_ICMPV6, bind=("::1", 0))
raw(socket.AF_INET6, 253, connect=("::1", 0))
raw(socket.AF_INET, socket.IPPROTO_ICMP, bind=("127.0.0.1", 0))
raw(socket.AF_INET, 200, bind=("127.0.0.2", 0))  # no name in /etc/protocols: ipproto-200

# The connected IPPROTO_UDP socket receives the datagram it sends itself: a non-zero Recv-Q. Wait
# until the kernel shows it queued, so both tools see the same, settled table.
queued.send(b"x" * 10)
inode = os.fstat(queued.fileno()).st_ino
deadline = time.monotonic() + 10
while True:
    rows = [line.split() for line in open("/proc/net/raw").read().splitlines()[1:]]
    if any(row[9] == str(inode) and row[4] != "00000000:00000000" for row in rows):
        break
    if time.monotonic() > deadline:
        sys.exit("the queued datagram never showed in /proc/net/raw")
    time.sleep(0.01)

CASES = [["-w"], ["-wa"], ["-wn"], ["-4wan"], ["-6wan"], ["-wanp"], ["-wane"], ["-Hwan"], ["-wl"],
         ["-wln"], ["-wan", "src 127.0.0.1"], ["-wan", "src 127.0.0.0/8 or dst [::1]"],
         ["-wa", "state", "established"], ["-6wln"]]
identical = 0
for case in CASES:
    ss = subprocess.run(["ss"] + case, capture_output=True, text=True, timeout=30)
    ours = subprocess.run([ktricks, "sockets"] + case, capture_output=True, text=True, timeout=30)
    # Identical text, and rows to compare (not two empty tables).
    rows = ss.stdout.count("\n") - (0 if case[0].startswith("-H") else 1)
    same = ss.returncode == ours.returncode == 0 and ss.stdout == ours.stdout and rows > 0
    identical += same
    print(("same   " if same else "DIFFER ") + " ".join(case))
    if not same:
        print("--- ss (exit %d)\n%s%s--- ktricks (exit %d)\n%s%s" %
              (ss.returncode, ss.stdout, ss.stderr, ours.returncode, ours.stdout, ours.stderr))
verbose = subprocess.run([ktricks, "sockets", "-v", "-wan"], capture_output=True, text=True, timeout=30)
source = [line for line in verbose.stderr.splitlines() if "raw sockets:" in line]
print("source: " + (source[0] if source else "NONE: " + verbose.stderr))
if not source:
    identical = -1
print("%d cases, %d identical, %d differ" % (len(CASES), identical, len(CASES) - identical))
sys.exit(0 if identical == len(CASES) else 1)
