"""zerogpud under a service manager, as systemd runs it: READY=1 and the watchdog's
pings on $NOTIFY_SOCKET, STOPPING=1, and a listening socket passed in (socket
activation, LISTEN_FDS) that outlives a restart; and a client that rides out a restart
by hand (the socket missing for a moment)."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from conftest import ZEROGPU, ZEROGPUD, UnixHTTP


def notify_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(5)
    return s


def messages(s, until, timeout=5):
    """Datagrams until one contains `until`."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.append(s.recv(4096).decode())
        except socket.timeout:
            break
        if until in got[-1]:
            return got
    raise AssertionError(f"no {until} in {got}")


def wait_serving(path, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = UnixHTTP(path, timeout=1)
            status, _ = c.request("GET", "/healthz")
            c.close()
            if status == 200:
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("zerogpud did not serve")


def test_ready_watchdog_and_stopping(tmp_path):
    n = notify_socket(tmp_path / "notify")
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="200000")
    d = subprocess.Popen([str(ZEROGPUD), "--simulate", "1x80G", "--socket",
                          str(tmp_path / "s"), "--state-dir", str(tmp_path / "state")],
                         env=env, stderr=subprocess.PIPE, text=True)
    try:
        got = messages(n, "READY=1")
        assert any("STATUS=serving " in m for m in got)
        # A heartbeat twice per WATCHDOG_USEC, from the event loop.
        t0 = time.monotonic()
        pings = 0
        while time.monotonic() - t0 < 1.0:
            pings += n.recv(4096).decode().count("WATCHDOG=1")
        assert 7 <= pings <= 13, pings
        d.send_signal(signal.SIGTERM)
        messages(n, "STOPPING=1")
        assert d.wait(10) == 0
        assert "watchdog: a heartbeat every 0.100 s" in d.stderr.read()
    finally:
        if d.poll() is None:
            d.kill()
        n.close()


def start_with_socket(tmp_path, listener, name, *args):
    """zerogpud with the listening socket as fd 3, as systemd passes it (LISTEN_PID is
    the daemon's own pid: the wrapper sets it, then execs the daemon)."""
    fd = listener.fileno()
    argv = [str(ZEROGPUD), "--simulate", "1x80G", "--socket", str(tmp_path / "s"),
            "--state-dir", str(tmp_path / "state"), *args]
    wrapper = (f"import os; os.dup2({fd}, 3); os.environ['LISTEN_FDS'] = '1'; "
               f"os.environ['LISTEN_PID'] = str(os.getpid()); "
               f"os.execv({str(ZEROGPUD)!r}, {argv!r})")
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-c", wrapper], pass_fds=(fd,), stdout=log,
                            stderr=subprocess.STDOUT)


def test_a_passed_socket_holds_calls_across_a_restart(tmp_path):
    path = tmp_path / "s"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    first = start_with_socket(tmp_path, listener, "first")
    wait_serving(path)
    assert "the service manager passed the socket" in (tmp_path / "first.log").read_text()
    first.send_signal(signal.SIGTERM)
    assert first.wait(10) == 0
    assert path.exists()  # the manager's socket stays
    # A call made while no daemon runs waits in the socket's backlog...
    result = {}

    def call():
        result["r"] = subprocess.run([str(ZEROGPU), "--socket", str(path), "run", "-d", "5",
                                      "--", "true"], capture_output=True, text=True,
                                     timeout=30)
    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.5)
    assert t.is_alive()
    # ...and the next daemon, given the same socket, answers it.
    second = start_with_socket(tmp_path, listener, "second")
    t.join(20)
    try:
        assert result["r"].returncode == 0, result["r"].stderr
        wait_serving(path)
        assert "the service manager passed the socket" in (tmp_path / "second.log").read_text()
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
        listener.close()


def test_a_client_rides_out_a_restart_by_hand(tmp_path):
    args = [str(ZEROGPUD), "--simulate", "1x80G", "--socket", str(tmp_path / "s"),
            "--state-dir", str(tmp_path / "state")]
    first = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    wait_serving(tmp_path / "s")
    first.send_signal(signal.SIGTERM)
    assert first.wait(10) == 0
    assert not (tmp_path / "s").exists()
    result = {}

    def call():
        result["r"] = subprocess.run([str(ZEROGPU), "--socket", str(tmp_path / "s"), "run",
                                      "-d", "5", "--", "true"], capture_output=True,
                                     text=True, timeout=30)
    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.7)  # the client retries the missing socket meanwhile
    second = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    t.join(20)
    try:
        assert result["r"].returncode == 0, result["r"].stderr
        wait_serving(tmp_path / "s")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
    # Past the bound, it fails with the reason.
    t0 = time.monotonic()
    r = subprocess.run([str(ZEROGPU), "--socket", str(tmp_path / "s"), "status"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "No such file or directory, for 3 s" in r.stderr
    assert 2.5 < time.monotonic() - t0 < 6


def stop_mid_call(d, path):
    """SIGTERM to d while a call holds a lease, so the restart meets a call in flight."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            c = UnixHTTP(path, timeout=1)
            _, st = c.request("GET", "/v1/status")
            c.close()
            if st["leases"]:
                d.send_signal(signal.SIGTERM)
                return
        except OSError:
            pass
        time.sleep(0.005)
    raise AssertionError("no call held a lease")


class CallingApp:
    """An app calling every 100 ms (`zerogpu run`, a lease each), recording each call."""

    def __init__(self, socket_path):
        self.socket = socket_path
        self.results = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            r = subprocess.run([str(ZEROGPU), "--socket", str(self.socket), "run", "-d", "5",
                                "--", "sleep", "0.03"], capture_output=True, text=True,
                               timeout=30)
            self.results.append((r.returncode, r.stderr.strip()))
            time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def test_restarts_by_hand_while_an_app_calls_no_call_fails(tmp_path):
    args = [str(ZEROGPUD), "--simulate", "1x80G", "--socket", str(tmp_path / "s"),
            "--state-dir", str(tmp_path / "state"), "--drain", "10"]
    d = subprocess.Popen(args, stderr=open(tmp_path / "d0.log", "w"))
    wait_serving(tmp_path / "s")
    with CallingApp(tmp_path / "s") as app:
        for i in range(1, 4):
            time.sleep(0.3)
            stop_mid_call(d, tmp_path / "s")
            assert d.wait(15) == 0
            d = subprocess.Popen(args, stderr=open(tmp_path / f"d{i}.log", "w"))
            wait_serving(tmp_path / "s")
        time.sleep(0.6)
    d.send_signal(signal.SIGTERM)
    assert d.wait(15) == 0
    failed = [r for r in app.results if r[0] != 0]
    assert len(app.results) >= 15 and not failed, failed
    # Each restart met a call in flight, which ran to its end.
    for i in range(3):
        log = (tmp_path / f"d{i}.log").read_text()
        assert "draining: 1 lease(s)" in log and "drained in" in log, log


def test_restarts_with_a_passed_socket_while_an_app_calls_no_call_fails(tmp_path):
    path = tmp_path / "s"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    d = start_with_socket(tmp_path, listener, "d0", "--drain", "10")
    wait_serving(path)
    with CallingApp(path) as app:
        for i in range(1, 4):
            time.sleep(0.3)
            stop_mid_call(d, path)
            assert d.wait(15) == 0
            d = start_with_socket(tmp_path, listener, f"d{i}", "--drain", "10")
            wait_serving(path)
        time.sleep(0.6)
    d.send_signal(signal.SIGTERM)
    assert d.wait(15) == 0
    listener.close()
    failed = [r for r in app.results if r[0] != 0]
    assert len(app.results) >= 15 and not failed, failed
    for i in range(3):
        log = (tmp_path / f"d{i}.log").read_text()
        assert "draining: 1 lease(s)" in log and "drained in" in log, log


def test_a_call_granted_as_the_drain_begins_still_runs(tmp_path):
    """The hardest moment of a restart by hand: a waiting call is granted, and the daemon
    is told to stop before the call has joined its app's cgroup and attached its command.
    Draining, the daemon accepts no new connection; the call's client reaches it on the
    control connection it readied while it waited, runs, and releases."""
    sock = tmp_path / "s"
    d = subprocess.Popen([str(ZEROGPUD), "--simulate", "1x80G", "--socket", str(sock),
                          "--state-dir", str(tmp_path / "state"), "--drain", "10"],
                         stderr=open(tmp_path / "d.log", "w"))
    wait_serving(sock)
    holder = UnixHTTP(sock)
    holder.send("POST", "/v1/leases", {"duration_s": 30})
    assert holder.read_head()[0] == 200
    lease = holder.event()["lease"]
    waiting = subprocess.Popen([str(ZEROGPU), "--socket", str(sock), "run", "-q", "--", "true"],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 5
    while True:  # until the call waits in the queue
        c = UnixHTTP(sock)
        _, queue = c.request("GET", "/v1/queue")
        c.close()
        if queue["queue"]:
            break
        assert time.monotonic() < deadline, "the call never queued"
        time.sleep(0.01)
    # Releasing the GPU grants the waiting call at once; the stop follows right away.
    c = UnixHTTP(sock)
    assert c.request("DELETE", f"/v1/leases/{lease}")[0] == 200
    d.send_signal(signal.SIGTERM)
    c.close()
    holder.close()
    _, err = waiting.communicate(timeout=20)
    assert waiting.returncode == 0, err
    assert d.wait(15) == 0
