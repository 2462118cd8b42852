"""A real PostgreSQL for the tests: a cluster made with initdb in a temporary directory,
serving on a loopback port, removed afterwards. The server refuses to run as root, so
as root it runs as the `postgres` user (Debian's package makes it) or `nobody`.

`PgCluster.database()` gives each test a database of its own on the one cluster."""
import glob
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
import time


def _bindir():
    for pattern in ("/usr/lib/postgresql/*/bin",):
        found = sorted(glob.glob(pattern), key=lambda p: int(p.split("/")[-2]))
        for d in reversed(found):
            if os.path.exists(os.path.join(d, "initdb")):
                return d
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def available():
    """Why PostgreSQL cannot run here, or None when it can."""
    if not _bindir():
        return "PostgreSQL's server is not installed (Debian: apt-get install postgresql)"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    def __init__(self):
        self.bindir = _bindir()
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="zerogpu-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.user = None
        if os.geteuid() == 0:
            name = "postgres"
            try:
                pwd.getpwnam(name)
            except KeyError:
                name = "nobody"
            self.user = name
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, user=name)
        self.ndb = 0

    def _run(self, *cmd, check=True):
        argv = [os.path.join(self.bindir, cmd[0])] + list(cmd[1:])
        if self.user:
            argv = ["runuser", "-u", self.user, "--"] + argv
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)

    def start(self, durable=False):
        """Makes and starts the cluster. Tests need no durability (fsync off, faster);
        a benchmark asks for PostgreSQL's defaults (durable=True)."""
        self.durable = durable
        self._run("initdb", "-D", str(self.data), "-U", "zerogpu", "-A", "trust",
                  "--no-sync", "-E", "UTF8", "--locale", "C")
        self.start_server()
        return self

    def stop_server(self, mode="fast"):
        """Stops the server (the cluster stays): `immediate` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def start_server(self):
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 " \
                  "-c max_connections=200"
        if not self.durable:
            options += " -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                  "-o", options, "start")

    def url(self, db="postgres"):
        return f"postgresql://zerogpu@127.0.0.1:{self.port}/{db}"

    def psql(self, sql, db="postgres"):
        """Runs sql; returns the rows, each a list of strings."""
        out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                              "-d", self.url(db), "-c", sql],
                             capture_output=True, text=True, timeout=60)
        if out.returncode:
            raise RuntimeError(f"psql: {out.stderr}")
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def database(self):
        """A new empty database; returns its name."""
        self.ndb += 1
        name = f"t{os.getpid()}_{self.ndb}"
        self.psql(f"CREATE DATABASE {name}")
        return name

    def close(self):
        self.stop_server("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self):
        p = self.dir / "server.log"
        return p.read_text() if p.exists() else ""


def wait_until(pred, timeout=10.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()
