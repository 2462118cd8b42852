"""End-to-end fixtures: the real zerogpud on a private socket and state directory.

The binaries come from $ZEROGPU_BUILD (default: build/ at the repository root), so
the same tests run against the plain and the sanitizer builds.
"""
import base64
import hashlib
import hmac
import json
import os
import pathlib
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("ZEROGPU_BUILD", ROOT / "build"))
ZEROGPUD = BUILD / "src" / "daemon" / "zerogpud"
ZEROGPU = BUILD / "src" / "cli" / "zerogpu"

SECRET = "a visitor secret of quite some length"  # the daemons' --visitor-secret in the tests


def visitor_token(sub, tier, exp_in=3600, secret=SECRET, alg="HS256"):
    """A visitor token (HS256 JWT) as an app's front end would forward it."""
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": sub, "tier": tier, "exp": int(time.time()) + exp_in}).encode())
    sig = b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ledger(d):
    """The daemon's ledger rows, in the order the leases started (ties: in the order they ended)."""
    db = sqlite3.connect(d.state / "ledger.db")
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM leases ORDER BY started_at, ended_at")]
    finally:
        db.close()


def start_gradio_app(script, env, log_path, port, cwd=None):
    """Starts a Gradio app script and waits until it serves on port; returns the Popen. The
    app gets a session of its own: its workers are its children, and go with it (killpg)."""
    log = open(log_path, "w")
    app = subprocess.Popen([sys.executable, str(script)], env=env, stdout=log,
                           stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        assert app.poll() is None, pathlib.Path(log_path).read_text()
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return app
        except OSError:
            assert time.monotonic() < deadline, "the Gradio app did not come up"
            time.sleep(0.2)


class UnixHTTP:
    """A minimal HTTP/1.1 client over a Unix socket, so tests see bytes as sent."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, method, target, body=None, headers=None):
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        self.chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        self.length = int(headers.get("content-length", "0"))
        self.pending = b""
        return status, headers

    def read_body(self):
        if not self.chunked:
            while len(self.buf) < self.length:
                self._fill()
            body, self.buf = self.buf[: self.length], self.buf[self.length:]
            return body
        out = b""
        while True:
            chunk = self.read_chunk()
            if chunk is None:
                return out
            out += chunk

    def read_chunk(self):
        """One chunk of a chunked body, or None at its end."""
        while b"\r\n" not in self.buf:
            self._fill()
        size_line, self.buf = self.buf.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(self.buf) < size + 2:
            self._fill()
        data, self.buf = self.buf[:size], self.buf[size + 2:]
        return None if size == 0 else data

    def event(self):
        """The next NDJSON event of a lease stream; each must arrive as one whole chunk."""
        chunk = self.read_chunk()
        if chunk is None:
            return None
        assert chunk.endswith(b"\n") and chunk.count(b"\n") == 1, chunk
        return json.loads(chunk)

    def request(self, method, target, body=None, headers=None):
        self.send(method, target, body, headers)
        status, hdrs = self.read_head()
        raw = self.read_body()
        ctype = hdrs.get("content-type", "")
        return status, (json.loads(raw) if ctype.startswith("application/json") else raw.decode())


class Daemon:
    def __init__(self, tmp_path, *args, socket_dir=None):
        self.socket = pathlib.Path(socket_dir or tmp_path) / "zerogpud.sock"
        self.state = tmp_path / "state"
        self.log_path = tmp_path / "zerogpud.log"
        self.args = list(args)
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "w")
        cmd = [str(ZEROGPUD), "--socket", str(self.socket), "--state-dir", str(self.state)] + self.args
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"zerogpud exited {self.proc.returncode}: {self.log_text()}")
            try:
                c = UnixHTTP(self.socket, timeout=1)
                status, _ = c.request("GET", "/healthz")
                c.close()
                if status == 200:
                    return self
            except (FileNotFoundError, ConnectionRefusedError, EOFError, OSError):
                time.sleep(0.02)
        raise RuntimeError("zerogpud did not come up: " + self.log_text())

    def log_text(self):
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("zerogpud did not stop on SIGTERM")
        self.log.close()
        return self.proc.returncode

    def http(self, timeout=10.0):
        return UnixHTTP(self.socket, timeout=timeout)

    def get(self, path):
        c = self.http()
        try:
            return c.request("GET", path)
        finally:
            c.close()

    def call(self, method, path, body=None):
        c = self.http()
        try:
            return c.request(method, path, body)
        finally:
            c.close()

    def acquire(self, body=None, timeout=10.0):
        """Opens a lease stream; returns (connection, first event)."""
        c = self.http(timeout=timeout)
        c.send("POST", "/v1/leases", body or {})
        status, headers = c.read_head()
        assert status == 200, (status, c.read_body())
        assert headers["content-type"] == "application/x-ndjson"
        return c, c.event()

    def cli(self, *args, timeout=30, **kw):
        return subprocess.run([str(ZEROGPU), "--socket", str(self.socket)] + list(args),
                              capture_output=True, text=True, timeout=timeout, **kw)

    def busy_devices(self):
        _, body = self.get("/v1/devices")
        return [d["index"] for d in body["devices"] if d["state"] == "busy"]


@pytest.fixture
def make_daemon(tmp_path):
    started = []

    def make(*args, socket_dir=None):
        d = Daemon(tmp_path / f"d{len(started)}", *args, socket_dir=socket_dir)
        (tmp_path / f"d{len(started)}").mkdir(exist_ok=True)
        started.append(d)
        return d.start()

    yield make
    for d in started:
        rc = d.stop()
        # A clean exit matters: under the sanitizers a leak or error exits non-zero.
        assert rc == 0, f"zerogpud exited {rc}:\n{d.log_text()}"


@pytest.fixture
def daemon4(make_daemon):
    return make_daemon("--simulate", "4x80G")


@pytest.fixture
def daemon1(make_daemon):
    return make_daemon("--simulate", "1x80G")
