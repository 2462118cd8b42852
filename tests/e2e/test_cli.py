"""The zerogpu CLI against a real daemon: run, status, version, help."""
import json
import os
import re
import signal
import socket
import subprocess
import time

from conftest import ZEROGPU, ZEROGPUD


def start_holding_run(daemon, *args):
    """Starts `zerogpu run ARGS` in the background and returns once it holds a device and
    its command runs (attached: `zerogpu run` forwards signals from then on)."""
    p = subprocess.Popen([str(ZEROGPU), "--socket", str(daemon.socket), "run"] + list(args),
                         stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not any("pid" in lease for lease in daemon.get("/v1/leases")[1]["leases"]):
        assert time.monotonic() - t0 < 5, "the background run got no device"
        time.sleep(0.01)
    return p


def test_run_exports_the_granted_uuid_that_status_lists(daemon4):
    r = daemon4.cli("run", "-d", "5", "--", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES")
    assert r.returncode == 0, r.stderr
    uuid = r.stdout.strip()
    assert re.fullmatch(r"GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", uuid)
    st = daemon4.cli("status", "--json")
    assert st.returncode == 0
    assert uuid in [d["uuid"] for d in json.loads(st.stdout)["devices"]]
    # Released when the command ended.
    assert daemon4.busy_devices() == []


def test_run_gang_exports_all_uuids_and_lease(daemon4):
    r = daemon4.cli("run", "-n", "3", "--", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES; echo $ZEROGPU_LEASE")
    assert r.returncode == 0, r.stderr
    uuids, lease = r.stdout.split()
    assert len(set(uuids.split(","))) == 3
    assert re.fullmatch(r"[0-9a-f]{32}", lease)


def test_run_passes_the_exit_status_through(daemon4):
    assert daemon4.cli("run", "--", "sh", "-c", "exit 7").returncode == 7
    assert daemon4.cli("run", "--", "true").returncode == 0
    assert daemon4.cli("run", "--", "sh", "-c", "kill -TERM $$").returncode == 128 + signal.SIGTERM


def test_run_of_a_missing_command(daemon4):
    r = daemon4.cli("run", "--", "/nonexistent/tool")
    assert r.returncode == 127
    assert "cannot run '/nonexistent/tool'" in r.stderr
    assert daemon4.busy_devices() == []


def test_run_expiry_kills_the_command_and_exits_124(daemon1, tmp_path):
    pidfile = tmp_path / "pid"
    t0 = time.monotonic()
    r = daemon1.cli("run", "-d", "1", "--", "sh", "-c", f"echo $$ > {pidfile}; exec sleep 1000")
    elapsed = time.monotonic() - t0
    assert r.returncode == 124, r.stderr
    assert "lease expired" in r.stderr
    # Deadline 1 s + grace 2 s; killed within half a second after that.
    assert elapsed < 3.5, elapsed
    pid = int(pidfile.read_text())
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()


def test_run_waits_in_the_queue_and_says_so(daemon1):
    first = start_holding_run(daemon1, "-d", "10", "--", "sleep", "1")
    r = daemon1.cli("run", "--", "true")
    first.wait(timeout=10)
    assert r.returncode == 0
    assert "waiting for a GPU (position 1 in the queue)" in r.stderr


def test_run_gives_up_after_max_wait(daemon1):
    holder = start_holding_run(daemon1, "--", "sleep", "5")
    r = daemon1.cli("run", "-q", "--max-wait", "0", "--", "true")
    holder.terminate()
    holder.wait()
    assert r.returncode == 125
    assert "No GPU was available" in r.stderr


def test_run_forwards_sigterm_to_the_command(daemon4):
    p = start_holding_run(daemon4, "--", "sleep", "100")
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=5) == 128 + signal.SIGTERM
    assert daemon4.busy_devices() == []


def test_run_refuses_bad_arguments(daemon4):
    r = daemon4.cli("run", "-d", "0", "--", "true")
    assert r.returncode == 2 and "-d takes seconds > 0" in r.stderr
    r = daemon4.cli("run", "-s", "huge", "--", "true")
    assert r.returncode == 2 and "'large' (half a GPU) or 'xlarge'" in r.stderr
    r = daemon4.cli("run")
    assert r.returncode == 2 and "no command given" in r.stderr
    r = daemon4.cli("run", "-d", "900", "--", "true")
    assert r.returncode == 125
    assert "duration 900 s is above this server's maximum of 300 s" in r.stderr


def test_status_table(daemon4):
    c, ev = daemon4.acquire({"app": "painter", "visitor": "alice", "duration_s": 30})
    r = daemon4.cli("status")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("zerogpud ") and "4 simulated device(s), 1 lease(s)" in lines[0]
    node = socket.gethostname().split(".")[0]
    assert f" on node {node} (sqlite ledger), " in lines[0]
    st = json.loads(daemon4.cli("status", "--json").stdout)
    assert st["node"] == node and st["ledger"]["backend"] == "sqlite"
    header = next(l for l in lines if l.startswith("INDEX"))
    assert header.split() == ["INDEX", "UUID", "NAME", "MEMORY", "FREE", "STATE", "LEASES",
                              "RESIDENTS"]
    lease_row = next(l for l in lines if l.startswith(ev["lease"][:8]))
    assert "painter" in lease_row and "alice" in lease_row and "granted" in lease_row
    # Columns line up: each row's STATE column starts where the header's does.
    col = header.index("STATE")
    device_rows = [l for l in lines if re.match(r"^\d+\s+GPU-", l)]
    assert len(device_rows) == 4
    assert all(l[col:col + 4] in ("busy", "free") for l in device_rows)
    c.close()


def test_cli_without_a_daemon_says_what_to_do(tmp_path):
    r = subprocess.run([str(ZEROGPU), "--socket", str(tmp_path / "none.sock"), "status"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "cannot connect to zerogpud at" in r.stderr and "is the daemon running?" in r.stderr
    r = subprocess.run([str(ZEROGPU), "--socket", str(tmp_path / "none.sock"), "run", "--", "true"],
                       capture_output=True, text=True)
    assert r.returncode == 125


def test_help_and_version(daemon4):
    for args in (["--help"], ["run", "--help"], ["status", "--help"], ["version", "--help"]):
        r = subprocess.run([str(ZEROGPU)] + args, capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith("Usage: zerogpu"), args
    r = daemon4.cli("version")
    assert r.returncode == 0
    assert re.match(r"zerogpu \d+\.\d+\.\d+ \(protocol 1\)\nzerogpud \d+\.\d+\.\d+ at ", r.stdout)
    r = subprocess.run([str(ZEROGPU), "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr
    r = subprocess.run([str(ZEROGPUD), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--simulate SPEC" in r.stdout


def test_ctrl_c_while_queued_withdraws_the_request(daemon1):
    holder = start_holding_run(daemon1, "--", "sleep", "10")
    waiting = subprocess.Popen([str(ZEROGPU), "--socket", str(daemon1.socket), "run", "--", "true"],
                               stderr=subprocess.PIPE, text=True)
    assert "position 1 in the queue" in waiting.stderr.readline()
    waiting.send_signal(signal.SIGINT)
    assert waiting.wait(timeout=5) == -signal.SIGINT
    t0 = time.monotonic()
    while daemon1.get("/v1/queue")[1]["queue"]:
        assert time.monotonic() - t0 < 1, "the withdrawn request is still queued"
        time.sleep(0.01)
    holder.terminate()
    holder.wait()


def test_default_duration_is_reported_from_the_grant(make_daemon):
    d = make_daemon("--simulate", "1x80G", "--default-duration", "0.5", "--grace", "0.2")
    r = d.cli("run", "--", "sleep", "10")
    assert r.returncode == 124
    assert "the lease's 0.5 s ran out; the command is killed in 0.2 s" in r.stderr
