"""Lines: a child's stdout read without blocking, each line stamped when it arrived (the bench scripts'
shared reader; they put bench/ on PYTHONPATH)."""
import os
import select
import subprocess
import time


class Lines:
    def __init__(self, argv=None, proc=None, stderr=subprocess.DEVNULL):
        self.proc = proc or subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, bufsize=0)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.buf = b""

    def next_line(self, match, deadline):
        """The next line for which match(line) holds and when it arrived, or (None, None) at deadline."""
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                if match(line):
                    return line, time.time()
            left = deadline - time.time()
            if left <= 0:
                return None, None
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = self.proc.stdout.read(65536)
                if chunk:
                    self.buf += chunk

    def idle(self, seconds):
        """The child's CPU (ms per second) and context switches per second over the next `seconds`."""
        def stat():
            return open("/proc/%d/stat" % self.proc.pid).read().rsplit(")", 1)[1].split()

        def switches():
            fields = dict(l.split(":\t") for l in open("/proc/%d/status" % self.proc.pid).read().splitlines()
                          if ":\t" in l)
            return int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])
        ticks = os.sysconf("SC_CLK_TCK")
        s0, w0 = stat(), switches()
        time.sleep(seconds)
        s1, w1 = stat(), switches()
        cpu = (int(s1[11]) + int(s1[12]) - int(s0[11]) - int(s0[12])) / ticks
        return cpu * 1000 / seconds, (w1 - w0) / seconds

    def stop(self, wait=15):
        self.proc.terminate()
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
