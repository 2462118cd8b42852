"""The ledger: one row per lease, written before the client hears, settled after a crash."""
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import ZEROGPUD, Daemon


def rows(daemon):
    db = sqlite3.connect(daemon.state / "ledger.db")
    db.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in db.execute("SELECT * FROM leases")}
    finally:
        db.close()


def test_a_lease_is_recorded_and_settled(daemon4):
    c, ev = daemon4.acquire({"app": "painter", "visitor": "v1", "task": "gen", "duration_s": 30})
    row = rows(daemon4)[ev["lease"]]
    # Recorded before the client heard of the grant.
    assert row["state"] == "granted" and row["ended_at"] is None
    assert row["app"] == "painter" and row["visitor"] == "v1" and row["task"] == "gen"
    assert row["devices"] == ev["devices"][0]["uuid"] and row["requested_ms"] == 30000
    worker = subprocess.Popen(["sleep", "30"], start_new_session=True)
    daemon4.call("POST", f"/v1/leases/{ev['lease']}/attach", {"pid": worker.pid})
    row = rows(daemon4)[ev["lease"]]
    assert row["state"] == "attached" and row["pid"] == worker.pid and row["pid_start"] > 0
    time.sleep(1.2)
    status, body = daemon4.call("DELETE", f"/v1/leases/{ev['lease']}")
    row = rows(daemon4)[ev["lease"]]
    assert row["state"] == "released"
    assert row["used_ms"] == pytest.approx(body["used_s"] * 1000, abs=2)
    assert row["charged_ms"] == 2000  # 1.2 s rounds up to 2 s
    worker.kill()
    worker.wait()
    c.close()


def test_charges_xlarge_twice_and_early_failures_nothing(daemon4):
    c, ev = daemon4.acquire({"size": "xlarge"})
    time.sleep(0.1)
    daemon4.call("DELETE", f"/v1/leases/{ev['lease']}")
    assert rows(daemon4)[ev["lease"]]["charged_ms"] == 2000  # 1 s, twice
    c.close()
    c, ev = daemon4.acquire({})
    daemon4.call("DELETE", f"/v1/leases/{ev['lease']}?fail=1")
    row = rows(daemon4)[ev["lease"]]
    assert row["state"] == "failed" and row["charged_ms"] == 0  # no process ever ran
    c.close()


def test_kill_9_mid_lease_then_restart_settles_and_kills(tmp_path):
    d = Daemon(tmp_path, "--simulate", "1x80G").start()
    c, ev = d.acquire({"duration_s": 60})
    worker = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    d.call("POST", f"/v1/leases/{ev['lease']}/attach", {"pid": worker.pid})
    time.sleep(0.5)
    d.proc.kill()
    d.proc.wait()
    d.log.close()
    c.close()
    assert worker.poll() is None  # nobody killed it yet
    again = Daemon(tmp_path, "--simulate", "1x80G").start()
    worker.wait(timeout=2)
    assert worker.returncode == -signal.SIGKILL
    row = rows(again)[ev["lease"]]
    assert row["state"] == "expired" and row["ended_at"] is not None
    assert 500 <= row["used_ms"] < 10000 and row["charged_ms"] >= 1000
    assert f"lease {ev['lease']}: settled as expired after a restart" in again.log_text()
    assert again.busy_devices() == []
    assert again.stop() == 0


def test_recovery_spares_a_process_that_reused_the_pid(tmp_path):
    d = Daemon(tmp_path, "--simulate", "1x80G").start()
    c, ev = d.acquire({})
    bystander = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    d.proc.kill()
    d.proc.wait()
    d.log.close()
    c.close()
    # The ledger says the lease's process had the bystander's pid, but another start time.
    db = sqlite3.connect(tmp_path / "state" / "ledger.db")
    db.execute("UPDATE leases SET pid = ?, pgid = ?, pid_start = 1 WHERE id = ?",
               (bystander.pid, bystander.pid, ev["lease"]))
    db.commit()
    db.close()
    again = Daemon(tmp_path, "--simulate", "1x80G").start()
    time.sleep(0.3)
    assert bystander.poll() is None
    assert rows(again)[ev["lease"]]["state"] == "expired"
    bystander.kill()
    bystander.wait()
    assert again.stop() == 0


def test_a_newer_ledger_is_refused(tmp_path):
    (tmp_path / "state").mkdir()
    db = sqlite3.connect(tmp_path / "state" / "ledger.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    r = subprocess.run([str(ZEROGPUD), "--simulate", "1x80G", "--socket", str(tmp_path / "s"),
                        "--state-dir", str(tmp_path / "state")], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1
    assert "schema version 99, newer than this zerogpud knows (4): upgrade zerogpud" in r.stderr


def test_ledger_is_in_wal_mode(daemon1):
    db = sqlite3.connect(daemon1.state / "ledger.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
