"""examples/spaces-app, unmodified `spaces` + Gradio, called with the real gradio_client.

One daemon (one simulated device) and one app serve the whole module: starting Gradio
takes seconds. Each test uses visitors of its own so their quotas do not mix.
"""
import os
import signal
import threading
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from conftest import ROOT, SECRET, Daemon, free_tcp_port, ledger, start_gradio_app, visitor_token

APP = ROOT / "examples" / "spaces-app" / "app.py"
# The package opens an HTTP client per call and never closes it; Pydantic warns of its age.
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spaces-gradio")
    api_port, app_port = free_tcp_port(), free_tcp_port()
    d = Daemon(tmp, "--simulate", "1x80G", "--listen", f"127.0.0.1:{api_port}", "--token",
               "admin-token-for-the-gradio-tests", "--spaces-app", "demo", "--visitor-secret",
               SECRET, "--quota-free", "22").start()
    # The two variables of docs/spaces-compat.md, and nothing else.
    env = dict(os.environ, SPACES_ZERO_GPU="true",
               SPACES_ZERO_DEVICE_API_URL=f"http://127.0.0.1:{api_port}", PORT=str(app_port),
               GRADIO_ANALYTICS_ENABLED="False")
    app = start_gradio_app(APP, env, tmp / "app.log", app_port, cwd=APP.parent)
    url = f"http://127.0.0.1:{app_port}/"
    yield d, url
    os.killpg(app.pid, signal.SIGTERM)
    app.wait(20)
    assert d.stop() == 0, d.log_text()


def visitor_client(url, sub, tier):
    return Client(url, headers={"X-IP-Token": visitor_token(sub, tier)}, verbose=False)


def test_the_decorated_function_runs_in_a_worker_holding_a_lease(served):
    d, url = served
    assert "app demo: `spaces` start-up report" in d.log_text()
    alice = visitor_client(url, "alice", "pro")
    out = alice.predict("hello", 1, api_name="/generate")
    assert out["result"] == "olleh" and out["worker_pid"] != out["app_pid"]
    row = [r for r in ledger(d) if r["visitor"] == "alice"][-1]
    assert row["app"] == "demo" and row["quota_key"] == "user:alice"
    assert row["requested_ms"] == 20000 and row["state"] == "released"
    assert row["pid"] == out["worker_pid"] and 1000 <= row["used_ms"] < 5000
    assert row["charged_ms"] == -(-row["used_ms"] // 1000) * 1000
    # The next call is told the device is idle and runs in the same worker, which
    # the daemon binds to the new lease itself (the package sends no second /allow).
    again = alice.predict("again", 0.2, api_name="/generate")
    assert again["worker_pid"] == out["worker_pid"]
    row = [r for r in ledger(d) if r["visitor"] == "alice"][-1]
    assert row["pid"] == out["worker_pid"] and row["state"] == "released"
    assert row["charged_ms"] >= 1000
    streamed = visitor_client(url, "alice", "pro").predict("a b c", api_name="/stream")
    assert streamed == "a b c"


def test_concurrent_calls_serialize_through_the_queue(served):
    d, url = served
    results = {}

    def call(who):
        results[who] = visitor_client(url, who, "pro").predict(who, 1.5, api_name="/generate")

    t0 = time.monotonic()
    threads = [threading.Thread(target=call, args=(who,)) for who in ("bob", "carol")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(results) == {"bob", "carol"}
    assert time.monotonic() - t0 >= 3.0
    rows = sorted((r for r in ledger(d) if r["visitor"] in ("bob", "carol")),
                  key=lambda r: r["started_at"])
    assert len(rows) == 2 and rows[1]["started_at"] >= rows[0]["ended_at"]  # never together
    assert all(r["state"] == "released" and r["pid"] and r["charged_ms"] >= 2000 for r in rows)


def test_quota_exhaustion_reaches_the_caller_in_the_hosted_words(served):
    d, url = served
    dave = visitor_client(url, "dave", "free")
    dave.predict("x", 2.5, api_name="/generate")  # charged 3 s or so of 22
    with pytest.raises(AppError) as e:
        dave.predict("x", 0, api_name="/generate")
    message = str(e.value)
    assert "You have exceeded your free ZeroGPU quota (20s requested vs. 1" in message, message
    assert "s left). Try again in 23:59:5" in message, message
    assert [r["visitor"] for r in ledger(d)].count("dave") == 1  # the refusal took no lease
