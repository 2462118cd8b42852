"""libzerogpu itself: one client shared by threads, timeouts, progress, the error table."""
import subprocess
import time

from conftest import BUILD

LIBCHECK = BUILD / "tests" / "e2e" / "libcheck"


def libcheck(daemon, *args, timeout=60):
    return subprocess.run([str(LIBCHECK), str(daemon.socket)] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout)


def test_one_client_shared_by_threads(daemon4):
    r = libcheck(daemon4, "threads", 16, 40)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "threads=16 cycles=40 failures=0"
    assert daemon4.busy_devices() == []
    _, text = daemon4.get("/metrics")
    assert "zerogpu_grants_total 640" in text


def test_client_timeout_withdraws_the_request(daemon1):
    held, _ = daemon1.acquire({})
    t0 = time.monotonic()
    r = libcheck(daemon1, "timeout", 300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 0.25 < time.monotonic() - t0 < 2
    assert "result=ETIMEDOUT message=no GPU was granted within the client's timeout" in r.stdout
    # The daemon saw the stream close and dropped the request.
    deadline = time.monotonic() + 1
    while daemon1.get("/v1/queue")[1]["queue"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert daemon1.get("/v1/queue")[1]["queue"] == []
    held.close()


def test_progress_callback_sees_queue_events(daemon1):
    held, ev = daemon1.acquire({})
    p = subprocess.Popen([str(LIBCHECK), str(daemon1.socket), "progress"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "queued position=1 reason=node"
    daemon1.call("DELETE", f"/v1/leases/{ev['lease']}")
    out, _ = p.communicate(timeout=10)
    assert out.strip() == "result=OK"
    held.close()


def test_error_table(daemon1):
    r = libcheck(daemon1, "errors")
    assert r.returncode == 0, r.stdout
    lines = r.stdout.splitlines()
    assert lines[0] == "0 OK success"
    assert "-13 ENOGPU no GPU was available in time" in lines
    assert lines[-1] == "UNKNOWN|unknown error"
