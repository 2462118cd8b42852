"""Hard device gating: a process can open only the GPUs its app holds a lease on
(docs/security.md#device-gating), on cgroup v1 and on cgroup v2.

The daemon lends simulated devices whose nodes are fake ones made with mknod in a
temporary directory (--device-dir). Without a driver behind them, an allowed open() fails
with ENXIO and a gated one with EPERM, so the two are told apart on any machine. Where a
test needs a descriptor that stays open (parking), GPU 0's node has the numbers of a real
device (/dev/full, 1:7), which then opens.

Each test's daemon has a cgroup root of its own, removed afterwards with every process
left in it.
"""
import json
import os
import pathlib
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import jsonschema
import pytest

import nobody
from conftest import BUILD, ROOT, ZEROGPU, Daemon, free_tcp_port
from nobody import public_dir  # noqa: F401 (a fixture)
from test_daemon import SPEC, schema_validator


MODES = ["cgroup-v1", "cgroup-v2"]
OPENABLE = (1, 7)  # /dev/full's numbers: a fake GPU whose open succeeds when allowed
SLOW = "asan" in os.environ.get("ZEROGPU_BUILD", "")


def cgroup_mounts():
    """The cgroup2 mount and the v1 devices and freezer mounts (as the daemon finds them)."""
    found = {}
    for line in open("/proc/self/mountinfo"):
        left, _, right = line.partition(" - ")
        fields, fstype = left.split(), right.split()
        if fields[3] != "/":
            continue
        if fstype[0] == "cgroup2":
            found.setdefault("v2", fields[4])
        elif fstype[0] == "cgroup":
            for c in ("devices", "freezer"):
                if c in fstype[2].split(","):
                    found.setdefault(c, fields[4])
    return found


MOUNTS = cgroup_mounts()
# .ci/run sets this: CI runs as root on a hybrid hierarchy, where a skip here would hide a
# gate that does not work, so there a missing prerequisite fails the test instead.
REQUIRED = os.environ.get("ZEROGPU_REQUIRE_GATE") == "1"


@pytest.fixture(autouse=True)
def gating_prerequisites(request):
    """Skips (or, where REQUIRED, fails) a test this machine cannot run, saying why."""
    mode = getattr(request.node, "callspec", None) and request.node.callspec.params.get("mode")
    missing = []
    if os.geteuid() != 0:
        missing.append("root (cgroups, BPF, mknod)")
    if "v2" not in MOUNTS:
        missing.append("a cgroup2 mount")
    if mode == "cgroup-v1" and "devices" not in MOUNTS:
        missing.append("the cgroup v1 devices controller")
    if missing:
        why = "device gating tests need " + " and ".join(missing)
        (pytest.fail if REQUIRED else pytest.skip)(why)


def remove_cgroup_tree(path):
    """Kills what is left in the cgroup at path and removes it, deepest first."""
    path = pathlib.Path(path)
    if not path.is_dir():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        remove_cgroup_tree(sub)
    if (path / "cgroup.kill").exists():
        (path / "cgroup.kill").write_text("1")
    elif (path / "cgroup.procs").exists():
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    if (path / "cgroup.freeze").exists():
        (path / "cgroup.freeze").write_text("0")
    if (path / "freezer.state").exists():
        (path / "freezer.state").write_text("THAWED")
    for _ in range(200):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)  # the killed are still leaving
    raise AssertionError(f"cannot remove {path}")


@pytest.fixture
def cgroup_root():
    """A cgroup root name of this test's own, removed from every hierarchy afterwards."""
    name = f"zgpu-test-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    yield name
    for m in MOUNTS.values():
        remove_cgroup_tree(pathlib.Path(m) / name)


def make_nodes(directory, gpus=2, openable_first=False):
    """nvidia0..gpus-1 (195:k, or 1:7 for GPU 0) and nvidiactl (195:255) in directory."""
    for k in range(gpus):
        major, minor = OPENABLE if (k == 0 and openable_first) else (195, k)
        os.mknod(directory / f"nvidia{k}", 0o666 | 0o020000, os.makedev(major, minor))
    os.mknod(directory / "nvidiactl", 0o666 | 0o020000, os.makedev(195, 255))
    return directory


@pytest.fixture
def nodes():
    d = pathlib.Path(tempfile.mkdtemp(prefix="zgpu-nodes-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def gated(make_daemon, mode, nodes, root, *args, gpus=2):
    return make_daemon("--simulate", f"{gpus}x80G", "--gate", mode, "--device-dir", str(nodes),
                       "--cgroup-root", root, "--grace", "0.3", *args)


def app_path(mode, root, app, kind=None):
    """App's managed cgroup in the gating hierarchy (kind None) or the freezing one."""
    mount = MOUNTS["v2"] if (mode == "cgroup-v2" or kind == "freeze") else MOUNTS["devices"]
    return pathlib.Path(mount) / root / f"app-{app}"


# A process of an app: it reads one command a line and answers one line.
PROBE = r'''
import errno, json, os, socket, sys, time
held = []

def try_open(path):
    try:
        os.close(os.open(path, os.O_RDWR))
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def http(target, method, path, body):
    if target.startswith("/"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(target)
    else:
        host, port = target.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    data = body.encode()
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    reply = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        reply += chunk
        if b"\r\n\r\n" in reply and b"event-stream" not in reply and b"ndjson" not in reply:
            head, _, rest = reply.partition(b"\r\n\r\n")
            m = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            if m and len(rest) >= int(m[0].split(b":")[1]):
                break
        if b"ndjson" in reply and reply.count(b"\n{") >= 1 and reply.rstrip().endswith(b"}"):
            break
    head, _, rest = reply.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    if b"ndjson" in head:
        held.append(s)  # a lease lives as long as its stream
    if b"chunked" in head.lower():
        out, body = b"", rest
        while body:
            size, _, body = body.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out += body[:n]
            body = body[n + 2:]
        rest = out
    return json.dumps([status, rest.decode(errors="replace").strip().split("\n")[0]])

for line in sys.stdin:
    cmd, *a = line.rstrip("\n").split(" ", 1)
    a = a[0].split(" ", 3) if a else []
    if cmd == "open":
        out = try_open(a[0])
    elif cmd == "hold":
        held.append(os.open(a[0], os.O_RDWR))
        out = "held"
    elif cmd == "pid":
        out = str(os.getpid())
    elif cmd == "ping":
        out = "pong"
    elif cmd == "fork-open":
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, try_open(a[0]).encode())
            os._exit(0)
        os.close(w)
        out = os.read(r, 100).decode()
        os.waitpid(pid, 0)
    elif cmd == "until-denied":
        deadline = time.monotonic() + float(a[1])
        while try_open(a[0]) != "EPERM" and time.monotonic() < deadline:
            pass
        out = repr(time.monotonic())
    elif cmd == "http":
        out = http(a[0], a[1], a[2], a[3] if len(a) > 3 else "")
    else:
        out = "?" + cmd
    print(out, flush=True)
'''


class Probe:
    """A process started in app's gated cgroup by `zerogpu launch`."""

    def __init__(self, daemon, app, cwd, extra=(), launch=True):
        cmd = ["/usr/bin/python3", "-u", "-c", PROBE]
        if launch:
            cmd = [str(ZEROGPU), "--socket", str(daemon.socket), "launch", "--app", app,
                   *extra, "--"] + cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=cwd,
                                     start_new_session=True)
        self.pid = int(self.ask("pid"))  # launch execs the probe: same pid

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout=10.0):
        """The next line, or None when none comes within timeout."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        assert line, f"the probe exited: {self.proc.stderr.read()}"
        return line.strip()

    def ask(self, line, timeout=10.0):
        self.send(line)
        return self.answer(timeout)

    def open(self, node):
        return self.ask(f"open {node}")

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()


ALLOWED = ("ok", "ENXIO")  # opened, or reached the (absent) driver


@pytest.fixture
def probes():
    started = []
    yield started
    for p in started:
        p.kill()


def probe(probes, daemon, app, nodes, **kw):
    p = Probe(daemon, app, nodes, **kw)
    probes.append(p)
    return p


def granted_index(ev):
    assert ev["event"] == "granted", ev
    return ev["devices"][0]["index"]


# ---------------------------------------------------------------------------
# The gate itself.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_without_a_lease_every_gpu_is_eperm(make_daemon, nodes, cgroup_root, probes, mode):
    d = gated(make_daemon, mode, make_nodes(nodes), cgroup_root)
    p = probe(probes, d, "painter", nodes)
    assert p.open("nvidia0") == "EPERM"
    assert p.open("nvidia1") == "EPERM"
    assert p.ask("fork-open nvidia0") == "EPERM"  # a child of the app is the app
    assert p.open("nvidiactl") == "ENXIO"  # control nodes stay open to all
    assert p.open("/dev/null") == "ok"
    _, st = d.get("/v1/status")
    assert st["gate"] == mode and "gate_reason" not in st
    schema_validator("Status").validate(st)
    out = d.cli("status").stdout
    assert f"devices gated ({mode})" in out
    assert p.pid in [int(x) for x in (app_path(mode, cgroup_root, "painter") / "cgroup.procs")
                     .read_text().split()]


@pytest.mark.parametrize("mode", MODES)
def test_a_lease_opens_its_gpu_and_no_other(make_daemon, nodes, cgroup_root, probes, mode):
    d = gated(make_daemon, mode, make_nodes(nodes), cgroup_root)
    p = probe(probes, d, "painter", nodes)
    c, ev = d.acquire({"app": "painter"})
    k = granted_index(ev)
    assert p.open(f"nvidia{k}") in ALLOWED
    assert p.open(f"nvidia{1 - k}") == "EPERM"
    assert p.ask(f"fork-open nvidia{k}") in ALLOWED
    assert p.ask(f"fork-open nvidia{1 - k}") == "EPERM"
    status, _ = d.call("DELETE", f"/v1/leases/{ev['lease']}")
    assert status == 200
    assert p.open(f"nvidia{k}") == "EPERM"
    c.close()


@pytest.mark.parametrize("mode", MODES)
def test_release_withdraws_access_within_10_ms_of_the_reply(make_daemon, nodes, cgroup_root,
                                                             probes, mode):
    d = gated(make_daemon, mode, make_nodes(nodes, gpus=1), cgroup_root, gpus=1)
    p = probe(probes, d, "painter", nodes)
    c, ev = d.acquire({"app": "painter"})
    assert p.open("nvidia0") == "ENXIO"
    p.send("until-denied nvidia0 10")  # opens nvidia0 over and over until it is EPERM
    time.sleep(0.2)
    status, _ = d.call("DELETE", f"/v1/leases/{ev['lease']}")
    replied = time.monotonic()
    denied = float(p.answer())
    assert status == 200
    assert denied - replied < 0.010, f"denied {1000 * (denied - replied):.1f} ms after the reply"
    c.close()


@pytest.mark.parametrize("mode", MODES)
def test_expiry_and_a_killed_client_kill_the_holder(make_daemon, nodes, cgroup_root, mode):
    d = gated(make_daemon, mode, make_nodes(nodes, gpus=1, openable_first=True), cgroup_root,
              gpus=1)
    hold = "import os, time; fd = os.open('nvidia0', os.O_RDWR); print('held', flush=True); time.sleep(60)"
    # The lease runs out: the command, which holds the GPU open, is killed.
    r = subprocess.run([str(ZEROGPU), "--socket", str(d.socket), "run", "--app", "painter", "-d",
                        "1", "--", "/usr/bin/python3", "-c", hold], cwd=nodes,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 124, r.stderr
    assert r.stdout.strip() == "held"
    # The client is killed with -9: the daemon kills what it left attached.
    run = subprocess.Popen([str(ZEROGPU), "--socket", str(d.socket), "run", "--app", "painter",
                            "--", "/usr/bin/python3", "-c",
                            hold.replace("print('held'", "print(os.getpid()")], cwd=nodes,
                           stdout=subprocess.PIPE, text=True)
    holder = int(run.stdout.readline())
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{holder}") and time.monotonic() < deadline:
        # A zombie until someone reaps it (its parent was the killed zerogpu): gone is enough.
        if open(f"/proc/{holder}/stat").read().split(")")[1].split()[0] == "Z":
            break
        time.sleep(0.02)
    state = open(f"/proc/{holder}/stat").read().split(")")[1].split()[0] \
        if os.path.exists(f"/proc/{holder}") else "gone"
    assert state in ("Z", "gone"), f"the holder still runs ({state})"
    assert d.busy_devices() == []


def cgroup_pids(path):
    procs = path / "cgroup.procs"
    return [int(x) for x in procs.read_text().split()] if procs.exists() else []


@pytest.mark.parametrize("mode", MODES)
def test_a_released_idle_worker_is_frozen_until_its_app_has_the_gpu_again(
        make_daemon, nodes, cgroup_root, probes, mode):
    d = gated(make_daemon, mode, make_nodes(nodes, gpus=1, openable_first=True), cgroup_root,
              gpus=1)
    worker = probe(probes, d, "painter", nodes)
    server = probe(probes, d, "painter", nodes)  # the app's server: holds no GPU
    c, ev = d.acquire({"app": "painter"})
    d.call("POST", f"/v1/leases/{ev['lease']}/attach", {"pid": worker.pid})
    assert worker.ask("hold nvidia0") == "held"
    d.call("DELETE", f"/v1/leases/{ev['lease']}")
    c.close()

    # Released, it still holds the GPU open: it is parked, frozen.
    parked = app_path(mode, cgroup_root, "painter", "freeze") / "parked"
    assert cgroup_pids(parked) == [worker.pid]
    assert "frozen 1" in (parked / "cgroup.events").read_text()
    assert worker.ask("ping", timeout=0.5) is None  # it does not run
    assert server.ask("ping") == "pong"  # the rest of the app does
    assert server.open("nvidia0") == "EPERM"
    _, st = d.get("/v1/status")
    assert st["parked"] == 1
    assert "1 process(es) parked" in d.cli("status").stdout
    assert f"app painter: parked process {worker.pid} (frozen)" in d.log_text()

    # Another app's lease on the GPU does not wake it.
    c2, ev2 = d.acquire({"app": "other"})
    assert worker.answer(timeout=0.3) is None
    d.call("DELETE", f"/v1/leases/{ev2['lease']}")
    c2.close()

    # Its app has the GPU again: it runs, and answers the ping it was sent.
    c3, ev3 = d.acquire({"app": "painter"})
    assert worker.answer(timeout=5) == "pong"
    assert cgroup_pids(parked) == []
    assert worker.pid in cgroup_pids(app_path(mode, cgroup_root, "painter", "freeze"))
    _, st = d.get("/v1/status")
    assert st["parked"] == 0
    d.call("DELETE", f"/v1/leases/{ev3['lease']}")
    c3.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_kept_worker_is_parked_then_handed_over_or_evicted(make_daemon, nodes, cgroup_root,
                                                            probes, mode):
    d = gated(make_daemon, mode, make_nodes(nodes, gpus=1, openable_first=True), cgroup_root,
              gpus=1)
    worker = probe(probes, d, "painter", nodes)
    c, ev = d.acquire({"app": "painter", "task": "f"})
    d.call("POST", f"/v1/leases/{ev['lease']}/attach", {"pid": worker.pid})
    assert worker.ask("hold nvidia0") == "held"
    status, body = d.call("DELETE", f"/v1/leases/{ev['lease']}?keep=1")
    assert body["kept"] is True
    c.close()
    # Resident, and parked while its app holds no lease (docs/residency.md).
    parked = app_path(mode, cgroup_root, "painter", "freeze") / "parked"
    assert cgroup_pids(parked) == [worker.pid]
    _, devs = d.get("/v1/devices")
    assert [r["pid"] for r in devs["devices"][0]["residents"]] == [worker.pid]
    # Its app's next call takes it over, warm: thawed, it runs.
    c, ev = d.acquire({"app": "painter", "task": "f"})
    assert ev["warm"] is True and ev["pid"] == worker.pid
    assert worker.ask("ping") == "pong" and cgroup_pids(parked) == []
    d.call("DELETE", f"/v1/leases/{ev['lease']}?keep=1")
    c.close()
    assert cgroup_pids(parked) == [worker.pid]
    # Another app's call needs the GPU's memory: the frozen resident is killed and dies.
    c, ev = d.acquire({"app": "other"})
    assert ev["event"] == "granted"
    worker.proc.wait(timeout=5)
    _, st = d.get("/v1/status")
    assert st["parked"] == 0 and st["devices"][0]["residents"] == []
    c.close()


@pytest.mark.parametrize("mode", MODES)
def test_two_apps_never_open_each_others_gpu(make_daemon, nodes, cgroup_root, probes, mode):
    d = gated(make_daemon, mode, make_nodes(nodes), cgroup_root)
    a = probe(probes, d, "alpha", nodes)
    b = probe(probes, d, "beta", nodes)
    ca, eva = d.acquire({"app": "alpha"})
    cb, evb = d.acquire({"app": "beta"})
    ka, kb = granted_index(eva), granted_index(evb)
    assert {ka, kb} == {0, 1}
    assert a.open(f"nvidia{ka}") in ALLOWED and a.open(f"nvidia{kb}") == "EPERM"
    assert b.open(f"nvidia{kb}") in ALLOWED and b.open(f"nvidia{ka}") == "EPERM"
    assert a.ask(f"fork-open nvidia{kb}") == "EPERM"
    ca.close()
    cb.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_restarted_daemon_fails_closed(tmp_path, nodes, cgroup_root, probes, mode):
    make_nodes(nodes)
    args = ("--simulate", "2x80G", "--gate", mode, "--device-dir", str(nodes), "--cgroup-root",
            cgroup_root)
    d = Daemon(tmp_path, *args).start()
    p = probe(probes, d, "painter", nodes)
    c, ev = d.acquire({"app": "painter", "duration_s": 60})
    k = granted_index(ev)
    assert p.open(f"nvidia{k}") in ALLOWED
    d.proc.kill()
    d.proc.wait()
    d.log.close()
    c.close()
    again = Daemon(tmp_path, *args).start()
    try:
        # The lease did not outlive its daemon: nothing is allowed.
        assert p.open(f"nvidia{k}") == "EPERM"
        assert p.open(f"nvidia{1 - k}") == "EPERM"
        if mode == "cgroup-v2":
            assert "replaced 1 gating program(s) a previous zerogpud left" in again.log_text()
        # A new lease opens its GPU again.
        c2, ev2 = again.acquire({"app": "painter"})
        assert p.open(f"nvidia{granted_index(ev2)}") in ALLOWED
        c2.close()
    finally:
        assert again.stop() == 0


@pytest.mark.parametrize("mode", MODES)
def test_the_apps_of_callers_come_from_their_cgroups(make_daemon, nodes, cgroup_root, probes,
                                                     mode):
    d = gated(make_daemon, mode, make_nodes(nodes), cgroup_root)
    p = probe(probes, d, "alpha", nodes)
    status, body = json.loads(p.ask(f"http {d.socket} POST /v1/leases {json.dumps({'app': 'beta'})}"))
    assert status == 403
    assert "runs in app 'alpha''s cgroup, so it may act as 'alpha' only, not as 'beta'" in body
    status, body = json.loads(p.ask(f"http {d.socket} POST /v1/leases {{}}"))
    assert status == 200, body
    lease = json.loads(body)["lease"]
    _, info = d.get(f"/v1/leases/{lease}")
    assert info["app"] == "alpha"


def test_a_forged_cgroup_path_changes_nothing(make_daemon, nodes, cgroup_root, probes):
    mode = "cgroup-v2"
    port = free_tcp_port()
    d = gated(make_daemon, mode, make_nodes(nodes), cgroup_root, "--listen", f"127.0.0.1:{port}",
              "--token", "t" * 40, "--spaces-app", "demo")
    beta = probe(probes, d, "beta", nodes)
    alpha = probe(probes, d, "alpha", nodes)
    beta_cgroup = f"/{cgroup_root}/app-beta"
    # From outside any app: the lease is the --spaces-app's, whatever path is sent.
    url = (f"http://127.0.0.1:{port}/schedule?cgroupPath={beta_cgroup}&taskId=1"
           "&enableQueue=true&durationSeconds=30")
    with urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b""),
                                timeout=10) as r:
        out = r.read().decode()
    assert "allowToken" in out, out
    assert beta.open("nvidia0") == "EPERM" and beta.open("nvidia1") == "EPERM"
    _, st = d.get("/v1/status")
    assert [l["app"] for l in st["leases"]] == ["demo"]
    # From inside alpha, naming beta's cgroup: the lease is alpha's (its socket's cgroup).
    status, body = json.loads(alpha.ask(
        f"http 127.0.0.1:{port} POST /schedule?cgroupPath={beta_cgroup}&taskId=2&enableQueue=true&durationSeconds=30"))
    assert status == 200, body
    k = json.loads(body)["nvidiaIndex"]
    assert alpha.open(f"nvidia{k}") in ALLOWED
    assert beta.open(f"nvidia{k}") == "EPERM"
    _, st = d.get("/v1/status")
    assert sorted(l["app"] for l in st["leases"]) == ["alpha", "demo"]


# ---------------------------------------------------------------------------
# Joining an app: who may put what where.
# ---------------------------------------------------------------------------

def test_who_may_join_which_process_to_which_app(make_daemon, nodes, cgroup_root, probes,
                                                 public_dir):
    d = make_daemon("--simulate", "1x80G", "--gate", "cgroup-v2", "--device-dir",
                    str(make_nodes(nodes, gpus=1, openable_first=True)), "--cgroup-root",
                    cgroup_root, socket_dir=public_dir)
    target = ("unix", str(d.socket))
    root_sleeper = nobody.sleeper()
    try:
        results = nobody.requests(
            target,
            ("POST", "/v1/apps/painter/join", {"pid": root_sleeper.pid}),
            ("POST", "/v1/apps/painter/join", {"pid": 1}),
            ("POST", "/v1/apps/no%2Fslash/join", {"pid": root_sleeper.pid}),
            ("POST", "/v1/apps/painter/join", {"pid": "x"}))
        assert results[0][0] == 403 and "belongs to uid 0, not to the caller" in \
            results[0][1]["error"]["message"]
        assert results[1][0] == 403 and "init" in results[1][1]["error"]["message"]
        assert results[2][0] == 400
        assert results[3][0] == 400
        assert root_sleeper.pid not in cgroup_pids(app_path("cgroup-v2", cgroup_root, "painter"))
    finally:
        root_sleeper.kill()
        root_sleeper.wait()
    # A process of one app cannot move itself, or a child, into another.
    p = probe(probes, d, "alpha", nodes)
    status, body = json.loads(p.ask(f"http {d.socket} POST /v1/apps/beta/join "
                                    f"{json.dumps({'pid': p.pid})}"))
    assert status == 403 and "may act as 'alpha' only" in body
    joiner = subprocess.Popen(["sleep", "60"])  # root's, so root may move it
    status, body = d.call("POST", "/v1/apps/gamma/join", {"pid": joiner.pid})
    joiner.kill()
    joiner.wait()
    assert status == 200 and body == {"app": "gamma", "pid": joiner.pid, "gate": "cgroup-v2"}
    path_schema = SPEC["paths"]["/v1/apps/{name}/join"]["post"]["responses"]["200"]
    jsonschema.Draft202012Validator(path_schema["content"]["application/json"]["schema"]) \
        .validate(body)
    status, body = d.call("POST", "/v1/apps/beta/join", {"pid": p.pid})  # root, from outside
    assert status == 403 and "runs in app alpha's cgroup" in body["error"]["message"]
    # A parked process stays parked: joining it anywhere is refused.
    c, ev = d.acquire({"app": "alpha"})
    d.call("POST", f"/v1/leases/{ev['lease']}/attach", {"pid": p.pid})
    assert p.ask("hold nvidia0") == "held"
    d.call("DELETE", f"/v1/leases/{ev['lease']}")
    c.close()
    status, body = d.call("POST", "/v1/apps/alpha/join", {"pid": p.pid})
    assert status == 409 and body["error"]["code"] == "parked"
    assert p.ask("ping", timeout=0.3) is None


def test_without_a_gate_launch_warns_and_runs(make_daemon, tmp_path):
    d = make_daemon("--simulate", "1x80G", "--device-dir", str(tmp_path))  # no nodes there
    _, st = d.get("/v1/status")
    assert st["gate"] == "off"
    assert f"{tmp_path}/nvidia0: No such file or directory" in st["gate_reason"]
    assert "devices not gated: device 0" in d.cli("status").stdout
    assert "devices are not gated" in d.log_text()
    r = d.cli("launch", "--app", "painter", "--", "sh", "-c", "echo ran as $ZEROGPU_APP")
    assert r.returncode == 0 and r.stdout == "ran as painter\n"
    assert "zerogpu: warning: zerogpud does not gate devices:" in r.stderr
    r = d.cli("launch", "--require-gate", "--", "true")
    assert r.returncode == 125 and "does not gate devices" in r.stderr
    r = d.cli("launch", "--", "/nonexistent/app")
    assert r.returncode == 127
    status, body = d.call("POST", "/v1/apps/painter/join", {"pid": os.getpid()})
    assert status == 409 and body["error"]["code"] == "gate_off"


def test_gate_cgroup_refuses_to_start_without_nodes(tmp_path):
    r = subprocess.run([str(BUILD / "src" / "daemon" / "zerogpud"), "--simulate", "1x80G",
                        "--socket", str(tmp_path / "s.sock"), "--state-dir", str(tmp_path / "st"),
                        "--gate", "cgroup", "--device-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert f"cannot gate devices: device 0 (GPU-" in r.stderr
    assert f"{tmp_path}/nvidia0: No such file or directory" in r.stderr
    r = subprocess.run([str(BUILD / "src" / "daemon" / "zerogpud"), "--gate", "sometimes"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert "--gate takes auto, cgroup, cgroup-v1, cgroup-v2 or off, not 'sometimes'" in r.stderr


# ---------------------------------------------------------------------------
# An operator's cgroup (a container's), and MIG.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_an_operators_cgroup_is_gated_and_regated_when_remade(make_daemon, tmp_path, nodes,
                                                              cgroup_root, probes, mode):
    mount = pathlib.Path(MOUNTS["v2"] if mode == "cgroup-v2" else MOUNTS["devices"])
    container = mount / cgroup_root / "ctr"  # under the test's root: removed afterwards
    container.mkdir(parents=True)
    config = tmp_path / "zerogpud.conf"
    config.write_text(f"[apps]\nboxed cgroup = /{cgroup_root}/ctr\n")
    d = gated(make_daemon, mode, make_nodes(nodes), cgroup_root, "--config", str(config))

    def contained():
        p = probe(probes, d, "", nodes, launch=False)
        (container / "cgroup.procs").write_text(str(p.pid))
        return p

    p = contained()
    assert p.open("nvidia0") == "EPERM" and p.open("nvidia1") == "EPERM"
    c, ev = d.acquire({"app": "boxed"})
    k = granted_index(ev)
    assert p.open(f"nvidia{k}") in ALLOWED and p.open(f"nvidia{1 - k}") == "EPERM"
    # Its own calls are the app's: the operator said whose cgroup it is.
    status, body = json.loads(p.ask(f"http {d.socket} POST /v1/leases {{}}"))
    assert status == 200, body
    _, info = d.get(f"/v1/leases/{json.loads(body)['lease']}")
    assert info["app"] == "boxed"
    # The runtime removes the cgroup and makes it again (a container restart): the new one
    # is gated within a second, with what the app's leases hold (the test's, on GPU k; the
    # probe's ended with it).
    p.kill()
    probes.remove(p)
    for _ in range(200):
        try:
            container.rmdir()
            break
        except OSError:
            time.sleep(0.01)  # the killed probe is still leaving
    container.mkdir()
    p = contained()
    deadline = time.monotonic() + 3
    while "app boxed: gating its cgroup" not in d.log_text():
        assert time.monotonic() < deadline, "the remade cgroup was not gated"
        time.sleep(0.05)
    assert p.open(f"nvidia{1 - k}") == "EPERM"
    assert p.open(f"nvidia{k}") in ALLOWED
    c.close()


def test_mig_instances_are_gated_by_their_capability_nodes(make_daemon, nodes, cgroup_root,
                                                           probes, monkeypatch, tmp_path):
    # One GPU in MIG mode with two instances (fake NVML: GPU instance i+1, compute instance 0).
    monkeypatch.setenv("FAKE_NVML_GPUS", "80:mig2")
    minors = tmp_path / "mig-minors"
    minors.write_text("config 1\nmonitor 2\ngpu0/gi1/access 10\ngpu0/gi1/ci0/access 11\n"
                      "gpu0/gi2/access 20\ngpu0/gi2/ci0/access 21\n")
    os.mknod(nodes / "nvidia0", 0o666 | 0o020000, os.makedev(195, 0))
    (nodes / "nvidia-caps").mkdir()
    for m in (10, 11, 20, 21):
        os.mknod(nodes / "nvidia-caps" / f"nvidia-cap{m}", 0o444 | 0o020000, os.makedev(237, m))
    d = make_daemon("--nvml-library", str(BUILD / "tests" / "unit" / "libfake-nvml.so"),
                    "--gate", "cgroup-v2", "--device-dir", str(nodes), "--mig-minors", str(minors),
                    "--cgroup-root", cgroup_root)
    p = probe(probes, d, "painter", nodes)
    caps = {m: f"nvidia-caps/nvidia-cap{m}" for m in (10, 11, 20, 21)}
    assert all(p.open(c) == "EPERM" for c in caps.values())
    assert p.open("nvidia0") == "ENXIO"  # the parent's node is every instance's: not gated
    c, ev = d.acquire({"app": "painter"})
    k = granted_index(ev)
    mine, theirs = ((10, 11), (20, 21)) if k == 0 else ((20, 21), (10, 11))
    assert all(p.open(caps[m]) == "ENXIO" for m in mine)
    assert all(p.open(caps[m]) == "EPERM" for m in theirs)
    c.close()
    # CUDA lets a process use one MIG instance: a whole-GPU request is refused with why.
    status, body = d.call("POST", "/v1/leases", {"size": "xlarge"})
    assert status == 503
    assert "MIG" in body["error"]["message"]


# ---------------------------------------------------------------------------
# The walk-through in docs/security.md, pasted into a shell.
# ---------------------------------------------------------------------------

def test_the_documented_walkthrough_shows_the_gate():
    text = (ROOT / "docs" / "security.md").read_text()
    block = re.search(r"<!-- walkthrough -->\n```sh\n(.*?)```", text, re.S)
    assert block, "docs/security.md has no walk-through block"
    script = block.group(1).replace("$PWD/build/", f"{BUILD}/")
    r = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    out = r.stdout + r.stderr
    seen = [m.group(1) for m in re.finditer(r"cannot open nvidia0: (.*)", out)]
    assert seen == ["Operation not permitted", "No such device or address",
                    "Operation not permitted"], out


@pytest.mark.parametrize("mode", MODES)
def test_the_event_stream_tells_the_gate_opening_and_closing(make_daemon, nodes, cgroup_root, mode):
    from events_client import EventStream
    d = gated(make_daemon, mode, make_nodes(nodes), cgroup_root)
    s = EventStream(d.http())
    s.next()
    c, ev = d.acquire({"app": "painter"})
    (_, opened), seen = s.until(lambda n, e: n == "gate" and e["kind"] == "opened")
    assert opened["app"] == "painter" and opened["lease"] == ev["lease"]
    assert [x["index"] for x in opened["devices"]] == [granted_index(ev)]
    # The gate opens before the grant is told to anyone.
    assert not [e for n, e in seen if n == "lease" and e["kind"] == "granted"]
    s.until(lambda n, e: n == "lease" and e["kind"] == "granted")
    c.close()
    (_, closed), seen = s.until(lambda n, e: n == "gate" and e["kind"] == "closed")
    assert closed["lease"] == ev["lease"]
    s.until(lambda n, e: n == "lease" and e["kind"] == "ended")
    s.close()
