#!/usr/bin/env python3
"""What @zerogpu.GPU adds to a call: a trivial function, warm and cold workers.

Usage: python bench/python_call.py [--build DIR] [--calls N] [--cold N] [--spaces]
Run it with a Python where `pip install .` put zerogpu (make bench-python does).
Starts its own zerogpud (one simulated device) in a temporary directory. Reports,
as median and p99 in milliseconds:

  warm       call -> result, the worker already forked (the figure to keep < 2 ms)
  to start   call -> first line of the function (CLOCK_MONOTONIC is system-wide)
  back       last line of the function -> result in the caller
  lease      acquire + attach + release alone, through zerogpu._native
  cold       call -> result when a worker must be forked first
  cold+torch the same with torch imported and 256 MiB of weights placed (if torch)
  spaces     with --spaces: the `spaces` package's own @spaces.GPU against the same
             daemon's device API (needs `spaces` installed), for comparison
"""
import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def quantiles(xs):
    xs = sorted(xs)
    return {"p50_ms": statistics.median(xs) * 1e3, "p99_ms": xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1e3,
            "n": len(xs)}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_in_child(code, env):
    """Runs code in a fresh interpreter (its own imports and patches); it prints JSON."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True,
                         capture_output=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


ZEROGPU_CODE = """
    import json, os, sys, time
    calls, cold = int(sys.argv[1]) if len(sys.argv) > 1 else {calls}, {cold}
    import zerogpu
    from zerogpu import _native

    @zerogpu.GPU(duration=10)
    def trivial():
        t = time.monotonic()
        return t, t

    trivial()  # forks the worker
    total, to_start, back = [], [], []
    for _ in range(calls):
        t0 = time.monotonic()
        start, end = trivial()
        t1 = time.monotonic()
        total.append(t1 - t0); to_start.append(start - t0); back.append(t1 - end)

    client = _native.Client(os.environ["ZEROGPU_SOCKET"])
    lease_cycle = []
    for _ in range(calls):
        t0 = time.monotonic()
        lease = client.acquire(duration=10)
        client.attach(lease, os.getpid())
        client.release(lease)
        lease_cycle.append(time.monotonic() - t0)

    cold_times = []
    for _ in range(cold):
        zerogpu.shutdown()
        t0 = time.monotonic()
        trivial()
        cold_times.append(time.monotonic() - t0)
    print(json.dumps({{"warm": total, "to start": to_start, "back": back,
                      "lease": lease_cycle, "cold": cold_times}}))
"""

TORCH_COLD_CODE = """
    import json, time
    try:
        import torch
    except ImportError:
        print(json.dumps(None)); raise SystemExit
    import zerogpu
    model = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(16)]).to("cuda")

    @zerogpu.GPU(duration=10)
    def trivial():
        return 1

    times = []
    for _ in range({cold}):
        zerogpu.shutdown()
        t0 = time.monotonic()
        trivial()
        times.append(time.monotonic() - t0)
    warm = []
    for _ in range(200):
        t0 = time.monotonic()
        trivial()
        warm.append(time.monotonic() - t0)
    print(json.dumps({{"cold+torch": times, "warm+torch": warm}}))
"""

SPACES_CODE = """
    import json, time, warnings
    warnings.simplefilter("ignore")
    import spaces

    @spaces.GPU(duration=10)
    def trivial():
        return time.monotonic()

    trivial()
    times = []
    for _ in range({calls}):
        t0 = time.monotonic()
        trivial()
        times.append(time.monotonic() - t0)
    print(json.dumps({{"spaces": times}}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=str(ROOT / "build"), help="where zerogpud was built")
    ap.add_argument("--calls", type=int, default=2000, help="warm calls (default 2000)")
    ap.add_argument("--cold", type=int, default=30, help="cold calls (default 30)")
    ap.add_argument("--spaces", action="store_true", help="also time the spaces package")
    args = ap.parse_args()
    if args.calls < 1 or args.cold < 1:
        ap.error("--calls and --cold must be at least 1")
    daemon_bin = pathlib.Path(args.build) / "src/daemon/zerogpud"
    if not daemon_bin.exists():
        ap.error(f"{daemon_bin} not found: build first (make build)")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        sock = f"{tmp}/zerogpud.sock"
        daemon = subprocess.Popen(
            [str(daemon_bin), "--socket", sock, "--state-dir", f"{tmp}/state", "--simulate", "1x80G",
             "--listen", f"127.0.0.1:{port}", "--token", "b" * 32, "--spaces-app", "bench",
             "--log-level", "warn"])
        try:
            for _ in range(200):
                if os.path.exists(sock):
                    break
                time.sleep(0.02)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("ZEROGPU", "SPACES_"))}
            zenv = dict(env, ZEROGPU_SOCKET=sock)
            results = measure_in_child(ZEROGPU_CODE.format(calls=args.calls, cold=args.cold), zenv)
            torch_results = measure_in_child(TORCH_COLD_CODE.format(cold=min(args.cold, 10)), zenv)
            if torch_results:
                results.update(torch_results)
            if args.spaces:
                senv = dict(env, SPACES_ZERO_GPU="true",
                            SPACES_ZERO_DEVICE_API_URL=f"http://127.0.0.1:{port}")
                results.update(measure_in_child(SPACES_CODE.format(calls=min(args.calls, 500)), senv))
        finally:
            daemon.terminate()
            daemon.wait(10)
    print(f"{'':12} {'p50 ms':>9} {'p99 ms':>9} {'calls':>7}")
    for name, xs in results.items():
        q = quantiles(xs)
        print(f"{name:12} {q['p50_ms']:9.3f} {q['p99_ms']:9.3f} {q['n']:7d}")
    if not torch_results:
        print("(cold+torch skipped: torch is not installed in this Python)")


if __name__ == "__main__":
    main()
