"""GET /v1/events: the live event stream (docs/openapi.yaml, docs/dashboard.md).

Every event is checked against its schema as it is read (events_client.py). The
dashboard's own sign-in, the cookie, is tested here without a browser too.
"""
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

from conftest import free_tcp_port
from events_client import EventStream, TCPHTTP, lease_event

ADMIN = "events-admin-token-0123456789abcdef"
DROPPED = "event stream: a subscriber reads too slowly"


def test_the_stream_starts_with_a_snapshot_and_follows_each_lease(make_daemon):
    d = make_daemon("--simulate", "1x80G", "--split", "2", "--grace", "0.3")
    held, _ = d.acquire({"duration_s": 30, "app": "alpha", "visitor_ip": "10.0.0.1"})
    s = EventStream(d.http())
    assert s.status == 200 and s.headers["content-type"] == "text/event-stream"
    name, snap = s.next()
    assert name == "snapshot"
    assert [(l["gpu"], l["slot"]) for l in snap["lanes"]] == [(0, 0), (0, 1)]
    assert [l["app"] for l in snap["leases"]] == ["alpha"] and snap["queue"] == []
    assert snap["leases"][0]["tier"] == "anonymous" and len(snap["leases"][0]["slots"]) == 1
    assert snap["counters"]["granted"] == 1
    assert [v["visitor"] for v in snap["visitors"]] == ["ip:10.0.0.1"]

    # A second lease fills the GPU; a third waits, and is told when it moves.
    b, ev_b = d.acquire({"duration_s": 1, "app": "beta", "visitor_ip": "10.0.0.2"})
    (_, granted), seen = s.until(lease_event("granted", ev_b["lease"]))
    # The visitor's cost was held when the request was accepted, before its grant.
    holds = [e for n, e in seen if n == "quota" and e["visitor"] == "ip:10.0.0.2"]
    assert holds and holds[0]["kind"] == "reserved" and holds[0]["reserved_s"] > 0
    assert granted["lease"]["app"] == "beta" and granted["lease"]["slots"] != snap["leases"][0]["slots"]
    c, ev_c = d.acquire({"duration_s": 30, "app": "gamma"})
    (_, queued), _ = s.until(lease_event("queued", ev_c["lease"]))
    assert queued["lease"]["position"] == 1 and queued["lease"]["reason"] == "node"

    # beta runs past its deadline holding a process: expired, killed after the grace,
    # ended as expired, its visitor charged; then gamma is granted its slot.
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    status, _ = d.call("POST", f"/v1/leases/{ev_b['lease']}/attach", {"pid": sleeper.pid})
    assert status == 200
    (_, expired), _ = s.until(lease_event("expired", ev_b["lease"]))
    (_, killed), _ = s.until(lease_event("killed", ev_b["lease"]))
    (_, ended), seen = s.until(lease_event("ended", ev_b["lease"]))
    assert ended["lease"]["state"] == "expired" and ended["lease"]["ended_ms"] >= ended["lease"]["granted_ms"]
    sleeper.wait(timeout=5)
    # The settlement comes with the end, right before it.
    quota = [e for n, e in seen if n == "quota" and e.get("lease") == ev_b["lease"]][0]
    assert quota["kind"] == "settled" and quota["reserved_s"] == 0
    assert quota["visitor"] == "ip:10.0.0.2" and quota["charged_s"] > 0
    assert quota["used_s"] == quota["charged_s"] and quota["daily_s"] > 0
    s.until(lease_event("granted", ev_c["lease"]))
    assert s.ids == sorted(s.ids) and len(set(s.ids)) == len(s.ids)

    # A new subscriber sees the ended lease in the last hour's history, and the counters.
    s2 = EventStream(d.http())
    _, snap2 = s2.next()
    assert [l["id"] for l in snap2["history"]] == [ev_b["lease"]]
    assert snap2["history"][0]["state"] == "expired"
    assert snap2["counters"]["expired"] == 1 and snap2["counters"]["killed"] == 1
    assert snap2["counters"]["granted"] == 3
    for conn in (held, b, c):
        conn.close()
    s.until(lease_event("ended", ev_c["lease"]))
    s.close()
    s2.close()


def test_a_stream_ends_when_the_daemon_stops(make_daemon):
    d = make_daemon("--simulate", "1x80G")
    s = EventStream(d.http())
    s.next()
    assert d.stop() == 0
    s.conn.sock.settimeout(5)
    assert s.conn.read_chunk() is None  # the reply's end: an EventSource reconnects


def test_an_app_token_sees_its_own_apps_events_only(make_daemon):
    port = free_tcp_port()
    d = make_daemon("--simulate", "3x80G", "--listen", f"127.0.0.1:{port}", "--token", ADMIN)
    assert d.cli("account", "add", "acme", "--kind", "pro").returncode == 0
    tokens = {}
    for app in ("mine", "theirs"):
        r = d.cli("app", "add", app, "--account", "acme")
        assert r.returncode == 0, r.stderr
        tokens[app] = r.stdout.split("token: ")[1].split()[0]
    theirs, _ = d.acquire({"duration_s": 30, "app": "theirs", "visitor_ip": "10.1.1.1"})
    s = EventStream(TCPHTTP(port), {"Authorization": f"Bearer {tokens['mine']}"})
    assert s.status == 200
    _, snap = s.next()
    assert snap["leases"] == [] and "visitors" not in snap
    other, _ = d.acquire({"duration_s": 30, "app": "theirs"})
    mine, ev = d.acquire({"duration_s": 30, "app": "mine"})
    (_, granted), seen = s.until(lease_event("granted"))
    assert granted["lease"]["id"] == ev["lease"] and len(seen) == 1  # nothing of theirs before
    for conn in (theirs, other, mine):
        conn.close()
    (_, ended), seen = s.until(lease_event("ended"))
    assert ended["lease"]["id"] == ev["lease"]
    assert all(e["lease"]["app"] == "mine" for n, e in seen if n == "lease")
    assert all(e["app"] == "mine" for n, e in seen if n != "lease")
    s.close()
    # Without a token, nothing.
    s = EventStream(TCPHTTP(port))
    assert s.status == 401
    s.close()


def test_a_slow_reader_is_dropped_and_the_daemon_keeps_serving(make_daemon):
    d = make_daemon("--simulate", "2x80G")
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(str(d.socket))
    slow.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    fast = EventStream(d.http())
    fast.next()
    ended = []

    def read_fast():  # a reader that keeps up, in its own thread
        while True:
            (_, e), _ = fast.until(lease_event("ended"), timeout=60)
            ended.append(e["lease"]["id"])
            if e["lease"]["task"] == "last":
                return

    reader = threading.Thread(target=read_fast)
    reader.start()
    # Lease after lease: each makes a granted and an ended event of about 1 KB. The slow
    # reader reads nothing; the kernel's buffers fill, then the daemon's, to its bound.
    task = "x" * 200
    ids, slowest = [], 0.0
    for i in range(900):
        t0 = time.monotonic()
        conn, ev = d.acquire({"duration_s": 30, "task": task, "visitor_ip": f"10.2.{i // 250}.{i % 250}"})
        conn.close()
        slowest = max(slowest, time.monotonic() - t0)
        ids.append(ev["lease"])
        if i % 25 == 0 and DROPPED in d.log_text():
            break
    conn, ev = d.acquire({"task": "last"})
    conn.close()
    ids.append(ev["lease"])
    reader.join(timeout=60)
    assert DROPPED in d.log_text()
    assert slowest < 1.0, f"a lease took {slowest:.3f} s while a reader was slow"
    # The reader that kept up missed nothing: every lease's end, in order.
    assert ended == ids
    # The slow one's connection was closed: what was sent before comes out, then EOF.
    slow.settimeout(10)
    got = 0
    while True:
        chunk = slow.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    slow.close()
    assert got > 0  # the head and the first events; the rest was dropped with it
    _, metrics = d.get("/metrics")
    assert re.search(r"^zerogpu_event_streams_dropped_total 1$", metrics, re.M), metrics
    assert re.search(r"^zerogpu_event_streams 1$", metrics, re.M)
    fast.close()


# ---------------------------------------------------------------------------
# The dashboard's sign-in on TCP, without a browser (test_dashboard.py has one).

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):
        return None


def fetch(url, data=None, headers=None, method=None):
    """(status, headers, body) without following redirects."""
    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_the_dashboard_needs_the_admin_token_on_tcp(make_daemon):
    port = free_tcp_port()
    d = make_daemon("--simulate", "1x80G", "--listen", f"127.0.0.1:{port}", "--token", ADMIN)
    base = f"http://127.0.0.1:{port}"
    # Nothing readable without the token: the token page, and 401s.
    status, h, body = fetch(base + "/ui/")
    assert status == 401 and b'action="/ui/login"' in body and b"<script" not in body
    assert b'id="wrong-token"' not in body
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    for path in ("/ui/app.js", "/ui/index.html", "/v1/events", "/v1/usage"):
        assert fetch(base + path)[0] == 401, path
    assert fetch(base + "/ui/?token=wrong-token-0123456789abcdefghij")[0] == 401
    # A link with ?token= signs in: an HttpOnly cookie, and the token out of the address.
    status, h, _ = fetch(base + f"/ui/?token={ADMIN}")
    assert status == 303 and h["Location"] == "/ui/"
    cookie = h["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and ADMIN not in cookie
    value = cookie.split(";")[0]
    jar = {"Cookie": value}
    status, h, body = fetch(base + "/ui/", headers=jar)
    assert status == 200 and b'src="app.js"' in body
    assert "script-src 'self'" in h["Content-Security-Policy"] and h["X-Content-Type-Options"] == "nosniff"
    status, h, body = fetch(base + "/ui/app.js", headers=jar)
    assert status == 200 and h["Content-Type"].startswith("text/javascript") and b"EventSource" in body
    assert fetch(base + "/ui/nothing.js", headers=jar)[0] == 404
    assert fetch(base + "/v1/usage", headers=jar)[0] == 200
    s = EventStream(TCPHTTP(port), jar)
    assert s.status == 200 and s.next()[0] == "snapshot"
    s.close()
    # The cookie reads; it changes nothing (a page elsewhere could send it).
    status, _, _ = fetch(base + "/v1/accounts", data=b'{"name": "x", "kind": "free"}',
                         headers={**jar, "Content-Type": "application/json"})
    assert status == 401
    # A forged or stretched cookie is nobody's.
    expiry, mac = value.split("=", 1)[1].split(".")
    for forged in (f"{int(expiry) + 3600}.{mac}", f"{expiry}.{'0' * 64}", "1.", "x" * 300):
        assert fetch(base + "/ui/", headers={"Cookie": f"zerogpu_ui={forged}"})[0] == 401, forged
    # The token page's form signs in the same way; signing out clears the cookie.
    status, h, _ = fetch(base + "/ui/login", data=f"token={ADMIN}".encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and h["Set-Cookie"].startswith("zerogpu_ui=")
    status, h, body = fetch(base + "/ui/login", data=b"token=nope",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 401 and h["X-Zerogpu-Login"] == "wrong token"
    assert b'id="wrong-token"' in body and b"<!--" not in body
    status, h, _ = fetch(base + "/ui/logout", data=b"", headers=jar)
    assert status == 303 and "Max-Age=0" in h["Set-Cookie"]
    assert fetch(base + "/ui")[0] == 308
    # On the Unix socket the page is there at once, as /v1/status is.
    status, body = d.get("/ui/")
    assert status == 200 and 'src="app.js"' in body
