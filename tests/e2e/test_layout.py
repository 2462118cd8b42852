"""The daemon's layers hold: the pure core (src/daemon/core/) includes no event loop, no
database and no sockets, and a build that tries fails (scripts/check-core-includes)."""
import pathlib
import shutil
import subprocess

import pytest

from conftest import ROOT

CORE = ROOT / "src" / "daemon" / "core"


def test_the_core_includes_no_loop_database_or_sockets():
    r = subprocess.run(["grep", "-rE", "event2/|sqlite3.h|sys/socket.h", str(CORE)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == "", r.stdout
    checker = ROOT / "scripts" / "check-core-includes"
    files = sorted(str(p) for p in CORE.iterdir() if p.suffix in (".c", ".h"))
    r = subprocess.run([str(checker), "/dev/null"] + files, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not shutil.which("meson") or not shutil.which("git"),
                    reason="needs meson and git")
def test_a_build_with_a_forbidden_include_in_the_core_fails(tmp_path):
    # A copy of the tracked sources, one core file given an event-loop include.
    tree = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            dst = tree / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    engine = tree / "src" / "daemon" / "core" / "engine.c"
    engine.write_text("#include <event2/event.h>\n" + engine.read_text())
    build = tmp_path / "build"
    r = subprocess.run(["meson", "setup", str(build), str(tree), "-Dtests=false"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["ninja", "-C", str(build), "src/daemon/core/libzgpud_core.a"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "engine.c:1: the pure core may not include <event2/event.h>" in r.stdout + r.stderr
