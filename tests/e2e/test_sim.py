"""The workload generator, the simulator (bench/sim) and the live replay (bench/replay)."""
import csv
import io
import json
import sqlite3
import subprocess
import sys

import pytest

from conftest import BUILD, ROOT, SECRET

SIM = BUILD / "bench" / "sim"
REPLAY = BUILD / "bench" / "replay"
GEN = ROOT / "bench" / "workload" / "gen.py"
HEADER = "arrival_s,app,visitor,tier,size,gpus,requested_s,actual_s\n"


def gen(*args):
    r = subprocess.run([sys.executable, str(GEN), *map(str, args)], capture_output=True,
                       text=True, check=True)
    return r.stdout


def sim(trace_path, *args, calls=None):
    cmd = [str(SIM), *map(str, args)]
    if calls:
        cmd += ["--calls-out", str(calls)]
    r = subprocess.run(cmd + [str(trace_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def write(tmp_path, name, rows):
    p = tmp_path / name
    p.write_text(HEADER + "".join(row + "\n" for row in rows))
    return p


def fates(path):
    with open(path) as f:
        return {int(r["index"]): r for r in csv.DictReader(f)}


def test_generator_and_simulator_are_deterministic(tmp_path):
    a = gen("--seed", 7, "--apps", 20, "--hours", 2)
    assert a == gen("--seed", 7, "--apps", 20, "--hours", 2)
    assert a != gen("--seed", 8, "--apps", 20, "--hours", 2)
    rows = list(csv.DictReader(io.StringIO(a)))
    assert len(rows) > 200 and {r["tier"] for r in rows} == {"anonymous", "free", "pro"}
    assert [float(r["arrival_s"]) for r in rows] == sorted(float(r["arrival_s"]) for r in rows)
    trace = tmp_path / "t.csv"
    trace.write_text(a)
    first = sim(trace, "--policy", "all", calls=tmp_path / "c1")
    again = sim(trace, "--policy", "all", calls=tmp_path / "c2")
    for r in first + again:
        r.pop("run_s")
    assert first == again
    for policy in ("zerogpu", "fifo", "static"):
        assert (tmp_path / f"c1.{policy}").read_text() == (tmp_path / f"c2.{policy}").read_text()


@pytest.mark.parametrize("policy", ["zerogpu", "fifo", "static"])
def test_conservation(tmp_path, policy):
    trace = tmp_path / "t.csv"
    trace.write_text(gen("--seed", 3, "--apps", 30, "--hours", 3, "--rate", 30))
    gpus, split = 4, 2
    r = sim(trace, "--policy", policy, "--gpus", gpus, calls=tmp_path / "calls.csv")
    calls = fates(tmp_path / "calls.csv")
    # Every call ends exactly once, in one of the outcomes.
    assert len(calls) == r["calls"] == sum(r["ended"].values())
    assert set(calls) == set(range(r["calls"]))
    assert all(c["outcome"] != "pending" for c in calls.values())
    # Busy time never exceeds the capacity, at any moment and on average.
    assert 0 < r["busy_fraction"] <= 1
    events = []
    for c in calls.values():
        if c["granted_s"]:
            assert float(c["arrival_s"]) <= float(c["granted_s"]) <= float(c["ended_s"])
            slots = int(c["gpus"]) * (split if c["size"] == "xlarge" else 1)
            events += [(float(c["ended_s"]), -slots), (float(c["granted_s"]), slots)]
    held = 0
    for _, change in sorted(events):
        held += change
        assert held <= gpus * split
    # Waits are bounded by max_wait (60 s by default).
    assert r["wait_s"]["max"] <= 60


def test_tiny_traces_by_hand(tmp_path):
    one = ("--gpus", 1, "--split", 1, "--no-quota")
    rows = ["0,a,v1,free,large,1,60,10", "1,a,v2,anonymous,large,1,60,5",
            "2,a,v3,pro,large,1,60,5"]
    trace = write(tmp_path, "three.csv", rows)
    r = sim(trace, "--policy", "fifo", *one, calls=tmp_path / "fifo.csv")
    c = fates(tmp_path / "fifo.csv")
    assert [(c[i]["granted_s"], c[i]["ended_s"]) for i in range(3)] == [
        ("0.000", "10.000"), ("10.000", "15.000"), ("15.000", "20.000")]
    assert r["span_s"] == 20 and r["busy_fraction"] == 1
    assert (r["wait_s"]["p50"], r["wait_s"]["max"]) == (9, 13)
    # zerogpu's order: the pro visitor who came a second later goes first.
    r = sim(trace, "--policy", "zerogpu", *one, calls=tmp_path / "prio.csv")
    c = fates(tmp_path / "prio.csv")
    assert (c[2]["granted_s"], c[1]["granted_s"]) == ("10.000", "15.000")
    assert (r["wait_s_by_tier"]["pro"]["max"], r["wait_s_by_tier"]["anonymous"]["max"]) == (8, 14)

    # Static shares: app x owns one GPU, y the other; x's second call waits while y's
    # GPU sits idle. The shared pool lets it run at once.
    trace = write(tmp_path, "static.csv", ["0,x,v1,free,large,1,60,10",
                                           "0,x,v2,free,large,1,60,10",
                                           "0,y,v3,free,large,1,60,1"])
    st = sim(trace, "--policy", "static", "--gpus", 2, "--split", 1, "--no-quota")
    assert st["wait_s"]["max"] == 10 and st["idle_while_waiting_gpu_s"] == 9
    assert st["busy_fraction"] == pytest.approx(21 / 40)
    shared = sim(trace, "--policy", "fifo", "--gpus", 2, "--split", 1, "--no-quota")
    assert shared["idle_while_waiting_gpu_s"] == 0 and shared["wait_s"]["max"] == 10

    # Overrun: killed at its 5 s deadline plus the 2 s grace. Queue timeout: 30 s.
    # A 2-GPU call on one GPU can never run.
    trace = write(tmp_path, "ends.csv", ["0,a,v1,free,large,1,5,20",
                                         "1,a,v2,free,large,1,60,3",
                                         "2,a,v3,free,xlarge,2,60,3"])
    r = sim(trace, "--policy", "fifo", *one, "--max-wait", 30, calls=tmp_path / "e.csv")
    c = fates(tmp_path / "e.csv")
    assert (c[0]["outcome"], c[0]["ended_s"]) == ("expired", "7.000")
    assert (c[1]["granted_s"], c[1]["outcome"]) == ("7.000", "done")
    assert c[2]["outcome"] == "unservable"
    trace = write(tmp_path, "timeout.csv", ["0,a,v1,free,large,1,120,100",
                                            "1,a,v2,free,large,1,60,3"])
    r = sim(trace, "--policy", "fifo", *one, "--max-wait", 30, calls=tmp_path / "t.csv")
    assert fates(tmp_path / "t.csv")[1]["ended_s"] == "31.000"
    assert r["ended"]["timed_out"] == 1 and r["wait_s"]["max"] == 30

    # Quota: an anonymous visitor has 120 s a day; each call reserves its 60 s and is
    # charged its 59 s, so the third does not fit.
    trace = write(tmp_path, "quota.csv", [f"{t},a,ip1,anonymous,large,1,60,59"
                                          for t in (0, 100, 200)])
    r = sim(trace, "--policy", "zerogpu", "--gpus", 1, "--split", 1)
    assert r["ended"]["quota_refused"] == 1 and r["ended"]["done"] == 2


def test_bad_traces_are_refused_with_the_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,app\n")
    r = subprocess.run([str(SIM), str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and f"{bad}:1: the header must be arrival_s," in r.stderr
    bad.write_text(HEADER + "5,a,v,free,large,1,60,1\n4,a,v,free,large,1,60,1\n")
    r = subprocess.run([str(SIM), str(bad)], capture_output=True, text=True)
    assert f"{bad}:3: arrivals must be in time order" in r.stderr
    bad.write_text(HEADER + "5,a,v,gold,large,1,60,1\n")
    r = subprocess.run([str(SIM), str(bad)], capture_output=True, text=True)
    assert f"{bad}:2: tier must be anonymous, free, pro or enterprise" in r.stderr
    r = subprocess.run([str(SIM), "--policy", "lottery", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "--policy takes zerogpu, fifo, static or all" in r.stderr


def test_replay_leaves_no_lease_behind(make_daemon, tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text(gen("--seed", 5, "--apps", 6, "--hours", 0.05, "--rate", 200))
    d = make_daemon("--simulate", "2x80G", "--split", "2", "--grace", "0.05",
                    "--visitor-secret", SECRET, "--quota-anonymous", "100000",
                    "--quota-free", "100000", "--quota-pro", "100000")
    r = subprocess.run([str(REPLAY), "--socket", str(d.socket), "--speed", "40",
                        "--visitor-secret", SECRET, "--calls-out", str(tmp_path / "out.csv"),
                        str(trace)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "granted at once: grant latency p50" in r.stderr
    calls = fates(tmp_path / "out.csv")
    assert len(calls) == trace.read_text().count("\n") - 1 > 10
    assert {c["outcome"] for c in calls.values()} <= {"done", "expired", "timed_out"}
    assert d.get("/v1/leases")[1]["leases"] == [] and d.get("/v1/queue")[1]["queue"] == []
    db = sqlite3.connect(d.state / "ledger.db")
    open_rows, rows = db.execute(
        "SELECT SUM(ended_at IS NULL), COUNT(*) FROM leases").fetchone()
    db.close()
    assert open_rows == 0 and rows == sum(1 for c in calls.values() if c["granted_s"])
