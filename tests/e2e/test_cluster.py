"""Several daemons on one PostgreSQL ledger (docs/cluster.md): one set of quotas, each
node settling its own leases, PostgreSQL going away and coming back. A real server:
pgcluster.py makes one for this module in a temporary directory."""
import json
import signal
import subprocess
import threading
import time

import pytest

from conftest import SECRET, Daemon
from pgcluster import PgCluster, available, wait_until


@pytest.fixture(scope="module")
def pg():
    why = available()
    assert why is None, why  # the README's install step installs it; CI too
    c = PgCluster().start()
    yield c
    c.close()


@pytest.fixture
def db(pg):
    return pg.database()


@pytest.fixture
def nodes(tmp_path, pg, db):
    """make(name, *args): a daemon on its own socket and state, as node `name`."""
    started = []

    def make(name, *args, start=True):
        (tmp_path / name).mkdir(exist_ok=True)
        d = Daemon(tmp_path / name, "--simulate", "4x80G", "--ledger", pg.url(db), "--node",
                   name, "--visitor-secret", SECRET, *args)
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        if d.proc and d.proc.poll() is None:
            rc = d.stop()
            assert rc == 0, f"zerogpud exited {rc}:\n{d.log_text()}"


def rows(pg, db, sql):
    return pg.psql(sql, db)


def visitor(pg, db, key):
    r = rows(pg, db, f"SELECT used_ms, reserved_ms FROM visitors WHERE key = '{key}'")
    return tuple(int(x) for x in r[0]) if r else None


def test_two_nodes_draw_on_one_quota_and_never_overspend(pg, db, nodes):
    a = nodes("alpha", "--quota-anonymous", "10")
    b = nodes("beta", "--quota-anonymous", "10")
    results, lock = [], threading.Lock()
    go = threading.Barrier(8)

    def ask(d):
        c = d.http(timeout=15)
        go.wait()
        c.send("POST", "/v1/leases", {"visitor_ip": "198.51.100.9", "duration_s": 3})
        status, _ = c.read_head()
        ev = c.event() if status == 200 else None
        if status != 200:
            c.read_body()
        with lock:
            results.append((d, status, ev, c))

    threads = [threading.Thread(target=ask, args=(d,)) for d in (a, b) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted = [r for r in results if r[2] and r[2]["event"] == "granted"]
    # 3 s each against 10 s: three at most, whichever node they came to.
    assert 1 <= len(granted) <= 3, [(r[1], r[2]) for r in results]
    assert len(granted) == 3
    refused = [r for r in results if r not in granted]
    for _, status, ev, _ in refused:
        # Refused up front by the node's own book (429), or at the grant by the shared
        # ledger when the other node's grants had spent it.
        assert status == 429 or (ev["event"] == "failed" and ev["error"]["code"] == "quota"
                                 and "exceeded your GPU quota" in ev["error"]["message"]), ev
    used, reserved = visitor(pg, db, "ip:198.51.100.9")
    assert reserved == 9000 and used == 0
    for r in results:
        r[3].close()

    def settled():
        return visitor(pg, db, "ip:198.51.100.9")[1] == 0
    assert wait_until(settled, 5)
    used, _ = visitor(pg, db, "ip:198.51.100.9")
    charged = rows(pg, db, "SELECT coalesce(sum(charged_ms), 0), count(*) FROM leases "
                           "WHERE quota_key = 'ip:198.51.100.9' AND ended_at IS NOT NULL")
    assert used == int(charged[0][0]) and int(charged[0][1]) == 3
    # Both nodes' rows name their node.
    by_node = dict(rows(pg, db, "SELECT node, count(*) FROM leases GROUP BY node"))
    assert set(by_node) <= {"alpha", "beta"} and sum(int(n) for n in by_node.values()) == 3


def test_concurrent_visitors_on_both_nodes_totals_exact(pg, db, nodes):
    a = nodes("alpha", "--quota-anonymous", "30")
    b = nodes("beta", "--quota-anonymous", "30")
    visitors = [f"203.0.113.{i}" for i in range(1, 7)]

    def run(d, ip, n):
        for _ in range(n):
            d.cli("run", "--visitor-ip", ip, "-d", "4", "--", "true")

    threads = [threading.Thread(target=run, args=(d, ip, 5)) for ip in visitors for d in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ip in visitors:
        key = f"ip:{ip}"
        assert wait_until(lambda: visitor(pg, db, key)[1] == 0, 5)
        used, _ = visitor(pg, db, key)
        total, n = rows(pg, db, f"SELECT coalesce(sum(charged_ms), 0), count(*) FROM leases "
                                f"WHERE quota_key = '{key}'")[0]
        assert used == int(total) and used <= 30000
        # 10 calls of 4 s (each charged 1 s) against 30 s: none refused for quota.
        assert int(n) == 10, (ip, n)


@pytest.mark.parametrize("how", ["fast", "immediate"])
def test_postgres_down_and_back(pg, db, nodes, how):
    a = nodes("alpha")
    b = nodes("beta")
    held = []
    for i, d in enumerate((a, a, b)):
        c, ev = d.acquire({"visitor_ip": f"192.0.2.5{i}", "duration_s": 30})
        assert ev["event"] == "granted"
        held.append((c, ev["lease"], f"ip:192.0.2.5{i}"))
    pg.stop_server(how)  # "immediate" is a crash: connections cut mid-stream
    try:
        def refused():
            s, body = a.call("POST", "/v1/leases", {"duration_s": 5, "max_wait_s": 1})
            return s == 503 and body["error"]["code"] == "ledger_unavailable" and body
        body = wait_until(refused, 5)
        assert body, "new requests were not refused while PostgreSQL was down"
        assert "PostgreSQL" in body["error"]["message"]
        _, st = a.get("/v1/status")
        assert st["ledger"]["writable"] is False and "PostgreSQL" in st["ledger"]["fault"]
        status, _ = a.call("POST", "/v1/accounts", {"name": "x", "kind": "free"})
        assert status == 503
        time.sleep(0.3)
        for c, _, _ in held[:2]:
            c.close()  # their ends are kept until the database is back
        held[2][0].close()
        time.sleep(0.5)
    finally:
        pg.start_server()

    for d in (a, b):
        assert wait_until(lambda: d.cli("run", "-d", "5", "--", "true").returncode == 0, 10,
                          step=0.2), d.log_text()
    for _, lease, key in held:
        def settled():
            return rows(pg, db, f"SELECT state, charged_ms FROM leases WHERE id = '{lease}'")
        assert wait_until(lambda: settled() and settled()[0][0] == "released", 5), settled()
        used, reserved = visitor(pg, db, key)
        # Charged once: the visitor's total is the lease's one charge (whole seconds).
        charged = int(settled()[0][1])
        assert reserved == 0 and used == charged and charged in (1000, 2000, 3000)
    assert rows(pg, db, "SELECT count(*) FROM leases WHERE ended_at IS NULL") == [["0"]]
    assert "connected again" in a.log_text()


def test_kill9_settles_its_own_node_only(pg, db, nodes, tmp_path):
    a = nodes("alpha")
    b = nodes("beta")
    ca, ev = a.acquire({"visitor_ip": "192.0.2.60", "duration_s": 60})
    assert ev["event"] == "granted"
    cb, ev = b.acquire({"visitor_ip": "192.0.2.61", "duration_s": 60})
    assert ev["event"] == "granted"
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    a.log.close()
    ca.close()
    again = nodes("alpha")
    state = dict(rows(pg, db, "SELECT node, state FROM leases"))
    assert state["alpha"] == "expired"
    assert state["beta"] == "granted"
    open_b = rows(pg, db, "SELECT count(*) FROM leases WHERE node = 'beta' AND ended_at IS NULL")
    assert open_b == [["1"]]
    cb.close()
    assert wait_until(lambda: rows(pg, db, "SELECT state FROM leases WHERE node = 'beta'")
                      == [["released"]], 5)
    assert again.proc.poll() is None


def test_migrations_raced_by_several_daemons(pg, db, nodes):
    ds = [nodes(f"n{i}", start=False) for i in range(4)]
    threads = [threading.Thread(target=d.start) for d in ds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in ds:
        assert d.proc.poll() is None, d.log_text()
    versions = rows(pg, db, "SELECT version, count(*) FROM zerogpu_migrations GROUP BY version")
    assert versions and all(n == "1" for _, n in versions)
    for i, d in enumerate(ds):
        assert d.cli("run", "-d", "5", "--", "true").returncode == 0
        st = json.loads(d.cli("status", "--json").stdout)
        assert st["node"] == f"n{i}" and st["ledger"] == {"backend": "postgresql",
                                                          "writable": True}


def test_unreachable_at_start_is_a_clear_error(tmp_path):
    d = Daemon(tmp_path, "--simulate", "1x80G", "--ledger",
               "postgresql://zerogpu@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(RuntimeError) as e:
        d.start()
    assert "connecting to PostgreSQL" in str(e.value)
    d.log.close()


def test_registry_and_hosting_limits_across_nodes(pg, db, nodes):
    a = nodes("alpha", "--apps-free", "2")
    b = nodes("beta", "--apps-free", "2")
    assert a.cli("account", "add", "acme", "--kind", "free").returncode == 0
    r = b.cli("account", "add", "acme", "--kind", "free")
    assert r.returncode != 0 and "already exists" in r.stderr
    status, one = a.call("POST", "/v1/apps", {"name": "one", "account": "acme"})
    assert status == 200
    status, two = b.call("POST", "/v1/apps", {"name": "two", "account": "acme"})
    assert status == 200
    # The account's limit counts the apps added on every node.
    for d in (a, b):
        status, body = d.call("POST", "/v1/apps", {"name": "three", "account": "acme"})
        assert status == 403 and body["error"]["code"] == "hosting_limit", body
        assert "hosts 2 apps" in body["error"]["message"]
    status, body = b.call("POST", "/v1/apps", {"name": "one", "account": "acme"})
    assert status in (403, 409)
    status, body = a.call("POST", "/v1/apps", {"name": "x", "account": "nobody"})
    assert status == 404 and body["error"]["code"] == "no_such_account"
    # A token made on one node works on the other, once it has heard (NOTIFY).
    def knows(d, app):
        _, listing = d.get("/v1/apps")
        return app in [x["name"] for x in listing["apps"]]
    assert wait_until(lambda: knows(a, "two") and knows(b, "one"), 5)
    _, accounts = b.get("/v1/accounts")
    assert accounts["accounts"][0]["name"] == "acme" and accounts["accounts"][0]["apps"] == 2
    # Removed on beta: its token stops working on alpha too.
    assert b.call("DELETE", "/v1/apps/one")[0] == 200
    assert wait_until(lambda: not knows(a, "one"), 5)
    assert b.call("DELETE", "/v1/apps/one")[0] == 404
    # Tiers and quota resets are shared too.
    assert a.cli("visitor", "tier", "user:zoe", "pro").returncode == 0
    assert wait_until(lambda: b.get("/v1/visitors/user:zoe/tier")[1].get("tier") == "pro", 5)


def test_usage_and_overage_across_nodes(pg, db, nodes):
    a = nodes("alpha", "--quota-pro", "3", "--overage-pro", "allow")
    b = nodes("beta", "--quota-pro", "3", "--overage-pro", "allow")
    from conftest import visitor_token
    pro = visitor_token("ann", "pro")
    assert a.cli("run", "--app", "paint", "--visitor-token", pro, "-d", "2", "--",
                 "sleep", "1.2").returncode == 0
    r = b.cli("run", "--app", "paint", "--visitor-token", pro, "-d", "2", "--", "sleep", "1.2")
    assert r.returncode == 0, r.stderr
    assert b.cli("run", "--app", "tts", "--", "true").returncode == 0
    for d in (a, b):
        status, u = d.get("/v1/usage")
        assert status == 200, u
        paint = [x for x in u["apps"] if x["app"] == "paint"][0]
        assert paint["leases"] == 2 and paint["charged_s"] == 4
        assert sorted(n["node"] for n in paint["nodes"]) == ["alpha", "beta"]
        assert u["overage"] == [{"visitor": "user:ann", "app": "paint", "leases": 1,
                                 "overage_s": 1.0}]
        assert u["total"]["leases"] == 3
    lines = a.cli("usage").stdout.splitlines()
    assert [line.split()[:2] for line in lines[1:4]] == [["paint", "alpha"], ["paint", "beta"],
                                                        ["tts", "beta"]]
    assert visitor(pg, db, "user:ann") == (4000, 0)


def test_spaces_calls_on_two_nodes_share_the_visitors_quota(pg, db, nodes):
    import httpx
    from conftest import free_tcp_port, visitor_token
    admin = "an admin token for the cluster tests, long enough"
    ds = []
    for name in ("alpha", "beta"):
        port = free_tcp_port()
        d = nodes(name, "--listen", f"127.0.0.1:{port}", "--token", admin, "--spaces-app",
                  "demo", "--quota-free", "10")
        d.url = f"http://127.0.0.1:{port}"
        ds.append(d)
    alice = visitor_token("alice", "free")
    first = httpx.post(ds[0].url + "/schedule",
                       params={"durationSeconds": 6, "token": alice, "cgroupPath": "/"},
                       timeout=10)
    assert first.status_code == 200, first.text
    # beta has never seen alice: its own book lets the call through, and the shared
    # ledger refuses the grant (6 s held on alpha + 6 s > 10 s), in the hosted words.
    second = httpx.post(ds[1].url + "/schedule",
                        params={"durationSeconds": 6, "token": alice, "cgroupPath": "/"},
                        timeout=10)
    assert second.status_code == 429, second.text
    body = second.json()
    assert body["left"] == 4 and body["error"]["code"] == "quota"
    assert body["error"]["message"].startswith(
        "You have exceeded your free GPU quota (6s requested vs. 4s left).")
    # What fits still goes through on beta.
    third = httpx.post(ds[1].url + "/schedule",
                       params={"durationSeconds": 4, "token": alice, "cgroupPath": "/"},
                       timeout=10)
    assert third.status_code == 200, third.text
    for d, res in ((ds[0], first), (ds[1], third)):
        r = httpx.post(d.url + "/release", params={"allowToken": res.json()["allowToken"]},
                       timeout=10)
        assert r.status_code == 204, r.text  # no worker allowed itself: nothing charged
    assert wait_until(lambda: visitor(pg, db, "user:alice") == (0, 0), 5), \
        visitor(pg, db, "user:alice")


def test_a_host_name_is_looked_up_on_the_loop(pg, db, tmp_path):
    # libpq would look the name up with a blocking getaddrinfo(); the daemon looks it up
    # itself (evdns, /etc/hosts here) and hands libpq the addresses, at each reconnect.
    d = Daemon(tmp_path, "--simulate", "1x80G", "--ledger",
               f"postgresql://zerogpu@localhost:{pg.port}/{db}", "--node", "named",
               "--log-level", "debug").start()
    try:
        assert d.cli("run", "-d", "5", "--", "true").returncode == 0
        pg.stop_server("fast")
        pg.start_server()
        assert wait_until(lambda: d.cli("run", "-d", "5", "--", "true").returncode == 0, 10,
                          step=0.2), d.log_text()
        assert rows(pg, db, "SELECT count(*) FROM leases WHERE node = 'named' AND ended_at "
                            "IS NOT NULL") == [["2"]]
        looked_up = [line for line in d.log_text().splitlines() if ": localhost is " in line]
        assert len(looked_up) == 2 and "127.0.0.1" in looked_up[0], d.log_text()
    finally:
        assert d.stop() == 0, d.log_text()


def test_the_connection_from_libpqs_environment(pg, db, tmp_path, monkeypatch):
    # `--ledger postgresql`: where, who and which database come from PG* variables.
    for k, v in {"PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": "zerogpu",
                 "PGDATABASE": db}.items():
        monkeypatch.setenv(k, v)
    d = Daemon(tmp_path, "--simulate", "1x80G", "--ledger", "postgresql", "--node", "env").start()
    try:
        assert d.cli("run", "-d", "5", "--", "true").returncode == 0
        _, st = d.get("/v1/status")
        assert st["ledger"]["backend"] == "postgresql"
        assert rows(pg, db, "SELECT node FROM leases") == [["env"]]
    finally:
        assert d.stop() == 0, d.log_text()


def test_a_caller_who_hangs_up_before_postgresql_answers(pg, db, nodes):
    """A registry change waits for PostgreSQL (its account row is locked elsewhere); its
    caller hangs up meanwhile. The change is still made, nobody is answered, and the
    daemon goes on (and exits clean: the ASan build finds any request left behind)."""
    a = nodes("alpha")
    assert a.cli("account", "add", "acme", "--kind", "pro").returncode == 0
    locker = subprocess.Popen(
        ["psql", "-X", "-q", "-d", pg.url(db), "-c",
         "BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(1.5); COMMIT;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: rows(pg, db, "SELECT count(*) FROM pg_locks WHERE relation = "
                                   "'accounts'::regclass AND granted")[0][0] != "0", 5)
    for name in ("late1", "late2"):
        c = a.http()
        c.send("POST", "/v1/apps", {"name": name, "account": "acme"})
        time.sleep(0.2)
        c.close()
    def listed():
        _, body = a.get("/v1/apps")
        return {x["name"] for x in body["apps"]} >= {"late1", "late2"}
    assert not listed()  # still waiting on the lock
    assert locker.wait(timeout=10) == 0
    assert wait_until(listed, 5)
    assert a.get("/healthz")[0] == 200
