"""torch with zerogpu: no CUDA in the app process, weights placed once in shared memory,
workers that see them. On simulated devices the worker's "GPU" is the CPU."""
import json
import os

import pytest

if os.environ.get("ZEROGPU_TESTS_NEED_TORCH"):  # scripts/run-tests: never skip silently
    import torch
else:
    torch = pytest.importorskip("torch")  # Debian's python3-torch, or PyPI's

import zerogpu  # noqa: E402
from conftest import run_app  # noqa: E402
from zerogpu import _torch  # noqa: E402


class LooksCuda(torch.Tensor):
    """A CPU tensor that says it is on a GPU: the stand-in for a CUDA tensor where there is
    none (bench/gpu/check.py returns real ones on a GPU)."""

    @property
    def device(self):
        return torch.device("cuda", 0)


def test_a_tensor_returned_from_the_gpu_arrives_on_the_cpu(zd):
    zd()

    @zerogpu.GPU
    def make():
        t = torch.arange(6.0).reshape(2, 3).as_subclass(LooksCuda)
        assert t.device.type == "cuda"
        return {"t": t, "more": [t * 2, "text"], "cpu": torch.ones(2)}

    got = make()
    for t, want in ((got["t"], torch.arange(6.0).reshape(2, 3)), (got["more"][0], None),
                    (got["cpu"], torch.ones(2))):
        assert type(t) is torch.Tensor and t.device.type == "cpu"  # a plain CPU tensor
        if want is not None:
            assert torch.equal(t, want)
    assert torch.equal(got["more"][0], 2 * got["t"]) and got["more"][1] == "text"


def test_the_app_process_refuses_to_initialise_cuda(zd):
    zd()
    for initialise in (torch.cuda.init, torch.cuda.synchronize, torch.cuda._lazy_init):
        with pytest.raises(RuntimeError) as err:
            initialise()
        assert str(err.value) == zerogpu.CUDA_IN_MAIN
    assert "CUDA must not be initialized in the main process" in zerogpu.CUDA_IN_MAIN
    assert "@zerogpu.GPU" in zerogpu.CUDA_IN_MAIN


def test_cuda_looks_available_with_the_daemons_devices(zd):
    zd("--simulate", "2x80G,1x141G")
    assert torch.cuda.is_available() is True
    assert torch.cuda.device_count() == 3
    assert torch.cuda.current_device() == 0
    p = torch.cuda.get_device_properties(0)
    assert p.total_memory == 80 << 30 and p.name == torch.cuda.get_device_name(0)
    assert torch.cuda.get_device_properties("cuda:2").total_memory == 141 << 30
    with pytest.raises(AssertionError, match="Invalid device id: 5"):
        torch.cuda.get_device_properties(5)


def test_the_capability_is_the_cards_when_nvml_tells_it(zd, monkeypatch):
    from conftest import e2e

    monkeypatch.setenv("FAKE_NVML_GPUS", "80,141:mig2")
    zd("--nvml-library", str(e2e.BUILD / "tests" / "unit" / "libfake-nvml.so"))
    assert torch.cuda.device_count() == 3
    assert torch.cuda.get_device_capability() == (9, 0)
    assert torch.cuda.get_device_capability(2) == (9, 0)  # a MIG instance: its GPU's
    assert [torch.cuda.get_device_name(i) for i in range(3)] == ["Fake H100", "Fake H200", "Fake H200"]


def test_placed_tensors_stay_on_the_host_once_and_the_worker_sees_them(zd):
    zd()
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 64))
    model[2].weight = torch.nn.Parameter(model[0].weight.t().contiguous())
    model.head = torch.nn.Linear(64, 32)
    model.head.weight = model[0].weight  # tied: one placed copy for both
    before = [p.detach().clone() for p in model.parameters()]
    used = _torch.placed_bytes()
    assert model.to("cuda") is model
    for p, b in zip(model.parameters(), before):
        assert _torch._S.arena.holds(p) and torch.equal(p, b)
        assert isinstance(p, torch.nn.Parameter)
    assert model.head.weight is model[0].weight
    emb = torch.arange(10.0).cuda()
    half = torch.ones(4).to("cuda", torch.float16)
    zeros = torch.zeros(3, 3, device="cuda")
    assert _torch._S.arena.holds(emb) and half.dtype == torch.float16 and _torch._S.arena.holds(zeros)
    assert emb.to("cuda") is emb  # already placed, as torch returns self for its own device
    params = sum(p.numel() * p.element_size() for p in model.parameters())  # tied counted once
    assert _torch.placed_bytes() - used < params + 64 * 512 + 3 * 4096
    assert torch.ones(2).to("cpu").device.type == "cpu"  # other devices untouched

    @zerogpu.GPU
    def inspect():
        x = torch.ones(2, 64).to("cuda")  # on simulated devices "cuda" is the worker's CPU
        y = model(x)  # Linear 64->32, ReLU, Linear 32->64, head 64->32
        return ([p.data_ptr() for p in model.parameters()], [p.sum().item() for p in model.parameters()],
                emb.sum().item(), half.dtype, tuple(y.shape), torch.zeros(1, device="cuda").device.type,
                os.environ["CUDA_VISIBLE_DEVICES"])

    ptrs, sums, emb_sum, dtype, shape, dev, cvd = inspect()
    assert ptrs == [p.data_ptr() for p in model.parameters()]  # the same memory, not a copy
    assert sums == pytest.approx([p.sum().item() for p in model.parameters()])
    assert emb_sum == 45.0 and dtype == torch.float16 and shape == (2, 32) and dev == "cpu"
    assert cvd.startswith("GPU-")


def test_a_model_placed_at_start_up_is_held_once_in_host_memory(zd):
    d = zd()
    out = run_app("""
        import gc, torch, zerogpu

        def rss_mb():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

        r0 = rss_mb()
        model = torch.nn.Sequential(*[torch.nn.Linear(2048, 2048) for _ in range(16)])  # 256 MiB
        size = sum(p.numel() * 4 for p in model.parameters()) / 2**20
        r1 = rss_mb()
        model.to("cuda")
        gc.collect()
        r2 = rss_mb()
        total = sum(p.double().sum().item() for p in model.parameters())

        @zerogpu.GPU
        def checksum():
            return sum(p.double().sum().item() for p in model.parameters()), rss_mb()

        remote, worker_rss = checksum()
        print(size, r1 - r0, r2 - r1, total == remote, worker_rss)
    """, env={"ZEROGPU_SOCKET": str(d.socket)})
    assert out.returncode == 0, out.stderr
    size, loaded, placing, same, worker_rss = out.stdout.split()
    size, loaded, placing = float(size), float(loaded), float(placing)
    assert size > 250 and loaded > 0.9 * size
    assert placing < 0.1 * size, f"placing the model grew RSS by {placing:.0f} MB of {size:.0f}"
    assert same == "True"


@pytest.mark.parametrize("registered", [True, False])
def test_the_workers_move_of_placed_tensors_keeps_values_and_ties(registered):
    """The GPU path with the CPU standing in for the device and a recorder for torch.cuda:
    every byte arrives, in CHUNK-sized copies alternating streams, and the placed tensors
    become views of one buffer (ties kept). bench/gpu/check.sh runs it on a real GPU."""
    out = run_app(f"""
        import contextlib, torch, zerogpu
        from zerogpu import _torch
        _torch.install(lambda: [])
        _torch.CHUNK = 4096
        model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
        model[1].weight = model[0].weight
        model.to("cuda")
        extra = torch.arange(5000.0, device="cuda")
        expect = [p.detach().clone() for p in model.parameters()] + [extra.clone()]

        class Recorder:
            streams_used = []
            class Stream:
                pass
            @staticmethod
            @contextlib.contextmanager
            def stream(s):
                Recorder.streams_used.append(s)
                yield
            class Event:
                def record(self): pass
                def synchronize(self): pass
            @staticmethod
            def synchronize(): pass
            class cudart_:
                @staticmethod
                def cudaHostRegister(ptr, size, flags): return 0 if {registered} else 1
                @staticmethod
                def cudaHostUnregister(ptr): return 0
            @staticmethod
            def cudart(): return Recorder.cudart_

        _torch._pinned = lambda torch, n: torch.empty(n, dtype=torch.uint8)
        before = [p.data_ptr() for p in model.parameters()]
        _torch._move_placed(torch, "cpu", Recorder)
        after = list(model.parameters()) + [extra]
        assert all(torch.equal(a, e) for a, e in zip(after, expect)), "values changed"
        assert model[1].weight is model[0].weight
        assert [p.data_ptr() for p in model.parameters()] != before, "not moved"
        assert not any(_torch._S.arena.holds(t) for t in after), "still in the arena"
        stats = _torch.transfer_stats()
        assert stats["pinned_in_place"] is {registered}
        used = len(Recorder.streams_used)
        assert used >= stats["bytes"] // 4096 and len(set(map(id, Recorder.streams_used))) == 2
        print("moved", stats["bytes"])
    """, env={"ZEROGPU": "1"})
    assert out.returncode == 0, out.stderr
    nbytes = int(out.stdout.split()[1])
    assert nbytes >= (64 * 64 + 64 * 2) * 4 + 5000 * 4


FORK_AFTER_THREADS = """
    import os, sys, threading, torch, zerogpu
    torch.set_num_threads(max(2, os.cpu_count() or 2))  # Debian's torch starts with one
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8))
    model.to("cuda")
    x = torch.randn(512, 512)
    (x @ x).sum()  # this thread's OpenMP pool starts, as start-up code would start it

    @zerogpu.GPU(duration=30)
    def cpu_work():
        # Any CPU op on the parameters, in the forked worker, with every thread.
        total = sum(p.double().sum().item() for p in model.parameters())
        return round(total, 3), torch.get_num_threads(), float((x @ x).sum() != 0)

    want = round(sum(p.double().sum().item() for p in model.parameters()), 3)
    print("main", repr((cpu_work(), want)), flush=True)

    # The same from another thread that ran parallel ops first (a Gradio handler).
    def handler():
        (x @ x).sum()
        zerogpu.shutdown()  # a fresh worker, forked from this thread
        print("thread", repr((cpu_work(), want)), flush=True)
    t = threading.Thread(target=handler)
    t.start()
    t.join()
"""


def test_cpu_ops_in_a_worker_forked_after_the_app_used_its_threads(zd):
    """PyPI's torch uses GNU OpenMP, whose thread pool does not survive fork: without
    zerogpu's care the worker's first parallel op waits forever."""
    d = zd()
    r = run_app(FORK_AFTER_THREADS, {"ZEROGPU_SOCKET": str(d.socket)}, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    for where in ("main", "thread"):
        (total, threads, nonzero), want = eval(lines[where])  # noqa: S307 - our own output
        assert total == want and nonzero == 1.0
        assert threads == max(2, os.cpu_count() or 2)  # not made single-threaded


def test_the_memory_asked_for_is_the_weights_placed_and_a_margin(zd):
    d = zd("--simulate", "1x80G")
    r = run_app("""
        import json, os, torch, zerogpu
        weights = torch.zeros(64 << 20, dtype=torch.uint8).cuda()  # 64 MiB placed
        @zerogpu.GPU
        def f():
            return 1
        f()
        devices = json.loads(zerogpu._decorator._process().client.get("/v1/devices"))
        print(json.dumps([zerogpu._torch.placed_bytes(),
                          [r["bytes"] for r in devices["devices"][0]["residents"]]]))
        """, env={"ZEROGPU_SOCKET": str(d.socket)})
    assert r.returncode == 0, r.stderr
    placed, kept = json.loads(r.stdout.strip().split("\n")[-1])
    assert placed == 64 << 20
    assert kept == [int(placed * 1.2) + (1 << 30)]  # plus a fifth and 1 GiB (residency.md)
