#!/usr/bin/python3
"""ktricks sockets against iproute2's ss: the same filters and flags must give the same rows.

Run inside a scratch network namespace (sockets_parity_test.cpp starts it under `unshare -n`):
    sockets_parity.py KTRICKS_BINARY [--list] [--seed N] [--count N]

It builds a fixture of a few hundred sockets (TCP in every state it can hold still: LISTEN, ESTAB,
SYN-SENT, FIN-WAIT-1, FIN-WAIT-2, CLOSE-WAIT, LAST-ACK, TIME-WAIT; IPv4, IPv6, v4-mapped, dual-stack
and v6only listeners; UDP bound and connected; unix stream, dgram and seqpacket, named, abstract
and autobound; sockets with a mark and bound to a device), then replays iproute2's
testsuite/tests/ss/ssfilter.t expressions and a seeded random set of expression x flag cases
through both programs. For flag sets whose columns ss defines exactly the whole text must be
identical; for -e -i -m -o -p (timers, counters and memory move between two calls) the rows up to
the Process column must be. -e is exact (ss 6.1's uid, ino, sk, fwmark, cgroup, v6only and
shutdown arrows for inet sockets; arrows, ino/dev and peers for unix ones): its text is compared
whole, field by field. A case where both programs reject the filter counts as equal.

Prints one line per mismatch and a summary; exits 1 if any case differed.
"""
import argparse
import errno
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time

SO_MARK = 36


def sh(*argv):
    subprocess.run(argv, check=True)


def setup_links():
    sh("ip", "link", "set", "lo", "up")
    # A veth whose peer stays down: what is routed to 10.0.0.0/24 is dropped (SYN-SENT holds still).
    sh("ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
    sh("ip", "addr", "add", "10.0.0.1/24", "dev", "d0")
    sh("ip", "-6", "addr", "add", "fd00::1/64", "dev", "d0", "nodad")
    sh("ip", "link", "set", "d0", "up")
    # Orphaned FIN-WAIT-2 sockets would otherwise go after 60 s.
    with open("/proc/sys/net/ipv4/tcp_fin_timeout", "w") as f:
        f.write("600\n")


class Fixture:
    def __init__(self, directory):
        self.keep = []
        self.ssfilter_port = None
        self.dir = directory

    def tcp_listener(self, family, address, port, v6only=None, mark=None, device=None, rcvbuf=None):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
        if mark is not None:
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        if device is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((address, port))
        s.listen(512)
        self.keep.append(s)
        return s

    def connect(self, listener, family, source, destination, mark=None, rcvbuf=None):
        c = socket.socket(family, socket.SOCK_STREAM)
        if mark is not None:
            c.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        if rcvbuf is not None:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            c.bind(source)
        c.connect(destination)
        server, _ = listener.accept()
        self.keep += [c, server]
        return c, server

    def fill(self, sender):
        """Writes until the peer's receive window and our send buffer are full."""
        sender.setblocking(False)
        chunk = b"x" * 65536
        while True:
            try:
                sender.send(chunk)
            except BlockingIOError:
                break
        time.sleep(0.05)
        while True:
            try:
                sender.send(chunk)
            except BlockingIOError:
                return

    def build(self):
        v4, v6 = socket.AF_INET, socket.AF_INET6
        listeners = {}
        for port in (22, 80, 443, 3306, 8080):
            listeners[port] = self.tcp_listener(v4, "127.0.0.1", port)
        dual = self.tcp_listener(v6, "::", 9000, v6only=False)
        self.tcp_listener(v6, "::", 9001, v6only=True)
        self.tcp_listener(v4, "0.0.0.0", 9002, mark=0x10)
        six = self.tcp_listener(v6, "::1", 9003)
        d0 = self.tcp_listener(v4, "10.0.0.1", 9004)
        self.tcp_listener(v4, "0.0.0.0", 9005, device="lo")
        self.tcp_listener(v6, "fd00::1", 9006, mark=0x31)
        # Established connections, from several sources and to several ports.
        for i in range(60):
            port = (22, 80, 443, 3306, 8080)[i % 5]
            source = ("127.0.0.%d" % (2 + i % 4), 0) if i % 3 else None
            c, _ = self.connect(listeners[port], v4, source, ("127.0.0.1", port),
                                mark=0x10 + (i % 3) if i % 7 == 0 else None)
            if source and source[0] == "127.0.0.2" and port == 22:
                self.ssfilter_port = c.getsockname()[1]  # ssfilter.t's 10.0.0.2:50312
        for i in range(12):
            self.connect(dual, v4, None, ("127.0.0.1", 9000))      # v4 client, v4-mapped server side
            self.connect(dual, v6, None, ("::ffff:127.0.0.1", 9000))  # v4-mapped on both sides
            self.connect(dual, v6, None, ("::1", 9000))
            self.connect(six, v6, None, ("::1", 9003))
            self.connect(d0, v4, ("10.0.0.1", 0), ("10.0.0.1", 9004))
        # SYN-SENT: the veth with its peer down swallows the SYN.
        for i in range(4):
            c = socket.socket(v4, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(("10.0.0.2", 80 + i))
            except BlockingIOError:
                pass
            self.keep.append(c)
        # FIN-WAIT-2 (orphaned client) / CLOSE-WAIT (server): the client closes, the server does not.
        for i in range(6):
            c, s = self.connect(listeners[80], v4, ("127.0.0.6", 0), ("127.0.0.1", 80))
            self.keep.remove(c)
            c.close()
        # TIME-WAIT: both close, the client first.
        for i in range(6):
            c, s = self.connect(listeners[443], v4, ("127.0.0.7", 0), ("127.0.0.1", 443))
            self.keep.remove(c)
            self.keep.remove(s)
            c.close()
            time.sleep(0.01)
            s.close()
        # FIN-WAIT-1: data stuck behind a zero window, then close(): the FIN waits its turn.
        slow = self.tcp_listener(v4, "127.0.0.1", 7000, rcvbuf=4096)
        for i in range(3):
            c, s = self.connect(slow, v4, ("127.0.0.8", 0), ("127.0.0.1", 7000))
            self.fill(c)
            c.shutdown(socket.SHUT_WR)
        # LAST-ACK: the client half-closes and stops reading; the server fills it and closes.
        for i in range(3):
            c, s = self.connect(listeners[8080], v4, ("127.0.0.9", 0), ("127.0.0.1", 8080), rcvbuf=4096)
            c.shutdown(socket.SHUT_WR)
            time.sleep(0.02)
            self.fill(s)
            s.shutdown(socket.SHUT_WR)
        # UDP: bound (UNCONN) and connected (ESTAB), v4, v6, dual-stack.
        for port, family, address in ((53, v4, "127.0.0.1"), (123, v4, "0.0.0.0"), (5353, v6, "::"),
                                      (161, v6, "::1"), (9100, v4, "10.0.0.1")):
            u = socket.socket(family, socket.SOCK_DGRAM)
            u.bind((address, port))
            self.keep.append(u)
        for i in range(6):
            u = socket.socket(v4, socket.SOCK_DGRAM)
            u.bind(("127.0.0.%d" % (2 + i % 3), 0))
            u.connect(("127.0.0.1", 53))
            self.keep.append(u)
        u6 = socket.socket(v6, socket.SOCK_DGRAM)
        u6.connect(("::1", 161))
        self.keep.append(u6)
        # Raw sockets (ICMP).
        for family, proto in ((v4, socket.IPPROTO_ICMP), (v6, socket.IPPROTO_ICMPV6)):
            try:
                self.keep.append(socket.socket(family, socket.SOCK_RAW, proto))
            except OSError:
                pass
        # Unix: named, abstract, autobound; stream, dgram, seqpacket.
        for kind, name in ((socket.SOCK_STREAM, "stream"), (socket.SOCK_SEQPACKET, "seq")):
            for i in range(4):
                path = os.path.join(self.dir, "%s-%d.sock" % (name, i))
                listener = socket.socket(socket.AF_UNIX, kind)
                listener.bind(path)
                listener.listen(16)
                self.keep.append(listener)
                abstract = socket.socket(socket.AF_UNIX, kind)
                abstract.bind("\0ktricks-parity-%s-%d" % (name, i))
                abstract.listen(16)
                self.keep.append(abstract)
                for target in (path, "\0ktricks-parity-%s-%d" % (name, i)):
                    c = socket.socket(socket.AF_UNIX, kind)
                    if i % 2:
                        c.bind("")  # autobind: @ and five hex digits
                    c.connect(target)
                    a, _ = (listener if target == path else abstract).accept()
                    self.keep += [c, a]
        for i in range(6):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):
                self.keep += list(socket.socketpair(socket.AF_UNIX, kind))
        for i in range(4):
            d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            d.bind(os.path.join(self.dir, "dgram-%d.sock" % i) if i % 2 else "\0ktricks-parity-dgram-%d" % i)
            self.keep.append(d)
            c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            c.connect(d.getsockname())
            self.keep.append(c)
        try:
            # On d1, which is down: no frame ever arrives, so Recv-Q holds still.
            p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
            p.bind(("d1", 3))
            self.keep.append(p)
            d = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
            d.bind(("d1", 0x0800))
            self.keep.append(d)
        except OSError:
            pass


# iproute2 testsuite/tests/ss/ssfilter.t, every expression, on this fixture's addresses and ports.
# Its dump (ss1.dump) holds a listener 0.0.0.0:22 and connections 10.0.0.1:36266 -> 10.0.0.1:22 and
# 10.0.0.2:50312 -> 10.0.0.1:22; here 0.0.0.0:22 is the 0.0.0.0:9002 listener, 10.0.0.1 is 127.0.0.1,
# 10.0.0.2 is 127.0.0.2 and 50312 the port ({P}) of the fixture's connection 127.0.0.2 -> 127.0.0.1:22.
# Each is run with ssfilter.t's own flags (-Htna) and must select rows, as test_on there requires;
# where the fixture, like ss1.dump, has one matching socket (the 9002 listener, the server side of
# {P}) exactly one row. (`src 0.0.0.0` also selects the fixture's second 0.0.0.0 listener.)
SSFILTER_T = [
    ("dport = 22", None), ("dport 22", None), ("( dport = 22 )", None), ("src = 0.0.0.0", None), ("src 0.0.0.0", None),
    ("src 0.0.0.0 sport = 9002", 1), ("src 0.0.0.0 and sport = 9002", 1),
    ("src 127.0.0.1 and sport = 22 and dport = {P}", 1), ("src 127.0.0.1 and sport = 22 and ( dport = {P} )", 1),
    ("src 127.0.0.1 and ( sport = 22 and dport = {P} )", 1), ("( src 127.0.0.1 and sport = 22 ) and dport = {P}", 1),
    ("( src 0.0.0.0 or src 127.0.0.1 ) and dst 127.0.0.2", None),
]

# ss(8)'s own examples and the issue's cases.
MANUAL = [
    "state established ( dport = :ssh or sport = :ssh )",
    "state established '( dport = :ssh or sport = :ssh )'".replace("'", ""),
    "src 127.0.0.1 and sport = 22 and ( dport > 1024 )", "( src 127.0.0.1 and sport = 22 ) and dport > 1024",
    "dst 193.233.7/24", "dst 10.0.0/24", "src localhost", "sport = :22 or sport = :80 and dst 127.0.0.2",
    "sport = :22", "src 127.0.0.1", "dev lo", "dev d0", "dev != lo", "autobound", "not autobound",
    "fwmark 0x10", "fwmark = 0x10/0xf0", "fwmark != 0", "cgroup /", "cgroup != /",
    "state listening", "state established", "state time-wait", "state syn-sent", "state fin-wait-1",
    "state fin-wait-2", "state close-wait", "state last-ack", "state connected", "state synchronized",
    "state bucket", "state big", "exclude established", "state listening state established",
    "exclude listening exclude established", "state unconnected",
]

PORT_ATOMS = [
    "sport = :22", "dport = :22", "sport = 22", "dport 80", "sport = :ssh", "dport = :http", "sport eq :https",
    "sport = :mysql", "sport != :80", "dport ne :443", "sport > :1024", "sport < :1024", "sport >= :9000",
    "sport <= :9003", "dport gt :30000", "dport lt :100", "sport geq 9002", "dport leq 443", "sport = *",
    "dport = :0",
]  # (not "sport > 100000": ss takes it, ktricks rejects a port above 65535 with exit 64)
HOST_ATOMS = [
    "src 127.0.0.1", "dst 127.0.0.2", "src 127.0.0/24", "dst 127.0/16", "dst 10.0.0/24", "src 10.0.0.1:9004",
    "dst [::1]", "src [::]:9000", "src *:9000", "dst [::ffff:127.0.0.1]", "src [::ffff:127.0.0.1]:9000",
    "src 127.0.0.0/8", "src ::/0", "dst [fd00::1]", "src localhost", "dst localhost:9000", "src 0.0.0.0",
    "src = 127.0.0.3", "dst 0x7f000001", "src 127.1", "src inet:127.0.0.1", "src inet6:[::1]", "dst *",
    "src all", "src 10.0.0.1:*", "dst 127.0.0.2:ssh",
]
OTHER_ATOMS = ["dev lo", "dev d0", "dev != lo", "autobound", "fwmark 0x10", "fwmark 0x10/0xf0", "fwmark != 0",
               "cgroup /"]
UNIX_ATOMS = [
    "src DIR/*", "src DIR/stream-*", "src @ktricks-parity-*", "src @ktricks-parity-seq-1", "src unix:@*",
    "dst *", "src *", "src @?????", "sport > 5000", "dport = 0", "dport != 0", "autobound", "not autobound",
    "src unix:DIR/seq-?.sock",
]

# (flags, exact): exact (True) text compares whole lines; FIELDS compares every line's
# whitespace-separated fields, each row whole (-e implies ss's -o: a timer's expiry moves between
# two calls, and with it the column widths, so only its name and retransmits are compared);
# otherwise (False) rows up to the Process column.
FIELDS = "fields"
TIMER = re.compile(r"timer:\(([a-z]+),[^,]*,([0-9]+)\)")
FLAGS = [
    ("-tan", True), ("-tn", True), ("-tln", True), ("-ta", True), ("-uan", True), ("-un", True), ("-uln", True),
    ("-tuan", True), ("-4tan", True), ("-6tan", True), ("-Htan", True), ("-Hun", True), ("-tlna", True),
    ("-tane", FIELDS), ("-tanm", False), ("-tani", False), ("-tano", False), ("-tanp", False),
    ("-6tane", FIELDS), ("-uane", FIELDS), ("-Htne", FIELDS), ("-tanpe", FIELDS),
]
UNIX_FLAGS = [("-xan", True), ("-xn", True), ("-xln", True), ("-Hxan", True), ("-xanp", False), ("-xane", FIELDS),
              ("-tuxan", True), ("-xtn", True), ("-txan", True)]
# (-w: this kernel has no raw_diag; ss then lists nothing, ktricks says so and exits 69.)
PLAIN_FLAGS = [("-0an", True), ("-0n", True), ("-0a", True), ("-tuxan", True), ("-tuxa", True),
               ("-tuxane", FIELDS), ("-xlne", FIELDS), ("-6tlne", FIELDS)]


def generate(rng, atoms, count):
    out = []
    for _ in range(count):
        n = rng.choice((1, 2, 2, 3, 3, 4))
        parts = []
        for i in range(n):
            atom = rng.choice(atoms)
            if rng.random() < 0.2:
                atom = rng.choice(("not ", "! ")) + atom
            if i:
                parts.append(rng.choice(("and", "or", "", "&&", "||", "&", "|")))
            parts.append(atom)
        text = " ".join(p for p in parts if p)
        if n >= 3 and rng.random() < 0.5:
            words = text.split(" ")
            text = "( " + text + " )" if rng.random() < 0.3 else text
            if rng.random() < 0.5:
                # parenthesise the first two conditions
                second_op = [i for i, w in enumerate(words) if w in ("and", "or", "&&", "||", "&", "|")]
                if len(second_op) >= 2:
                    cut = second_op[1]
                    text = "( " + " ".join(words[:cut]) + " ) " + " ".join(words[cut:])
        if rng.random() < 0.15:
            text = rng.choice(("state established ", "state listening ", "exclude time-wait ", "state connected ")) + text
        out.append(text)
    return out


def run(argv):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    return r.returncode, r.stdout.decode(errors="replace")


def cut_rows(text):
    """Rows up to the Process column (found by its title), sorted: the columns timers and
    counters cannot move."""
    lines = text.split("\n")
    if not lines or "Process" not in lines[0]:
        return sorted(l.rstrip() for l in lines if l and not l[0].isspace())
    at = lines[0].index("Process")
    return sorted(l[:at].rstrip() for l in lines[1:] if l and not l[0].isspace())


def compare(ktricks, flags, exact, expression, expect_rows=None):
    """expect_rows: with -H, how many rows both must print (0: at least one); None: no check."""
    words = expression.split()
    ours_argv = [ktricks, "sockets", flags] + (["--"] + words if words else [])
    theirs_argv = ["ss", flags] + words
    # A socket may change state between the two calls (TIME-WAIT expiring): a difference is only
    # reported if it is there three times in a row.
    for attempt in range(3):
        s1, theirs = run(theirs_argv)
        o, ours = run(ours_argv)
        ok, why = judge(s1, theirs, o, ours, exact, expect_rows)
        if ok:
            break
    return ok, why


def judge(s1, theirs, o, ours, exact, expect_rows):
    if (s1 != 0 or o != 0) and expect_rows is not None:
        return False, "exit ss %d ktricks %d (ssfilter.t's expressions must be accepted)" % (s1, o)
    if s1 != 0 or o != 0:
        if (s1 != 0) == (o != 0):
            return True, ""
        return False, "exit ss %d ktricks %d" % (s1, o)
    if expect_rows is not None:
        count = len([line for line in ours.split("\n") if line])
        if (count == 0) if expect_rows == 0 else (count != expect_rows):
            return False, "ssfilter.t expects %s, ktricks printed %d (%s)" % (
                "%d row(s)" % expect_rows if expect_rows else "rows", count, "same as ss" if ours == theirs else "ss differs")
    if exact == FIELDS:
        def fields(text):
            return sorted(tuple(TIMER.sub(r"timer:(\1,*,\2)", line).split()) for line in text.split("\n") if line)
        if fields(ours) == fields(theirs):
            return True, ""
        a, b = set(fields(ours)), set(fields(theirs))
        return False, "fields: only ours: %s; only ss: %s" % (sorted(a - b)[:3], sorted(b - a)[:3])
    if exact:
        if ours == theirs:
            return True, ""
        if sorted(ours.split("\n")) == sorted(theirs.split("\n")):
            return False, "same rows, different order"
    elif cut_rows(ours) == cut_rows(theirs):
        return True, ""
    a, b = set(cut_rows(ours)), set(cut_rows(theirs))
    return False, "ours %d rows, ss %d; only ours: %s; only ss: %s" % (
        len(ours.split("\n")), len(theirs.split("\n")), sorted(a - b)[:3], sorted(b - a)[:3])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("ktricks")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--dir", help="where to make the unix sockets (default: a new temporary directory)")
    args = parser.parse_args()
    setup_links()
    with tempfile.TemporaryDirectory(prefix="ktricks-parity-", dir=args.dir) as directory:
        fixture = Fixture(directory)
        fixture.build()
        rng = random.Random(args.seed)
        cases = []
        assert fixture.ssfilter_port, "the fixture has no connection 127.0.0.2 -> 127.0.0.1:22"
        ssfilter = [(e.replace("{P}", str(fixture.ssfilter_port)), n) for e, n in SSFILTER_T]
        # ssfilter.t's cases as it runs them (-Htna), then with the rotating flag sets below.
        for expression, expect_rows in ssfilter:
            cases.append(("-Htna", True, expression, expect_rows or 0))
        inet_exprs = [""] + [e for e, _ in ssfilter] + MANUAL + generate(
            rng, PORT_ATOMS + HOST_ATOMS + OTHER_ATOMS, args.count)
        for expression in inet_exprs:
            # every expression with three flag sets, rotating through them
            for k in range(3):
                flags, exact = FLAGS[(len(cases) + k * 7) % len(FLAGS)]
                cases.append((flags, exact, expression, None))
        unix_exprs = [""] + [a.replace("DIR", directory) for a in UNIX_ATOMS] + [
            e.replace("DIR", directory) for e in generate(rng, UNIX_ATOMS + PORT_ATOMS[:6] + HOST_ATOMS[:3], args.count // 2)]
        for expression in unix_exprs:
            for k in range(2):
                flags, exact = UNIX_FLAGS[(len(cases) + k * 4) % len(UNIX_FLAGS)]
                cases.append((flags, exact, expression, None))
        for flags, exact in PLAIN_FLAGS:
            cases.append((flags, exact, "", None))
        failures = 0
        for flags, exact, expression, expect_rows in cases:
            ok, why = compare(args.ktricks, flags, exact, expression, expect_rows)
            if not ok:
                failures += 1
                print("DIFFERS: ss %s %s: %s" % (flags, expression, why), flush=True)
            elif args.verbose:
                print("same: ss %s %s" % (flags, expression), flush=True)
        print("%d cases, %d identical, %d differ" % (len(cases), len(cases) - failures, failures), flush=True)
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
