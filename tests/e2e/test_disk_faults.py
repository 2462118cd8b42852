"""The ledger's disk full (a small tmpfs) or read-only (fault_fs, LD_PRELOAD): grants are
refused with a 503 that says why, nothing acknowledged is lost, and service resumes when
the disk takes writes again (docs/daemon.md#ledger-faults)."""
import os
import sqlite3
import subprocess
import time

import pytest

from conftest import BUILD, UnixHTTP

VISITOR = "203.0.113.9"


@pytest.fixture
def state_disk(tmp_path):
    """d0's state directory on a 3 MiB tmpfs (make_daemon's first daemon uses it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    state = tmp_path / "d0" / "state"
    state.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(state)],
                   check=True)
    yield state
    subprocess.run(["umount", "-l", str(state)], check=False)


def fill(disk):
    """Writes a file until the disk is full."""
    with open(disk / "fill", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def ask(d, body):
    """POST /v1/leases once: (status, first event or error body). A granted lease is
    released at once (the connection closes)."""
    c = UnixHTTP(d.socket)
    try:
        c.send("POST", "/v1/leases", body)
        status, headers = c.read_head()
        if status != 200:
            import json
            return status, json.loads(c.read_body())
        return status, c.event()
    finally:
        c.close()


def refused_until_writable(d, reason):
    """Lease requests, until one is refused with ledger_unavailable (the first may meet
    the fault as its grant is recorded: its stream then fails with that code)."""
    for _ in range(50):
        status, reply = ask(d, {"duration_s": 1, "max_wait_s": 0})
        if status == 503:
            assert reply["error"]["code"] == "ledger_unavailable", reply
            msg = reply["error"]["message"]
            assert reason in msg and "grants no lease until it can" in msg, msg
            assert str(d.state) in msg
            return msg
        if reply["event"] == "failed":
            assert reply["error"]["code"] == "ledger_unavailable", reply
        time.sleep(0.02)
    raise AssertionError("lease requests were never refused while the ledger could not be written")


def ledger_rows(d):
    db = sqlite3.connect(f"file:{d.state / 'ledger.db'}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        rows = {r["id"]: dict(r) for r in db.execute("SELECT * FROM leases")}
        visitors = {r["key"]: dict(r) for r in db.execute("SELECT * FROM visitors")}
        return rows, visitors
    finally:
        db.close()


def wait_writable(d, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, st = d.get("/v1/status")
        if st["ledger"]["writable"]:
            return st
        time.sleep(0.05)
    raise AssertionError(f"the ledger stayed in a fault: {st['ledger']}")


def check_fault_and_recovery(d, break_disk, mend_disk, reason):
    # A metered lease granted before the fault; it ends during it.
    c, ev = d.acquire({"duration_s": 60, "visitor_ip": VISITOR})
    assert ev["event"] == "granted"
    held = ev["lease"]
    time.sleep(0.3)

    break_disk()
    msg = refused_until_writable(d, reason)
    _, st = d.get("/v1/status")
    assert st["ledger"]["writable"] is False and reason in st["ledger"]["fault"], st["ledger"]
    # The `spaces` API and the registry say the same.
    status, reply = d.call("POST", "/schedule?durationSeconds=1")
    assert status == 503 and reply["error"]["code"] == "ledger_unavailable", reply
    status, reply = d.call("POST", "/v1/accounts", {"name": "acme", "kind": "pro"})
    assert status == 503 and reply["error"]["code"] == "ledger_unavailable", reply

    # The held lease ends now: acknowledged, kept in memory, not yet in the ledger.
    status, end = d.call("DELETE", f"/v1/leases/{held}")
    assert status == 200, end
    c.close()
    _, st = d.get("/v1/status")
    assert st["ledger"]["ends_waiting"] >= 1
    rows, _ = ledger_rows(d)
    assert rows[held]["ended_at"] in (None, 0), rows[held]

    # Still refused a second later: the probe does not mistake room in the WAL for room.
    time.sleep(1.2)
    assert ask(d, {"duration_s": 1, "max_wait_s": 0})[0] == 503

    mend_disk()
    t0 = time.monotonic()
    wait_writable(d)
    resumed_s = time.monotonic() - t0
    assert resumed_s < 2.5, resumed_s
    status, ev = ask(d, {"duration_s": 1, "max_wait_s": 0})
    assert (status, ev["event"]) == (200, "granted"), (status, ev)

    # Nothing acknowledged is lost: the end written with the figures the client was told,
    # and the visitor's total is the sum of its settled charges.
    rows, visitors = ledger_rows(d)
    assert rows[held]["state"] == "released" and rows[held]["ended_at"] > 0
    assert abs(rows[held]["used_ms"] / 1000 - end["used_s"]) < 0.002, (rows[held], end)
    charged = sum(r["charged_ms"] for r in rows.values() if r["quota_key"] == f"ip:{VISITOR}")
    assert charged > 0 and visitors[f"ip:{VISITOR}"]["used_ms"] == charged
    _, q = d.get(f"/v1/quota/ip:{VISITOR}")
    assert abs(q["used_s"] - charged / 1000) < 0.002, q
    assert "ledger takes writes again" in d.log_text()
    return msg


def test_a_full_disk_refuses_grants_keeps_ends_and_resumes(make_daemon, state_disk):
    d = make_daemon("--simulate", "2x80G", "--gate", "off", "--spaces-app", "demo")
    check_fault_and_recovery(d, lambda: fill(state_disk), lambda: (state_disk / "fill").unlink(),
                             "database or disk is full")


def test_a_read_only_disk_refuses_grants_keeps_ends_and_resumes(make_daemon, tmp_path,
                                                                monkeypatch):
    flag = tmp_path / "read-only"
    monkeypatch.setenv("LD_PRELOAD", str(BUILD / "tests" / "libfault-fs.so"))
    monkeypatch.setenv("ZEROGPU_FAULT_FLAG", str(flag))
    monkeypatch.setenv("ZEROGPU_FAULT_DIR", str(tmp_path / "d0" / "state"))
    # Under ASan the runtime must come first; the shim is loaded before it here.
    monkeypatch.setenv("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0")
    d = make_daemon("--simulate", "2x80G", "--gate", "off", "--spaces-app", "demo")
    # SQLite words it "disk I/O error", with the errno when it still has it; a file system
    # the kernel made read-only is named as such (statvfs), which this shim cannot fake.
    check_fault_and_recovery(d, lambda: flag.write_text("EROFS"), flag.unlink, "disk I/O error")


def test_a_fault_at_stop_is_settled_at_the_next_start(make_daemon, tmp_path, monkeypatch):
    """A daemon stopped in a fault cannot write the ends it kept: it says so, and the next
    start settles those leases as it settles any a dead daemon left."""
    flag = tmp_path / "read-only"
    monkeypatch.setenv("LD_PRELOAD", str(BUILD / "tests" / "libfault-fs.so"))
    monkeypatch.setenv("ZEROGPU_FAULT_FLAG", str(flag))
    monkeypatch.setenv("ZEROGPU_FAULT_DIR", str(tmp_path / "d0" / "state"))
    monkeypatch.setenv("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0")
    d = make_daemon("--simulate", "1x80G", "--gate", "off")
    c, ev = d.acquire({"duration_s": 60})
    flag.write_text("EROFS")
    d.call("DELETE", f"/v1/leases/{ev['lease']}")
    c.close()
    assert d.stop() == 0
    assert "1 lease end(s) are not recorded; the next start settles them" in d.log_text()
    flag.unlink()
    d.start()
    assert "settled 1 lease(s) left open by the previous run" in d.log_text()
    rows, _ = ledger_rows(d)
    assert rows[ev["lease"]]["state"] == "expired"
