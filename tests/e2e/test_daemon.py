"""The daemon as a whole: status schema, metrics, TCP with a token, start-up checks, shutdown, contention."""
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import jsonschema
import pytest
import yaml

from conftest import BUILD, ROOT, ZEROGPUD, Daemon

SPEC = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())


def schema_validator(name):
    # OpenAPI 3.1 schemas are JSON Schema 2020-12: validate with the document as the root.
    return jsonschema.Draft202012Validator({**SPEC, "$ref": f"#/components/schemas/{name}"})


def test_status_matches_the_openapi_schema(daemon1):
    a, _ = daemon1.acquire({"app": "a", "visitor": "v", "task": "t"})
    attached = subprocess.Popen(["sleep", "30"], start_new_session=True)
    _, ev = daemon1.get("/v1/leases")
    lease = ev["leases"][0]["id"]
    daemon1.call("POST", f"/v1/leases/{lease}/attach", {"pid": attached.pid})
    b, _ = daemon1.acquire({"gpus": 1, "size": "xlarge"})
    status, body = daemon1.get("/v1/status")
    assert status == 200
    schema_validator("Status").validate(body)
    assert body["leases"][0]["state"] == "attached" and body["leases"][0]["pid"] == attached.pid
    assert body["queue"][0]["position"] == 1
    # The CLI's --json is the same document.
    cli = json.loads(daemon1.cli("status", "--json").stdout)
    schema_validator("Status").validate(cli)
    for name, path in (("Device", "/v1/devices"), ("Lease", "/v1/leases")):
        _, doc = daemon1.get(path)
        for item in doc[path.rsplit("/", 1)[1]]:
            schema_validator(name).validate(item)
    attached.kill()
    attached.wait()
    a.close()
    b.close()


def test_events_match_the_openapi_schema(daemon1):
    validator = schema_validator("LeaseEvent")
    a, ev = daemon1.acquire({"duration_s": 0.3})
    validator.validate(ev)
    b, ev = daemon1.acquire({"max_wait_s": 0.1})
    validator.validate(ev)  # queued
    validator.validate(b.event())  # failed
    validator.validate(a.event())  # expired
    validator.validate(a.event())  # released
    a.close()
    b.close()


def test_devices_endpoint_via_curl(daemon4):
    out = subprocess.run(["curl", "-s", "--unix-socket", str(daemon4.socket), "http://x/v1/devices"],
                         capture_output=True, text=True, check=True).stdout
    devices = json.loads(out)["devices"]
    assert [d["index"] for d in devices] == [0, 1, 2, 3]
    assert all(d["memory_bytes"] == 80 << 30 for d in devices)


def test_metrics(daemon1):
    a, _ = daemon1.acquire({})
    b, _ = daemon1.acquire({})
    status, text = daemon1.get("/metrics")
    assert status == 200
    metrics = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            metrics[name] = float(value)
    assert metrics["zerogpu_devices_total"] == 1
    assert metrics["zerogpu_devices_busy"] == 1
    assert metrics["zerogpu_queue_length"] == 1
    assert metrics["zerogpu_grants_total"] == 1
    assert metrics["zerogpu_leases_live"] == 1
    assert metrics['zerogpu_grant_latency_seconds_count{tier="anonymous"}'] == 1
    assert metrics['zerogpu_grant_latency_seconds_bucket{tier="anonymous",le="+Inf"}'] == 1
    a.close()
    b.event()
    b.close()
    _, text = daemon1.get("/metrics")
    assert 'zerogpu_leases_ended_total{state="released"} 2' in text
    assert "zerogpu_grants_total 2" in text


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_tcp_listener_needs_the_token(make_daemon):
    port = free_port()
    token = "s3cret-token-for-the-daemon-tests"
    make_daemon("--simulate", "2x80G", "--listen", f"127.0.0.1:{port}", "--token", token)
    base = f"http://127.0.0.1:{port}"
    assert json.load(urllib.request.urlopen(f"{base}/healthz")) == {"ok": True}
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{base}/v1/status")
    assert e.value.code == 401
    assert "missing or wrong bearer token" in json.load(e.value)["error"]["message"]
    wrong = urllib.request.Request(f"{base}/v1/status", headers={"Authorization": "Bearer nope"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(wrong)
    assert e.value.code == 401
    good = urllib.request.Request(f"{base}/v1/devices", headers={"Authorization": f"Bearer {token}"})
    assert len(json.load(urllib.request.urlopen(good))["devices"]) == 2


def test_a_socket_path_holding_something_else_is_left_alone(tmp_path):
    """The daemon removes a stale socket, never anything else: as root, --socket /dev/null
    once deleted /dev/null."""
    for path in (tmp_path / "file", tmp_path / "fifo"):
        if path.name == "file":
            path.write_text("keep me")
        else:
            os.mkfifo(path)
        r = subprocess.run([str(ZEROGPUD), "--simulate", "1x80G", "--gate", "off", "--socket",
                            str(path), "--state-dir", str(tmp_path / "st")],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 1
        assert f"--socket {path}: something other than a socket is there" in r.stderr
        assert path.exists() and (path.name == "fifo" or path.read_text() == "keep me")


def test_listen_without_token_is_refused(tmp_path):
    r = subprocess.run([str(ZEROGPUD), "--simulate", "1x80G", "--socket", str(tmp_path / "s"),
                        "--state-dir", str(tmp_path), "--listen", "127.0.0.1:1"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert "--listen 127.0.0.1:1 needs --token or --token-file" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--simulate", "4x"], "bad --simulate item '4x': expected COUNTxMEMORY like 4x80G"),
    (["--max-duration", "abc"], "--max-duration takes seconds > 0, not 'abc'"),
    (["--grace", "-1"], "--grace takes seconds >= 0, not '-1'"),
    (["--log-level", "loud"], "--log-level takes debug, info, warn or error, not 'loud'"),
    (["--default-duration", "400"], "--default-duration is above --max-duration"),
    (["--bogus"], "unknown option"),
    (["--split", "3"], "--split takes 1 or 2, not '3'"),
    (["--policy", "lottery"], "--policy takes priority or fifo, not 'lottery'"),
    (["--app-limit", "-1"], "--app-limit takes a number of leases >= 0, not '-1'"),
])
def test_bad_options_are_explained(tmp_path, args, message):
    r = subprocess.run([str(ZEROGPUD), "--socket", str(tmp_path / "s"), "--state-dir", str(tmp_path)]
                       + args, capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert message in r.stderr


def test_one_daemon_per_state_dir_and_socket(daemon4, tmp_path):
    r = subprocess.run([str(ZEROGPUD), "--simulate", "1x80G", "--socket", str(tmp_path / "other.sock"),
                        "--state-dir", str(daemon4.state)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert f"another zerogpud (pid {daemon4.proc.pid}) is using state directory" in r.stderr
    r = subprocess.run([str(ZEROGPUD), "--simulate", "1x80G", "--socket", str(daemon4.socket),
                        "--state-dir", str(tmp_path / "other-state")], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1
    assert "another zerogpud is already serving" in r.stderr
    # The first daemon still serves.
    assert daemon4.get("/healthz")[0] == 200


def test_stale_socket_is_replaced(tmp_path):
    stale = socket.socket(socket.AF_UNIX)
    path = tmp_path / "d" / "zerogpud.sock"
    path.parent.mkdir()
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    d = Daemon(tmp_path / "d", "--simulate", "1x80G")
    d.start()
    assert d.get("/healthz")[0] == 200
    assert d.stop() == 0
    assert not path.exists()


def test_sigterm_tells_clients_and_removes_the_socket(tmp_path):
    d = Daemon(tmp_path, "--simulate", "1x80G").start()
    held, _ = d.acquire({})
    worker = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    _, leases = d.get("/v1/leases")
    d.call("POST", f"/v1/leases/{leases['leases'][0]['id']}/attach", {"pid": worker.pid})
    waiting, _ = d.acquire({})
    assert d.stop() == 0
    ev = waiting.event()
    assert ev["event"] == "failed" and ev["error"]["message"] == "zerogpud is shutting down"
    ev = held.event()
    assert ev["event"] == "released" and ev["state"] == "failed"
    worker.wait(timeout=2)  # nothing may keep using a device nobody lends any more
    assert not d.socket.exists()
    assert "shutting down" in d.log_text()


def test_nvml_devices_through_the_loader(make_daemon, monkeypatch):
    fake = BUILD / "tests" / "unit" / "libfake-nvml.so"
    monkeypatch.setenv("FAKE_NVML_GPUS", "80,141:mig2")
    d = make_daemon("--nvml-library", str(fake))
    _, st = d.get("/v1/status")
    assert st["device_source"] == "nvml"
    assert [x["uuid"] for x in st["devices"]] == ["GPU-fake-0", "MIG-fake-1-0", "MIG-fake-1-1"]
    assert st["devices"][2]["mig_index"] == 1
    # A MIG instance has its GPU's capability (NVML only answers for whole GPUs).
    assert [x["compute_capability"] for x in st["devices"]] == ["9.0", "9.0", "9.0"]
    assert "3 nvml devices" in d.log_text()


def test_without_nvml_it_falls_back_to_a_simulated_device(make_daemon):
    d = make_daemon("--nvml-library", "/nonexistent/libnvidia-ml.so.1")
    _, st = d.get("/v1/status")
    assert st["device_source"] == "simulated" and len(st["devices"]) == 1
    assert "no GPUs from NVML (cannot load NVML" in d.log_text()


def test_no_device_is_ever_granted_twice_under_contention(make_daemon):
    """32 clients hammer 4 devices; the intervals each device was held must never overlap."""
    d = make_daemon("--simulate", "4x80G", "--log-level", "warn")
    holds = []
    lock = threading.Lock()
    errors = []

    def client(n):
        try:
            for _ in range(15):
                c, ev = d.acquire({"gpus": 1 + (n % 2), "duration_s": 30, "max_wait_s": 60}, timeout=60)
                while ev["event"] == "queued":
                    ev = c.event()
                assert ev["event"] == "granted", ev
                start = time.monotonic()
                time.sleep(0.002)
                end = time.monotonic()
                with lock:
                    for dev in ev["devices"]:
                        holds.append((dev["index"], start, end))
                status, _ = d.call("DELETE", f"/v1/leases/{ev['lease']}")
                assert status == 200
                c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert len(holds) == 32 * 15 // 2 * 3  # half the clients take 2 devices
    for dev in range(4):
        spans = sorted((s, e) for i, s, e in holds if i == dev)
        for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
            assert s2 >= e1, f"device {dev} held twice at once"
    _, text = d.get("/metrics")
    assert "zerogpu_grants_total 480" in text
    assert d.busy_devices() == []


def test_restart_after_kill_9(tmp_path):
    d = Daemon(tmp_path, "--simulate", "2x80G").start()
    held, ev = d.acquire({})
    d.proc.kill()  # SIGKILL: no clean-up at all
    d.proc.wait()
    d.log.close()
    with pytest.raises(EOFError):  # the client sees its lease stream cut off
        held.event()
    held.close()
    # The lock died with the process and the socket file is stale: a new daemon starts.
    again = Daemon(tmp_path, "--simulate", "2x80G").start()
    assert again.get("/healthz")[0] == 200
    assert again.busy_devices() == []
    c, ev = again.acquire({})
    assert ev["event"] == "granted"
    c.close()
    assert again.stop() == 0


def test_policy_option(make_daemon):
    d = make_daemon("--simulate", "1x80G", "--policy", "fifo")
    assert d.get("/v1/status")[1]["policy"] == "fifo"
    held, _ = d.acquire({})
    long_, _ = d.acquire({"duration_s": 300})
    short, _ = d.acquire({"duration_s": 5})
    _, q = d.get("/v1/queue")
    assert [x["duration_s"] for x in q["queue"]] == [300, 5]  # arrival order
    for s in (held, long_, short):
        s.close()
