#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/TARGET/) from the
requests, queries, tokens and configs the tests and docs use, and from replies captured
from a live zerogpud (the client target's). Run it again when a format changes:
    tests/fuzz/seeds.py --build build
The files are committed; each name is a hash of its content, as libFuzzer names them."""
import argparse, base64, hashlib, hmac, json, os, shutil, socket, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
ADMIN = "fuzz-admin-token-0123456789abcdef0123"          # fuzz_http.c's TOKEN
AUTH_SECRET = b"fuzzing-secret-0123456789abcdef0123456789"  # fuzz_auth.c's secret


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for s in seeds:
        s = s.encode() if isinstance(s, str) else s
        with open(os.path.join(d, hashlib.sha1(s).hexdigest()), "wb") as f:
            f.write(s)
    print(f"{target}: {len(seeds)} seeds")


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(header, payload, secret=AUTH_SECRET):
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return head + "." + b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())


LEASE_BODIES = [
    "", "{}", '{"app":"demo"}',
    '{"app":"demo","task":"generate","size":"large","duration_s":30,"max_wait_s":10}',
    '{"app":"demo","size":"xlarge","gpus":2,"duration_s":120.5}',
    '{"app":"demo","visitor_ip":"203.0.113.7","memory_bytes":21474836480}',
    '{"app":"demo","visitor_ip":"2001:db8::1","max_wait_s":0}',
    '{"app":"demo","visitor_token":"eyJhbGciOiJIUzI1NiJ9.e30.x","visitor":"alice"}',
    '{"app":"x","duration_s":1e308,"gpus":-1}', '{"pid":1234}', '{"pid":0}', "[]", '"app"',
]
SPACES_QUERIES = [
    "", "durationSeconds=60", "durationSeconds=60&gpuSize=large&taskId=abc&enableQueue=true",
    "durationSeconds=120&gpuSize=xlarge&enableQueue=false&tokenVersion=2&token=abc.def.ghi",
    "cgroupPath=%2Fsys%2Ffs%2Fcgroup%2Fapp&durationSeconds=5.5",
    "allowToken=0123456789abcdef0123456789abcdef&pid=4242",
    "allowToken=0123456789abcdef0123456789abcdef&fail=true",
    "allowToken=0123456789abcdef0123456789abcdef&fail=0&extra=1",
    "durationSeconds=60&durationSeconds=61", "a=%zz&b", "pid=1&pid=2",
]


def auth_seeds():
    h = {"alg": "HS256", "typ": "JWT"}
    claims = [
        {"sub": "alice", "tier": "pro", "exp": 1900000000},
        {"sub": "ip:203.0.113.7", "tier": "anonymous", "exp": 1800000300, "ip": "203.0.113.7"},
        {"sub": "bob", "tier": "enterprise", "exp": 1800000300, "nbf": 1799999999, "iat": 1799999999},
        {"sub": "carol", "tier": "free", "exp": 1700000000},
    ]
    seeds = ["\x00" + jwt(h, c) for c in claims]
    seeds += ["\x00" + jwt({"alg": "none"}, claims[0]), "\x00a.b.c", "\x00...."]
    seeds += ["\x01" + json.dumps(h) + "\n" + json.dumps(c) for c in claims]
    seeds += ['\x01{"alg":"HS512"}\n{}', '\x01{"alg":"HS256"}\n{"sub":1,"tier":[],"exp":"x"}']
    return seeds


def settings_seeds():
    example = open(os.path.join(HERE, "..", "..", "docs", "configuration.md")).read()
    blocks = [b.split("```", 1)[0] for b in example.split("```ini\n")[1:]]
    seeds = ["\x00" + b for b in blocks]
    seeds += ["\x00[server]\nmax_connections = 100\nrequest_timeout = 2.5\n[leases]\n"
              "max_duration = 30\ndefault_duration = 40\n",
              "\x00[gateway]\ntoken = 0123456789abcdef0123456789abcdef\n",
              "\x00[apps]\nx memory = 1P\ny users = root, 0\n",
              "\x00[nope]\nkey = value\n", "\x00key-without-section\n"]
    argvs = [["--simulate", "4x80G", "--split", "2"],
             ["--policy", "fifo", "--aging-bound", "10", "--backfill", "0"],
             ["--quota-free", "600", "--quota-window", "3600", "--apps-pro", "12"],
             ["--listen", "127.0.0.1:8470", "--token", ADMIN],
             ["--spaces-app", "demo", "--spaces-require-visitor", "true"],
             ["--gate", "cgroup-v2", "--residency", "off", "--log-level", "debug"],
             ["--max-duration", "10", "--default-duration", "20"], ["--help"], ["-V"]]
    seeds += ["\x01" + "\n".join(a) for a in argvs]
    return seeds


def http_seeds():
    def req(method, path, body="", headers=(), tcp=False):
        h = [f"{method} {path} HTTP/1.1", "Host: x"] + list(headers)
        if tcp:
            h.append(f"Authorization: Bearer {ADMIN}")
        if body or method in ("POST", "PUT"):
            h += ["Content-Type: application/json", f"Content-Length: {len(body.encode())}"]
        return ("\x01" if tcp else "\x00") + "\r\n".join(h) + "\r\n\r\n" + body

    seeds = []
    for tcp in (False, True):
        seeds += [req("GET", p, tcp=tcp) for p in (
            "/healthz", "/metrics", "/v1/status", "/v1/devices", "/v1/queue", "/v1/leases",
            "/v1/quota/ip:203.0.113.7", "/v1/usage", "/v1/accounts", "/v1/apps",
            "/v1/visitors/user:alice/tier", "/v1/leases/0123456789abcdef", "/queue-size",
            "/v1/visitor-token", "/v1/events", "/ui", "/ui/", "/ui/app.js",
            "/ui/?token=" + ADMIN)]
        seeds += [
            req("POST", "/v1/leases", '{"app":"demo","duration_s":1,"max_wait_s":0}', tcp=tcp),
            req("POST", "/v1/leases?stream=0", '{"app":"demo","gpus":2,"size":"xlarge"}', tcp=tcp),
            req("DELETE", "/v1/leases/0123456789abcdef?keep=1", tcp=tcp),
            req("POST", "/v1/leases/0123456789abcdef/attach", '{"pid":1}', tcp=tcp),
            req("POST", "/v1/apps/demo/join", '{"pid":1}', tcp=tcp),
            req("POST", "/v1/accounts", '{"name":"acme","plan":"pro"}', tcp=tcp),
            req("POST", "/v1/apps", '{"name":"demo","account":"acme"}', tcp=tcp),
            req("DELETE", "/v1/apps/demo", tcp=tcp),
            req("POST", "/v1/quota/ip:203.0.113.7/reset", tcp=tcp),
            req("PUT", "/v1/visitors/user:alice/tier", '{"tier":"pro"}', tcp=tcp),
            req("POST", "/schedule?durationSeconds=1&gpuSize=large&enableQueue=false", tcp=tcp),
            req("POST", "/allow?allowToken=0123456789abcdef0123456789abcdef&pid=2", tcp=tcp),
            req("POST", "/release?allowToken=0123456789abcdef0123456789abcdef&fail=true", tcp=tcp),
            req("POST", "/startup-report?cgroupPath=%2F&gpuSize=large", tcp=tcp),
            req("POST", "/ui/login", "token=" + ADMIN,
                headers=["Content-Type: application/x-www-form-urlencoded"], tcp=tcp),
            req("GET", "/ui/", headers=["Cookie: a=1; zerogpu_ui=1796287954." + "0" * 64]),
            req("GET", "/v1/visitor-token", headers=["X-Auth-Request-User: alice",
                                                    "X-Forwarded-For: 203.0.113.7"], tcp=tcp),
        ]
    seeds.append("\x00GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/devices HTTP/1.1\r\nHost: x\r\n\r\n")
    seeds.append("\x00POST /v1/leases HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    seeds.append("\x00GET / HTTP/1.0\r\n\r\n")
    return seeds


def capture(build):
    """Replies of a live daemon, as libzerogpu reads them (the client target's seeds)."""
    tmp = tempfile.mkdtemp(prefix="zerogpu-seeds-")
    sock = os.path.join(tmp, "zerogpud.sock")
    d = subprocess.Popen([os.path.join(build, "src/daemon/zerogpud"), "--socket", sock,
                          "--state-dir", tmp, "--simulate", "2x80G", "--gate", "off",
                          "--log-level", "error"])
    try:
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.02)

        def raw(method, path, body=b"", wait=0.3):
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                      "Connection: close\r\n\r\n".encode() + body)
            s.settimeout(wait)
            out = b""
            try:
                while chunk := s.recv(65536):
                    out += chunk
            except socket.timeout:
                pass
            s.close()
            return out

        seeds = []
        grant = raw("POST", "/v1/leases", b'{"app":"demo","duration_s":1}', wait=1.6)
        seeds.append(b"\x00" + grant)
        seeds.append(b"\x01" + grant)
        seeds.append(b"\x02" + raw("GET", "/v1/status"))
        seeds.append(b"\x02" + raw("GET", "/v1/devices"))
        seeds.append(b"\x03" + raw("POST", "/v1/apps/demo/join", b'{"pid":1}'))
        seeds.append(b"\x03" + raw("DELETE", "/v1/leases/nope"))
        seeds.append(b"\x02HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
        seeds.append(b'\x00HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'
                     b'40\r\n{"event":"queued","position":1,"reason":"node"}\n' + b' ' * 15 + b'\r\n')
        return seeds
    finally:
        d.terminate()
        d.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="the build with zerogpud (default build)")
    a = ap.parse_args()
    write("request", LEASE_BODIES)
    write("spaces_request", SPACES_QUERIES)
    write("auth", auth_seeds())
    write("settings", settings_seeds())
    write("http", http_seeds())
    write("client", capture(a.build))


if __name__ == "__main__":
    main()
