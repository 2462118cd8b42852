#!/usr/bin/env python3
"""Two zerogpud builds, timed side by side in one run.

Usage: python bench/side_by_side.py OLD_BUILD NEW_BUILD [--rounds N]

The machine is noisy: one run of each build can differ by more than a change does.
So the builds take turns, N rounds of: bench/lease_cycle against each (the
single-client full cycle and grant latency, p50), then bench/python_call.py against
each (the warm @zerogpu.GPU call, p50). It prints every round and the median of the
rounds per build, with NEW/OLD as a ratio. lease_cycle comes from NEW_BUILD (the client
side, libzerogpu, is the same for both); python_call.py runs in this Python, which must
have zerogpu installed (make bench-python does). Not a test.
"""
import argparse
import pathlib
import re
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def lease_cycle(bench, daemon):
    out = subprocess.run([str(bench), "--daemon", str(daemon), "--cycles", "5000",
                          "--seconds", "1"], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"lease_cycle failed against {daemon}:\n{out.stdout}{out.stderr}")
    cycle = re.search(r"^1 client: full cycle .*?\s+\d+\s+([\d.]+)", out.stdout, re.M)
    grant = re.search(r"^1 client: grant latency .*?\s+([\d.]+)", out.stdout, re.M)
    return float(cycle.group(1)), float(grant.group(1))


def python_call(build):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "python_call.py"), "--build",
                          str(build), "--calls", "1000", "--cold", "3"],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"python_call.py failed against {build}:\n{out.stdout}{out.stderr}")
    warm = re.search(r"^warm\s+([\d.]+)", out.stdout, re.M)
    return float(warm.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old", type=pathlib.Path)
    ap.add_argument("new", type=pathlib.Path)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    bench = args.new / "bench" / "lease_cycle"
    results = {"old": [], "new": []}
    print(f"{'round':>5} {'build':>5} {'cycle p50 us':>13} {'grant p50 us':>13} "
          f"{'warm call p50 ms':>17}")
    for r in range(args.rounds):
        # Alternate which goes first, so that neither always runs on a warmer machine.
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for name in order:
            build = getattr(args, name)
            cycle, grant = lease_cycle(bench, build / "src" / "daemon" / "zerogpud")
            warm = python_call(build)
            results[name].append((cycle, grant, warm))
            print(f"{r + 1:5d} {name:>5} {cycle:13.1f} {grant:13.1f} {warm:17.3f}", flush=True)
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in results.items()}
    print("\nmedian of the rounds")
    for name in ("old", "new"):
        c, g, w = med[name]
        print(f"{name:>11} {c:13.1f} {g:13.1f} {w:17.3f}")
    print(f"{'new/old':>11} {med['new'][0] / med['old'][0]:13.3f} "
          f"{med['new'][1] / med['old'][1]:13.3f} {med['new'][2] / med['old'][2]:17.3f}")


if __name__ == "__main__":
    main()
