"""The visitor gateway end to end: Debian's nginx with deploy/nginx/zerogpu.conf in front of
examples/spaces-app (unmodified `spaces` + Gradio), called with the real gradio_client as
several visitors from a trusted loopback hop (docs/gateway.md)."""
import os
import signal
import threading
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from conftest import ROOT, SECRET, Daemon, free_tcp_port, ledger, start_gradio_app
from test_gateway import ADMIN, GATEWAY, nginx, nginx_config, wait_for_port  # noqa: F401

APP = ROOT / "examples" / "spaces-app" / "app.py"
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture
def gateway(tmp_path, nginx):  # noqa: F811 (the fixture)
    api_port, app_port, proxy_port = free_tcp_port(), free_tcp_port(), free_tcp_port()
    d = Daemon(tmp_path, "--simulate", "1x80G", "--listen", f"127.0.0.1:{api_port}",
               "--token", ADMIN, "--gateway-token", GATEWAY, "--visitor-secret", SECRET,
               "--spaces-app", "demo", "--quota-anonymous", "22",
               "--spaces-require-visitor", "true").start()
    env = dict(os.environ, SPACES_ZERO_GPU="true",
               SPACES_ZERO_DEVICE_API_URL=f"http://127.0.0.1:{api_port}", PORT=str(app_port),
               GRADIO_ANALYTICS_ENABLED="False")
    app = start_gradio_app(APP, env, tmp_path / "app.log", app_port, cwd=APP.parent)
    proc = nginx(nginx_config(tmp_path, proxy_port, app_port, api_port))
    wait_for_port(proxy_port, proc)
    yield d, f"http://127.0.0.1:{proxy_port}/", f"http://127.0.0.1:{app_port}/"
    os.killpg(app.pid, signal.SIGTERM)
    app.wait(20)
    assert d.stop() == 0, d.log_text()


def visitor(url, ip, user=None):
    """gradio_client as one visitor: the trusted hop in front of nginx names its address
    (and the user, as oauth2-proxy would)."""
    headers = {"X-Forwarded-For": ip}
    if user:
        headers["X-Forwarded-User"] = user
    return Client(url, headers=headers, verbose=False)


def test_visitors_through_nginx_are_charged_each_their_own(gateway):
    d, url, direct = gateway
    for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        out = visitor(url, ip).predict("hi", 0.2, api_name="/generate")
        assert out["result"] == "ih"
    keys = sorted({r["quota_key"] for r in ledger(d)})
    assert keys == ["ip:203.0.113.1", "ip:203.0.113.2", "ip:203.0.113.3"]
    for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        _, q = d.get(f"/v1/quota/ip:{ip}")
        assert q["tier"] == "anonymous" and 0 < q["used_s"] <= 2, q

    # Over quota (22 s a day; a call reserves its 20 s): the hosted message.
    eve = visitor(url, "203.0.113.9")
    eve.predict("x", 2.5, api_name="/generate")
    with pytest.raises(AppError) as e:
        eve.predict("x", 0, api_name="/generate")
    assert "You have exceeded your ZeroGPU quota (20s requested vs. 1" in str(e.value), \
        str(e.value)

    # Straight to Gradio, past nginx: no visitor token, refused ([spaces] require_visitor)
    # with 401, which the `spaces` client words as the hosted service's missing token.
    leases = len(ledger(d))
    with pytest.raises(AppError) as e:
        Client(direct, verbose=False).predict("x", 0, api_name="/generate")
    assert str(e.value) == "Expired ZeroGPU proxy token"
    assert len(ledger(d)) == leases


def test_a_signed_in_pro_user_is_served_before_waiting_anonymous_visitors(gateway):
    d, url, _ = gateway
    d.cli("visitor", "tier", "user:alice", "pro")
    results, order = {}, []

    def call(name, client, seconds):
        results[name] = client.predict(name, seconds, api_name="/generate")
        order.append(name)

    # One device: a first call holds it; an anonymous visitor queues, then alice.
    holder = threading.Thread(target=call, args=("holder", visitor(url, "203.0.113.20"), 2.5))
    holder.start()
    time.sleep(1.0)
    anon = threading.Thread(target=call, args=("anon", visitor(url, "203.0.113.21"), 0.2))
    anon.start()
    time.sleep(0.3)
    alice = threading.Thread(target=call,
                             args=("alice", visitor(url, "203.0.113.22", "alice"), 0.2))
    alice.start()
    for t in (holder, anon, alice):
        t.join(60)
    assert set(results) == {"holder", "anon", "alice"}
    rows = {r["quota_key"]: r for r in ledger(d)}
    assert rows["user:alice"]["tier"] == "pro"
    assert rows["user:alice"]["started_at"] <= rows["ip:203.0.113.21"]["started_at"]


def test_the_zerogpu_package_behind_the_same_gateway(tmp_path, nginx):  # noqa: F811
    package_app = ROOT / "examples" / "zerogpu-app" / "app.py"
    api_port, app_port, proxy_port = free_tcp_port(), free_tcp_port(), free_tcp_port()
    d = Daemon(tmp_path, "--simulate", "1x80G", "--listen", f"127.0.0.1:{api_port}",
               "--token", ADMIN, "--gateway-token", GATEWAY, "--visitor-secret",
               SECRET).start()
    env = dict(os.environ, ZEROGPU_SOCKET=str(d.socket), PORT=str(app_port),
               GRADIO_ANALYTICS_ENABLED="False")
    app = start_gradio_app(package_app, env, tmp_path / "app.log", app_port, cwd=None)
    try:
        proc = nginx(nginx_config(tmp_path, proxy_port, app_port, api_port))
        wait_for_port(proxy_port, proc)
        url = f"http://127.0.0.1:{proxy_port}/"
        d.cli("visitor", "tier", "user:bea", "enterprise")
        assert visitor(url, "198.51.100.7").predict("ab", 0.1, api_name="/generate")[
            "result"] == "ba"
        assert visitor(url, "198.51.100.8", "bea").predict("cd", 0.1, api_name="/generate")[
            "result"] == "dc"
        rows = ledger(d)
        assert [(r["quota_key"], r["tier"]) for r in rows] == [
            ("ip:198.51.100.7", "anonymous"), ("user:bea", "enterprise")]
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        app.wait(20)
        assert d.stop() == 0, d.log_text()
