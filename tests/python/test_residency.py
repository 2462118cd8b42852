"""The package's workers as zerogpud's residents (docs/residency.md): kept after a call,
warm for the next, evicted by another app's larger call, and capped to half a GPU."""
import os

import zerogpu
from conftest import run_app

GiB = 1 << 30


def residents(d):
    _, body = d.get("/v1/devices")
    return [(r["app"], r["pid"], r["bytes"]) for dev in body["devices"] for r in dev["residents"]]


def metric(d, line_start):
    _, text = d.get("/metrics")
    return [line for line in text.splitlines() if line.startswith(line_start)]


def test_a_worker_is_warm_then_evicted_by_a_larger_call_and_the_next_call_is_cold(
        zd, monkeypatch):
    d = zd("--simulate", "1x80G")
    monkeypatch.setenv("ZEROGPU_APP", "a")
    monkeypatch.setenv("ZEROGPU_MEMORY_BYTES", str(30 * GiB))

    @zerogpu.GPU
    def where():
        return os.getpid()

    first = where()
    assert residents(d) == [("a", first, 30 * GiB)]
    assert where() == first  # warm: the same worker, handed over by zerogpud
    assert metric(d, 'zerogpu_grant_starts_total{start="warm"}') == [
        'zerogpu_grant_starts_total{start="warm"} 1']

    # App b needs 60 GiB: 50 are free, so a's worker is evicted (killed) for it.
    r = run_app("""
        import os, zerogpu
        @zerogpu.GPU
        def big():
            return os.getpid()
        print(big())
        """, env={"ZEROGPU_SOCKET": str(d.socket), "ZEROGPU_APP": "b",
                  "ZEROGPU_MEMORY_BYTES": str(60 * GiB)})
    assert r.returncode == 0, r.stderr
    b_worker = int(r.stdout.split()[-1])
    assert ("a", first, 30 * GiB) not in residents(d)
    assert metric(d, "zerogpu_evictions_total") == ["zerogpu_evictions_total 1"]

    # a's next call is cold (a new worker) and works.
    again = where()
    assert again not in (first, b_worker)
    _, body = d.get("/v1/devices")
    assert "resident worker %d" % first in d.log_text() and "evicted" in d.log_text()
    assert [r["app"] for r in body["devices"][0]["residents"]] == ["a"]


def test_on_half_a_gpu_the_workers_allocator_is_capped_to_the_half(zd):
    zd("--simulate", "1x80G", "--split", "2")

    def half():
        return zerogpu._torch.memory_caps()

    def whole():
        return zerogpu._torch.memory_caps()

    assert zerogpu.GPU(half)() == (0.5,)
    assert zerogpu.GPU(size="xlarge")(whole)() == (1.0,)
    assert zerogpu.GPU(half)() == (0.5,)
