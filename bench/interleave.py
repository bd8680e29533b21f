#!/usr/bin/python3
"""Times commands side by side with hyperfine, interleaved, and prints their medians as JSON.

    interleave.py [--runs 30] [--chunk 5] [--warmup 2] LABEL=COMMAND LABEL=COMMAND ...

hyperfine runs all of one command's runs before the next command's; on a busy machine a slow
minute then lands on one tool only. So the runs are split into chunks of CHUNK runs, every command
runs once per chunk, and the order rotates each chunk. COMMANDs run without a shell (hyperfine -N)
and must exit 0. Prints {"LABEL": {"median_ms", "p10_ms", "p90_ms", "runs", "cpu_ms"}, ...}.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def percentile(values, fraction):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--chunk", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("commands", nargs="+", metavar="LABEL=COMMAND")
    args = parser.parse_args()
    if args.runs < 1 or args.chunk < 1:
        parser.error("--runs and --chunk must be positive")
    labelled = []
    for item in args.commands:
        label, sep, command = item.partition("=")
        if not sep or not label or not command:
            parser.error(f"{item!r}: expected LABEL=COMMAND")
        labelled.append((label, command))

    times = {label: [] for label, _ in labelled}
    cpu = {label: [] for label, _ in labelled}
    with tempfile.TemporaryDirectory(prefix="ktricks-interleave.") as scratch:
        done = chunk = 0
        while done < args.runs:
            runs = min(args.chunk, args.runs - done)
            order = labelled[chunk % len(labelled):] + labelled[:chunk % len(labelled)]
            report = os.path.join(scratch, f"{chunk}.json")
            result = subprocess.run(["hyperfine", "-N", "--style", "none", "--warmup", str(args.warmup), "--runs",
                                     str(runs), "--export-json", report, *[command for _, command in order]],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                sys.stderr.write(result.stdout + result.stderr)
                sys.exit("interleave.py: hyperfine failed (a command above exited non-zero)")
            with open(report) as handle:
                for (label, _), measured in zip(order, json.load(handle)["results"]):
                    times[label] += [t * 1000 for t in measured["times"]]
                    cpu[label] += [(measured["user"] + measured["system"]) * 1000] * len(measured["times"])
            done += runs
            chunk += 1
    json.dump({label: {"median_ms": statistics.median(values), "p10_ms": percentile(values, 0.1),
                       "p90_ms": percentile(values, 0.9), "runs": len(values),
                       "cpu_ms": statistics.mean(cpu[label])}
               for label, values in times.items()}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
