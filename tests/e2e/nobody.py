"""Running a client as an unprivileged user (nobody), for the security tests.

The tests run as root (as CI does); each attack is made by a process that setpriv(1)
has turned into `nobody`, running Debian's python3 on code passed with -c, so that it
needs no access to the repository. CLIENT is the small HTTP client those processes use.
"""
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

NOBODY = 65534
PYTHON = "/usr/bin/python3"

# Raw HTTP/1.1, one connection per request, as a stranger's script would speak it.
CLIENT = r'''
import json, socket, sys, time

def connect(target):
    if target[0] == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(target[1])
    else:
        s = socket.create_connection((target[1], target[2]))
    s.settimeout(20)
    return s

def send(s, method, path, body=b"", headers=None, close=True):
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    s.sendall(head.encode() + b"\r\n" + body)

def read_all(s):
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk

def parse(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while body:
            size, _, body = body.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out += body[:n]
            body = body[n + 2:]
        body = out
    try:
        body = json.loads(body) if body.strip() else None
    except ValueError:
        body = body.decode(errors="replace")
    return int(lines[0].split()[1]), body

def request(target, method, path, body=b"", headers=None):
    s = connect(target)
    send(s, method, path, body, headers)
    reply = read_all(s)
    s.close()
    return parse(reply)
'''


def run(code, *args, timeout=60, check=True):
    """Runs CLIENT + code as nobody; returns its stdout parsed as JSON (or None)."""
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        PYTHON, "-c", CLIENT + code] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if r.stdout.strip() else None


def start(code, *args):
    """Starts CLIENT + code as nobody in the background; stdin and stdout are pipes (the
    code may wait for stdin to close)."""
    return subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                            "--clear-groups", PYTHON, "-c", CLIENT + code]
                            + [str(a) for a in args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def requests(target, *reqs):
    """Makes each (method, path[, body[, headers]]) request as nobody; returns [(status, body)].
    A body is text as it is, or anything else as JSON."""
    code = r'''
target = json.loads(sys.argv[1])
out = [request(target, *r) for r in json.loads(sys.argv[2])]
print(json.dumps(out))
'''
    return [tuple(x) for x in run(code, json.dumps(target), json.dumps([list(r) for r in reqs]))]


def sleeper(uid=None):
    """A process that sleeps: root's (uid None) or another user's."""
    cmd = ["sleep", "600"]
    if uid is not None:
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] + cmd
    return subprocess.Popen(cmd)


@pytest.fixture
def public_dir():
    """A directory nobody may reach, for the daemon's socket."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("the attacks are made as nobody: needs root and setpriv(1)")
    d = tempfile.mkdtemp(prefix="zerogpu-sec-")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)
