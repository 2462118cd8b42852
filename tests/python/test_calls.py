"""Calls through workers: results, errors, streams, reuse, the deadline, quota and the queue."""
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import zerogpu
from conftest import SECRET, ledger, visitor_token

GRACE = ("--grace", "0.3")


def test_results_and_arguments_round_trip(zd):
    d = zd()

    @zerogpu.GPU
    def combine(a, b, *, scale=1):
        return {"sum": (a + b) * scale, "pid": os.getpid(), "parent": os.getppid()}

    out = combine(2, 3, scale=10)
    assert out["sum"] == 50
    assert out["pid"] != os.getpid() and out["parent"] == os.getpid()
    big = bytes(range(256)) * 40000  # 10 MB each way
    assert zerogpu.GPU(lambda b: b[::-1])(big) == big[::-1]
    rows = ledger(d)
    assert [r["state"] for r in rows] == ["released", "released"]
    assert out["pid"] in {r["pid"] for r in rows}


def test_an_exception_comes_back_with_the_workers_traceback(zd):
    zd()

    @zerogpu.GPU
    def fails(n):
        raise KeyError(f"no item {n}")

    with pytest.raises(KeyError, match="no item 7") as err:
        fails(7)
    cause = err.value.__cause__
    assert isinstance(cause, zerogpu.RemoteTraceback)
    assert "Traceback in the GPU worker" in str(cause) and "in fails" in cause.text

    @zerogpu.GPU
    def fails_unpicklably():
        e = ValueError("carries a lock")
        e.lock = threading.Lock()
        raise e

    with pytest.raises(zerogpu.ZeroGPUError, match="fails_unpicklably.* raised ValueError: carries a lock"):
        fails_unpicklably()


def test_unpicklable_arguments_and_results_are_named(zd):
    d = zd()

    @zerogpu.GPU
    def echo(*args, **kwargs):
        return args

    with pytest.raises(zerogpu.UnpicklableError) as err:
        echo(1, {"lock": threading.Lock()})
    msg = str(err.value)
    assert "argument 2 of" in msg and "echo()" in msg and "'_thread.lock'" in msg
    assert isinstance(err.value, TypeError)
    with pytest.raises(zerogpu.UnpicklableError, match="argument 'key' of .*echo.*generator"):
        echo(key=(i for i in range(3)))
    assert ledger(d) == []  # refused before asking for a GPU: nothing charged

    @zerogpu.GPU
    def gives_a_lock():
        return threading.Lock()

    with pytest.raises(zerogpu.UnpicklableError, match=r"the result of .*gives_a_lock\(\) cannot be sent back .*_thread.lock"):
        gives_a_lock()


def test_generators_stream_their_items(zd):
    d = zd()

    @zerogpu.GPU(duration=10)
    def count(n):
        for i in range(n):
            yield i, time.monotonic()

    got = []
    for i, at in count(3):
        got.append((i, time.monotonic()))
    assert [i for i, _ in got] == [0, 1, 2]

    @zerogpu.GPU
    def slow():
        yield "first"
        time.sleep(30)
        yield "never"

    gen = slow()
    assert next(gen) == "first"
    pids = zerogpu.worker_pids()
    gen.close()  # the caller walks away mid-stream: the worker is stopped, the lease ends
    assert len(zerogpu.worker_pids()) == len(pids) - 1
    assert all(r["ended_at"] for r in ledger(d))

    @zerogpu.GPU
    def breaks():
        yield 1
        raise RuntimeError("mid-stream")

    gen = breaks()
    assert next(gen) == 1
    with pytest.raises(RuntimeError, match="mid-stream"):
        next(gen)


def test_async_functions_and_async_generators(zd):
    zd()

    @zerogpu.GPU
    async def add(a, b):
        await asyncio.sleep(0.01)
        return a + b, os.getpid()

    @zerogpu.GPU
    async def ticks(n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def main():
        total, pid = await add(2, 2)
        items = [i async for i in ticks(3)]
        return total, pid, items

    total, pid, items = asyncio.run(main())
    assert total == 4 and pid != os.getpid() and items == [0, 1, 2]


def test_the_worker_is_reused_and_replaced_after_a_failure(zd):
    zd()

    @zerogpu.GPU
    def pid(fail=False):
        if fail:
            raise ValueError("x")
        return os.getpid(), os.getpgid(0), os.environ["CUDA_VISIBLE_DEVICES"]

    first = pid()
    assert pid() == first
    assert first[1] == first[0]  # its own process group: the daemon's kill takes all of it
    with pytest.raises(ValueError):
        pid(fail=True)
    assert pid()[0] not in (first[0],)


def test_the_deadline_aborts_the_task_and_the_next_call_gets_a_fresh_worker(zd):
    d = zd("--simulate", "1x80G", *GRACE)

    @zerogpu.GPU(duration=1)
    def sleeper(s):
        time.sleep(s)
        return os.getpid()

    before = sleeper(0)
    t0 = time.monotonic()
    with pytest.warns(RuntimeWarning, match="exceeding its requested duration"):
        with pytest.raises(zerogpu.TaskAborted) as err:
            sleeper(60)
    assert str(err.value) == "GPU task aborted: exceeded its 1 s duration"
    assert err.value.code == zerogpu.TaskAborted.code and err.value.name == "EEXPIRED"
    assert time.monotonic() - t0 < 5
    with pytest.raises(ProcessLookupError):
        os.kill(before, 0)
    assert sleeper(0) != before
    assert [r["state"] for r in ledger(d)] == ["released", "expired", "released"]


def test_quota_and_queue_refusals_carry_the_daemons_message(zd):
    zd("--simulate", "1x80G", "--visitor-secret", SECRET, "--quota-anonymous", "30",
           "--default-max-wait", "1")

    @zerogpu.GPU(duration=40)
    def long():
        return 1

    with zerogpu.visitor(token=visitor_token("ann", "anonymous")):
        with pytest.raises(zerogpu.QuotaExceeded) as err:
            long()
    assert "quota" in str(err.value) and "40s requested vs. 30s left" in str(err.value)
    assert err.value.name == "EQUOTA"

    @zerogpu.GPU(duration=5)
    def hold(s):
        time.sleep(s)

    t = threading.Thread(target=hold, args=(3,))
    t.start()
    time.sleep(0.5)
    with pytest.raises(zerogpu.NoGPUAvailable, match="No GPU was available"):
        hold(0)
    t.join()
    assert isinstance(err.value, zerogpu.ZeroGPUError)


def test_the_visitor_is_charged_and_recorded(zd):
    d = zd("--simulate", "1x80G", "--visitor-secret", SECRET)

    @zerogpu.GPU(duration=5)
    def f():
        return 1

    with zerogpu.visitor(token=visitor_token("alice", "pro")):
        f()
    with zerogpu.visitor(name="bob"):
        f()
    f()
    tiers = {r["visitor"]: r["tier"] for r in ledger(d)}  # calls a millisecond apart may tie
    assert tiers == {"alice": "pro", "bob": "anonymous", "": "anonymous"}
    with pytest.raises(zerogpu.ZeroGPUError, match="(?i)token"):
        with zerogpu.visitor(token="not-a-token"):
            f()


def test_concurrent_calls_on_one_device_take_turns(zd):
    d = zd()

    @zerogpu.GPU(duration=5)
    def busy():
        time.sleep(0.3)
        return os.getpid()

    pids = []
    threads = [threading.Thread(target=lambda: pids.append(busy())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(pids) == 3  # every call returned, whichever thread forked the worker
    rows = sorted(ledger(d), key=lambda r: r["started_at"])
    assert len(rows) == 3
    for a, b in zip(rows, rows[1:]):
        assert b["started_at"] >= a["ended_at"]


def test_killing_the_app_kills_its_workers_and_ends_its_lease(zd, tmp_path):
    d = zd()
    pidfile = tmp_path / "worker.pid"
    app = subprocess.Popen([sys.executable, "-c", f"""
import os, time, zerogpu
@zerogpu.GPU(duration=60)
def work():
    open({str(pidfile)!r}, "w").write(str(os.getpid()))
    time.sleep(60)
work()
"""], env={**os.environ, "ZEROGPU_SOCKET": str(d.socket)})
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = int(pidfile.read_text())
    app.send_signal(signal.SIGKILL)
    app.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the worker outlived its app")
    deadline = time.monotonic() + 5
    while ledger(d)[-1]["ended_at"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger(d)[-1]["ended_at"] is not None


def test_a_daemon_that_goes_away_mid_call_stops_the_worker(zd):
    d = zd()

    @zerogpu.GPU(duration=30)
    def long():
        time.sleep(30)

    threading.Timer(0.5, lambda: d.proc.send_signal(signal.SIGKILL)).start()
    with pytest.raises(zerogpu.DaemonUnavailable, match="zerogpud closed the lease"):
        long()
    assert zerogpu.worker_pids() == []
    d.proc.wait()
    d.start()  # the fixture stops it cleanly


def test_sys_exit_in_the_function_does_not_exit_the_app(zd):
    zd()

    @zerogpu.GPU
    def leaves():
        raise SystemExit(3)

    with pytest.raises(zerogpu.ZeroGPUError, match=r"leaves\(\) raised SystemExit: 3") as err:
        leaves()
    assert "raise SystemExit(3)" in err.value.__cause__.text
