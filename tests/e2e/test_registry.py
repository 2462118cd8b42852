"""Accounts, apps, app tokens and who may change them."""
import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import pytest

from nobody import public_dir  # noqa: F401 (a fixture)
from conftest import Daemon


def test_accounts_apps_and_the_hosting_limit(daemon1):
    r = daemon1.cli("account", "add", "acme", "--kind", "free")
    assert r.returncode == 0 and r.stdout == "account acme (free) added\n"
    tokens = []
    for name in ("one", "two"):
        r = daemon1.cli("app", "add", name, "--account", "acme")
        assert r.returncode == 0, r.stderr
        tokens.append(r.stdout.split("token: ")[1].split()[0])
    assert all(t.startswith("zgpa_") and len(t) == 53 for t in tokens)
    r = daemon1.cli("app", "add", "three", "--account", "acme")
    assert r.returncode == 1
    assert ("account 'acme' already hosts 2 apps, the most a free account may host; remove "
            "one, or use a pro (10) or org (50) account") in r.stderr
    status, body = daemon1.call("POST", "/v1/apps", {"name": "three", "account": "acme"})
    assert status == 403 and body["error"]["code"] == "hosting_limit"
    assert daemon1.call("POST", "/v1/apps", {"name": "x", "account": "nobody"})[0] == 404
    assert daemon1.call("POST", "/v1/accounts", {"name": "acme", "kind": "pro"})[0] == 409
    status, body = daemon1.call("POST", "/v1/accounts", {"name": "b", "kind": "gold"})
    assert status == 400 and "unknown account kind 'gold': use free, pro, org" in body["error"]["message"]
    lines = daemon1.cli("account", "list").stdout.splitlines()
    assert lines[0].split() == ["ACCOUNT", "KIND", "APPS"] and lines[1].split() == ["acme", "free", "2"]
    assert daemon1.cli("app", "rm", "one").returncode == 0
    assert daemon1.cli("app", "add", "three", "--account", "acme").returncode == 0
    assert [l.split()[0] for l in daemon1.cli("app", "list").stdout.splitlines()[1:]] == ["three", "two"]
    r = daemon1.cli("app", "rm", "one")
    assert r.returncode == 1 and "no app 'one'" in r.stderr
    # The token in the ledger is a hash, never the token itself.
    db = sqlite3.connect(daemon1.state / "ledger.db")
    stored = [row[0] for row in db.execute("SELECT token_sha256 FROM apps")]
    db.close()
    assert tokens[1] not in stored and all(len(s) == 64 for s in stored)


def test_an_app_token_names_the_leases_app(daemon1):
    daemon1.cli("account", "add", "acme", "--kind", "pro")
    tok = daemon1.cli("app", "add", "painter", "--account", "acme").stdout.split("token: ")[1].split()[0]
    c = daemon1.http()
    c.send("POST", "/v1/leases", {"duration_s": 5}, {"Authorization": f"Bearer {tok}"})
    assert c.read_head()[0] == 200
    ev = c.event()
    _, lease = daemon1.get(f"/v1/leases/{ev['lease']}")
    assert lease["app"] == "painter"
    c.close()
    other = daemon1.http()
    status, body = other.request("POST", "/v1/leases", {"app": "sculptor"}, {"Authorization": f"Bearer {tok}"})
    assert status == 403 and body["error"]["message"] == "this app token is for app 'painter', not 'sculptor'"
    status, body = other.request("GET", "/v1/status", None, {"Authorization": "Bearer zgpa_forged"})
    assert status == 401
    other.close()


NOBODY = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, sys.argv[2])
    from conftest import UnixHTTP
    os.setgid(65534); os.setuid(65534)
    c = UnixHTTP(sys.argv[1])
    print(json.dumps(c.request("POST", "/v1/accounts", {"name": "x", "kind": "free"})))
    print(json.dumps(c.request("GET", "/v1/accounts")))
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second uid")
def test_only_admins_change_the_registry(make_daemon, public_dir):
    d = make_daemon("--simulate", "1x80G", socket_dir=public_dir)
    out = subprocess.run([sys.executable, "-c", NOBODY, str(d.socket), os.path.dirname(__file__)],
                         capture_output=True, text=True, timeout=20, check=True).stdout.splitlines()
    status, body = json.loads(out[0])
    assert status == 403
    assert body["error"]["message"] == ("only root, zerogpud's own user or the admin token may "
                                        "change accounts, apps and quotas")
    assert json.loads(out[1])[0] == 200  # reading is open


def test_tcp_admin_token_and_app_tokens(make_daemon):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    admin = "the-admin-token-for-the-registry-tests"
    make_daemon("--simulate", "1x80G", "--listen", f"127.0.0.1:{port}", "--token", admin)
    base = f"http://127.0.0.1:{port}"

    def post(path, body, tok):
        req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {tok}"})
        return urllib.request.urlopen(req)

    post("/v1/accounts", {"name": "acme", "kind": "org"}, admin)
    app_tok = json.load(post("/v1/apps", {"name": "web", "account": "acme"}, admin))["token"]
    with pytest.raises(urllib.error.HTTPError) as e:
        post("/v1/accounts", {"name": "evil", "kind": "org"}, app_tok)
    assert e.value.code == 403
    # An app token is enough for leases on TCP.
    resp = post("/v1/leases", {"max_wait_s": 0}, app_tok)
    assert json.loads(resp.readline())["event"] == "granted"
    resp.close()


def test_quota_reset(make_daemon):
    d = make_daemon("--simulate", "1x80G", "--quota-anonymous", "3")
    d.cli("run", "--visitor-ip", "10.0.0.8", "-d", "3", "--", "sleep", "2.5")  # charged 3 s
    assert d.cli("run", "--visitor-ip", "10.0.0.8", "-d", "1", "--", "true").returncode == 125
    r = d.cli("quota", "reset", "ip:10.0.0.8")
    assert r.returncode == 0 and r.stdout == "quota of ip:10.0.0.8 reset\n"
    assert d.cli("run", "--visitor-ip", "10.0.0.8", "-d", "1", "--", "true").returncode == 0
    assert d.call("POST", "/v1/quota/ip:10.7.7.7/reset")[0] == 404


def test_a_version_1_ledger_is_upgraded(tmp_path):
    # A ledger as the first release wrote it (migration 1), with a lease in it.
    (tmp_path / "state").mkdir()
    db = sqlite3.connect(tmp_path / "state" / "ledger.db")
    db.executescript(
        "CREATE TABLE leases (id TEXT PRIMARY KEY, app TEXT NOT NULL, task TEXT NOT NULL,"
        " visitor TEXT NOT NULL, tier TEXT NOT NULL, size TEXT NOT NULL, gpus INTEGER NOT NULL,"
        " devices TEXT NOT NULL, requested_ms INTEGER NOT NULL, started_at INTEGER NOT NULL,"
        " ended_at INTEGER, used_ms INTEGER, charged_ms INTEGER, state TEXT NOT NULL,"
        " quota_key TEXT NOT NULL, pid INTEGER, pgid INTEGER, pid_start INTEGER) WITHOUT ROWID;"
        "CREATE TABLE visitors (key TEXT PRIMARY KEY, tier TEXT NOT NULL,"
        " window_start INTEGER NOT NULL, used_ms INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE INDEX leases_open ON leases(started_at) WHERE ended_at IS NULL;"
        "INSERT INTO leases VALUES ('0123456789abcdef0123456789abcdef', 'old', 'x', 'v', 'free',"
        " 'large', 1, 'GPU-x', 60000, 1000, 2000, 1000, 1000, 'released', '', 0, 0, 0);"
        "PRAGMA user_version = 1;")
    db.close()
    again = Daemon(tmp_path, "--simulate", "1x80G").start()
    assert again.cli("account", "add", "acme", "--kind", "free").returncode == 0
    assert again.cli("visitor", "tier", "user:ann", "pro").returncode == 0
    assert again.cli("run", "--app", "new", "--", "true").returncode == 0
    db = sqlite3.connect(tmp_path / "state" / "ledger.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 4
    # The old row has no node; the new one names this machine's.
    nodes = dict(db.execute("SELECT app, node FROM leases"))
    db.close()
    assert nodes["old"] == "" and nodes["new"] == socket.gethostname().split(".")[0]
    assert again.stop() == 0


def test_usage_by_app(daemon4):
    for app, seconds in (("painter", "1.2"), ("painter", "0.1"), ("tts", "0.1")):
        assert daemon4.cli("run", "--app", app, "--", "sleep", seconds).returncode == 0
    _, u = daemon4.get("/v1/usage?since=1h")
    by_app = {a["app"]: a for a in u["apps"]}
    assert by_app["painter"]["leases"] == 2 and by_app["tts"]["leases"] == 1
    assert by_app["painter"]["charged_s"] == 3  # 1.2 s -> 2 s, 0.1 s -> 1 s
    assert u["total"]["leases"] == 3
    _, only = daemon4.get("/v1/usage?app=tts")
    assert [a["app"] for a in only["apps"]] == ["tts"]
    # One ledger, one node: this machine's, named in each row.
    node = socket.gethostname().split(".")[0]
    assert u["node"] == node
    assert [n["node"] for n in by_app["painter"]["nodes"]] == [node]
    assert by_app["painter"]["nodes"][0]["charged_s"] == 3
    assert u["overage"] == [] and u["total"]["overage_s"] == 0
    lines = daemon4.cli("usage").stdout.splitlines()
    assert lines[0].split() == ["APP", "NODE", "LEASES", "USED", "CHARGED", "OVERAGE"]
    assert lines[1].split()[0:3] == ["painter", node, "2"]
    assert lines[-1].split()[0:2] == ["(all)", "3"]
    assert daemon4.call("GET", "/v1/usage?since=yesterday")[0] == 400
    assert daemon4.cli("usage", "--since", "tomorrow").returncode == 2


APPS_AS_NOBODY = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, sys.argv[2])
    from conftest import UnixHTTP
    os.setgid(65534); os.setuid(65534)
    for app in ("painter", "tts"):
        c = UnixHTTP(sys.argv[1])
        c.send("POST", "/v1/leases", {"app": app, "max_wait_s": 0})
        status, _ = c.read_head()
        reply = json.dumps(c.event()) if status == 200 else c.read_body().decode()
        print(json.dumps([app, status, reply[:200]]))
        c.close()
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second uid")
def test_apps_section_says_which_users_act_as_which_apps(make_daemon, tmp_path, public_dir):
    conf = tmp_path / "zerogpud.conf"
    conf.write_text("[devices]\nsimulate = 2x80G\n\n[apps]\npainter = nobody, 4242\ntts = 0\n")
    d = make_daemon("--config", str(conf), socket_dir=public_dir)
    out = subprocess.run([sys.executable, "-c", APPS_AS_NOBODY, str(d.socket),
                          os.path.dirname(__file__)], capture_output=True, text=True, timeout=20,
                         check=True).stdout.splitlines()
    painter, tts = (json.loads(line) for line in out)
    assert painter[1] == 200
    assert tts[1] == 403 and "uid 65534 may not act as app 'tts'" in tts[2]
    # Root is an admin and may act as any app.
    c, ev = d.acquire({"app": "anything", "max_wait_s": 0})
    assert ev["event"] == "granted"
    c.close()


def test_apps_section_refuses_unknown_users(tmp_path):
    conf = tmp_path / "zerogpud.conf"
    conf.write_text("[apps]\npainter = no-such-user-here\n")
    r = subprocess.run([str(Daemon.__init__.__globals__["ZEROGPUD"]), "--config", str(conf)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert ":2: [apps] painter names user 'no-such-user-here', who does not exist" in r.stderr
