"""Ahead-of-time compilation: torch.export + AOTInductor, compiled once, kept on disk.

``torch.compile`` compiles just in time, in the process that runs the model: with
zerogpu that is every new GPU worker (a worker is retired after a failed call),
inside a lease whose time is counted, minutes for a large model. So zerogpu
refuses it (a compiled function raises ``CompileRefused`` when called) and offers
ahead-of-time compilation instead, as the hosted ZeroGPU does:

    @zerogpu.GPU(duration=600)
    def compile_model():
        with zerogpu.aoti_capture(model) as call:   # the inputs of one real call
            pipeline(example_prompt)
        exported = torch.export.export(model, args=call.args, kwargs=call.kwargs)
        return zerogpu.aoti_compile(exported)      # compiled once; after that, from disk

    zerogpu.aoti_apply(compile_model(), model)     # in the app: model.forward runs it

The package on disk holds the compiled code, not the weights: ``aoti_apply`` gives
it the module's own parameters and buffers (in a worker on a GPU, the copies the
worker already moved there), so the weights are never stored or held twice. It is
kept under ``$ZEROGPU_CACHE_DIR`` (default ``~/.cache/zerogpu``) in ``aoti/``,
keyed by the model's graph, its parameters' names, shapes and types, the inputs'
shapes and types, the device (and its CUDA capability) and the torch version: the
same model on the same kind of GPU is compiled once for all workers and restarts.
"""
import contextlib
import hashlib
import json
import os
import pathlib
import tempfile
import threading

from . import _torch as _torch_mod

__all__ = ["aoti_capture", "aoti_compile", "aoti_apply", "AotiModel"]

_FORMAT = "zerogpu-aoti-1"
MIN_TORCH = (2, 8)  # user-managed constants (2.6 and 2.7 crash or copy the weights)

def _torch():
    import torch
    version = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    if version < MIN_TORCH:
        raise RuntimeError(f"zerogpu's ahead-of-time compilation needs torch "
                           f"{'.'.join(map(str, MIN_TORCH))} or later, not {torch.__version__}")
    return torch


# ---------------------------------------------------------------------------
# Capturing the inputs of a call.
# ---------------------------------------------------------------------------

class CapturedCall:
    """What the module was called with inside ``aoti_capture``: args and kwargs."""

    def __init__(self):
        self.args = ()
        self.kwargs = {}

    def __repr__(self):
        return f"CapturedCall(args={len(self.args)}, kwargs={sorted(self.kwargs)})"


class _Captured(BaseException):  # not Exception: a pipeline's own `except Exception` must not eat it
    def __init__(self, args, kwargs):
        super().__init__()
        self.call_args, self.call_kwargs = args, kwargs


@contextlib.contextmanager
def aoti_capture(module, method="forward"):
    """Records the arguments of the first call of module (its method) made inside the block
    and stops the block there: the rest of the pipeline does not run.

    >>> with zerogpu.aoti_capture(pipe.transformer) as call:
    ...     pipe("an example prompt")
    >>> torch.export.export(pipe.transformer, args=call.args, kwargs=call.kwargs)
    """
    call = CapturedCall()
    had_own = method in vars(module)
    own = vars(module).get(method)

    def capture(*args, **kwargs):
        raise _Captured(args, kwargs)
    setattr(module, method, capture)
    try:
        yield call
    except _Captured as got:
        call.args, call.kwargs = got.call_args, got.call_kwargs
    else:
        raise RuntimeError(f"zerogpu.aoti_capture: the block never called the module's "
                           f"{method}()")
    finally:
        if had_own:
            setattr(module, method, own)
        else:
            delattr(module, method)


# ---------------------------------------------------------------------------
# Compiling, once per key.
# ---------------------------------------------------------------------------

class AotiModel:
    """A compiled model on disk: small, picklable, returned from a GPU worker to the app."""

    __slots__ = ("path", "key", "device", "torch_version", "compiled_now")

    def __init__(self, path, key, device, torch_version, compiled_now=False):
        self.path, self.key, self.device = str(path), key, device
        self.torch_version, self.compiled_now = torch_version, compiled_now

    def __reduce__(self):
        return AotiModel, (self.path, self.key, self.device, self.torch_version, self.compiled_now)

    def __repr__(self):
        return (f"AotiModel({self.key[:12]}…, {self.device}, torch {self.torch_version}, "
                f"{'compiled now' if self.compiled_now else 'from the cache'})")


def cache_dir():
    base = os.environ.get("ZEROGPU_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "zerogpu")
    return pathlib.Path(base) / "aoti"


def _describe(torch, value):
    if isinstance(value, torch.Tensor):
        return ["tensor", list(value.shape), str(value.dtype), value.device.type]
    return [type(value).__name__, repr(value)]


def _device_of(torch, exported):
    tensors = [t for t in torch.utils._pytree.tree_leaves(exported.example_inputs)
               if isinstance(t, torch.Tensor)]
    tensors += list(exported.state_dict.values())
    types = sorted({t.device.type for t in tensors}) or ["cpu"]
    if types != ["cpu"] and types != ["cuda"]:
        raise ValueError(f"zerogpu.aoti_compile: the model and its inputs are on several "
                         f"devices ({', '.join(types)}): put them all on the GPU")
    device = types[0]
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        return device, f"cuda sm_{major}{minor}"
    return device, "cpu"


def _key(torch, exported, device_desc, configs):
    h = hashlib.sha256()
    parts = [
        _FORMAT, torch.__version__, device_desc, exported.graph_module.code,
        json.dumps([_describe(torch, v) for v in torch.utils._pytree.tree_leaves(
            exported.example_inputs)]),
        json.dumps(sorted((k, list(t.shape), str(t.dtype)) for k, t in exported.state_dict.items())),
        json.dumps(sorted(exported.constants)),
        json.dumps(configs, sort_keys=True, default=str),
    ]
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def aoti_compile(exported, *, inductor_configs=None, cache=None):
    """Compiles exported (a torch.export.ExportedProgram) with AOTInductor, or finds it
    already compiled on disk. Call it where the model will run: in a @zerogpu.GPU
    function for a GPU. Returns an AotiModel for aoti_apply."""
    torch = _torch()
    configs = dict(inductor_configs or {})
    configs["aot_inductor.package_constants_in_so"] = False  # the weights come from the module
    device, device_desc = _device_of(torch, exported)
    key = _key(torch, exported, device_desc, configs)
    directory = pathlib.Path(cache or cache_dir()) / key
    package = directory / "model.pt2"
    if package.exists():
        return AotiModel(package, key, device, torch.__version__)
    directory.mkdir(parents=True, exist_ok=True)
    # Lifted constants (tensors made in forward) are not the module's: they are kept beside.
    fd, tmp_constants = tempfile.mkstemp(dir=directory, suffix=".pt.tmp")
    os.close(fd)
    torch.save({k: v.detach().cpu() if isinstance(v, torch.Tensor) else v
                for k, v in exported.constants.items()}, tmp_constants)
    os.replace(tmp_constants, directory / "constants.pt")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".compiling-", suffix=".pt2")
    os.close(fd)
    try:
        with _torch_mod.torch_internals():
            torch._inductor.aoti_compile_and_package(exported, package_path=tmp,
                                                     inductor_configs=configs)
        os.replace(tmp, package)  # atomic: a concurrent compile of the same key is harmless
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return AotiModel(package, key, device, torch.__version__, compiled_now=True)


# ---------------------------------------------------------------------------
# Running it.
# ---------------------------------------------------------------------------

class _Runner:
    """The module's method after aoti_apply: loads the package once per process, with the
    module's own tensors as its weights (not copied), and runs it."""

    def __init__(self, compiled, module):
        self.compiled = compiled
        self.module = module
        self._loaded = None  # (pid, the loaded package)
        self._lock = threading.Lock()

    def _load(self):
        torch = _torch()
        tensors = dict(self.module.named_parameters(remove_duplicate=False))
        tensors.update(self.module.named_buffers(remove_duplicate=False))
        devices = {t.device.type for t in tensors.values()}
        if devices and devices != {self.compiled.device}:
            raise RuntimeError(f"zerogpu.aoti_apply: the model was compiled for "
                               f"{self.compiled.device}, but its weights are on "
                               f"{', '.join(sorted(devices))} here")
        with _torch_mod.torch_internals():
            loaded = torch._inductor.aoti_load_package(self.compiled.path)
        constants_file = pathlib.Path(self.compiled.path).with_name("constants.pt")
        lifted = torch.load(constants_file, weights_only=True) if constants_file.exists() else {}
        device = next(iter(tensors.values())).device if tensors else torch.device("cpu")
        wanted = loaded.get_constant_fqns()
        constants = {}
        for name in wanted:
            if name in tensors:
                constants[name] = tensors[name].detach()
            elif name in lifted:
                constants[name] = lifted[name].to(device)
            else:
                raise RuntimeError(f"zerogpu.aoti_apply: the compiled model needs {name!r}, "
                                   f"which the module has not: apply it to the module that "
                                   f"was exported")
        loaded.load_constants(constants, check_full_update=True, user_managed=True)
        return loaded

    def __call__(self, *args, **kwargs):
        with self._lock:
            if self._loaded is None or self._loaded[0] != os.getpid():
                self._loaded = (os.getpid(), self._load())
            run = self._loaded[1]
        return run(*args, **kwargs)

    def __repr__(self):
        return f"<zerogpu compiled {self.compiled!r}>"


def aoti_apply(compiled, module, method="forward"):
    """Makes module's method (forward) run the compiled package. Call it in the app, after
    the compiling call returned: the next calls run in workers forked after it, each
    loading the package once, with the module's weights as they are there (on its GPU)."""
    if not isinstance(compiled, AotiModel):
        raise TypeError(f"zerogpu.aoti_apply takes what zerogpu.aoti_compile returned, not "
                        f"{type(compiled).__name__}")
    if not os.path.exists(compiled.path):
        raise FileNotFoundError(f"zerogpu.aoti_apply: {compiled.path} is gone: compile again")
    setattr(module, method, _Runner(compiled, module))
    # Workers inherit the module by fork: those forked before this (the compiling one
    # among them) still run the old method, so the next calls get fresh ones.
    from ._decorator import fork_fresh_workers
    fork_fresh_workers()
    return module
