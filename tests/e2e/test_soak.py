"""The crash soak, short (tests/soak/soak.py; `make soak` runs the long one): clients and
the daemon killed with -9 at random moments while the invariants are checked."""
import os
import subprocess
import sys

from conftest import BUILD, ROOT


def test_crash_soak_short():
    seconds = os.environ.get("ZEROGPU_SOAK_SECONDS", "30")
    r = subprocess.run([sys.executable, str(ROOT / "tests/soak/soak.py"), "--build", str(BUILD),
                        "--duration", seconds, "--clients", "120", "--workers", "4"],
                       capture_output=True, text=True, timeout=float(seconds) + 240)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert '"violations": 0' in r.stdout, out[-4000:]
    assert '"daemon_kills_survived": 0' not in r.stdout, out[-2000:]  # it did kill the daemon
