"""examples/zerogpu-app: zerogpu's own package under real Gradio, called with gradio_client.

The visitor comes from the X-IP-Token header Gradio received, with no code in the app.
"""
import os
import signal

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
