#!/usr/bin/env python3
"""Crash soak: many concurrent clients (native and `spaces`) against one zerogpud, clients
killed with -9 mid-lease, and the daemon itself killed with -9 and restarted at random
moments. Invariants are checked while it runs and at the end (docs/testing.md#crash-soak):

  slots      never more live leases on a device than it has slots (GET /v1/leases);
  ledger     every grant a client saw has a ledger row;
  settled    after the last (clean) stop, every ledger row is settled;
  quota      each visitor's total in the ledger is the sum of its settled charges;
  processes  no process attached to a lease survives the lease's end (its grace, and a
             second, after it), nor the daemon's next start when the daemon died;
  flat       the daemon's descriptors return to their idle count once the load ends, and its
             RSS at the end of its last life is within 15% (+2 MiB) of its mid-life RSS
             (not under ASan, whose quarantine keeps freed memory; its leak check runs
             at the daemon's exit instead).

    tests/soak/soak.py --build build --duration 600 --clients 240
Prints one JSON summary line last; exits 1 on any violation."""
import argparse
import base64
import ctypes
import faulthandler
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

SECRET = "soak-visitor-secret-0123456789abcdef"
GRACE_S = 0.5
VISITOR_IPS = [f"198.51.100.{i}" for i in range(1, 17)]
VISITOR_USERS = [f"soaker{i}" for i in range(8)]


# ---------------------------------------------------------------------------
# A small HTTP/1.1 client over the Unix socket.
# ---------------------------------------------------------------------------

class Conn:
    def __init__(self, path, timeout=15.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""

    def close(self):
        self.s.close()

    def send(self, method, target, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.s.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
                       .encode() + data)

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("closed")
        self.buf += chunk

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        h = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        self.chunked = h.get("transfer-encoding", "").lower() == "chunked"
        self.length = int(h.get("content-length", "0"))
        return int(lines[0].split()[1]), h

    def chunk(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        n = int(line, 16)
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return None if n == 0 else data

    def body(self):
        if self.chunked:
            out = b""
            while (c := self.chunk()) is not None:
                out += c
            return out
        while len(self.buf) < self.length:
            self._fill()
        out, self.buf = self.buf[:self.length], self.buf[self.length:]
        return out

    def request(self, method, target, body=None):
        self.send(method, target, body)
        status, h = self.head()
        raw = self.body()
        return status, (json.loads(raw) if raw and h.get("content-type", "").startswith("application/json") else raw)


def call(sock, method, target, body=None, timeout=10.0):
    c = Conn(sock, timeout)
    try:
        return c.request(method, target, body)
    finally:
        c.close()


def visitor_token(sub):
    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": sub, "tier": "free", "exp": int(time.time()) + 36000}).encode())
    sig = b64(hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def start_time(pid):
    """/proc/PID/stat field 22, or None when the process is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


# ---------------------------------------------------------------------------
# Clients: worker processes with a thread per client.
# ---------------------------------------------------------------------------

def spawn_child(log):
    """The 'GPU work' of a lease: a process in a session of its own (the daemon kills the
    group). Not our child for long: it is reaped by a thread, so it never lingers a zombie.
    Logged, so that one whose client was killed before attaching it can be tidied away."""
    # Its own stdio: one that outlives its client (killed before it could log or attach
    # it) must not hold the soak's output open for whoever waits on it.
    p = subprocess.Popen(["sleep", "120"], start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log(f"spawn {p.pid} {start_time(p.pid)}\n")
    threading.Thread(target=p.wait, daemon=True).start()
    return p


def native_cycle(sock, rnd, log):
    c = Conn(sock, timeout=20)
    try:
        body = {"app": "soak", "duration_s": rnd.choice([0.5, 1, 1.5, 2]), "max_wait_s": 5,
                "size": rnd.choice(["large", "large", "xlarge"])}
        if rnd.random() < 0.7:
            body["visitor_ip"] = rnd.choice(VISITOR_IPS)
        c.send("POST", "/v1/leases", body)
        status, _ = c.head()
        if status != 200:
            c.body()
            return "refused"
        ev = json.loads(c.chunk())
        while ev["event"] == "queued":
            ev = json.loads(c.chunk())
        if ev["event"] != "granted":
            return "no_gpu"
        lease = ev["lease"]
        log(f"grant {lease}\n")
        child = spawn_child(log)
        st, _ = call(sock, "POST", f"/v1/leases/{lease}/attach", {"pid": child.pid})
        if st == 200:
            log(f"attach {lease} {child.pid} {start_time(child.pid)}\n")
        else:
            child.kill()
        how = rnd.random()
        if how < 0.5:  # done within the lease: the work ends, then the release
            time.sleep(rnd.uniform(0, body["duration_s"] * 0.8))
            child.kill()
            call(sock, "DELETE", f"/v1/leases/{lease}")
        elif how < 0.75:  # walks away: closing the stream abandons the lease
            time.sleep(rnd.uniform(0, body["duration_s"]))
        else:  # overruns: the daemon expires the lease and kills the work after the grace
            while c.chunk() is not None:
                pass
        return "granted"
    finally:
        c.close()


def spaces_cycle(sock, rnd, log):
    q = f"/schedule?durationSeconds={rnd.choice([1, 2])}&gpuSize=large&enableQueue=true"
    if rnd.random() < 0.7:
        q += "&token=" + visitor_token(rnd.choice(VISITOR_USERS))
    c = Conn(sock, timeout=30)
    try:
        c.send("POST", q)
        status, h = c.head()
        if status != 200:
            c.body()
            return "refused"
        if h.get("content-type", "").startswith("application/json"):
            grant = json.loads(c.body())
        else:  # queued: server-sent events until the outcome
            grant = None
            while grant is None:
                data = c.chunk()
                if data is None:
                    return "no_gpu"
                ev = dict(l.split(": ", 1) for l in data.decode().strip().split("\n") if ": " in l)
                if ev.get("event") == "succeeded":
                    grant = json.loads(ev["data"])
                elif ev.get("event") == "failed":
                    return "no_gpu"
    finally:
        c.close()
    token = grant["allowToken"]
    child = spawn_child(log)
    st, reply = call(sock, "POST", f"/allow?allowToken={token}&pid={child.pid}")
    if st != 200:
        child.kill()
        call(sock, "POST", f"/release?allowToken={token}&fail=true")
        return "refused"
    log(f"grant {reply['lease']}\nattach {reply['lease']} {child.pid} {start_time(child.pid)}\n")
    if rnd.random() < 0.7:
        time.sleep(rnd.uniform(0, 0.8))
        child.kill()
        call(sock, "POST", f"/release?allowToken={token}&fail={rnd.choice(['true', 'false'])}")
    # else: never released; the lease expires and the daemon kills the work.
    return "granted"


def client_thread(sock, seed, spaces_share, log, counts, lock):
    rnd = random.Random(seed)
    while True:
        try:
            kind = "spaces" if rnd.random() < spaces_share else "native"
            r = (spaces_cycle if kind == "spaces" else native_cycle)(sock, rnd, log)
        except (OSError, EOFError, ValueError, KeyError):
            r = "error"  # the daemon went away (killed) or the connection broke
            time.sleep(rnd.uniform(0.05, 0.3))
        with lock:
            counts[r] = counts.get(r, 0) + 1


def worker(sock, threads, seed, spaces_share, log_path, counts_path):
    # Never outlive the soak (were it killed, its workers would hold its output open).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(0)
    lock = threading.Lock()
    counts = {}
    f = open(log_path, "a", buffering=1)

    def log(text):
        with lock:
            f.write(text)
    for i in range(threads):
        threading.Thread(target=client_thread, daemon=True,
                         args=(sock, seed * 1000 + i, spaces_share, log, counts, lock)).start()
    while True:  # the counts, for the summary (a killed worker's last second is lost)
        time.sleep(1)
        with lock:
            tmp = counts_path + ".tmp"
            with open(tmp, "w") as c:
                json.dump(counts, c)
            os.replace(tmp, counts_path)


# ---------------------------------------------------------------------------
# The daemon, and the run.
# ---------------------------------------------------------------------------

class Daemon:
    def __init__(self, build, work):
        self.bin = os.path.join(build, "src/daemon/zerogpud")
        self.sock = os.path.join(work, "zerogpud.sock")
        self.state = os.path.join(work, "state")
        self.log = open(os.path.join(work, "zerogpud.log"), "a")
        self.proc = None
        self.lives = 0

    def start(self):
        self.proc = subprocess.Popen(
            [self.bin, "--socket", self.sock, "--state-dir", self.state, "--simulate", "8x80G",
             "--split", "2", "--gate", "off", "--grace", str(GRACE_S), "--max-duration", "10",
             "--quota-anonymous", "10000000", "--quota-free", "10000000",
             "--visitor-secret", SECRET, "--spaces-app", "soak", "--log-level", "warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.lives += 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.flush()
                with open(self.log.name) as f:
                    last = f.read().strip().splitlines()[-1:]
                raise RuntimeError(f"zerogpud exited {self.proc.returncode} at start: {last}")
            try:
                if call(self.sock, "GET", "/healthz", timeout=2)[0] == 200:
                    return
            except (OSError, EOFError):
                time.sleep(0.02)
        raise RuntimeError("zerogpud did not come up")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def fds(self):
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return None

    def sanitized(self):
        """Whether this zerogpud runs under AddressSanitizer."""
        try:
            with open(f"/proc/{self.proc.pid}/maps") as f:
                return "libasan" in f.read()
        except OSError:
            return False

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None


class Soak:
    def __init__(self, a):
        self.a = a
        self.work = tempfile.mkdtemp(prefix="zerogpu-soak-")
        self.d = Daemon(a.build, self.work)
        self.violations = []
        self.stop = threading.Event()
        self.samples = []  # (life, t, fds, rss_kib)
        self.slot_checks = 0
        self.killed_clients = 0
        self.procs_done = set()  # (lease, pid) checked while running
        self.logs = os.path.join(self.work, "clients")

    def violation(self, what):
        self.violations.append(what)
        print(f"soak: VIOLATION: {what}", file=sys.stderr, flush=True)

    # -- continuous checks ---------------------------------------------------

    def check_slots(self):
        try:
            _, leases = call(self.d.sock, "GET", "/v1/leases", timeout=5)
            _, devices = call(self.d.sock, "GET", "/v1/devices", timeout=5)
        except (OSError, EOFError, ValueError):
            return  # the daemon is down just now
        if not isinstance(leases, dict) or not isinstance(devices, dict):
            return
        slots = {d["index"]: d.get("slots", 1) for d in devices["devices"]}
        used = {}
        for l in leases["leases"]:
            for dev in l.get("devices", []):
                idx = dev["index"] if isinstance(dev, dict) else dev
                used[idx] = used.get(idx, 0) + (2 if l["size"] == "xlarge" and slots[idx] == 2 else 1)
        self.slot_checks += 1
        for idx, n in used.items():
            if n > slots[idx]:
                self.violation(f"device {idx} holds {n} slots' worth of leases but has {slots[idx]}")

    def attached(self):
        """(lease, pid, start time) of every process a client attached, from their logs."""
        out = []
        for name in os.listdir(self.logs):
            if name.endswith(".log"):
                with open(os.path.join(self.logs, name)) as f:
                    for line in f:
                        w = line.split()
                        if len(w) == 4 and w[0] == "attach" and w[3] != "None":
                            out.append((w[1], int(w[2]), int(w[3])))
        return out

    def check_processes(self):
        """Each lease that ended (in the ledger) longer ago than its grace and a second: its
        process must be gone. Checked once per process."""
        try:
            db = sqlite3.connect(f"file:{os.path.join(self.d.state, 'ledger.db')}?mode=ro", uri=True,
                                 timeout=1)
            ended = dict(db.execute("SELECT id, ended_at FROM leases WHERE ended_at > 0"))
            db.close()
        except sqlite3.Error:
            return
        now_ms = time.time() * 1000
        for lease, pid, st in self.attached():
            if (lease, pid) in self.procs_done or lease not in ended:
                continue
            if now_ms - ended[lease] < (GRACE_S + 1.0) * 1000:
                continue
            self.procs_done.add((lease, pid))
            if start_time(pid) == st:
                self.violation(f"process {pid} of lease {lease} still runs "
                               f"{(now_ms - ended[lease]) / 1000:.1f} s after the lease ended")

    def monitor(self):
        t0 = time.monotonic()
        n = 0
        while not self.stop.is_set():
            self.check_slots()
            n += 1
            if n % 8 == 0:
                self.check_processes()
            self.samples.append((self.d.lives, time.monotonic() - t0, self.d.fds(), self.d.rss_kib()))
            time.sleep(0.25)

    def killer(self, workers, spawn):
        """Kills the daemon (-9) and restarts it, and kills clients (-9), at random moments."""
        rnd = random.Random(self.a.seed)
        next_daemon = time.monotonic() + rnd.uniform(3, 8)
        calm_from = time.monotonic() + self.a.duration * 0.7  # the last life runs long
        while not self.stop.is_set():
            time.sleep(rnd.uniform(0.5, 2.0))
            i = rnd.randrange(len(workers))
            os.kill(workers[i].pid, signal.SIGKILL)
            workers[i].join()
            workers[i] = spawn(i, rnd.randrange(1 << 30))
            self.killed_clients += 1
            now = time.monotonic()
            if now >= next_daemon and now < calm_from:
                self.d.kill9()
                time.sleep(rnd.uniform(0, 0.5))
                try:
                    self.d.start()
                except RuntimeError as e:
                    self.violation(f"zerogpud did not restart after kill -9: {e}")
                    self.stop.set()
                    return
                next_daemon = now + rnd.uniform(3, 8)

    # -- the run -------------------------------------------------------------

    def run(self):
        a = self.a
        self.d.start()
        time.sleep(0.3)
        idle_fds = self.d.fds()
        logs = self.logs
        os.makedirs(logs)
        per = max(1, a.clients // a.workers)

        # Workers start as new interpreters: forking this process, whose threads may hold
        # locks, could leave a child stuck on one.
        ctx = mp.get_context("spawn")

        def spawn(i, seed):
            p = ctx.Process(target=worker, daemon=True,
                           args=(self.d.sock, per, seed, a.spaces_share,
                                 os.path.join(logs, f"w{i}-{seed}.log"),
                                 os.path.join(logs, f"w{i}-{seed}.counts")))
            p.start()
            return p
        rnd = random.Random(a.seed)
        workers = [spawn(i, rnd.randrange(1 << 30)) for i in range(a.workers)]
        threads = [threading.Thread(target=self.monitor, daemon=True),
                   threading.Thread(target=self.killer, args=(workers, spawn), daemon=True)]
        for t in threads:
            t.start()
        time.sleep(a.duration)
        self.stop.set()
        for t in threads:
            t.join()
        for w in workers:
            os.kill(w.pid, signal.SIGKILL)
            w.join()
        # The load is gone: abandoned leases end, their work is killed, connections close.
        time.sleep(max(3.0, 2 * GRACE_S + 2))
        self.check_slots()
        self.check_processes()
        end_fds, end_rss = self.d.fds(), self.d.rss_kib()
        last = [s for s in self.samples if s[0] == self.d.lives and s[3]]
        mid_rss = last[len(last) // 2][3] if last else None
        if end_fds is not None and idle_fds is not None and end_fds > idle_fds + 2:
            self.violation(f"the daemon holds {end_fds} descriptors after the load, {idle_fds} idle")
        # Under AddressSanitizer freed memory waits in its quarantine (256 MiB) before it is
        # reused, so RSS climbs by design; LeakSanitizer checks the exit there instead.
        rss_checked = not self.d.sanitized()
        if rss_checked and mid_rss and end_rss and end_rss > mid_rss * 1.15 + 2048:
            self.violation(f"the daemon's RSS grew from {mid_rss} KiB mid-life to {end_rss} KiB")
        self.d.proc.send_signal(signal.SIGTERM)
        rc = self.d.proc.wait(timeout=30)
        if rc != 0:
            self.violation(f"zerogpud exited {rc} on SIGTERM")
        self.final_checks(logs)
        counts = {}
        for name in os.listdir(logs):
            if name.endswith(".counts"):
                with open(os.path.join(logs, name)) as f:
                    for k, v in json.load(f).items():
                        counts[k] = counts.get(k, 0) + v
        summary = {
            "duration_s": a.duration, "clients": per * a.workers, "workers": a.workers,
            "cycles": counts, "grants_seen": self.grants_seen, "ledger_rows": self.rows,
            "daemon_kills_survived": self.d.lives - 1, "client_kills": self.killed_clients,
            "slot_checks": self.slot_checks, "processes_checked_live": len(self.procs_done),
            "processes_checked_at_end": self.procs_checked,
            "idle_fds": idle_fds, "end_fds": end_fds, "mid_rss_kib": mid_rss, "end_rss_kib": end_rss,
            "rss_checked": rss_checked,
            "violations": len(self.violations),
        }
        if not self.violations:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            summary["work_dir"] = self.work
        return summary

    def final_checks(self, logs):
        grants, attached = set(), []
        for name in os.listdir(logs):
            if name.endswith(".log"):
                with open(os.path.join(logs, name)) as f:
                    for line in f:
                        w = line.split()
                        if len(w) >= 2 and w[0] == "grant":
                            grants.add(w[1])
                        elif len(w) == 4 and w[0] == "attach" and w[3] != "None":
                            attached.append((w[1], int(w[2]), int(w[3])))
        db = sqlite3.connect(os.path.join(self.d.state, "ledger.db"))
        rows = {r[0]: r for r in db.execute(
            "SELECT id, ended_at, charged_ms, quota_key, state FROM leases")}
        visitors = dict(db.execute("SELECT key, used_ms FROM visitors"))
        db.close()
        self.grants_seen, self.rows = len(grants), len(rows)
        missing = grants - rows.keys()
        if missing:
            self.violation(f"{len(missing)} grant(s) clients saw have no ledger row, e.g. {sorted(missing)[:3]}")
        unsettled = [i for i, r in rows.items() if not r[1]]
        if unsettled:
            self.violation(f"{len(unsettled)} ledger row(s) not settled after the last stop, e.g. {unsettled[:3]}")
        charged = {}
        for r in rows.values():
            if r[3]:
                charged[r[3]] = charged.get(r[3], 0) + (r[2] or 0)
        for key, total in charged.items():
            if visitors.get(key) != total:
                self.violation(f"visitor {key}: ledger total {visitors.get(key)} ms, settled charges {total} ms")
        # The daemon has stopped: every attached process must be gone.
        self.procs_checked = len(attached)
        alive = [(lease, pid) for lease, pid, st in attached if start_time(pid) == st]
        if alive:
            self.violation(f"{len(alive)} process(es) of ended leases still run, e.g. {alive[:3]}")
        # Tidy up: after a failure, and the work a killed client spawned but never attached
        # (nobody else's to kill).
        spawned = []
        for name in os.listdir(logs):
            if name.endswith(".log"):
                with open(os.path.join(logs, name)) as f:
                    spawned += [(int(w[1]), int(w[2])) for w in (l.split() for l in f)
                                if len(w) == 3 and w[0] == "spawn" and w[2] != "None"]
        for pid, st in spawned + [(pid, st) for _, pid, st in attached]:
            if start_time(pid) == st:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="the build with zerogpud (default build)")
    ap.add_argument("--duration", type=float, default=60, help="seconds of load (default 60)")
    ap.add_argument("--clients", type=int, default=200, help="concurrent clients (default 200)")
    ap.add_argument("--workers", type=int, default=8, help="client processes (default 8)")
    ap.add_argument("--spaces-share", type=float, default=0.3, help="share of `spaces` calls")
    ap.add_argument("--seed", type=int, default=int(time.time()), help="for the kills' timing")
    a = ap.parse_args()
    if a.duration <= 0 or a.clients < 1 or a.workers < 1 or not 0 <= a.spaces_share <= 1:
        ap.error("--duration > 0, --clients >= 1, --workers >= 1, 0 <= --spaces-share <= 1")
    print(f"soak: seed {a.seed}, {a.clients} clients in {a.workers} processes for {a.duration:g} s",
          flush=True)
    # A soak that hangs says where, rather than running into its caller's timeout.
    faulthandler.dump_traceback_later(a.duration + 180, exit=True)
    summary = Soak(a).run()
    print(json.dumps(summary), flush=True)
    sys.exit(1 if summary["violations"] else 0)


if __name__ == "__main__":
    main()
