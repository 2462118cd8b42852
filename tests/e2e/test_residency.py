"""Residency end to end on simulated GPUs: a released worker kept resident, a warm grant
where it is, eviction least recently used first, an app's own worker reused rather than
evicted, a resident killed from outside, the hosted way (--residency off), and the
`spaces` API's idle worker (docs/residency.md)."""
import os
import signal
import subprocess
import time

import pytest

GiB = 1 << 30


def worker():
    """A stand-in for an app's worker process: it just lives until killed."""
    return subprocess.Popen(["sleep", "300"])


def lease(d, app, memory_gib=0, task="f", **extra):
    """Opens a lease of app; returns (stream, granted event)."""
    body = {"app": app, "task": task, "memory_bytes": int(memory_gib * GiB), **extra}
    c, ev = d.acquire(body)
    assert ev["event"] == "granted", ev
    return c, ev


def keep(d, app, memory_gib, proc, **kw):
    """A lease of app attached to proc, released with its worker kept; returns the device."""
    c, ev = lease(d, app, memory_gib, **kw)
    status, _ = d.call("POST", f"/v1/leases/{ev['lease']}/attach", {"pid": proc.pid})
    assert status == 200
    status, body = d.call("DELETE", f"/v1/leases/{ev['lease']}?keep=1")
    assert status == 200 and body["state"] == "released" and body["kept"] is True, body
    c.close()
    return ev["devices"][0]["index"]


def residents(d):
    _, body = d.get("/v1/devices")
    return {dev["index"]: dev["residents"] for dev in body["devices"]}, \
        {dev["index"]: dev["memory_free_bytes"] for dev in body["devices"]}


def exited(proc, timeout=5):
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def spawn(procs):
    p = worker()
    procs.append(p)
    return p


def test_a_kept_worker_is_listed_with_its_memory_and_the_next_call_is_warm(make_daemon, procs):
    d = make_daemon("--simulate", "2x80G")
    w = spawn(procs)
    # GPU 0 is busy when a's first call is granted: its worker ends up on GPU 1.
    busy, _ = lease(d, "other", 10)
    assert keep(d, "a", 30, w) == 1
    res, free = residents(d)
    assert [(r["app"], r["pid"], r["bytes"], r["task"]) for r in res[1]] == [("a", w.pid, 30 * GiB, "f")]
    assert res[1][0]["last_used_ms"] >= res[1][0]["since_ms"] > 0
    assert free[1] == 50 * GiB and free[0] == 70 * GiB
    row = next(line for line in d.cli("status").stdout.splitlines() if line.startswith("1 "))
    assert "50.0 GiB" in row and row.endswith(f"a:{w.pid}")
    busy.close()  # GPU 0 free again

    c, ev = lease(d, "a", 30)
    assert ev["devices"][0]["index"] == 1  # where its worker is, though GPU 0 is free
    assert ev["warm"] is True and ev["pid"] == w.pid
    _, body = d.get(f"/v1/leases/{ev['lease']}")
    assert body["warm"] is True and body["pid"] == w.pid and body["state"] == "attached"
    assert residents(d)[0][1] == []  # taken over
    c2, ev2 = lease(d, "b", 10)
    assert ev2["warm"] is False
    c.close(), c2.close()
    _, metrics = d.get("/metrics")
    assert 'zerogpu_grant_starts_total{start="warm"} 1' in metrics
    assert "zerogpu_residents 0" in metrics


def test_eviction_takes_other_apps_least_recently_used_first(make_daemon, procs):
    d = make_daemon("--simulate", "1x80G")
    b, c_, e = spawn(procs), spawn(procs), spawn(procs)
    keep(d, "b", 30, b)
    keep(d, "c", 30, c_)
    keep(d, "e", 10, e)
    assert residents(d)[1][0] == 10 * GiB
    # 50 GiB for app a: 40 more are needed; b (least recently used) and then c go.
    s, ev = lease(d, "a", 50)
    assert exited(b) and exited(c_)
    assert e.poll() is None
    res, free = residents(d)
    assert [r["app"] for r in res[0]] == ["e"]
    assert free[0] == 20 * GiB
    s.close()
    _, metrics = d.get("/metrics")
    assert "zerogpu_evictions_total 2" in metrics
    assert "evicted to make room for lease" in d.log_text()


def test_an_apps_own_worker_is_reused_not_evicted(make_daemon, procs):
    d = make_daemon("--simulate", "1x80G")
    a, b = spawn(procs), spawn(procs)
    keep(d, "a", 60, a)
    keep(d, "b", 20, b)
    # a's next call needs 60 GiB: its own worker has them, so nobody is evicted.
    s, ev = lease(d, "a", 60)
    assert ev["warm"] is True and ev["pid"] == a.pid
    assert a.poll() is None and b.poll() is None
    s.close()


def test_a_resident_killed_from_outside_disappears(make_daemon, procs):
    d = make_daemon("--simulate", "1x80G")
    w = spawn(procs)
    keep(d, "a", 30, w)
    assert len(residents(d)[0][0]) == 1
    w.kill()
    w.wait()
    res, free = residents(d)
    assert res[0] == [] and free[0] == 80 * GiB
    # Its app's next call is cold: nothing of it is left.
    s, ev = lease(d, "a", 30)
    assert ev["warm"] is False
    s.close()
    assert "has exited" in d.log_text()


def test_residency_off_evicts_other_apps_whatever_the_room(make_daemon, procs):
    d = make_daemon("--simulate", "1x80G", "--residency", "off")
    a = spawn(procs)
    keep(d, "a", 5, a)
    s, ev = lease(d, "b", 5)  # 75 GiB were free; the hosted way evicts anyway
    assert exited(a)
    s.close()


def test_keep_and_memory_are_checked(make_daemon, procs):
    d = make_daemon("--simulate", "1x80G", "--split", "2")
    c, ev = lease(d, "a", 10)
    status, body = d.call("DELETE", f"/v1/leases/{ev['lease']}?keep=maybe")
    assert status == 400 and "keep must be 1, 0, true or false" in body["error"]["message"]
    status, body = d.call("DELETE", f"/v1/leases/{ev['lease']}?keep=1&fail=1")
    assert status == 400 and "exclude each other" in body["error"]["message"]
    # Without an attached process there is nothing to keep: an ordinary release.
    status, body = d.call("DELETE", f"/v1/leases/{ev['lease']}?keep=1")
    assert status == 200 and body["kept"] is False
    c.close()
    assert residents(d)[0][0] == []
    for bad, why in ((-1, "between 0"), ("40G", "must be an integer"), (1 << 51, "between 0")):
        status, body = d.call("POST", "/v1/leases", {"memory_bytes": bad})
        assert status == 400 and why in body["error"]["message"], (bad, body)
    status, body = d.call("POST", "/v1/leases", {"memory_bytes": 50 * GiB})
    assert status == 400
    assert "needs 50.0 GiB" in body["error"]["message"] and "ask for xlarge" in body["error"]["message"]


def test_the_spaces_idle_worker_is_a_resident(make_daemon, procs):
    d = make_daemon("--simulate", "2x80G", "--spaces-app", "demo")
    w = spawn(procs)

    def schedule():
        status, body = d.call("POST", "/schedule?durationSeconds=20&taskId=7")
        assert status == 200, body
        return body

    first = schedule()
    assert first["idle"] is False
    status, _ = d.call("POST", f"/allow?allowToken={first['allowToken']}&pid={w.pid}")
    assert status == 200
    status, _ = d.call("POST", f"/release?allowToken={first['allowToken']}")
    assert status == 200
    res, _ = residents(d)
    assert [r["pid"] for r in res[first["nvidiaIndex"]]] == [w.pid]
    again = schedule()
    assert again["idle"] is True and again["nvidiaIndex"] == first["nvidiaIndex"]
    d.call("POST", f"/release?allowToken={again['allowToken']}&fail=true")
    assert w.poll() is None  # a failed call ends the lease, not the worker...
    assert residents(d)[0] == {0: [], 1: []}  # ...but it is no longer kept


def test_app_memory_setting_sizes_spaces_calls(make_daemon, tmp_path, procs):
    conf = tmp_path / "zerogpud.conf"
    conf.write_text("[apps]\ndemo memory = 30G\n")
    d = make_daemon("--simulate", "1x80G", "--spaces-app", "demo", "--config", str(conf))
    status, body = d.call("POST", "/schedule?durationSeconds=20")
    assert status == 200
    _, free = residents(d)
    assert free[0] == 50 * GiB
    bad = tmp_path / "bad.conf"
    bad.write_text("[apps]\ndemo memory = lots\n")
    r = subprocess.run([str(d.proc.args[0]), "--config", str(bad), "--simulate", "1x80G",
                        "--socket", str(tmp_path / "x.sock"), "--state-dir", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "takes a size such as 40G" in r.stderr


def test_on_a_real_gpu_a_kept_worker_counts_what_nvml_says_it_holds(make_daemon, procs,
                                                                   tmp_path, monkeypatch):
    from conftest import BUILD
    table = tmp_path / "processes"
    table.write_text("")
    monkeypatch.setenv("FAKE_NVML_GPUS", "80")
    monkeypatch.setenv("FAKE_NVML_PROCESSES", str(table))
    d = make_daemon("--nvml-library", str(BUILD / "tests" / "unit" / "libfake-nvml.so"))
    w = spawn(procs)
    # The driver sees the worker holding 12 GiB (and another process 5), though its
    # lease asked for 30.
    table.write_text(f"GPU-fake-0 {w.pid} 12288\nGPU-fake-0 1 5120\n")
    keep(d, "a", 30, w)
    res, free = residents(d)
    assert [(r["pid"], r["bytes"]) for r in res[0]] == [(w.pid, 12 * GiB)]
    assert free[0] == 68 * GiB
    # NVML sees nothing of another worker: it counts its lease's memory.
    x = spawn(procs)
    keep(d, "b", 20, x)
    res, _ = residents(d)
    assert sorted(r["bytes"] for r in res[0]) == [12 * GiB, 20 * GiB]
    assert "as NVML says" in d.log_text()


def test_on_a_real_gpu_a_grant_waits_until_nvml_shows_the_evicted_memory_freed(
        make_daemon, procs, tmp_path, monkeypatch):
    import threading
    from conftest import BUILD
    table = tmp_path / "processes"
    table.write_text("")
    monkeypatch.setenv("FAKE_NVML_GPUS", "80")
    monkeypatch.setenv("FAKE_NVML_PROCESSES", str(table))
    d = make_daemon("--nvml-library", str(BUILD / "tests" / "unit" / "libfake-nvml.so"))
    for freed_after in (0.5, None):  # the driver frees it in 0.5 s; it never does
        w = spawn(procs)
        table.write_text(f"GPU-fake-0 {w.pid} 61440\n")
        keep(d, "a", 60, w)
        if freed_after:
            threading.Timer(freed_after, lambda: table.write_text("")).start()
        t0 = time.monotonic()
        s, ev = lease(d, "b", 40)  # 20 GiB free: a's worker is evicted first
        waited = time.monotonic() - t0
        assert exited(w)
        if freed_after:
            assert freed_after - 0.05 <= waited < 1.9, waited
            assert "evicted worker(s) was freed after" in d.log_text()
        else:
            assert 1.9 <= waited < 4, waited
            assert f"NVML still shows memory of evicted worker {w.pid} after 2000 ms" \
                in d.log_text()
        s.close()
        table.write_text("")


def test_the_event_stream_tells_each_residents_move(make_daemon, procs):
    from events_client import EventStream
    d = make_daemon("--simulate", "1x80G")
    s = EventStream(d.http())
    s.next()  # the snapshot
    b, a = spawn(procs), spawn(procs)
    keep(d, "b", 30, b)
    (_, kept), _ = s.until(lambda n, e: n == "resident" and e["kind"] == "kept")
    assert kept["app"] == "b" and kept["pid"] == b.pid and kept["devices"] == [0]
    keep(d, "a", 10, a)
    c, ev = lease(d, "a", 10)  # warm: a's own worker takes it
    (_, taken), _ = s.until(lambda n, e: n == "resident" and e["kind"] == "taken")
    assert taken["app"] == "a" and taken["pid"] == a.pid
    c.close()
    c, ev = lease(d, "c", 75)  # needs b's memory (and a's, kept again)
    (_, evicted), _ = s.until(lambda n, e: n == "resident" and e["kind"] == "evicted")
    assert evicted["app"] in ("a", "b") and evicted["bytes"] > 0
    c.close()
    s.close()
