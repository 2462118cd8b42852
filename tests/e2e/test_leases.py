"""The lease engine through the native API: grants, queueing, gangs, deadlines, clients dying."""
import signal
import subprocess
import sys
import textwrap
import time


def test_grant_on_idle_pool(daemon4):
    c, ev = daemon4.acquire({"duration_s": 5, "app": "demo"})
    assert ev["event"] == "granted"
    assert len(ev["devices"]) == 1
    _, devices = daemon4.get("/v1/devices")
    uuids = {d["uuid"] for d in devices["devices"]}
    assert ev["devices"][0]["uuid"] in uuids
    assert daemon4.busy_devices() == [ev["devices"][0]["index"]]
    remaining_ms = ev["deadline_ms"] - time.time() * 1000
    assert 4000 < remaining_ms <= 5100
    c.close()


def test_queue_then_grant_on_release_in_order(daemon1):
    a, ev_a = daemon1.acquire({"duration_s": 30})
    assert ev_a["event"] == "granted"
    b, ev_b = daemon1.acquire({"duration_s": 30})
    assert ev_b == {"event": "queued", "lease": ev_b["lease"], "position": 1, "reason": "node"}
    c, ev_c = daemon1.acquire({"duration_s": 30})
    assert ev_c["position"] == 2

    status, body = daemon1.call("DELETE", f"/v1/leases/{ev_a['lease']}")
    assert status == 200 and body["state"] == "released" and body["used_s"] >= 0
    assert b.event()["event"] == "granted"
    assert c.event() == {"event": "queued", "lease": ev_c["lease"], "position": 1, "reason": "node"}
    # A's own stream is told and closed.
    assert a.event()["event"] == "released"
    assert a.event() is None

    daemon1.call("DELETE", f"/v1/leases/{ev_b['lease']}")
    assert c.event()["event"] == "granted"
    for s in (a, b, c):
        s.close()


def test_gang_of_two_of_four(daemon4):
    c, ev = daemon4.acquire({"gpus": 2})
    assert ev["event"] == "granted"
    indices = sorted(d["index"] for d in ev["devices"])
    assert len(set(d["uuid"] for d in ev["devices"])) == 2
    assert daemon4.busy_devices() == indices
    # Three more single devices cannot all fit: the third waits.
    d2, e2 = daemon4.acquire({"gpus": 2})
    assert e2["event"] == "granted"
    d3, e3 = daemon4.acquire({"gpus": 1, "max_wait_s": 5})
    assert e3["event"] == "queued"
    c.close()
    assert d3.event()["event"] == "granted"
    for s in (d2, d3):
        s.close()


def test_gang_waits_all_or_nothing(daemon4):
    a, _ = daemon4.acquire({})
    big, ev = daemon4.acquire({"gpus": 4})
    assert ev["event"] == "queued"
    # Nothing is held for the waiting gang.
    assert len(daemon4.busy_devices()) == 1
    a.close()
    ev = big.event()
    assert ev["event"] == "granted" and len(ev["devices"]) == 4
    big.close()


def test_max_wait_expiry_fails_with_a_clear_message(daemon1):
    a, _ = daemon1.acquire({"duration_s": 30})
    t0 = time.monotonic()
    b, ev = daemon1.acquire({"max_wait_s": 1})
    assert ev["event"] == "queued"
    ev = b.event()
    waited = time.monotonic() - t0
    assert ev["event"] == "failed"
    assert ev["error"]["code"] == "no_gpu"
    assert ev["error"]["message"] == "No GPU was available after 1 s in the queue"
    assert 0.9 < waited < 2.0
    assert b.event() is None
    a.close()


def test_max_wait_zero_fails_at_once(daemon1):
    a, _ = daemon1.acquire({})
    b, ev = daemon1.acquire({"max_wait_s": 0})
    assert ev["event"] == "failed"
    assert "No GPU was available" in ev["error"]["message"]
    a.close()
    b.close()


def test_closing_a_queued_stream_cancels_it(daemon1):
    a, _ = daemon1.acquire({})
    b, ev_b = daemon1.acquire({})
    c, ev_c = daemon1.acquire({})
    b.close()
    assert c.event() == {"event": "queued", "lease": ev_c["lease"], "position": 1, "reason": "node"}
    _, q = daemon1.get("/v1/queue")
    assert [x["id"] for x in q["queue"]] == [ev_c["lease"]]
    a.close()
    assert c.event()["event"] == "granted"
    c.close()


def test_deadline_expired_event_then_kill_after_grace(daemon1, tmp_path):
    c, ev = daemon1.acquire({"duration_s": 1})
    lease = ev["lease"]
    sleeper = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    status, body = daemon1.call("POST", f"/v1/leases/{lease}/attach", {"pid": sleeper.pid})
    assert status == 200 and body["pgid"] == sleeper.pid
    ev = c.event()
    t0 = time.monotonic()
    assert ev["event"] == "expired" and ev["grace_s"] == 2
    assert "passed its 1 s duration" in ev["message"]
    ev = c.event()
    assert ev["event"] == "released" and ev["state"] == "expired"
    assert ev["message"] == "GPU task aborted: exceeded its 1 s duration"
    sleeper.wait(timeout=1)
    killed_after = time.monotonic() - t0
    assert sleeper.returncode == -signal.SIGKILL
    assert 1.8 < killed_after < 2.5
    assert daemon1.busy_devices() == []
    c.close()


def test_release_during_grace_keeps_the_process(daemon1):
    c, ev = daemon1.acquire({"duration_s": 0.5})
    worker = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    daemon1.call("POST", f"/v1/leases/{ev['lease']}/attach", {"pid": worker.pid})
    assert c.event()["event"] == "expired"
    status, body = daemon1.call("DELETE", f"/v1/leases/{ev['lease']}")
    assert status == 200 and body["state"] == "released"
    time.sleep(2.5)
    assert worker.poll() is None  # released in time: nobody kills it
    worker.kill()
    worker.wait()
    c.close()


HOLDER = textwrap.dedent("""
    import json, socket, sys, time
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(b"POST /v1/leases HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 17\\r\\n\\r\\n"
              b'{"duration_s":60}')
    data = b""
    while b"granted" not in data:
        data += s.recv(4096)
    print("granted", flush=True)
    time.sleep(1000)
""")


def test_kill_9_of_a_lease_holder_frees_the_device_fast(daemon1):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(daemon1.socket)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "granted"
    assert daemon1.busy_devices() == [0]
    holder.kill()  # SIGKILL
    holder.wait()
    t0 = time.monotonic()
    while daemon1.busy_devices():
        assert time.monotonic() - t0 < 0.5, "device still busy 0.5 s after the client died"
        time.sleep(0.01)


def test_abandoned_lease_kills_its_attached_group(daemon1):
    c, ev = daemon1.acquire({"duration_s": 60})
    worker = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    daemon1.call("POST", f"/v1/leases/{ev['lease']}/attach", {"pid": worker.pid})
    c.close()
    worker.wait(timeout=1)
    assert worker.returncode == -signal.SIGKILL


def test_release_with_failure_flag(daemon4):
    c, ev = daemon4.acquire({})
    status, body = daemon4.call("DELETE", f"/v1/leases/{ev['lease']}?fail=1")
    assert status == 200 and body["state"] == "failed"
    ev = c.event()
    assert ev["event"] == "released" and ev["state"] == "failed"
    c.close()


def test_delete_of_a_queued_lease_cancels_it(daemon1):
    a, _ = daemon1.acquire({})
    b, ev = daemon1.acquire({})
    status, body = daemon1.call("DELETE", f"/v1/leases/{ev['lease']}")
    assert status == 200 and body == {"lease": ev["lease"], "state": "cancelled", "used_s": 0,
                                   "kept": False}
    ev = b.event()
    assert ev["event"] == "failed" and ev["error"]["code"] == "cancelled"
    a.close()
    b.close()


def test_lease_ids_are_random_and_single_use(daemon4):
    ids = set()
    for _ in range(20):
        c, ev = daemon4.acquire({})
        ids.add(ev["lease"])
        status, _ = daemon4.call("DELETE", f"/v1/leases/{ev['lease']}")
        assert status == 200
        status, body = daemon4.call("DELETE", f"/v1/leases/{ev['lease']}")
        assert status == 404
        c.close()
    assert len(ids) == 20
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_expiry_spares_the_group_of_a_process_that_does_not_lead_it(daemon1):
    # A worker in its parent's process group: only the worker dies, not the parent.
    parent = subprocess.Popen(["sh", "-c", "sleep 1000 & echo $!; wait"], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    worker = int(parent.stdout.readline())
    c, ev = daemon1.acquire({"duration_s": 0.2})
    status, body = daemon1.call("POST", f"/v1/leases/{ev['lease']}/attach", {"pid": worker})
    assert status == 200 and body["pgid"] == parent.pid
    assert c.event()["event"] == "expired"
    assert c.event()["state"] == "expired"
    parent.wait(timeout=3)  # `wait` returns once the worker was killed
    assert parent.returncode == 0  # it exited by itself; a killed group would give -9
    c.close()


def test_split_gpu_lends_two_halves(make_daemon):
    d = make_daemon("--simulate", "1x80G", "--split", "2")
    a, ev_a = d.acquire({"size": "large"})
    b, ev_b = d.acquire({"size": "large"})
    assert ev_a["event"] == ev_b["event"] == "granted"
    assert ev_a["devices"][0]["uuid"] == ev_b["devices"][0]["uuid"]
    assert ev_a["devices"][0]["memory_limit_bytes"] == 40 << 30
    _, devices = d.get("/v1/devices")
    dev = devices["devices"][0]
    assert dev["state"] == "busy" and dev["slots"] == 2 and dev["slots_busy"] == 2
    assert sorted(dev["leases"]) == sorted([ev_a["lease"], ev_b["lease"]])
    a.close()
    # One half free: a large request fits, an xlarge one waits for the whole GPU.
    x, ev_x = d.acquire({"size": "xlarge"})
    assert ev_x["event"] == "queued"
    _, devices = d.get("/v1/devices")
    assert devices["devices"][0]["state"] == "partial"
    b.close()
    ev = x.event()
    assert ev["event"] == "granted" and ev["devices"][0]["memory_limit_bytes"] == 80 << 30
    x.close()


def test_app_limit_queues_with_reason_concurrency(make_daemon):
    d = make_daemon("--simulate", "4x80G", "--app-limit", "1")
    a, _ = d.acquire({"app": "hot"})
    b, ev = d.acquire({"app": "hot"})
    assert ev["event"] == "queued" and ev["reason"] == "concurrency"
    c, ev_c = d.acquire({"app": "cold"})
    assert ev_c["event"] == "granted"  # other apps are not held up
    _, q = d.get("/v1/queue")
    assert q["queue"][0]["reason"] == "concurrency"
    a.close()
    assert b.event()["event"] == "granted"
    b.close()
    c.close()


def test_priority_serves_shorter_calls_first(daemon1):
    held, _ = daemon1.acquire({})
    long_, _ = daemon1.acquire({"duration_s": 300})
    short, _ = daemon1.acquire({"duration_s": 5})
    _, q = daemon1.get("/v1/queue")
    assert [x["duration_s"] for x in q["queue"]] == [5, 300]
    held.close()
    ev = short.event()
    while ev["event"] == "queued":
        ev = short.event()
    assert ev["event"] == "granted"
    for s in (long_, short):
        s.close()
