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


def start_with_socket(tmp_path, listener, name):
    """zerogpud with the listening socket as fd 3, as systemd passes it (LISTEN_PID is
    the daemon's own pid: the wrapper sets it, then execs the daemon)."""
    fd = listener.fileno()
    wrapper = (f"import os; os.dup2({fd}, 3); os.environ['LISTEN_FDS'] = '1'; "
               f"os.environ['LISTEN_PID'] = str(os.getpid()); "
               f"os.execv({str(ZEROGPUD)!r}, {[str(ZEROGPUD), '--simulate', '1x80G', '--socket', str(tmp_path / 's'), '--state-dir', str(tmp_path / 'state')]!r})")
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
