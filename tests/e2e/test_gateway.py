"""The visitor gateway's side in zerogpud (docs/gateway.md): GET /v1/visitor-token for a
trusted proxy, the tiers of signed-in visitors, and [spaces] require_visitor."""
import base64
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

import jsonschema

from conftest import ROOT, SECRET, ZEROGPUD, free_tcp_port, ledger
from test_daemon import SPEC, schema_validator

ADMIN = "the-admin-token-of-the-gateway-tests"
GATEWAY = "the-gateway-token-of-the-gateway-tests"


def claims(token):
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def gateway_daemon(make_daemon, *args):
    port = free_tcp_port()
    d = make_daemon("--simulate", "1x80G", "--visitor-secret", SECRET, "--listen",
                    f"127.0.0.1:{port}", "--token", ADMIN, "--gateway-token", GATEWAY,
                    "--spaces-app", "demo", *args)
    d.port = port
    return d


def tcp(d, path, token=None, headers=None, method="GET"):
    """(status, headers, JSON body) of a request over TCP."""
    req = urllib.request.Request(f"http://127.0.0.1:{d.port}{path}", method=method,
                                 data=b"" if method != "GET" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read() or b"null")


MINTED = SPEC["paths"]["/v1/visitor-token"]["get"]["responses"]["200"]["content"][
    "application/json"]["schema"]


def mint(d, **headers):
    status, hdrs, body = tcp(d, "/v1/visitor-token", GATEWAY, headers)
    assert status == 200, body
    assert hdrs["X-IP-Token"] == body["token"] and hdrs["Cache-Control"] == "no-store"
    jsonschema.Draft202012Validator(MINTED).validate(body)
    return body


def test_an_anonymous_visitor_is_charged_by_the_address_the_proxy_saw(make_daemon):
    d = gateway_daemon(make_daemon)
    t0 = time.time()
    body = mint(d, **{"X-Real-IP": "203.0.113.7"})
    c = claims(body["token"])
    assert c["sub"] == "ip:203.0.113.7" and c["tier"] == "anonymous"
    assert c["ip"] == "203.0.113.7" and t0 + 299 <= c["exp"] <= time.time() + 301
    # The app forwards it with its call: the visitor is charged as ip:ADDR.
    s, ev = d.acquire({"visitor_token": body["token"], "duration_s": 5})
    assert ev["event"] == "granted"
    s.close()
    _, q = d.get("/v1/quota/ip:203.0.113.7")
    assert q["tier"] == "anonymous"
    assert [r["quota_key"] for r in ledger(d)] == ["ip:203.0.113.7"]
    # X-Forwarded-For with one address does as well; IPv6 too.
    assert claims(mint(d, **{"X-Forwarded-For": "2001:db8::5"})["token"])["sub"] == \
        "ip:2001:db8::5"


def test_a_signed_in_user_gets_the_tier_the_operator_gave(make_daemon):
    d = gateway_daemon(make_daemon)
    assert claims(mint(d, **{"X-Real-IP": "198.51.100.1",
                             "X-Auth-Request-User": "alice"})["token"])["tier"] == "free"
    r = d.cli("visitor", "tier", "user:alice", "pro")
    assert r.returncode == 0 and r.stdout == "user:alice pro\n", r.stderr
    status, body = d.get("/v1/visitors/user:alice/tier")
    assert status == 200
    schema_validator("VisitorTier").validate(body)
    assert d.cli("visitor", "tier", "user:alice").stdout == "user:alice pro\n"
    token = mint(d, **{"X-Real-IP": "198.51.100.1", "X-Auth-Request-User": "alice"})["token"]
    assert claims(token)["sub"] == "alice" and claims(token)["tier"] == "pro"
    s, ev = d.acquire({"visitor_token": token, "duration_s": 5})
    s.close()
    assert ledger(d)[-1]["quota_key"] == "user:alice" and ledger(d)[-1]["tier"] == "pro"
    # The tier outlives a restart (it is in the ledger).
    d.stop()
    d.start()
    assert d.cli("visitor", "tier", "user:alice").stdout == "user:alice pro\n"
    for bad, why in ((["visitor", "tier", "ip:1.2.3.4", "pro"], "not a signed-in visitor"),
                     (["visitor", "tier", "user:alice", "gold"], "tier must be free, pro")):
        r = d.cli(*bad)
        assert r.returncode != 0 and why in r.stderr, r.stderr


def test_only_the_gateway_mints_and_its_token_does_nothing_else(make_daemon):
    d = gateway_daemon(make_daemon)
    ip = {"X-Real-IP": "203.0.113.9"}
    assert tcp(d, "/v1/visitor-token", None, ip)[0] == 401
    assert tcp(d, "/v1/visitor-token", "wrong", ip)[0] == 401
    status, _, body = tcp(d, "/v1/visitor-token", ADMIN, ip)
    assert status == 403 and "only the visitor gateway" in body["error"]["message"]
    status, _, body = tcp(d, "/v1/status", GATEWAY)
    assert status == 403 and "mints visitor tokens only" in body["error"]["message"]
    status, _, _ = tcp(d, "/v1/leases", GATEWAY, method="POST")
    assert status == 403
    # On the Unix socket: root (this test) may; the tiers are the admin's.
    status, body = d.get("/v1/visitor-token")
    assert status == 400  # allowed, but no address was sent
    status, _, body = tcp(d, "/v1/visitors/user:bob/tier", GATEWAY, method="PUT")
    assert status == 403


def test_bad_visitor_headers_are_refused_with_the_reason(make_daemon):
    d = gateway_daemon(make_daemon, "--gateway-user-header", "X-Forwarded-User")
    cases = [
        ({}, "no visitor address"),
        ({"X-Forwarded-For": "203.0.113.1, 10.0.0.1"}, "names several addresses"),
        ({"X-Real-IP": "not-an-address"}, "is not an IPv4 or IPv6 address"),
        ({"X-Real-IP": "1" * 300}, "is not an IPv4 or IPv6 address"),
        ({"X-Real-IP": "203.0.113.1", "X-Forwarded-User": "al ice"}, "is not a user name"),
        ({"X-Real-IP": "203.0.113.1", "X-Forwarded-User": "a" * 65}, "is not a user name"),
    ]
    for headers, why in cases:
        status, _, body = tcp(d, "/v1/visitor-token", GATEWAY, headers)
        assert status == 400 and why in body["error"]["message"], (headers, body)
    # The header the setting names carries the user; the default one is not read then.
    token = mint(d, **{"X-Real-IP": "203.0.113.1", "X-Forwarded-User": "carol",
                       "X-Auth-Request-User": "mallory"})["token"]
    assert claims(token)["sub"] == "carol"


def test_require_visitor_refuses_calls_that_bypass_the_gateway(make_daemon):
    d = gateway_daemon(make_daemon, "--spaces-require-visitor", "true")
    status, body = d.call("POST", "/schedule?durationSeconds=5")
    assert status == 401 and "visitor gateway" in body["error"]["message"]
    token = mint(d, **{"X-Real-IP": "203.0.113.20"})["token"]
    status, body = d.call("POST", f"/schedule?durationSeconds=5&token={token}")
    assert status == 200 and body["allowToken"], body
    d.call("POST", f"/release?allowToken={body['allowToken']}")


def test_gateway_settings_are_checked_at_start(tmp_path):
    def start(*args):
        return subprocess.run([str(ZEROGPUD), "--simulate", "1x80G", "--socket",
                               str(tmp_path / "s.sock"), "--state-dir", str(tmp_path / "st"),
                               *args], capture_output=True, text=True, timeout=10)
    r = start("--gateway-token", GATEWAY)
    assert r.returncode == 2 and "--gateway-token needs --visitor-secret" in r.stderr
    r = start("--gateway-token", ADMIN, "--token", ADMIN, "--visitor-secret", SECRET)
    assert r.returncode == 2 and "must differ from --token" in r.stderr
    r = start("--spaces-require-visitor", "yes")
    assert r.returncode == 2 and "takes true or false" in r.stderr
    r = start("--gateway-user-header", "X Bad")
    assert r.returncode == 2 and "HTTP header name" in r.stderr
    r = start("--gateway-token-ttl", "5")
    assert r.returncode == 2 and "10 to 3600 seconds" in r.stderr


# ---------------------------------------------------------------------------
# deploy/nginx/zerogpu.conf with Debian's nginx.
# ---------------------------------------------------------------------------

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REQUIRED = os.environ.get("ZEROGPU_REQUIRE_NGINX") == "1"  # .ci/run: never skip


def nginx_config(tmp_path, listen, app_port, zerogpud_port, user_header=True):
    """The shipped server block, its ports and token file filled in, behind a trusted
    loopback hop (as a load balancer or oauth2-proxy would be)."""
    conf = (ROOT / "deploy" / "nginx" / "zerogpu.conf").read_text()
    token = tmp_path / "nginx-gateway-token.conf"
    token.write_text(f'set $zerogpu_gateway_token "{GATEWAY}";\n')
    for old, new in (("listen 8080;", f"listen 127.0.0.1:{listen};"),
                     ("server 127.0.0.1:7860;", f"server 127.0.0.1:{app_port};"),
                     ("http://127.0.0.1:8650/", f"http://127.0.0.1:{zerogpud_port}/"),
                     ("/etc/zerogpu/nginx-gateway-token.conf", str(token)),
                     ("# set_real_ip_from 10.0.0.0/8;", "set_real_ip_from 127.0.0.1;"),
                     ("# real_ip_header X-Forwarded-For;", "real_ip_header X-Forwarded-For;")):
        assert old in conf, old
        conf = conf.replace(old, new)
    if user_header:
        conf = conf.replace("# set $zerogpu_user $http_x_forwarded_user;\n    set $zerogpu_user \"\";",
                            "set $zerogpu_user $http_x_forwarded_user;")
    main = tmp_path / "nginx.conf"
    main.write_text(f"""
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    server_tokens off;
    include {tmp_path}/zerogpu.conf;
}}
""")
    (tmp_path / "zerogpu.conf").write_text(conf)
    return main


@pytest.fixture
def nginx(tmp_path):
    if not os.path.exists(NGINX):
        (pytest.fail if REQUIRED else pytest.skip)("nginx is not installed (scripts/install-deps)")
    started = []

    def start(main):
        p = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(main), "-g",
                              f"daemon off; pid {tmp_path}/nginx.pid; "
                              f"error_log {tmp_path}/nginx-error.log;"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started.append(p)
        return p

    yield start
    for p in started:
        p.terminate()
        p.wait(timeout=10)


class Echo(http.server.BaseHTTPRequestHandler):
    """The app behind nginx: answers with the headers it was given."""

    def do_GET(self):
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def wait_for_port(port, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def through(port, path="/", headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def test_nginx_hands_every_visitor_their_own_token(make_daemon, nginx, tmp_path):
    d = gateway_daemon(make_daemon)
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    port = free_tcp_port()
    proc = nginx(nginx_config(tmp_path, port, app.server_address[1], d.port))
    try:
        wait_for_port(port, proc)
        seen = {}
        for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
            # The visitor's own X-IP-Token and user headers are replaced, never passed on.
            status, got = through(port, headers={"X-Forwarded-For": ip,
                                                 "X-IP-Token": "forged",
                                                 "X-Auth-Request-User": "mallory"})
            assert status == 200
            c = claims(got["x-ip-token"])
            assert c["sub"] == f"ip:{ip}" and c["tier"] == "anonymous"
            assert got["x-real-ip"] == ip and "x-auth-request-user" not in got
            seen[ip] = got["x-ip-token"]
        assert len(set(seen.values())) == 3
        # The signed-in user the login proxy names gets the tier the operator gave.
        d.cli("visitor", "tier", "user:alice", "pro")
        status, got = through(port, headers={"X-Forwarded-For": "203.0.113.4",
                                             "X-Forwarded-User": "alice"})
        c = claims(got["x-ip-token"])
        assert (c["sub"], c["tier"], c["ip"]) == ("alice", "pro", "203.0.113.4")
        assert got["x-auth-request-user"] == "alice"
        # Visitors never reach the token endpoint themselves.
        assert through(port, "/_zerogpu/visitor-token")[0] == 404
        # A bad user name stops the request at nginx (zerogpud refused to mint).
        status, _ = through(port, headers={"X-Forwarded-For": "203.0.113.5",
                                           "X-Forwarded-User": "al ice"})
        assert status == 500
    finally:
        app.shutdown()
