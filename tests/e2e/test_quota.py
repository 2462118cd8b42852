"""Visitor identity and daily quotas, end to end."""
import threading
import time

from conftest import SECRET, Daemon, visitor_token as token


def test_acceptance_anonymous_quota_survives_a_restart(tmp_path):
    d = Daemon(tmp_path, "--simulate", "1x80G", "--quota-anonymous", "3").start()
    r = d.cli("run", "--visitor-ip", "10.0.0.1", "-d", "2", "--", "sleep", "1.5")
    assert r.returncode == 0, r.stderr
    _, q = d.get("/v1/quota/ip:10.0.0.1")
    assert q["used_s"] == 2 and q["left_s"] == 1 and q["tier"] == "anonymous"
    t0 = time.monotonic()
    r = d.cli("run", "--visitor-ip", "10.0.0.1", "-d", "2", "--", "true")
    assert time.monotonic() - t0 < 1  # refused at once, not after waiting
    assert r.returncode == 125
    assert "You have exceeded your GPU quota (2s requested vs. 1s left). Try again in" in r.stderr
    assert d.stop() == 0
    again = Daemon(tmp_path, "--simulate", "1x80G", "--quota-anonymous", "3").start()
    r = again.cli("run", "--visitor-ip", "10.0.0.1", "-d", "2", "--", "true")
    assert r.returncode == 125 and "(2s requested vs. 1s left)" in r.stderr
    # Another visitor is not affected, nor the app's own (unmetered) calls.
    assert again.cli("run", "--visitor-ip", "10.0.0.2", "-d", "2", "--", "true").returncode == 0
    assert again.cli("run", "-d", "60", "--", "true").returncode == 0
    assert again.stop() == 0


def test_the_429_reply(make_daemon):
    d = make_daemon("--simulate", "1x80G", "--quota-anonymous", "30")
    status, body = d.call("POST", "/v1/leases", {"visitor_ip": "192.0.2.7", "duration_s": 60})
    assert status == 429
    assert body["error"]["code"] == "quota"
    assert body["error"]["message"].startswith(
        "You have exceeded your GPU quota (60s requested vs. 30s left).")
    assert body["left_s"] == 30 and body["wait_s"] == 0  # no window open yet
    assert d.get("/v1/status")[1]["queue"] == []


def test_parallel_requests_cannot_overspend(make_daemon):
    d = make_daemon("--simulate", "2x80G", "--quota-anonymous", "100")
    results = []

    def ask():
        c = d.http()
        c.send("POST", "/v1/leases", {"visitor_ip": "198.51.100.1", "duration_s": 60})
        status, _ = c.read_head()
        results.append((status, c))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(s for s, _ in results) == [200, 429]
    _, q = d.get("/v1/quota/ip:198.51.100.1")
    assert q["reserved_s"] == 60 and q["used_s"] == 0
    for _, c in results:
        c.close()


def test_waiting_and_cancelling_cost_nothing(make_daemon):
    d = make_daemon("--simulate", "1x80G", "--quota-anonymous", "100")
    held, _ = d.acquire({})
    waiting, ev = d.acquire({"visitor_ip": "203.0.113.5", "duration_s": 60})
    assert ev["event"] == "queued"
    _, q = d.get("/v1/quota/ip:203.0.113.5")
    assert q["reserved_s"] == 60
    waiting.close()
    time.sleep(0.2)
    _, q = d.get("/v1/quota/ip:203.0.113.5")
    assert q["reserved_s"] == 0 and q["used_s"] == 0
    held.close()


def test_visitor_tokens(make_daemon):
    d = make_daemon("--simulate", "1x80G", "--visitor-secret", SECRET)
    c, ev = d.acquire({"visitor_token": token("alice", "pro"), "duration_s": 30})
    assert ev["event"] == "granted"
    _, q = d.get("/v1/quota/user:alice")
    assert q["tier"] == "pro" and q["limit_s"] == 2400 and q["reserved_s"] == 30
    c.close()
    for bad, message in [
        (token("alice", "pro", secret="another secret entirely"), "invalid visitor token: bad signature"),
        (token("alice", "pro", exp_in=-10), "visitor token expired"),
        (token("alice", "pro", alg="none"), "invalid visitor token: the algorithm must be HS256"),
        (token("alice", "root"), "claim 'tier' must be anonymous, free, pro or enterprise"),
        ("garbage", "not a JWT"),
    ]:
        status, body = d.call("POST", "/v1/leases", {"visitor_token": bad})
        assert status == 401, bad
        assert message in body["error"]["message"]


def test_a_token_without_a_secret_is_refused(daemon1):
    status, body = daemon1.call("POST", "/v1/leases", {"visitor_token": token("bob", "free")})
    assert status == 401
    assert "verifies no visitor tokens: set [auth] visitor_secret" in body["error"]["message"]


def test_kill_9_mid_lease_keeps_the_quota_spent(tmp_path):
    d = Daemon(tmp_path, "--simulate", "1x80G", "--quota-anonymous", "100").start()
    c, ev = d.acquire({"visitor_ip": "10.9.9.9", "duration_s": 60})
    time.sleep(1.1)
    d.proc.kill()
    d.proc.wait()
    d.log.close()
    c.close()
    again = Daemon(tmp_path, "--simulate", "1x80G", "--quota-anonymous", "100").start()
    _, q = again.get("/v1/quota/ip:10.9.9.9")
    assert q["used_s"] >= 2 and q["reserved_s"] == 0  # charged for the time it held the GPU
    assert again.stop() == 0


def test_quota_command(make_daemon):
    d = make_daemon("--simulate", "1x80G")
    d.cli("run", "--visitor-ip", "10.1.2.3", "-d", "5", "--", "true")
    r = d.cli("quota", "ip:10.1.2.3")
    assert r.returncode == 0
    assert "tier       anonymous" in r.stdout and "used       1 s of 120 s" in r.stdout
    assert "resets     20" in r.stdout
    r = d.cli("quota", "ip:10.3.3.3")
    assert r.returncode == 1 and "no GPU use is recorded for 'ip:10.3.3.3'" in r.stderr


def test_quota_replies_match_the_openapi_schema(make_daemon):
    import jsonschema
    import yaml
    from conftest import ROOT
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())

    def check(name, doc):
        jsonschema.Draft202012Validator({**spec, "$ref": f"#/components/schemas/{name}"}).validate(doc)

    d = make_daemon("--simulate", "1x80G", "--quota-anonymous", "10")
    d.cli("run", "--visitor-ip", "10.5.5.5", "-d", "1", "--", "true")
    check("Quota", d.get("/v1/quota/ip:10.5.5.5")[1])
    status, body = d.call("POST", "/v1/leases", {"visitor_ip": "10.5.5.5", "duration_s": 60})
    assert status == 429
    check("QuotaError", body)


def test_overage_is_granted_and_recorded_for_a_tier_that_allows_it(make_daemon):
    d = make_daemon("--simulate", "1x80G", "--visitor-secret", SECRET, "--quota-pro", "3",
                    "--overage-pro", "allow", "--quota-anonymous", "3")
    pro = token("alice", "pro")
    assert d.cli("run", "--visitor-token", pro, "-d", "2", "--", "sleep", "1.2").returncode == 0
    # 2 s used of 3: a 2 s call does not fit, and is granted anyway (pro allows overage).
    r = d.cli("run", "--visitor-token", pro, "-d", "2", "--", "sleep", "1.2")
    assert r.returncode == 0, r.stderr
    _, q = d.get("/v1/quota/user:alice")
    assert q["used_s"] == 4 and q["left_s"] == 0
    # A tier that does not allow it is refused as before.
    assert d.cli("run", "--visitor-ip", "10.9.9.9", "-d", "4", "--", "true").returncode == 125
    _, u = d.get("/v1/usage")
    assert u["overage"] == [{"visitor": "user:alice", "app": "default", "leases": 1,
                             "overage_s": 1.0}]
    assert u["total"]["overage_s"] == 1.0
    lines = d.cli("usage", "--overage").stdout.splitlines()
    assert lines[0].split() == ["VISITOR", "APP", "LEASES", "OVERAGE"]
    assert lines[1].split() == ["user:alice", "default", "1", "1", "s"]
