"""torch in the app process and in its workers.

In the app process (mode "main") zerogpu patches torch so that

* CUDA is never initialised: ``torch.cuda.init()`` and everything that would
  initialise CUDA raise RuntimeError(CUDA_IN_MAIN) — a CUDA context in the app
  process would hold GPU memory between calls and break every fork after it;
* ``torch.cuda.is_available()`` is True and the device count, names and memory
  come from zerogpud's device list, so start-up code takes its GPU branch;
* ``module.to('cuda')``, ``module.cuda()``, ``tensor.to('cuda')``,
  ``tensor.cuda()`` and factories called with ``device='cuda'`` *place* the data:
  it moves into the shared arena (``_arena``), stays a CPU tensor in the app
  process, and is recorded.

A worker forked on a real GPU (mode "real") gets torch back unpatched and, before
its first call, moves every recorded tensor to the GPU in large chunks straight
from the arena (registered as pinned memory, copies on two streams); the tensors
stay there for the worker's life, so a warm call copies nothing. A worker on
simulated devices (mode "sim") runs on the CPU: "cuda" keeps meaning the CPU.
"""
import contextlib
import importlib.abc
import importlib.util
import sys
import threading
import time
import weakref

from ._arena import Arena

__all__ = ["install", "worker_started", "worker_before_call", "set_memory_caps", "memory_caps",
           "CUDA_IN_MAIN", "transfer_stats", "placed_bytes", "torch_internals", "CompileRefused",
           "COMPILE_REFUSED"]

CUDA_IN_MAIN = (
    "CUDA must not be initialized in the main process: with zerogpu this app gets a GPU "
    "only inside @zerogpu.GPU functions, which run in worker processes while a call holds "
    "a lease. Move the code that needs CUDA into such a function; .to('cuda') at start-up "
    "is fine (zerogpu records it and the worker moves the weights to its GPU).")

COMPILE_REFUSED = (
    "torch.compile is not supported with zerogpu: it compiles just in time, in each GPU "
    "worker, inside a lease whose time counts (and again in every new worker). Compile ahead "
    "of time instead, once, with zerogpu.aoti_capture, torch.export.export and "
    "zerogpu.aoti_compile, then zerogpu.aoti_apply (docs/python.md, 'Ahead-of-time "
    "compilation').")


class CompileRefused(RuntimeError):
    """A function made with torch.compile was called in a zerogpu app."""


def refuse_torch_compile(torch):
    """Replaces torch.compile: decorating still works (libraries do it at import), but
    what it returns raises CompileRefused when called. Applied in the app process and
    kept in its workers."""
    original = getattr(torch, "compile", None)  # torch 2.0 and later
    if original is None or getattr(original, "zerogpu_refused", False):
        return

    def compile(model=None, **kwargs):  # noqa: A001 - it stands in for torch.compile
        def refuse(target):
            def refused(*args, **kwargs):
                raise CompileRefused(COMPILE_REFUSED)
            refused.__wrapped__ = target
            return refused
        return refuse if model is None else refuse(model)
    compile.zerogpu_refused = True
    compile.__wrapped__ = original
    compile.__doc__ = COMPILE_REFUSED
    torch.compile = compile


CHUNK = 64 << 20  # bytes per host-to-device copy

_FACTORIES = (
    "tensor", "as_tensor", "zeros", "ones", "empty", "full", "rand", "randn", "randint",
    "randperm", "arange", "linspace", "logspace", "eye", "zeros_like", "ones_like",
    "empty_like", "full_like", "rand_like", "randn_like", "randint_like",
)


class _State:
    mode = None  # None (not installed), "main", "sim" or "real"
    torch = None
    devices = None  # callable -> the daemon's device list (dicts)
    originals = {}  # (owner, name) -> original attribute
    placed = []  # weakrefs to every tensor placed "on cuda"
    arena = Arena()
    lock = threading.Lock()
    moved = False
    stats = None
    caps = None  # in a worker: the share of each GPU its calls may use


_S = _State


def placed_bytes():
    return _S.arena.bytes_used()


def transfer_stats():
    """In a worker on a real GPU: what the first call's move of the weights took."""
    return _S.stats


# ---------------------------------------------------------------------------
# Installing: now if torch is loaded, else the moment it is imported.
# ---------------------------------------------------------------------------

class _ImportHook(importlib.abc.MetaPathFinder):
    """Patches torch the moment it is imported (with patch: _patch, or in a real worker
    only torch.compile's refusal)."""

    def __init__(self, patch):
        self.patch = patch

    def find_spec(self, name, path, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torch")
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def exec_and_patch(module):
                exec_module(module)
                self.patch(module)
            spec.loader.exec_module = exec_and_patch
        return spec


def install(devices):
    """Patches torch for the app process (see the module's doc). devices() returns the
    daemon's device list; it is called at most when start-up code asks about devices."""
    if _S.mode is not None:
        return
    _S.devices = devices
    _S.mode = "main"
    if "torch" in sys.modules:
        _patch(sys.modules["torch"])
    else:
        sys.meta_path.insert(0, _ImportHook(_patch))


def _set(owner, name, value):
    _S.originals.setdefault((owner, name), getattr(owner, name))
    setattr(owner, name, value)


def _orig(owner, name):
    return _S.originals.get((owner, name)) or getattr(owner, name)


def _unpatch():
    for (owner, name), value in _S.originals.items():
        setattr(owner, name, value)
    _S.originals = {}


# ---------------------------------------------------------------------------
# The app process: placement instead of CUDA.
# ---------------------------------------------------------------------------

def _is_cuda(device):
    torch = _S.torch
    if device is None or isinstance(device, bool):
        return False
    if isinstance(device, int):
        return True  # torch reads a bare index as a CUDA device
    if isinstance(device, str):
        return device.split(":", 1)[0].strip() == "cuda"
    return isinstance(device, torch.device) and device.type == "cuda"


def _register(t):
    with _S.lock:
        _S.placed.append(weakref.ref(t))


def _place(t, dtype=None):
    """What t.to('cuda', dtype) gives in the app process or a simulated worker."""
    torch = _S.torch
    if dtype is not None and dtype != t.dtype:
        t = _orig(torch.Tensor, "to")(t, dtype=dtype)
    if _S.mode != "main" or _S.arena.holds(t):
        return t
    placed = _S.arena.place(torch, t.detach())
    if t.requires_grad:
        placed.requires_grad_(True)
    _register(placed)
    return placed


def _place_module(module):
    torch = _S.torch
    if _S.mode != "main":
        return module
    memo = {}  # tensors that share data (tied weights) share their placed copy
    with torch.no_grad():
        for sub in module.modules():
            for table in (sub._parameters, sub._buffers):
                for t in table.values():
                    if t is None or _S.arena.holds(t):
                        continue
                    key = (t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride()))
                    if key not in memo:
                        memo[key] = _S.arena.place(torch, t.detach())
                    t.data = memo[key]
                    _register(t)
    return module


def _parse_to(args, kwargs):
    device, dtype, _, _ = _S.torch._C._nn._parse_to(*args, **kwargs)
    return device, dtype


def _tensor_to(self, *args, **kwargs):
    try:
        device, dtype = _parse_to(args, kwargs)
    except (TypeError, RuntimeError):
        device = None  # let torch say what is wrong with the arguments
    if not _is_cuda(device):
        return _orig(_S.torch.Tensor, "to")(self, *args, **kwargs)
    return _place(self, dtype)


def _tensor_cuda(self, device=None, non_blocking=False, memory_format=None):
    return _place(self)


def _module_to(self, *args, **kwargs):
    try:
        device, dtype = _parse_to(args, kwargs)
    except (TypeError, RuntimeError):
        device = None
    if not _is_cuda(device):
        return _orig(_S.torch.nn.Module, "to")(self, *args, **kwargs)
    if dtype is not None:
        _orig(_S.torch.nn.Module, "to")(self, dtype)
    return _place_module(self)


def _module_cuda(self, device=None):
    return _place_module(self)


def _factory(name):
    original = getattr(_S.torch, name)

    def factory(*args, **kwargs):
        if not _is_cuda(kwargs.get("device")):
            return original(*args, **kwargs)
        kwargs["device"] = "cpu"
        return _place(original(*args, **kwargs))
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = original.__doc__
    factory.__wrapped__ = original
    return factory


def _refuse_cuda(*args, **kwargs):
    raise RuntimeError(CUDA_IN_MAIN)


_CUDA_QUERIES = ("is_available", "device_count", "current_device", "get_device_properties",
                 "get_device_name", "get_device_capability")


@contextlib.contextmanager
def torch_internals():
    """torch's own machinery (export, inductor) believes what torch.cuda says: on simulated
    devices (and in the app process) it must hear the truth, that there is no CUDA, or it
    reaches for a driver that is not there. App code keeps the emulation."""
    if _S.mode not in ("main", "sim") or _S.torch is None:
        yield
        return
    cuda = _S.torch.cuda
    emulated = {name: getattr(cuda, name) for name in _CUDA_QUERIES}
    for name in _CUDA_QUERIES:
        setattr(cuda, name, _orig(cuda, name))
    try:
        yield
    finally:
        for name, fn in emulated.items():
            setattr(cuda, name, fn)


class DeviceProperties:
    """What torch.cuda.get_device_properties() says in the app process: zerogpud's view."""

    def __init__(self, index, device):
        self.index = index
        self.name = device.get("name", "unknown")
        self.total_memory = int(device.get("memory_bytes", 0))
        self.uuid = device.get("uuid", "")
        cc = str(device.get("compute_capability") or "0.0").split(".")
        self.major, self.minor = int(cc[0]), int(cc[1]) if len(cc) > 1 else 0
        self.multi_processor_count = int(device.get("multiprocessors", 0))
        self.is_simulated = bool(device.get("simulated", False))

    def __repr__(self):
        return (f"_CudaDeviceProperties(name='{self.name}', major={self.major}, "
                f"minor={self.minor}, total_memory={self.total_memory // (1 << 20)}MB, "
                f"zerogpu=True)")


def _device(device=None):
    devices = _S.devices() or [{}]
    index = 0
    if device is not None:
        index = device if isinstance(device, int) else (_S.torch.device(device).index or 0)
    if not 0 <= index < len(devices):
        raise AssertionError(f"Invalid device id: {index} (zerogpud has {len(devices)})")
    return DeviceProperties(index, devices[index])


def _patch(torch):
    _S.torch = torch
    cuda = torch.cuda
    for name in ("init", "_lazy_init"):
        _set(cuda, name, _refuse_cuda)
    _set(cuda, "is_available", lambda: True)
    _set(cuda, "device_count", lambda: max(1, len(_S.devices() or ())))
    _set(cuda, "current_device", lambda: 0)
    _set(cuda, "get_device_properties", _device)
    _set(cuda, "get_device_name", lambda device=None: _device(device).name)
    _set(cuda, "get_device_capability",
         lambda device=None: (_device(device).major, _device(device).minor))
    _set(torch.Tensor, "to", _tensor_to)
    _set(torch.Tensor, "cuda", _tensor_cuda)
    _set(torch.nn.Module, "to", _module_to)
    _set(torch.nn.Module, "cuda", _module_cuda)
    for name in _FACTORIES:
        if hasattr(torch, name):
            _set(torch, name, _factory(name))
    # Not undone in a worker: a JIT compile there would run in every worker, in a lease.
    refuse_torch_compile(torch)


# ---------------------------------------------------------------------------
# Workers.
# ---------------------------------------------------------------------------

def worker_started(simulated):
    """In a freshly forked worker, before anything else runs."""
    if _S.mode is None:
        return
    if simulated:
        _S.mode = "sim"  # the placement patches now keep "cuda" tensors on the CPU
    else:
        _S.mode = "real"
        _S.moved = False
        if _S.torch is not None:
            _unpatch()
        else:  # torch not imported yet: nothing was placed, nothing to undo
            for hook in [h for h in sys.meta_path if isinstance(h, _ImportHook)]:
                hook.patch = refuse_torch_compile


def set_memory_caps(caps):
    """In a worker: caps torch's CUDA allocator to caps[i] of GPU i (a soft cap for half
    a GPU: the allocator refuses more, other CUDA memory is not counted; MIG is the hard
    one). On simulated devices there is no CUDA: the caps are only remembered."""
    _S.caps = tuple(caps)
    if _S.mode == "real" and _S.torch is not None:
        for i, share in enumerate(_S.caps):
            _S.torch.cuda.set_per_process_memory_fraction(min(max(share, 0.0), 1.0), i)


def memory_caps():
    """The caps this worker was last told (set_memory_caps), or None."""
    return _S.caps


def worker_before_call():
    if _S.mode == "real" and not _S.moved and _S.torch is not None:
        _S.moved = True
        _move_placed(_S.torch, "cuda", _S.torch.cuda)


def _live_placed():
    with _S.lock:
        live = [t for t in (r() for r in _S.placed) if t is not None]
        _S.placed = [weakref.ref(t) for t in live]
    return live


def _nbytes(t):
    return t.numel() * t.element_size()


def _merged_ranges(spans):
    out = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _move_placed(torch, device, cuda):
    """Every live placed tensor to device (the GPU; tests pass the CPU and a stand-in for
    torch.cuda): one device buffer per arena segment, filled in CHUNK-sized copies; the
    tensors become views of it, so ties between them survive."""
    t0 = time.perf_counter()
    by_segment = {}
    for t in _live_placed():
        seg = _S.arena.find(t.data_ptr()) if t.device.type == "cpu" and t.numel() else None
        if seg is None or not t.is_contiguous():
            t.data = t.data.to(device)  # changed in the app process since it was placed
            continue
        by_segment.setdefault(seg, []).append(t)
    moved = 0
    pinned_in_place = True
    for seg, tensors in by_segment.items():
        spans = [(t.data_ptr() - seg.base, t.data_ptr() - seg.base + _nbytes(t)) for t in tensors]
        ranges = _merged_ranges(spans)
        end = ranges[-1][1]
        buffer = torch.empty(end, dtype=torch.uint8, device=device)
        host = torch.frombuffer(seg.mm, dtype=torch.uint8, count=end)
        pinned_in_place &= _copy_ranges(torch, cuda, host, buffer, ranges)
        for t in tensors:
            off = t.data_ptr() - seg.base
            t.data = buffer[off:off + _nbytes(t)].view(t.dtype).view(t.shape)
        moved += sum(b - a for a, b in ranges)
    cuda.synchronize()
    _S.stats = {"bytes": moved, "seconds": time.perf_counter() - t0,
                "pinned_in_place": pinned_in_place}


def _pinned(torch, n):
    return torch.empty(n, dtype=torch.uint8, pin_memory=True)


def _copy_ranges(torch, cuda, host, device, ranges):
    """Copies host[a:b] to device[a:b] for each range, CHUNK bytes at a time on two
    streams. The arena is registered as pinned memory when the driver allows, so the
    copies are DMA straight from it; otherwise two pinned staging buffers alternate, the
    CPU filling one while the GPU drains the other. Returns whether it was registered."""
    chunks = [(off, min(CHUNK, b - off)) for a, b in ranges for off in range(a, b, CHUNK)]
    streams = [cuda.Stream(), cuda.Stream()]
    cudart = cuda.cudart()
    registered = int(cudart.cudaHostRegister(host.data_ptr(), host.numel(), 0)) == 0
    if registered:
        for i, (off, n) in enumerate(chunks):
            with cuda.stream(streams[i % 2]):
                device[off:off + n].copy_(host[off:off + n], non_blocking=True)
        cuda.synchronize()
        cudart.cudaHostUnregister(host.data_ptr())
        return True
    staging = [_pinned(torch, min(CHUNK, host.numel())) for _ in streams]
    done = [None, None]
    for i, (off, n) in enumerate(chunks):
        k = i % 2
        if done[k] is not None:
            done[k].synchronize()  # the GPU has drained this buffer
        staging[k][:n].copy_(host[off:off + n])
        with cuda.stream(streams[k]):
            device[off:off + n].copy_(staging[k][:n], non_blocking=True)
            done[k] = cuda.Event()
            done[k].record()
    cuda.synchronize()
    return False
