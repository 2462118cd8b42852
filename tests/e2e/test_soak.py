"""The crash soak, short (tests/soak/soak.py; `make soak` runs the long one): clients and
the daemon killed with -9 at random moments while the invariants are checked."""
import os
import subprocess
import sys

from conftest import BUILD, ROOT


def test_crash_soak_short(tmp_path):
    seconds = os.environ.get("ZEROGPU_SOAK_SECONDS", "30")
    log = tmp_path / "soak.log"
    # Into a file, not a pipe: the wait is for the soak, not for every process that might
    # still hold its output.
    with open(log, "w") as out:
        r = subprocess.run([sys.executable, str(ROOT / "tests/soak/soak.py"), "--build", str(BUILD),
                            "--duration", seconds, "--clients", "120", "--workers", "4"],
                           stdout=out, stderr=subprocess.STDOUT, timeout=float(seconds) + 240)
    text = log.read_text()
    assert r.returncode == 0, text[-4000:]
    assert '"violations": 0' in text, text[-4000:]
    assert '"daemon_kills_survived": 0' not in text, text[-2000:]  # it did kill the daemon
