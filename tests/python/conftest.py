"""Fixtures for the Python package's tests: a real zerogpud on simulated devices.

The tests run in a virtualenv where the package was installed with `pip install .`
(scripts/run-tests makes it, with Debian's CPU torch); the daemon comes from
$ZEROGPU_BUILD like the end-to-end tests', whose helpers are reused here.
"""
import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

HERE = pathlib.Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("zgpu_e2e", HERE.parent / "e2e" / "conftest.py")
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

SECRET = e2e.SECRET
visitor_token = e2e.visitor_token

# The package is switched on for this process before the tests import it, as an app
# would be; each test points it at its own daemon through ZEROGPU_SOCKET.
os.environ["ZEROGPU"] = "1"


ledger = e2e.ledger


@pytest.fixture
def zd(tmp_path, monkeypatch):
    """zd(*daemon_args) starts a daemon (default: one simulated device) and points
    zerogpu at it; workers and the client are dropped afterwards."""
    import zerogpu

    started = []

    def make(*args):
        args = args or ("--simulate", "1x80G")
        d = e2e.Daemon(tmp_path / f"d{len(started)}", *args)
        (tmp_path / f"d{len(started)}").mkdir()
        started.append(d)
        d.start()
        monkeypatch.setenv("ZEROGPU_SOCKET", str(d.socket))
        zerogpu.shutdown()
        return d

    yield make
    zerogpu.shutdown()
    for d in started:
        rc = d.stop()
        assert rc == 0, f"zerogpud exited {rc}:\n{d.log_text()}"


def run_app(code, env=None, timeout=60):
    """Runs code as an app in a fresh interpreter (for what must start clean: torch
    unpatched, RSS); returns the CompletedProcess, its output checked by the caller."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("ZEROGPU", "ZEROGPU_SOCKET")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=timeout)
