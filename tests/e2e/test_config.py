"""The config file: values, precedence of options, and precise refusals."""
import subprocess
import textwrap

import pytest

from conftest import ZEROGPUD


def write(tmp_path, text):
    path = tmp_path / "zerogpud.conf"
    path.write_text(textwrap.dedent(text))
    return path


def test_settings_come_from_the_file(make_daemon, tmp_path):
    conf = write(tmp_path, """
        ; zerogpud settings
        [devices]
        simulate = 3x40G
        split = 2

        [leases]
        max_duration = 10
        grace = 0.5

        [scheduler]
        policy = fifo
        app_limit = 2
    """)
    d = make_daemon("--config", str(conf))
    _, st = d.get("/v1/status")
    assert len(st["devices"]) == 3 and st["devices"][0]["slots"] == 2
    assert st["limits"]["max_duration_s"] == 10 and st["limits"]["grace_s"] == 0.5
    assert st["policy"] == "fifo"
    status, body = d.call("POST", "/v1/leases", {"duration_s": 20})
    assert status == 400
    assert body["error"]["message"] == "duration 20 s is above this server's maximum of 10 s"
    assert f"read settings from {conf}" in d.log_text()


def test_options_override_the_file(make_daemon, tmp_path):
    conf = write(tmp_path, """
        [leases]
        max_duration = 10
    """)
    d = make_daemon("--max-duration", "20", "--config", str(conf), "--simulate", "1x80G")
    assert d.get("/v1/status")[1]["limits"]["max_duration_s"] == 20


@pytest.mark.parametrize("text,message", [
    ("[leases]\nmax_durration = 10\n",
     ":2: unknown setting 'max_durration' in [leases]; known: max_duration default_duration "
     "default_max_wait grace"),
    ("[server]\nsocket = /tmp/x\n[quotas]\nfree = 1\n",
     ":4: unknown section [quotas]; known: [server], [ledger], [devices], [leases], [scheduler]"),
    ("[leases]\ngrace = 1\n\ngrace = -1\n", ":4: [leases] grace takes seconds >= 0, not '-1'"),
    ("[devices]\nsplit = 4\n", ":2: [devices] split takes 1 or 2, not '4'"),
    ("[scheduler]\npolicy = random\n", ":2: [scheduler] policy takes priority or fifo, not 'random'"),
    ("this is not ini\n", ":1: not an INI line (expected [section] or key = value)"),
    ("[ledger]\nurl = mysql://db/zerogpu\n",
     ":2: [ledger] url takes sqlite, postgresql (from libpq's PG* environment) or a "
     "postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DB URL, not 'mysql://db/zerogpu'"),
    ("[overage]\npro = maybe\n", ":2: [overage] pro takes allow or deny, not 'maybe'"),
    ("[server]\nnode = -gpu1\n",
     ":2: [server] node takes a node name of 1 to 63 letters, digits, '.', '_' or '-' "
     "(starting with a letter or digit), not '-gpu1'"),
])
def test_bad_files_are_refused_with_file_line_and_reason(tmp_path, text, message):
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    r = subprocess.run([str(ZEROGPUD), "--config", str(conf), "--socket", str(tmp_path / "s"),
                        "--state-dir", str(tmp_path / "state")], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2
    assert f"zerogpud: {conf}{message}" in r.stderr


def test_a_missing_config_file_is_an_error(tmp_path):
    r = subprocess.run([str(ZEROGPUD), "--config", str(tmp_path / "nope.conf")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert f"cannot read config file {tmp_path / 'nope.conf'}: No such file or directory" in r.stderr


def test_every_documented_option_is_in_the_help():
    import re
    from conftest import ROOT
    documented = set(re.findall(r"`(--[a-z-]+)`", (ROOT / "docs" / "configuration.md").read_text()))
    assert len(documented) > 20
    help_text = subprocess.run([str(ZEROGPUD), "--help"], capture_output=True, text=True).stdout
    missing = sorted(o for o in documented if o not in help_text)
    assert not missing, f"in docs/configuration.md but not in zerogpud --help: {missing}"
    # And every documented option is accepted (each needs a value; a bad one is refused
    # by its own checker, not as an unknown option).
    for option in sorted(documented - {"--config", "--token-file", "--visitor-secret-file"}):
        r = subprocess.run([str(ZEROGPUD), option, "-1", "--help"], capture_output=True, text=True)
        assert "unknown option" not in r.stderr, option
