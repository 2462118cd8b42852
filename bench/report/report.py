#!/usr/bin/env python3
"""Writes docs/evaluation.md and its plots: zerogpu's scheduler against FIFO and static
allocation, in the simulator (bench/sim) and in a live replay (bench/replay).

    make evaluation          # or: .venv/bin/python bench/report/report.py [--build build]

Everything in the page is measured by this run; nothing is typed in by hand.
"""
import argparse
import csv
import datetime
import json
import os
import pathlib
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
GEN = ROOT / "bench" / "workload" / "gen.py"
POLICIES = ("zerogpu", "fifo", "static")
COLORS = {"zerogpu": "tab:blue", "fifo": "tab:orange", "static": "tab:gray"}
SECRET = "the evaluation's visitor secret, 32+ bytes"

# The default workload (bench/workload/README.md): 50 apps on 4 GPUs, a day.
DEFAULT = dict(seed=1, apps=50, hours=24, gpus=4)
SWEEP_APPS = (10, 20, 30, 40, 50, 60, 80, 100, 120, 150, 200)
CAPACITY_APPS, TARGET_P95_S = 400, 10.0
REPLAY_SPEED = 60


def gen(path, seed, apps, hours, **extra):
    args = [sys.executable, str(GEN), "--seed", str(seed), "--apps", str(apps), "--hours",
            str(hours), "-o", str(path)]
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    subprocess.run(args, check=True, capture_output=True)
    return path


def sim(build, trace, *args):
    r = subprocess.run([str(build / "bench" / "sim"), *map(str, args), str(trace)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def read_calls(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def waits_by_tier(calls):
    out = {}
    for c in calls:
        if c["outcome"] in ("done", "expired", "timed_out"):
            t = float(c["granted_s"] or c["ended_s"]) - float(c["arrival_s"])
            out.setdefault(c["tier"], []).append(t)
    return out


def pct_shorter(ours, theirs):
    return 100.0 * (theirs - ours) / theirs if theirs > 0 else 0.0


def shorter_or_longer(ours, theirs):
    """'36% shorter' or '17% longer': ours against theirs, in words."""
    pct = pct_shorter(ours, theirs)
    return f"{pct:.0f}% shorter" if pct >= 0 else f"{-pct:.0f}% longer"


# ---------------------------------------------------------------------------
# The parts of the evaluation.
# ---------------------------------------------------------------------------

def default_run(build, tmp, figs):
    trace = gen(tmp / "default.csv", DEFAULT["seed"], DEFAULT["apps"], DEFAULT["hours"])
    runs = sim(build, trace, "--policy", "all", "--gpus", DEFAULT["gpus"], "--calls-out",
               tmp / "calls")
    # The wait CDF per tier.
    tiers = ("pro", "free", "anonymous")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, tier in zip(axes, tiers):
        for policy in POLICIES:
            w = sorted(waits_by_tier(read_calls(tmp / f"calls.{policy}")).get(tier, []))
            if w:
                ax.plot(w, [(i + 1) / len(w) for i in range(len(w))], label=policy,
                        color=COLORS[policy])
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(0, 60)
        ax.set_title(f"{tier} visitors")
        ax.set_xlabel("wait for a GPU (s)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of calls waiting at most x")
    axes[0].legend(loc="lower right")
    fig.suptitle(f"Wait per tier: {DEFAULT['apps']} apps on {DEFAULT['gpus']} GPUs, one day")
    fig.tight_layout()
    fig.savefig(figs / "wait-cdf-by-tier.png", dpi=110)
    plt.close(fig)
    return trace, runs


def sweep(build, tmp, figs):
    rows = []
    for n in SWEEP_APPS:
        trace = gen(tmp / f"sweep-{n}.csv", DEFAULT["seed"], n, DEFAULT["hours"])
        runs = sim(build, trace, "--policy", "all", "--gpus", DEFAULT["gpus"])
        rows.append((n, {r["policy"]: r for r in runs}))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    for policy in POLICIES:
        xs = [n for n, _ in rows]
        a1.plot(xs, [r[policy]["busy_fraction"] for _, r in rows], "o-", label=policy,
                color=COLORS[policy])
        a2.plot(xs, [r[policy]["wait_s"]["p95"] for _, r in rows], "o-", label=policy,
                color=COLORS[policy])
    a1.set_ylabel("GPU busy fraction")
    a2.set_ylabel("p95 wait (s)")
    a2.axhline(TARGET_P95_S, color="k", lw=0.8, ls="--")
    for ax in (a1, a2):
        ax.set_xlabel(f"apps on {DEFAULT['gpus']} GPUs")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(figs / "busy-and-p95-vs-apps.png", dpi=110)
    plt.close(fig)
    return rows


def capacity(build, tmp, figs):
    trace = gen(tmp / "capacity.csv", DEFAULT["seed"], CAPACITY_APPS, DEFAULT["hours"])
    runs = sim(build, trace, "--policy", "all", "--gpus", DEFAULT["gpus"], "--capacity",
               TARGET_P95_S)
    cap = {r["policy"]: r["capacity"] for r in runs}
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.bar(POLICIES, [cap[p]["apps_per_gpu"] for p in POLICIES],
           color=[COLORS[p] for p in POLICIES])
    for i, p in enumerate(POLICIES):
        ax.text(i, cap[p]["apps_per_gpu"], f"{cap[p]['apps_per_gpu']:.2f}", ha="center",
                va="bottom")
    ax.set_ylabel(f"apps per GPU at p95 wait <= {TARGET_P95_S:g} s")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(figs / "apps-per-gpu.png", dpi=110)
    plt.close(fig)
    return cap


# Residency: what stays on a device between calls (bench/sim --residency, --affinity).
RESIDENCY_RUNS = (("lru", "on", "lru + affinity"), ("lru", "off", "lru, no affinity"),
                  ("off", "off", "off (hosted)"))
# Host-to-device bandwidth of a cold start (GB/s): H100's pinned-memory copy over PCIe 5,
# and weights read from a local NVMe disk.
LOADS = ((55, "pinned host memory, 55 GB/s"), (2, "a local NVMe disk, 2 GB/s"))


def warm_calls(build, trace, figs):
    rows = {}
    for gbps, _ in LOADS:
        for mode, affinity, name in RESIDENCY_RUNS:
            rows[(gbps, name)] = sim(build, trace, "--gpus", DEFAULT["gpus"], "--residency", mode,
                                     "--affinity", affinity, "--load-gbps", gbps)
    names = [name for _, _, name in RESIDENCY_RUNS]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 3.8))
    width = 0.25
    for i, name in enumerate(names):
        r = rows[(LOADS[0][0], name)]["residency"]
        a1.bar(i, r["warm_fraction"], color=f"C{i}")
        a1.text(i, r["warm_fraction"], f"{r['warm_fraction']:.2f}", ha="center", va="bottom")
        # The slower load behind (pale, taller), the faster in front: both show.
        for k, (gbps, label) in reversed(list(enumerate(LOADS))):
            t = rows[(gbps, name)]["residency"]["wait_plus_cold_s_by_tier"]
            xs = [j + (i - 1) * width for j in range(3)]
            a2.bar(xs, [t[tier]["p95"] for tier in ("pro", "free", "anonymous")], width,
                   color=f"C{i}", alpha=0.4 if k else 1.0,
                   label=f"{name}, {label}")
    a1.set_xticks(range(len(names)), names)
    a1.set_ylabel("share of grants that were warm")
    a2.set_xticks(range(3), ["pro", "free", "anonymous"])
    a2.set_ylabel("p95 of wait + cold start (s)")
    a2.legend(fontsize=7)
    for ax in (a1, a2):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(figs / "warm-calls.png", dpi=110)
    plt.close(fig)
    return rows


def warm_table(rows):
    names = [name for _, _, name in RESIDENCY_RUNS]
    out = []
    for gbps, label in LOADS:
        out += [f"**Cold starts from {label}** (plus 1 s for the process and its context):", "",
                "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        def row(title, f):
            out.append(f"| {title} | " + " | ".join(f(rows[(gbps, n)]) for n in names) + " |")
        row("warm grants", lambda r: f"{r['residency']['warm_fraction']:.1%} of {r['residency']['warm_grants'] + r['residency']['cold_grants']}")
        row("cold-start time, all calls (h)", lambda r: f"{r['residency']['cold_start_s_total'] / 3600:.2f}")
        row("evictions", lambda r: str(r["residency"]["evictions"]))
        row("p95 wait + cold start, all (s)", lambda r: f"{r['residency']['wait_plus_cold_s']['p95']:.2f}")
        for tier in ("pro", "free", "anonymous"):
            row(f"... {tier} (s)", lambda r, t=tier: f"{r['residency']['wait_plus_cold_s_by_tier'][t]['p95']:.2f}")
        row("p95 wait: pro / short calls (s)", lambda r: f"{r['wait_s_by_tier']['pro']['p95']:.2f} / {r['wait_s_by_requested']['short']['p95']:.2f}")
        row("calls that overran their duration", lambda r: str(r["ended"]["expired"]))
        out.append("")
    return "\n".join(out)


def busiest_hour(trace, out):
    """The trace's busiest hour into out, without model sizes: the live replay runs no
    models, so the simulator it is compared with must not add cold starts either."""
    with open(trace) as f:
        lines = f.read().splitlines()
    if lines[0].endswith(",model_gib"):
        lines = [line.rsplit(",", 1)[0] for line in lines]
    header, rows = lines[0], lines[1:]
    per_hour = {}
    for r in rows:
        per_hour.setdefault(int(float(r.split(",", 1)[0]) // 3600), []).append(r)
    hour = max(per_hour, key=lambda h: len(per_hour[h]))
    out.write_text("\n".join([header] + per_hour[hour]) + "\n")
    return hour, len(per_hour[hour])


def kendall_agreement(a, b):
    """Share of pairs that two grant orders put the same way (pairs tied in a skipped)."""
    keys = sorted(set(a) & set(b))
    same = total = 0
    for i, x in enumerate(keys):
        for y in keys[i + 1:]:
            da, db = a[x] - a[y], b[x] - b[y]
            if da == 0:
                continue
            total += 1
            same += (da > 0) == (db > 0)
    return same / total if total else 1.0, total


def replay(build, tmp, trace):
    hour, n = busiest_hour(trace, tmp / "hour.csv")
    sock = tmp / "zerogpud.sock"
    daemon = subprocess.Popen(
        [str(build / "src" / "daemon" / "zerogpud"), "--socket", str(sock), "--state-dir",
         str(tmp / "state"), "--simulate", f"{DEFAULT['gpus']}x80G", "--split", "2",
         # The daemon's times scaled like the trace's, so that it decides as the simulator.
         "--grace", str(2 / REPLAY_SPEED), "--aging-bound", str(30 / REPLAY_SPEED),
         "--backfill", str(5 / REPLAY_SPEED), "--max-duration", str(300 / REPLAY_SPEED),
         "--visitor-secret", SECRET,
         "--quota-anonymous", "1e6", "--quota-free", "1e6", "--quota-pro", "1e6",
         "--log-level", "warn"])
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        t0 = time.monotonic()
        r = subprocess.run([str(build / "bench" / "replay"), "--socket", str(sock), "--speed",
                            str(REPLAY_SPEED), "--visitor-secret", SECRET, "--calls-out",
                            str(tmp / "replay.csv"), str(tmp / "hour.csv")],
                           capture_output=True, text=True, check=True)
        wall = time.monotonic() - t0
    finally:
        daemon.terminate()
        daemon.wait()
    latency = re.search(r"grant latency p50 (\d+) us, p99 (\d+) us", r.stderr)
    sim(build, tmp / "hour.csv", "--no-quota", "--gpus", DEFAULT["gpus"], "--calls-out",
        tmp / "hour-sim.csv")
    live, model = read_calls(tmp / "replay.csv"), read_calls(tmp / "hour-sim.csv")
    g_live = {c["index"]: float(c["granted_s"]) for c in live if c["granted_s"]}
    g_model = {c["index"]: float(c["granted_s"]) for c in model if c["granted_s"]}
    agree, pairs = kendall_agreement(g_model, g_live)
    both = set(g_live) & set(g_model)
    arrival = {c["index"]: float(c["arrival_s"]) for c in model}
    diffs = sorted(abs((g_live[i] - arrival[i]) - (g_model[i] - arrival[i])) for i in both)
    queued = [i for i in both if g_model[i] - arrival[i] > 0.5]
    agree_q, pairs_q = kendall_agreement({i: g_model[i] for i in queued},
                                         {i: g_live[i] for i in queued})
    same_outcome = sum(a["outcome"] == b["outcome"] for a, b in zip(live, model)) / len(live)
    w_live = sorted(g_live[i] - arrival[i] for i in both)
    w_model = sorted(g_model[i] - arrival[i] for i in both)
    return dict(hour=hour, calls=n, wall_s=wall, speed=REPLAY_SPEED,
                latency_p50_us=int(latency[1]), latency_p99_us=int(latency[2]),
                order_agreement=agree, pairs=pairs, order_agreement_queued=agree_q,
                pairs_queued=pairs_q, queued=len(queued),
                wait_diff_p50_s=diffs[len(diffs) // 2] if diffs else 0,
                wait_diff_p95_s=diffs[int(0.95 * len(diffs))] if diffs else 0,
                same_outcome=same_outcome,
                sim_p95=w_model[int(0.95 * len(w_model))] if w_model else 0,
                live_p95=w_live[int(0.95 * len(w_live))] if w_live else 0)


# ---------------------------------------------------------------------------
# The page.
# ---------------------------------------------------------------------------

def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def table(runs):
    by = {r["policy"]: r for r in runs}
    rows = [
        ("GPU busy fraction", lambda r: f"{r['busy_fraction']:.3f}"),
        ("GPU time idle while work waited", lambda r: f"{r['idle_while_waiting_gpu_s'] / 3600:.1f} GPU-h ({100 * r['idle_while_waiting_fraction']:.1f}%)"),
        ("wait p50 / p95 / p99 (s)", lambda r: f"{r['wait_s']['p50']:.1f} / {r['wait_s']['p95']:.1f} / {r['wait_s']['p99']:.1f}"),
        ("longest wait (s)", lambda r: f"{r['wait_s']['max']:.1f}"),
    ]
    def group(kind, name):
        return lambda r: f"{r[kind][name]['p95']:.1f} ({r[kind][name]['n']} calls)"
    for tier in ("pro", "free", "anonymous"):
        rows.append((f"{tier} p95 wait (s)", group("wait_s_by_tier", tier)))
    for size in ("large", "xlarge", "2gpu"):
        rows.append((f"{size} p95 wait (s)", group("wait_s_by_size", size)))
    for d, what in (("short", "< 60 s"), ("default", "= 60 s"), ("long", "> 60 s")):
        rows.append((f"requested {what}: p95 wait (s)", group("wait_s_by_requested", d)))
    rows += [
        ("calls done / overran", lambda r: f"{r['ended']['done']} / {r['ended']['expired']}"),
        ("gave up after 60 s in the queue", lambda r: str(r["ended"]["timed_out"])),
        ("refused: over quota", lambda r: str(r["ended"]["quota_refused"])),
        ("refused: can never run (2-GPU call, 1-GPU share)", lambda r: str(r["ended"]["unservable"])),
        ("simulator run time (s)", lambda r: f"{r['run_s']:.2f}"),
    ]
    out = ["| | " + " | ".join(POLICIES) + " |", "|---|" + "---|" * len(POLICIES)]
    for name, f in rows:
        out.append(f"| {name} | " + " | ".join(f(by[p]) for p in POLICIES) + " |")
    return "\n".join(out)


def write_page(path, runs, sweep_rows, cap, rep, warm, trace_calls, command):
    by = {r["policy"]: r for r in runs}
    z, f = by["zerogpu"], by["fifo"]
    more = cap["zerogpu"]["apps"] / cap["static"]["apps"] if cap["static"]["apps"] else float("inf")
    sweep_table = ["| apps | " + " | ".join(f"{p} busy" for p in POLICIES) + " | " +
                   " | ".join(f"{p} p95 (s)" for p in POLICIES) + " |",
                   "|---|" + "---|" * (2 * len(POLICIES))]
    for n, r in sweep_rows:
        sweep_table.append(f"| {n} | " + " | ".join(f"{r[p]['busy_fraction']:.3f}" for p in POLICIES)
                           + " | " + " | ".join(f"{r[p]['wait_s']['p95']:.1f}" for p in POLICIES) + " |")
    cap_line = ", ".join(f"{p} {cap[p]['apps']} apps ({cap[p]['apps_per_gpu']:.2f} per GPU)"
                         for p in POLICIES)
    limited = [p for p in POLICIES if cap[p]["limited_by_trace"]]
    names = [name for _, _, name in RESIDENCY_RUNS]
    w_lru, w_noaff, w_off = (warm[(LOADS[0][0], n)]["residency"] for n in names)
    w_lru_disk, w_off_disk = (warm[(LOADS[1][0], n)]["residency"] for n in (names[0], names[2]))
    text = f"""# Evaluation: does sharing pay?

Generated by `{command}` on {datetime.date.today().isoformat()} — {machine()}. Every
number and plot on this page comes from that run; rerun it to check them.

The workload model is `bench/workload/gen.py` (format and parameters in
[bench/workload/README.md](../bench/workload/README.md)); the simulator `bench/sim` runs
zerogpud's own engine, scheduler and quota code (linked, not copied) under a virtual
clock; `bench/replay` replays a trace against a real zerogpud through libzerogpu.

Policies: **zerogpu** — the daemon's priority scheduler (tiers, requested duration,
quota left, aging within 30 s, backfill) on one shared pool; **fifo** — first come,
first served on the same pool; **static** — each app owns a fixed share of the GPUs
(whole GPUs per app when there are as many GPUs as apps, otherwise apps placed by load
onto GPUs they then keep), FIFO within its share. All: 80 GiB GPUs lent as halves
(`--split 2`: `large` takes half, `xlarge` a whole GPU, 2-GPU calls two whole GPUs),
a 60 s queue limit, zerogpud's default daily quotas, and zerogpud's default residency
(lru with affinity; cold starts at 55 GB/s — see "Warm calls").

## The default workload: {DEFAULT['apps']} apps on {DEFAULT['gpus']} GPUs, one day

{trace_calls} calls (seed {DEFAULT['seed']}; on average 10 calls per app per hour,
Pareto-distributed popularity, on/off bursts, 40% anonymous, 30% free, 30% PRO
visitors; apps making 10% of the calls ask for `xlarge`, 5% for 2 GPUs; model sizes
1–40 GiB).

{table(runs)}

Waits count the calls that got a GPU (from arrival to grant) and those that gave up
(60 s); refused calls are not in them.

![wait CDF per tier](evaluation/wait-cdf-by-tier.png)

## More apps on the same 4 GPUs

The same model with more or fewer apps (each a day, seed {DEFAULT['seed']}):

{chr(10).join(sweep_table)}

![busy fraction and p95 wait vs apps](evaluation/busy-and-p95-vs-apps.png)

## Apps per GPU at p95 wait <= {TARGET_P95_S:g} s

From a {CAPACITY_APPS}-app trace, `sim --capacity {TARGET_P95_S:g}` finds by bisection the
most apps (the first N by name; apps are drawn independently) whose calls keep the
overall p95 wait at or under {TARGET_P95_S:g} s: {cap_line}.
{"Limited by the trace's apps: " + ", ".join(limited) + "." if limited else ""}

![apps per GPU](evaluation/apps-per-gpu.png)

## Warm calls: residency and affinity

A call whose app's worker is still on the GPU is *warm*: its weights are there, and it
starts at once. A *cold* call first starts a process and its CUDA context (1 s here) and
copies its weights to the GPU (each app's `model_gib`, drawn once per app log-uniform over
1–40 GiB); the lease's clock runs meanwhile, as on a real GPU. A call needs its weights
and a fifth more on the GPU (at most what its size gets), and a finished call's worker
stays resident with that memory. **lru** (zerogpud's default) keeps residents until a
grant needs their memory, then evicts other apps' least recently used first; **affinity**
places a call on a GPU where its app is resident, when that GPU can take it now;
**off** is the hosted service's way: a GPU lent to another app loses the previous app's
worker. zerogpu's scheduler, the default workload, the same trace:

{warm_table(warm)}
![warm grants and p95 of wait + cold start](evaluation/warm-calls.png)

- **Warm grants:** {w_lru['warm_fraction']:.0%} with lru and affinity vs {w_off['warm_fraction']:.0%} the
  hosted way: **{w_lru['warm_fraction'] / max(w_off['warm_fraction'], 1e-9):.1f}x** (lru without affinity:
  {w_noaff['warm_fraction']:.0%}).
- **p95 of wait + cold start:** {w_lru['wait_plus_cold_s']['p95']:.2f} s vs {w_off['wait_plus_cold_s']['p95']:.2f} s
  with weights in host memory; {w_lru_disk['wait_plus_cold_s']['p95']:.2f} s vs {w_off_disk['wait_plus_cold_s']['p95']:.2f} s
  when they come from disk.
- **The scheduler's gains stay:** PRO p95 wait {warm[(LOADS[0][0], RESIDENCY_RUNS[0][2])]['wait_s_by_tier']['pro']['p95']:.2f} s with lru vs
  {warm[(LOADS[0][0], RESIDENCY_RUNS[2][2])]['wait_s_by_tier']['pro']['p95']:.2f} s off; short calls {warm[(LOADS[0][0], RESIDENCY_RUNS[0][2])]['wait_s_by_requested']['short']['p95']:.2f} s vs
  {warm[(LOADS[0][0], RESIDENCY_RUNS[2][2])]['wait_s_by_requested']['short']['p95']:.2f} s. Affinity chooses only among GPUs that can
  take the call now, so it never changes who is served first.

## The answers

- **Apps per GPU:** zerogpu serves {cap['zerogpu']['apps']} apps on {DEFAULT['gpus']} GPUs at
  p95 <= {TARGET_P95_S:g} s, static allocation {cap['static']['apps']}: **{more:.1f}x** as many
  apps per GPU. FIFO on the shared pool: {cap['fifo']['apps']}.
- **PRO visitors:** p95 wait {z['wait_s_by_tier']['pro']['p95']:.1f} s with zerogpu vs
  {f['wait_s_by_tier']['pro']['p95']:.1f} s with FIFO: **{shorter_or_longer(z['wait_s_by_tier']['pro']['p95'], f['wait_s_by_tier']['pro']['p95'])}**
  (default workload).
- **Short calls** (requested < 60 s): p95 {z['wait_s_by_requested']['short']['p95']:.1f} s vs
  {f['wait_s_by_requested']['short']['p95']:.1f} s with FIFO:
  **{shorter_or_longer(z['wait_s_by_requested']['short']['p95'], f['wait_s_by_requested']['short']['p95'])}**.
- **2-GPU calls:** p95 {z['wait_s_by_size']['2gpu']['p95']:.1f} s vs {f['wait_s_by_size']['2gpu']['p95']:.1f} s with FIFO
  ({z['wait_s_by_size']['2gpu']['n']} calls). A 2-GPU call waits for two whole GPUs; zerogpu lets
  smaller calls pass it for the backfill time (5 s) before it holds GPUs back for it, and
  while it holds them, everybody behind it waits — short calls included.
- **The price:** anonymous visitors wait longer under zerogpu (p95
  {z['wait_s_by_tier']['anonymous']['p95']:.1f} s vs {f['wait_s_by_tier']['anonymous']['p95']:.1f} s), and the
  overall p99 is {z['wait_s']['p99']:.1f} s vs {f['wait_s']['p99']:.1f} s: priority moves waiting
  onto the lower tiers, bounded by the 30 s aging bound.
- **Idle GPUs while work waits:** {100 * z['idle_while_waiting_fraction']:.1f}% of GPU time on the
  shared pool (a whole-GPU call waiting for two halves to free up) vs
  {100 * by['static']['idle_while_waiting_fraction']:.1f}% with static shares.

## Live replay against zerogpud

The busiest hour of the default trace (hour {rep['hour']}, {rep['calls']} calls) replayed
{rep['speed']}x faster against a real zerogpud (4 simulated GPUs in halves, quotas out of
the way, its grace, aging bound, backfill time and maximum duration divided by
{rep['speed']} like the trace's times) by `bench/replay` — one thread per call through libzerogpu — in
{rep['wall_s']:.0f} s, and simulated (`sim --no-quota`) on the same slice.

| | |
|---|---|
| daemon grant latency, calls granted at once (p50 / p99) | {rep['latency_p50_us']} µs / {rep['latency_p99_us']} µs (real time) |
| grant order: pairs of calls in the same order, all | {100 * rep['order_agreement']:.1f}% of {rep['pairs']} |
| ... among the {rep['queued']} calls that queued in the simulator | {100 * rep['order_agreement_queued']:.1f}% of {rep['pairs_queued']} |
| wait, live minus simulated, abs. (p50 / p95) | {rep['wait_diff_p50_s']:.2f} s / {rep['wait_diff_p95_s']:.2f} s (trace time) |
| p95 wait of the calls granted in both: live / simulated | {rep['live_p95']:.2f} s / {rep['sim_p95']:.2f} s |
| same outcome (done, overran, gave up) | {100 * rep['same_outcome']:.1f}% |

At {rep['speed']}x, one millisecond of real time is {rep['speed'] / 1000:.2f} s of trace time:
thread wake-ups and the daemon's own ~0.5 ms per grant shift grants by a few hundredths of a
trace second, which reorders calls that arrive almost together; the ordering of queued calls
and the wait distribution are what to compare.

## What the model leaves out

- Calls run exactly their trace time; a real GPU slows when two halves are busy.
- Visitors do not retry after a refusal or a timeout, and do not leave a queue early.
- Static shares are sized with hindsight (each app's load over the whole trace); a real
  operator would do worse.
- A cold start is a fixed context start plus a copy at one bandwidth; a real one also
  compiles kernels and warms caches. Residents are evicted at once; on a real GPU the
  driver frees their memory some milliseconds later.
"""
    path.write_text(text)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=str(ROOT / "build"), help="build directory (default build/)")
    p.add_argument("--out", default=str(ROOT / "docs" / "evaluation.md"), help="the page to write")
    a = p.parse_args()
    build, out = pathlib.Path(a.build), pathlib.Path(a.out)
    figs = out.parent / "evaluation"
    figs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        t0 = time.monotonic()
        trace, runs = default_run(build, tmp, figs)
        print(f"report: default workload done ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
        rows = sweep(build, tmp, figs)
        print(f"report: sweep done ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
        cap = capacity(build, tmp, figs)
        print(f"report: capacity done ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
        warm = warm_calls(build, trace, figs)
        print(f"report: warm calls done ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
        rep = replay(build, tmp, trace)
        print(f"report: replay done ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
        calls = sum(1 for _ in open(trace)) - 1
        write_page(out, runs, rows, cap, rep, warm, calls, "make evaluation")
        summary = {r["policy"]: {"pro_p95": r["wait_s_by_tier"]["pro"]["p95"],
                                 "short_p95": r["wait_s_by_requested"]["short"]["p95"],
                                 "p95": r["wait_s"]["p95"], "busy": r["busy_fraction"]}
                   for r in runs}
        warm_summary = {f"{gbps} GB/s, {name}": r["residency"] for (gbps, name), r in warm.items()}
        print(json.dumps({"default": summary, "capacity": cap, "replay": rep,
                          "warm": warm_summary}, indent=1))
    print(f"report: wrote {out} and {figs}/", file=sys.stderr)


if __name__ == "__main__":
    main()
