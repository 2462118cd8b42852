"""examples/zerogpu-app: zerogpu's own package under real Gradio, called with gradio_client.

The visitor comes from the X-IP-Token header Gradio received, with no code in the app.
"""
import os
import signal
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from conftest import ROOT, SECRET, Daemon, free_tcp_port, ledger, start_gradio_app, visitor_token

APP = ROOT / "examples" / "zerogpu-app" / "app.py"
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("python-gradio")
    port = free_tcp_port()
    d = Daemon(tmp, "--simulate", "1x80G", "--visitor-secret", SECRET, "--quota-free", "12").start()
    env = dict(os.environ, ZEROGPU_SOCKET=str(d.socket), PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False")
    app = start_gradio_app(APP, env, tmp / "app.log", port, cwd=None)
    url = f"http://127.0.0.1:{port}/"
    yield d, url
    os.killpg(app.pid, signal.SIGTERM)
    app.wait(20)
    assert d.stop() == 0, d.log_text()


def client(url, sub, tier):
    return Client(url, headers={"X-IP-Token": visitor_token(sub, tier)}, verbose=False)


def test_the_visitor_comes_from_the_gradio_request(served):
    d, url = served
    out = client(url, "zoe", "pro").predict("hello", 0.2, api_name="/generate")
    assert out["result"] == "olleh" and out["worker_pid"] != out["app_pid"]
    assert out["device"].startswith("GPU-")
    row = [r for r in ledger(d) if r["visitor"] == "zoe"][-1]
    assert (row["tier"], row["requested_ms"], row["pid"]) == ("pro", 20000, out["worker_pid"])
    assert client(url, "zoe", "pro").predict("a b c", api_name="/stream") == "a b c"
    assert client(url, "zoe", "pro").predict("hey", api_name="/shout") == "HEY"
    rows = [r for r in ledger(d) if r["visitor"] == "zoe"]
    assert [r["requested_ms"] for r in rows] == [20000, 8000, 10000]  # stream: 5 s + 3 words


def test_quota_exhaustion_reaches_the_caller(served):
    d, url = served
    free = client(url, "yan", "free")  # 12 s a day: the 20 s request is refused
    with pytest.raises(AppError) as err:
        free.predict("x", 0, api_name="/generate")
    # Shown to the visitor as a gr.Error, in the daemon's words.
    assert "You have exceeded your free GPU quota (20s requested vs. 12s left)" in str(err.value)
    assert not [r for r in ledger(d) if r["visitor"] == "yan"]


def follow(job):
    """Every status update the client received while the job ran (progress bars, toasts)."""
    while not job.done():
        time.sleep(0.02)
    updates = job.communicator.updates  # gradio_client queues each one as it comes
    seen = []
    while not updates.empty():
        update = updates.get_nowait()
        if hasattr(update, "log"):  # a StatusUpdate, not an output
            seen.append(update)
    return seen


def test_progress_and_toasts_from_the_worker_reach_the_page(served):
    d, url = served
    job = client(url, "pia", "pro").submit(5, api_name="/denoise")
    statuses = follow(job)
    assert job.result() == "5 steps"
    logs = [st.log for st in statuses if st.log]
    assert ("Starting on the GPU", "info") in logs and ("Almost done", "warning") in logs
    bars = [(u.index, u.length, u.desc) for st in statuses for u in (st.progress_data or [])]
    assert {u[2] for u in bars} == {"Denoising"} and {u[1] for u in bars} == {5}
    assert len({u[0] for u in bars}) >= 3  # the bar moved while the worker ran


def test_gr_error_raised_in_the_worker_is_the_visitors_error(served):
    d, url = served
    c = client(url, "pia", "pro")
    assert c.predict("a cat", api_name="/check") == "fine"
    with pytest.raises(AppError) as err:
        c.predict("a forbidden cat", api_name="/check")
    assert "Cannot draw 'a forbidden cat'" in str(err.value)
    assert err.value.title == "Bad prompt"


def test_an_overrun_shows_the_hosted_toasts(served):
    d, url = served
    job = client(url, "pia", "pro").submit(30, api_name="/overrun")
    statuses = follow(job)
    assert ("GPU task is exceeding its requested duration and might be aborted",
            "warning") in [st.log for st in statuses if st.log]
    with pytest.raises(AppError) as err:
        job.result()
    assert "GPU task aborted: exceeded its 1 s duration" in str(err.value)
    assert err.value.title == "ZeroGPU worker error"
