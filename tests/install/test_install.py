"""`meson install` as an operator gets it: into a DESTDIR, from a build of its own (prefix
/usr, the library and headers installed, no Python extension). The files, the man pages
against the programs' --help and docs/configuration.md, the pkg-config file by compiling
against it, the units through systemd-analyze verify, and the installed daemon under a
service manager's protocol (READY=1, the watchdog, a passed socket)."""
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    build, dest = tmp / "build", tmp / "root"
    subprocess.run(["meson", "setup", str(build), str(ROOT), "--prefix=/usr",
                    "--sysconfdir=/etc", "-Dpython=false", "-Dtests=false", "-Dwerror=true",
                    "-Dman=enabled"], check=True, capture_output=True, text=True)
    r = subprocess.run(["meson", "compile", "-C", str(build)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = subprocess.run(["meson", "install", "-C", str(build), "--destdir", str(dest)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    libdir = next(p.parent for p in dest.rglob("libzerogpu.so"))
    return dest, libdir


def test_the_files_an_operator_gets(installed):
    dest, libdir = installed
    for path in ["usr/bin/zerogpud", "usr/bin/zerogpu", "usr/include/zerogpu.h",
                 "usr/lib/systemd/system/zerogpud.service",
                 "usr/lib/systemd/system/zerogpud.socket", "usr/lib/tmpfiles.d/zerogpu.conf",
                 "usr/lib/sysusers.d/zerogpu.conf",
                 "usr/share/man/man8/zerogpud.8", "usr/share/man/man1/zerogpu.1",
                 "usr/share/man/man5/zerogpud.conf.5"]:
        assert (dest / path).exists(), path
    assert (libdir / "pkgconfig" / "zerogpu.pc").exists()
    service = (dest / "usr/lib/systemd/system/zerogpud.service").read_text()
    assert "ExecStart=/usr/bin/zerogpud --config /etc/zerogpu/zerogpud.conf" in service
    assert "Type=notify" in service and "WatchdogSec=" in service


def run_installed(installed, *args, **kw):
    dest, libdir = installed
    env = dict(os.environ, LD_LIBRARY_PATH=str(libdir))
    env.update(kw.pop("env", {}))
    return subprocess.run([str(dest / "usr/bin" / args[0]), *args[1:]], env=env,
                          capture_output=True, text=True, timeout=30, **kw)


def man_text(installed, section, name):
    dest, _ = installed
    page = dest / f"usr/share/man/man{section}/{name}.{section}"
    return subprocess.run(["man", "-l", str(page)], capture_output=True, text=True,
                          env=dict(os.environ, MANWIDTH="200")).stdout


def test_the_man_pages_follow_the_help_and_the_settings(installed):
    help_text = run_installed(installed, "zerogpud", "--help").stdout
    options = set(re.findall(r"^  (--[a-z-]+)", help_text, re.M))
    assert len(options) > 40
    page = man_text(installed, 8, "zerogpud")
    documented = set(re.findall(r"^\s+(--[a-z-]+)", page, re.M))
    assert options <= documented, options - documented
    cli = man_text(installed, 1, "zerogpu")
    for command in re.findall(r"^  ([a-z]+)\s{2,}",
                              run_installed(installed, "zerogpu", "--help").stdout, re.M):
        assert f"zerogpu {command}" in cli, command
    conf = man_text(installed, 5, "zerogpud.conf")
    config_md = (ROOT / "docs/configuration.md").read_text()
    for key in re.findall(r"^\| `([a-z_]+)` \|", config_md, re.M):
        assert re.search(rf"^\s+{key} \(option", conf, re.M), key


def test_pkg_config_builds_a_client(installed, tmp_path):
    dest, libdir = installed
    src = tmp_path / "client.c"
    src.write_text('#include <stdio.h>\n#include <zerogpu.h>\n'
                   'int main(void) { puts(zgpu_strerror(ZGPU_ECONNECT)); return 0; }\n')
    env = dict(os.environ, PKG_CONFIG_PATH=str(libdir / "pkgconfig"),
               PKG_CONFIG_SYSROOT_DIR=str(dest))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "zerogpu"], env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["cc", str(src), "-o", str(tmp_path / "client"), *flags], check=True)
    out = subprocess.run([str(tmp_path / "client")], capture_output=True, text=True,
                         env=dict(os.environ, LD_LIBRARY_PATH=str(libdir)))
    assert out.returncode == 0 and out.stdout.strip()


def test_systemd_analyze_verify(installed, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is missing (Debian: systemd)")
    dest, _ = installed
    units = tmp_path / "units"
    units.mkdir()
    for name in ("zerogpud.service", "zerogpud.socket"):
        text = (dest / "usr/lib/systemd/system" / name).read_text()
        # The binary is in the DESTDIR, not yet at /usr/bin.
        text = text.replace("ExecStart=/usr/bin/zerogpud", f"ExecStart={dest}/usr/bin/zerogpud")
        (units / name).write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(units / "zerogpud.service"),
                        str(units / "zerogpud.socket")], capture_output=True, text=True,
                       env=dict(os.environ, SYSTEMD_UNIT_PATH=f"{units}:"))
    own = [line for line in r.stderr.splitlines() if "zerogpud" in line]
    assert r.returncode == 0 and not own, r.stderr


def test_the_sysusers_snippet_makes_the_group(installed, tmp_path):
    dest, _ = installed
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    r = subprocess.run(["systemd-sysusers", f"--root={root}", "--dry-run",
                        str(dest / "usr/lib/sysusers.d/zerogpu.conf")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "Creating group 'zerogpu'" in r.stdout + r.stderr, r.stderr
    # The socket unit names it where an operator would use it.
    assert "SocketGroup=zerogpu" in (dest / "usr/lib/systemd/system/zerogpud.socket").read_text()


def test_the_installed_daemon_under_a_service_manager(installed, tmp_path):
    dest, libdir = installed
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(10)
    path = tmp_path / "zerogpud.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    fd = listener.fileno()
    argv = [str(dest / "usr/bin/zerogpud"), "--simulate", "1x80G", "--socket", str(path),
            "--state-dir", str(tmp_path / "state"), "--drain", "5"]
    wrapper = (f"import os; os.dup2({fd}, 3); os.environ['LISTEN_FDS'] = '1'; "
               f"os.environ['LISTEN_PID'] = str(os.getpid()); os.execv({argv[0]!r}, {argv!r})")
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="400000",
               LD_LIBRARY_PATH=str(libdir))
    d = subprocess.Popen([sys.executable, "-c", wrapper], pass_fds=(fd,), env=env,
                         stderr=subprocess.PIPE, text=True)
    try:
        got = ""
        deadline = time.monotonic() + 10
        while "READY=1" not in got and time.monotonic() < deadline:
            got += notify.recv(4096).decode()
        assert "READY=1" in got
        got = ""
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1:
            got += notify.recv(4096).decode()
        assert got.count("WATCHDOG=1") >= 3
        r = run_installed(installed, "zerogpu", "--socket", str(path), "run", "-d", "5", "--",
                          "true", env={"LD_LIBRARY_PATH": str(libdir)})
        assert r.returncode == 0, r.stderr
        d.send_signal(signal.SIGTERM)
        assert d.wait(10) == 0
        assert "the service manager passed the socket" in d.stderr.read()
        assert path.exists()
    finally:
        if d.poll() is None:
            d.kill()
        notify.close()
        listener.close()


def known_keys(installed, tmp_path, section):
    """The keys zerogpud itself accepts in section, from its refusal of an unknown one."""
    conf = tmp_path / "probe.conf"
    conf.write_text(f"[{section}]\nno_such_key = 1\n")
    r = run_installed(installed, "zerogpud", "--config", str(conf))
    m = re.search(rf"unknown setting 'no_such_key' in \[{section}\]; known: (.*)$", r.stderr,
                  re.M)
    assert m, r.stderr
    return set(m.group(1).split())


def test_the_sample_config_lists_every_setting_zerogpud_knows(installed, tmp_path):
    dest, _ = installed
    text = (dest / "etc/zerogpu/zerogpud.conf").read_text()
    sections, section = {}, None
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
            sections.setdefault(section, set())
        m = re.match(r"^; ([a-z_]+) =", line)
        if m and section != "apps":
            sections[section].add(m.group(1))
        assert not line or line.startswith((";", "[")), line  # nothing set: all commented
    for name, keys in sections.items():
        if name != "apps":
            assert keys == known_keys(installed, tmp_path, name), name
    # Uncommented as it is, every value in it is one zerogpud takes.
    live = "\n".join(re.sub(r"^; ([a-z_]+ = \S.*)$", r"\1", line) for line in text.splitlines())
    conf = tmp_path / "live.conf"
    conf.write_text(live)
    r = run_installed(installed, "zerogpud", "--config", str(conf), "--simulate", "1x80G",
                      "--socket", str(tmp_path / "s"), "--state-dir", str(tmp_path / "st"),
                      "--help")
    assert r.returncode == 0, r.stderr
    # An operator's file is never replaced by a later install.
    (dest / "etc/zerogpu/zerogpud.conf").write_text("[leases]\ngrace = 5\n")
    subprocess.run([str(ROOT / "scripts/install-config"), str(conf), "/etc"], check=True,
                   env=dict(os.environ, DESTDIR=str(dest)), capture_output=True)
    assert (dest / "etc/zerogpu/zerogpud.conf").read_text() == "[leases]\ngrace = 5\n"
