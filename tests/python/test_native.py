"""zerogpu._native: the C binding of libzerogpu, used directly."""
import gc
import os
import threading
import time

import pytest

import zerogpu
from zerogpu import _native


def test_acquire_attach_release(zd):
    d = zd("--simulate", "2x80G")
    c = zerogpu.Client(str(d.socket))
    assert c.socket_path == str(d.socket)
    lease = c.acquire(app=None, task="native", duration=5, gpus=2)
    assert len(lease.id) == 32 and len(lease.devices) == 2
    index, uuid, memory = lease.devices[0]
    assert uuid.startswith("GPU-") and memory == 80 << 30
    assert lease.duration == 5.0 and lease.grace > 0
    assert abs(lease.deadline - (time.time() + 5)) < 2
    assert lease.id in repr(lease)
    c.attach(lease, os.getpid())
    assert lease.next_event(timeout=0) is None
    assert c.release(lease) >= 0
    assert lease.closed and "closed" in repr(lease)
    with pytest.raises(ValueError, match="the lease is closed"):
        lease.id
    with pytest.raises(ValueError, match="the lease is closed"):
        c.release(lease)


def test_errors_carry_the_library_code_and_the_daemons_message(zd):
    d = zd()
    c = zerogpu.Client(str(d.socket))
    with pytest.raises(zerogpu.RequestRefused) as err:
        c.acquire(size="huge")
    assert err.value.code == -7 and err.value.name == "EBADREQ" and "huge" in str(err.value)
    assert issubclass(zerogpu.QuotaExceeded, zerogpu.ZeroGPUError)
    assert zerogpu.NoGPUAvailable.code == -13 and _native.error_name(-13) == "ENOGPU"
    with pytest.raises(zerogpu.DaemonUnavailable) as err:
        zerogpu.Client(str(d.socket) + ".nope").acquire()
    assert err.value.name == "ECONNECT"
    with pytest.raises(TypeError, match="expected a zerogpu Lease, not str"):
        c.attach("lease", 1)
    with pytest.raises(TypeError):
        _native.Lease()
    with pytest.raises(TypeError, match="progress must be callable"):
        c.acquire(progress=3)


def test_queue_progress_is_reported_and_the_gil_is_free_while_waiting(zd):
    d = zd()
    c = zerogpu.Client(str(d.socket))
    held = c.acquire(duration=5)
    events = []
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.01)

    threading.Thread(target=tick).start()
    threading.Timer(0.5, lambda: c.release(held)).start()
    try:
        lease = c.acquire(duration=5, progress=events.append)
    finally:
        stop.set()
    assert events and events[0]["kind"] == "queued" and events[0]["position"] == 1
    assert len(ticks) > 20  # the other thread ran while acquire waited
    c.release(lease)


def test_dropping_a_lease_ends_it(zd):
    d = zd()
    c = zerogpu.Client(str(d.socket))
    lease = c.acquire(duration=5)
    del lease
    gc.collect()
    c.acquire(duration=5, max_wait=0).close()  # the device is free again at once


def test_events_reach_a_waiting_lease(zd):
    d = zd("--simulate", "1x80G", "--grace", "0.2")
    c = zerogpu.Client(str(d.socket))
    lease = c.acquire(duration=1)
    ev = lease.next_event(timeout=5)
    assert ev["kind"] == "expired" and ev["grace"] == pytest.approx(0.2)
    ev = lease.next_event(timeout=5)
    assert ev["kind"] == "released" and ev["state"] == "expired"
    assert ev["message"] == "GPU task aborted: exceeded its 1 s duration"
    lease.close()
