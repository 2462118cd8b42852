#!/usr/bin/env python3
"""The `spaces` device API's round trips, as the package makes them (httpx, one
keep-alive connection): /schedule on a free device, /allow of a live pid, /release.

Usage: .venv/bin/python bench/spaces_cycle.py [BUILD_DIR] [CYCLES]
Starts its own zerogpud (one simulated device, TCP on loopback) in a temporary
directory; prints the median and p99 of each call and of the whole cycle.
"""
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import httpx


def main():
    root = pathlib.Path(__file__).resolve().parents[1]
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else root / "build")
    cycles = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        daemon = subprocess.Popen(
            [str(build / "src/daemon/zerogpud"), "--socket", f"{tmp}/s.sock", "--state-dir",
             f"{tmp}/state", "--listen", f"127.0.0.1:{port}", "--token", "x" * 32,
             "--simulate", "1x80G", "--spaces-app", "bench", "--log-level", "warn"])
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}")
            for _ in range(100):
                try:
                    client.get("/queue-size")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            times = {"schedule": [], "allow": [], "release": [], "cycle": []}
            for i in range(cycles + 200):
                t0 = time.perf_counter()
                token = client.post("/schedule", params={"durationSeconds": 5}).json()["allowToken"]
                t1 = time.perf_counter()
                client.post("/allow", params={"allowToken": token, "pid": os.getpid()})
                t2 = time.perf_counter()
                client.post("/release", params={"allowToken": token})
                t3 = time.perf_counter()
                if i >= 200:  # warm-up
                    for name, t in (("schedule", t1 - t0), ("allow", t2 - t1),
                                    ("release", t3 - t2), ("cycle", t3 - t0)):
                        times[name].append(t * 1e6)
            for name, xs in times.items():
                xs.sort()
                print(f"{name:9s} p50 {xs[len(xs) // 2]:7.0f} us   p99 {xs[int(len(xs) * .99)]:7.0f} us")
        finally:
            daemon.terminate()
            daemon.wait()


if __name__ == "__main__":
    main()
