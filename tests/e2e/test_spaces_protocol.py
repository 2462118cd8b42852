"""The hosted ZeroGPU device API, spoken by the real `spaces` package's own client.

`spaces` reads its switch and the API's URL from the environment when it is
imported; each test then points its client at a daemon of its own.
"""
import multiprocessing
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from datetime import timedelta

import pytest

os.environ["SPACES_ZERO_GPU"] = "true"
os.environ.setdefault("SPACES_ZERO_DEVICE_API_URL", "http://127.0.0.1:9")
import gradio as gr  # noqa: E402
import httpx  # noqa: E402
from spaces.config import Config  # noqa: E402
from spaces.zero import client  # noqa: E402
from starlette.datastructures import Headers  # noqa: E402

from conftest import SECRET, free_tcp_port, visitor_token  # noqa: E402

ADMIN = "admin-token-for-the-spaces-tests"
# The package opens an HTTP client per call and never closes it; Pydantic warns of its age.
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]
FORK = multiprocessing.get_context("fork")


@pytest.fixture
def spaces_daemon(make_daemon):
    """Starts a daemon on TCP with the `spaces` API; the package's client points at it."""
    def make(*args):
        port = free_tcp_port()
        d = make_daemon("--listen", f"127.0.0.1:{port}", "--token", ADMIN, "--visitor-secret",
                        SECRET, "--spaces-ping-interval", "0.4", *args)
        d.url = f"http://127.0.0.1:{port}"
        Config.zero_device_api_url = d.url
        return d
    return make


def gradio_request(token):
    """What Gradio hands the decorated function: the visitor's request headers."""
    return gr.Request(headers=Headers({"x-ip-token": token}))


def allowed_worker(allow_token):
    """Forks a worker that allows itself on the lease, as `spaces` workers do, then idles."""
    ready = FORK.Event()

    def work():
        client.allow(allow_token)
        ready.set()
        time.sleep(120)

    p = FORK.Process(target=work, daemon=True)
    p.start()
    assert ready.wait(20), "the worker's /allow did not succeed"
    return p


def ledger_row(d, lease_id=None):
    db = sqlite3.connect(d.state / "ledger.db")
    try:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM leases ORDER BY started_at").fetchall()
        return [dict(r) for r in rows if lease_id in (None, r["id"])]
    finally:
        db.close()


def test_schedule_allow_release(spaces_daemon):
    d = spaces_daemon("--simulate", "2x80G", "--spaces-app", "demo")
    assert client.startup_report() is None
    res = client.schedule(task_id=1234, request=None, duration=timedelta(seconds=30))
    _, devices = d.get("/v1/devices")
    assert res.nvidiaUUID == devices["devices"][res.nvidiaIndex]["uuid"]
    assert len(res.allowToken) == 32 and not res.idle
    worker = allowed_worker(res.allowToken)
    try:
        _, leases = d.get("/v1/leases")
        (lease,) = leases["leases"]
        assert lease["app"] == "demo" and lease["task"] == "1234" and lease["pid"] == worker.pid
        assert lease["duration_s"] == 30 and lease["state"] == "attached"
        assert lease["cgroup"]  # the package sends the devices line of /proc/self/cgroup
        time.sleep(1.1)
        client.release(res.allowToken)
        assert d.get("/v1/leases")[1]["leases"] == []
        (row,) = ledger_row(d)
        assert row["state"] == "released" and row["pid"] == worker.pid
        assert 1000 <= row["used_ms"] < 3000 and row["requested_ms"] == 30000
        # The token is single-use: the package only warns on the 404.
        with pytest.warns(UserWarning, match="404 Not Found"):
            client.release(res.allowToken)
        # The worker lives on: the same app is told the device is idle, so the package
        # reuses it; another app is not.
        again = client.schedule(task_id=1234, request=None, duration=timedelta(seconds=5))
        assert again.idle == (again.nvidiaIndex == res.nvidiaIndex)
        client.release(again.allowToken)
    finally:
        worker.kill()
        worker.join()
    third = client.schedule(task_id=1234, request=None, duration=timedelta(seconds=5))
    assert not third.idle  # its worker is gone
    # Never allowed: 204 "GPU device not used", which the package warns about; no charge.
    with pytest.warns(RuntimeWarning, match="GPU device not used"):
        client.release(third.allowToken)
    assert ledger_row(d)[-1]["state"] == "failed" and ledger_row(d)[-1]["charged_ms"] == 0


def test_queueing_through_the_event_stream(spaces_daemon):
    d = spaces_daemon("--simulate", "1x80G", "--spaces-app", "demo")
    first = client.schedule(task_id=1, request=None, duration=timedelta(seconds=30))
    api = client.api_client()
    res, meta = api.schedule(cgroup_path="/", task_id=2, duration_seconds=20)
    assert meta.queuing_reason == "node"
    assert api.get_queue_size() == 1
    events = []
    timer = threading.Timer(1.5, client.release, args=(first.allowToken,))
    timer.start()
    for event in res:  # the package's own parser: one chunk, one event
        events.append(event)
        if event.event != "ping":
            break
    timer.join()
    assert [e.event for e in events].count("ping") >= 1
    assert events[-1].event == "succeeded"
    granted = events[-1].data
    assert granted.nvidiaIndex == 0 and len(granted.allowToken) == 32
    assert api.get_queue_size() == 0
    _, leases = d.get("/v1/leases")
    assert [lease["task"] for lease in leases["leases"]] == ["2"]
    client.release(granted.allowToken)


def test_a_caller_that_leaves_the_queue_is_forgotten(spaces_daemon):
    # Requests that never held a device are logged at debug level (floods stay quiet).
    d = spaces_daemon("--simulate", "1x80G", "--spaces-app", "demo", "--log-level", "debug")
    held = client.schedule(task_id=1, request=None, duration=timedelta(seconds=30))
    with httpx.stream("POST", d.url + "/schedule?durationSeconds=5") as r:
        assert r.headers["content-type"] == "text/event-stream"
        chunks = r.iter_text()  # kept: a dropped iterator closes the response
        assert next(chunks).startswith("event: ping")
        assert client.api_client().get_queue_size() == 1
    deadline = time.monotonic() + 5
    while client.api_client().get_queue_size() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.api_client().get_queue_size() == 0
    assert "went away while queued; cancelling" in d.log_text()
    client.release(held.allowToken)


def test_queue_timeout_fails(spaces_daemon):
    spaces_daemon("--simulate", "1x80G", "--spaces-app", "demo", "--default-max-wait", "1.5")
    held = client.schedule(task_id=1, request=None, duration=timedelta(seconds=30))
    res, _ = client.api_client().schedule(cgroup_path="/", duration_seconds=10)
    assert [e.event for e in res][-1] == "failed"
    with pytest.raises(gr.Error, match="No GPU was available after 60s"):
        client.schedule(task_id=1, request=None, duration=timedelta(seconds=10))
    client.release(held.allowToken)
    # enableQueue=false: a busy machine answers 503 at once.
    held = client.schedule(task_id=1, request=None, duration=timedelta(seconds=30))
    status, _ = client.api_client().schedule(cgroup_path="/", enable_queue=False)
    assert status == httpx.codes.SERVICE_UNAVAILABLE
    client.release(held.allowToken)


def test_quota_refusals_in_the_hosted_words(spaces_daemon):
    d = spaces_daemon("--simulate", "1x80G", "--spaces-app", "demo", "--quota-free", "12")
    request = gradio_request(visitor_token("alice", "free"))
    # Within the quota it is granted, charged for the time used, and the visitor is
    # the token's.
    res = client.schedule(task_id=1, request=request, duration=timedelta(seconds=10))
    worker = allowed_worker(res.allowToken)
    time.sleep(1.2)
    client.release(res.allowToken)
    worker.kill()
    row = ledger_row(d)[-1]
    assert (row["visitor"], row["quota_key"], row["tier"]) == ("alice", "user:alice", "free")
    assert row["requested_ms"] == 10000 and row["charged_ms"] == 2000
    with pytest.raises(gr.Error) as e:
        client.schedule(task_id=1, request=request, duration=timedelta(seconds=11))
    assert re.fullmatch(r"You have exceeded your free ZeroGPU quota \(11s requested vs\. 10s "
                        r"left\)\. Try again in 23:59:5\d\. Subscribe to Hugging Face PRO .*",
                        e.value.message), e.value.message
    _, meta = client.api_client().schedule(cgroup_path="/", token=visitor_token("a", "free"),
                                           duration_seconds=11)
    assert meta.auth == "regular"
    # More than the tier's whole quota, or than the server's maximum duration: no wait
    # helps, and the package says so.
    for seconds in (13, 400):
        with pytest.raises(gr.Error, match=rf"The requested GPU duration \({seconds}s\) is "
                                           "larger than the maximum allowed"):
            client.schedule(task_id=1, request=request, duration=timedelta(seconds=seconds))
    pro = gradio_request(visitor_token("bob", "pro"))
    _, meta = client.api_client().schedule(cgroup_path="/", token=visitor_token("b", "pro"),
                                           duration_seconds=400)
    assert meta.auth == "pro"
    res = client.schedule(task_id=1, request=pro, duration=timedelta(seconds=13))
    client.release(res.allowToken)


def test_bad_visitor_token_is_401(spaces_daemon):
    spaces_daemon("--simulate", "1x80G", "--spaces-app", "demo")
    forged = visitor_token("mallory", "pro", secret="not the daemon's secret")
    with pytest.raises(gr.Error, match="Expired ZeroGPU proxy token"):
        client.schedule(task_id=1, request=gradio_request(forged), duration=None)
    expired = visitor_token("alice", "pro", exp_in=-10)
    status, _ = client.api_client().schedule(cgroup_path="/", token=expired)
    assert status == httpx.codes.UNAUTHORIZED


def test_bad_input_is_refused_with_a_message(spaces_daemon):
    d = spaces_daemon("--simulate", "1x80G", "--spaces-app", "demo")
    http = httpx.Client(base_url=d.url)

    def refused(method, path, status, fragment, **kw):
        r = http.request(method, path, **kw)
        assert r.status_code == status, (path, r.status_code, r.text)
        assert fragment in r.json()["error"]["message"], r.json()

    refused("POST", "/schedule?durationSeconds=-1", 400, "durationSeconds must be a number")
    refused("POST", "/schedule?durationSeconds=ten", 400, "durationSeconds must be a number")
    refused("POST", "/schedule?gpuSize=medium", 400, "gpuSize must be large")
    refused("POST", "/schedule?taskId=abc", 400, "taskId must be an integer")
    refused("POST", "/schedule?enableQueue=maybe", 400, "enableQueue must be true or false")
    refused("POST", "/schedule?tokenVersion=7", 400, "tokenVersion must be 1 or 2")
    refused("POST", "/schedule?gpuSize=large&gpuSize=xlarge", 400, "given more than once")
    refused("POST", "/allow?pid=5", 400, "allowToken is required")
    refused("POST", "/allow?allowToken=xyz&pid=5", 400, "is not one this server hands out")
    token = "0" * 32
    refused("POST", f"/allow?allowToken={token}", 400, "pid is required")
    refused("POST", f"/allow?allowToken={token}&pid=1", 400, "greater than 1")
    refused("POST", f"/release?allowToken={token}&fail=perhaps", 400, "fail must be true")
    refused("POST", f"/release?allowToken={token}", 404, "is not open")
    big = b"x" * (64 * 1024 + 1)
    for path in ("/schedule", "/allow", "/release", "/startup-report", "/v1/leases"):
        # Refused by the HTTP layer on the declared length, before the body is read.
        assert http.request("POST", path, content=big).status_code == 413, path
    res = client.schedule(task_id=1, request=None, duration=timedelta(seconds=5))
    refused("POST", f"/allow?allowToken={res.allowToken}&pid=999999999", 400, "does not exist")
    refused("POST", f"/allow?allowToken={res.allowToken}&pid={d.proc.pid}", 403,
            "zerogpud itself")
    refused("POST", "/schedule", 401, "neither an app's nor the admin token",
            headers={"Authorization": "Bearer wrong"})
    assert len(d.get("/v1/leases")[1]["leases"]) == 1  # nothing changed
    client.release(res.allowToken)
    # The GET of the queue size takes no parameters and is open to the package.
    assert http.get("/queue-size").json() == 0


def test_which_app(spaces_daemon):
    d = spaces_daemon("--simulate", "1x80G")  # no default app
    status, _ = client.api_client().schedule(cgroup_path="/")
    assert status == httpx.codes.UNAUTHORIZED
    with pytest.raises(RuntimeError, match="Error while initializing ZeroGPU"):
        client.startup_report()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    httpx.post(d.url + "/v1/accounts", json={"name": "acme", "kind": "pro"}, headers=admin)
    app_token = httpx.post(d.url + "/v1/apps", json={"name": "web", "account": "acme"},
                           headers=admin).json()["token"]
    # An unmodified package carries an app token in the URL: http://app:TOKEN@host:port.
    Config.zero_device_api_url = d.url.replace("http://", f"http://web:{app_token}@")
    client.startup_report()
    res = client.schedule(task_id=1, request=None, duration=timedelta(seconds=5))
    assert d.get("/v1/leases")[1]["leases"][0]["app"] == "web"
    client.release(res.allowToken)


def test_deadline_kills_the_allowed_worker(spaces_daemon):
    d = spaces_daemon("--simulate", "1x80G", "--spaces-app", "demo", "--grace", "0.5")
    res = client.schedule(task_id=1, request=None, duration=timedelta(seconds=1))
    worker = allowed_worker(res.allowToken)
    worker.join(10)
    assert worker.exitcode == -signal.SIGKILL
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.release(res.allowToken, fail=True, allow_404=True)  # what the package does
    assert ledger_row(d)[-1]["state"] == "expired"


def test_replies_match_the_openapi_schema(spaces_daemon):
    import jsonschema
    import yaml
    from conftest import ROOT
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())

    def check(name, doc):
        jsonschema.Draft202012Validator({**spec, "$ref": f"#/components/schemas/{name}"}).validate(doc)

    d = spaces_daemon("--simulate", "1x80G", "--spaces-app", "demo", "--quota-free", "5")
    grant = httpx.post(d.url + "/schedule?durationSeconds=5&cgroupPath=/a/b")
    check("SpacesGrant", grant.json())
    check("Status", d.get("/v1/status")[1])
    refused = httpx.post(d.url + "/schedule", params={"token": visitor_token("x", "free")})
    assert refused.status_code == 429
    check("SpacesQuota", refused.json())
    assert httpx.post(d.url + "/release", params={"allowToken": grant.json()["allowToken"]}
                      ).status_code == 204


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_tcp_caller_may_only_allow_its_own_processes(spaces_daemon):
    """/allow names a process the daemon will kill: over loopback TCP the caller's uid is
    known (the kernel says whose socket it is) and held to it, as on the Unix socket."""
    d = spaces_daemon("--simulate", "1x80G", "--spaces-app", "demo")
    res = client.schedule(task_id=1, request=None, duration=timedelta(seconds=30))
    rootly = subprocess.Popen(["sleep", "60"])
    # Raw sockets, everything imported before dropping root: the interpreter's own
    # files may not be readable by nobody.
    script = (
        "import json, os, socket, subprocess, sys\n"
        "port, token, other = int(sys.argv[1]), sys.argv[2], sys.argv[3]\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "mine = subprocess.Popen(['sleep', '60'], stdout=subprocess.DEVNULL)\n"
        "try:\n"
        "    for pid in (other, mine.pid):\n"
        "        s = socket.socket()\n"
        "        s.connect(('127.0.0.1', port))\n"
        "        s.sendall(f'POST /allow?allowToken={token}&pid={pid} HTTP/1.0\\r\\n\\r\\n'.encode())\n"
        "        reply = b''.join(iter(lambda: s.recv(4096), b'')).decode()\n"
        "        head, body = reply.split('\\r\\n\\r\\n', 1)\n"
        "        print(head.split()[1], json.loads(body).get('error', {}).get('message', ''))\n"
        "finally:\n"
        "    mine.kill()\n")
    try:
        out = subprocess.run([sys.executable, "-c", script, d.url.rsplit(":", 1)[1], res.allowToken,
                              str(rootly.pid)], capture_output=True, text=True, timeout=30)
    finally:
        rootly.kill()
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stderr
    assert lines[0] == f"403 process {rootly.pid} belongs to uid 0, not to the caller (uid 65534)", out
    assert lines[1].startswith("200"), out
    client.release(res.allowToken)
