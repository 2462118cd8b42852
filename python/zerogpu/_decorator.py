"""``@zerogpu.GPU``: every call of the decorated function borrows GPUs from zerogpud.

A call: resolve the duration (a callable duration sees the call's arguments),
pickle the arguments (before asking for anything, so an unpicklable argument
costs no quota), acquire a lease for this visitor, take the idle worker on the
granted devices or fork one, attach it to the lease, send the call, wait for the
result while watching the lease, release. The worker is kept for the next call
on the same devices when this one succeeded; after an exception it is retired,
as in the hosted client, since a failed CUDA call can poison its context.
"""
import asyncio
import contextvars
import datetime
import functools
import inspect
import json
import math
import os
import pickle
import threading
import weakref

from . import _config, _gradio, _identity, _torch
from ._native import Client, NoGPUAvailable, QuotaExceeded, TaskAborted, ZeroGPUError
from ._transport import PicklingFailed, dumps
from ._worker import Pool, RemoteTraceback

__all__ = ["GPU", "UnpicklableError", "worker_pids", "shutdown"]

DEFAULT_DURATION_S = 60
SIZES = ("large", "xlarge")


class UnpicklableError(ZeroGPUError, TypeError):
    """An argument or a result cannot travel between the app and its GPU worker."""


# Decorated functions by id: a forked worker finds the function it is asked to run here.
_functions = {}
_wrappers = weakref.WeakKeyDictionary()  # function -> its wrapper: decorating twice is a no-op
_registry_lock = threading.Lock()


class _Process:
    """Per-process state: a fork of the app starts with its own client and workers."""

    def __init__(self):
        self.pid = os.getpid()
        self.client = Client(_config.socket_path())
        self.pool = Pool(_functions.get, lambda: len(_functions), self.client.socket_path)
        self.devices = None


_proc = None
_proc_lock = threading.Lock()


def _process():
    global _proc
    p = _proc
    if p is None or p.pid != os.getpid():
        with _proc_lock:
            if _proc is None or _proc.pid != os.getpid():
                _proc = _Process()
            p = _proc
    return p


def _daemon_devices(refresh=False):
    p = _process()
    if p.devices is None or refresh:
        p.devices = json.loads(p.client.get("/v1/devices"))["devices"]
    return p.devices


def _devices_or_empty():
    try:
        return _daemon_devices()
    except (ZeroGPUError, ValueError, KeyError):
        return []


def worker_pids():
    """The pids of this process's live workers (for tests and monitoring)."""
    return _process().pool.pids() if _proc is not None else []


def fork_fresh_workers():
    """From now on calls run in workers forked after this moment (see Pool.invalidate)."""
    if _proc is not None and _proc.pid == os.getpid():
        _proc.pool.invalidate()


def shutdown():
    """Stops this process's workers and closes its client (workers also die with the
    process). The next call starts afresh, reading ZEROGPU_SOCKET again."""
    global _proc
    with _proc_lock:
        if _proc is not None and _proc.pid == os.getpid():
            _proc.pool.shutdown()
        _proc = None


# ---------------------------------------------------------------------------
# Arguments of the decorator.
# ---------------------------------------------------------------------------

def _seconds(value, where):
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"zerogpu.GPU: {where} must be seconds (int, float or timedelta), "
                        f"not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"zerogpu.GPU: {where} must be a positive number of seconds, not {value!r}")
    return float(value)


def _check_size(size):
    if size not in SIZES:
        raise ValueError(f"zerogpu.GPU: size must be 'large' or 'xlarge', not {size!r}")
    return size


def _check_gpus(gpus):
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ValueError(f"zerogpu.GPU: gpus must be a whole number >= 1, not {gpus!r}")
    return gpus


class _Spec:
    __slots__ = ("duration", "size", "gpus")

    def __init__(self, duration, size, gpus):
        if duration is not None and not callable(duration):
            _seconds(duration, "duration")
        self.duration = duration
        self.size = _check_size(size)
        self.gpus = _check_gpus(gpus)

    def duration_for(self, args, kwargs):
        if self.duration is None:
            return float(DEFAULT_DURATION_S)
        if callable(self.duration):
            return _seconds(self.duration(*args, **kwargs), "the duration callable's result")
        return _seconds(self.duration, "duration")


# ---------------------------------------------------------------------------
# One call.
# ---------------------------------------------------------------------------

def _kind_of(fn):
    if inspect.isasyncgenfunction(fn):
        return "agen"
    if inspect.iscoroutinefunction(fn):
        return "async"
    if inspect.isgeneratorfunction(fn):
        return "gen"
    return "call"


def _payload(kind, fn_id, fn, args, kwargs, event):
    try:
        return dumps((kind, fn_id, args, kwargs, event and event.for_worker()))
    except PicklingFailed:
        pass
    # Name the argument at fault, then let pickle name the type inside it.
    named = [(f"argument {i + 1}", a) for i, a in enumerate(args)]
    named += [(f"argument {k!r}", v) for k, v in kwargs.items()]
    for where, value in named:
        try:
            dumps(value)
        except PicklingFailed as err:
            raise UnpicklableError(f"{where} of {fn.__qualname__}() cannot be sent to the GPU "
                                   f"worker: {err}") from None
    raise UnpicklableError(f"the arguments of {fn.__qualname__}() cannot be sent to the GPU worker")


class _Call:
    """One call holding one lease; a context manager that always ends the lease."""

    def __init__(self, wrapper_state, args, kwargs):
        st = wrapper_state
        self.st = st
        self.event = _gradio.current_event(args, kwargs)  # the Gradio event served, if any
        self.payload = _payload(st.kind, st.fn_id, st.fn, args, kwargs, self.event)
        self.duration = st.spec.duration_for(args, kwargs)
        self.proc = _process()
        self.lease = None
        self.worker = None
        self.ok = False

    def __enter__(self):
        who = _identity.current_visitor()
        try:
            self.lease = self.proc.client.acquire(
                app=_config.app_name(), task=self.st.task, visitor=who.name,
                size=self.st.spec.size, duration=self.duration, gpus=self.st.spec.gpus,
                visitor_token=who.token, visitor_ip=who.ip, memory_bytes=_memory_need())
        except (QuotaExceeded, NoGPUAvailable) as err:
            raise _identity.shown_by_gradio(err) from None
        try:
            self._start()
        except BaseException as err:
            self.__exit__(type(err), err, err.__traceback__)
            raise
        return self

    def _simulated(self):
        indexes = {d[0] for d in self.lease.devices}
        devices = _daemon_devices()
        if not indexes <= {d["index"] for d in devices}:
            devices = _daemon_devices(refresh=True)
        return any(d.get("simulated") for d in devices if d["index"] in indexes)

    def _start(self):
        uuids = [d[1] for d in self.lease.devices]
        self.worker, _ = self.proc.pool.checkout(uuids, self._simulated(), self.st.fn_id,
                                                 self.lease.warm_pid)
        self.proc.client.attach(self.lease, self.worker.pid)
        # On half a GPU, torch's allocator in the worker is capped to the half (a soft
        # cap: MIG is the hard one).
        caps = tuple(limit / d[2] if d[2] else 1.0
                     for d, limit in zip(self.lease.devices, self.lease.memory_limits))
        self.worker.set_memory_caps(caps)
        self.worker.send(self.payload)

    def _next(self):
        try:
            return self.worker.receive(self.lease, self.lease.close, self._expired)
        except BaseException:
            self.proc.pool.retire(self.worker)
            self.worker = None
            raise

    def _expired(self, message):
        _gradio.duration_warning(self.event, message)

    def receive(self):
        """The worker's next reply: ("ok", result), ("item", value) or ("end", None);
        Gradio feedback it sends meanwhile goes to the page."""
        reply = self._next()
        while reply[0] == "gradio":
            _gradio.deliver(self.event, reply)
            reply = self._next()
        if reply[0] == "err":
            raise _remote_error(reply)
        if reply[0] == "unknown":  # the pool only gives workers forked after fn existed
            raise ZeroGPUError(f"the GPU worker does not know {self.st.fn.__qualname__}()")
        return reply

    def __exit__(self, exc_type, exc, tb):
        kept_worker = self.worker if self.ok else None
        if self.worker is not None:
            if self.ok:
                self.proc.pool.checkin(self.worker)
            else:  # failed, or abandoned mid-stream: it may still be running
                self.proc.pool.retire(self.worker)
            self.worker = None
        if self.lease is None or self.lease.closed:
            return False
        if isinstance(exc, TaskAborted):  # zerogpud already ended the lease
            self.lease.close()
            return False
        try:
            # A worker that served the call stays resident on the devices, its weights
            # there: the next call of this function is granted where it is, warm, unless
            # zerogpud needs its memory first (docs/residency.md).
            self.proc.client.release(self.lease, failed=not self.ok,
                                     keep=self.ok and kept_worker is not None)
        except ZeroGPUError:
            if exc is None:
                raise
        return False


# What a call needs on the GPU beyond the weights placed: activations, the CUDA context
# and its workspace (a fifth more, and 1 GiB).
_MEMORY_MARGIN = 0.2
_CONTEXT_BYTES = 1 << 30


def _memory_need():
    """The memory a call asks zerogpud for on each GPU: the weights the app placed and a
    margin, or 0 (all its size gets) when it placed none. ZEROGPU_MEMORY_BYTES, when
    set, says it instead (docs/python.md)."""
    forced = os.environ.get("ZEROGPU_MEMORY_BYTES")
    if forced:
        try:
            return max(0, int(forced))
        except ValueError:
            raise ValueError(f"ZEROGPU_MEMORY_BYTES must be a number of bytes, not {forced!r}") from None
    placed = _torch.placed_bytes()
    return int(placed * (1 + _MEMORY_MARGIN)) + _CONTEXT_BYTES if placed else 0


def _remote_error(reply):
    _, exc_bytes, text, summary, what = reply
    exc = None
    if exc_bytes is not None:
        try:
            exc = pickle.loads(exc_bytes)
        except Exception:  # noqa: BLE001 - its class may not unpickle here
            exc = None
    if not isinstance(exc, BaseException):
        exc = (UnpicklableError if what == "unpicklable" else ZeroGPUError)(summary)
    exc.__cause__ = RemoteTraceback(text)
    return exc


def _run_call(st, args, kwargs):
    with _Call(st, args, kwargs) as call:
        try:
            _, result = call.receive()
        except TaskAborted as err:
            raise _identity.shown_by_gradio(err) from None
        call.ok = True
        return result


def _run_generator(st, args, kwargs):
    with _Call(st, args, kwargs) as call:
        while True:
            try:
                tag, value = call.receive()
            except TaskAborted as err:
                raise _identity.shown_by_gradio(err) from None
            if tag == "end":
                call.ok = True
                return
            yield value


class _WrapperState:
    __slots__ = ("fn", "fn_id", "kind", "spec", "task")

    def __init__(self, fn, spec):
        self.fn = fn
        self.kind = _kind_of(fn)
        self.spec = spec
        self.task = f"{fn.__module__}.{fn.__qualname__}"
        with _registry_lock:
            self.fn_id = len(_functions) + 1
            _functions[self.fn_id] = fn


def _in_thread(fn, *args):
    """Runs a blocking fn off the event loop, with the caller's context (visitor)."""
    ctx = contextvars.copy_context()
    return asyncio.get_running_loop().run_in_executor(None, lambda: ctx.run(fn, *args))


def _wrap(fn, spec):
    st = _WrapperState(fn, spec)
    if st.kind == "call":
        def wrapper(*args, **kwargs):
            return _run_call(st, args, kwargs)
    elif st.kind == "gen":
        def wrapper(*args, **kwargs):
            yield from _run_generator(st, args, kwargs)
    elif st.kind == "async":
        async def wrapper(*args, **kwargs):
            return await _in_thread(_run_call, st, args, kwargs)
    else:
        async def wrapper(*args, **kwargs):
            gen = _run_generator(st, args, kwargs)
            done = object()
            try:
                while (item := await _in_thread(next, gen, done)) is not done:
                    yield item
            finally:
                await _in_thread(gen.close)
    functools.update_wrapper(wrapper, fn)
    wrapper.zerogpu = st
    return wrapper


def GPU(task=None, duration=None, size="large", *, gpus=1, **unsupported):
    """Run the decorated function on GPUs borrowed from zerogpud, one lease per call.

    Forms (as ``spaces.GPU``): ``@GPU``, ``@GPU(duration=45)``, ``@GPU(45)``,
    ``@GPU(timedelta(seconds=45))``, ``@GPU(duration=lambda prompt, steps: steps * 2)``,
    ``@GPU(size='xlarge')``, ``@GPU('xlarge')``, and ``gpus=N`` for N devices.
    When zerogpu is not enabled the function is returned unchanged.
    """
    if unsupported:
        raise TypeError(f"zerogpu.GPU got unexpected arguments: {', '.join(sorted(unsupported))}")
    if isinstance(task, str):  # GPU('xlarge')
        task, size = None, task
    elif task is not None and not callable(task):  # GPU(45), GPU(timedelta(...))
        task, duration = None, task
    spec = _Spec(duration, size, gpus)

    def decorate(fn):
        if not callable(fn):
            raise TypeError(f"zerogpu.GPU decorates functions, not {type(fn).__name__}")
        if not _config.enabled():
            return fn
        if getattr(fn, "zerogpu", None).__class__ is _WrapperState:
            return fn  # already a wrapper
        try:
            return _wrappers[fn]
        except (KeyError, TypeError):
            pass
        _torch.install(_devices_or_empty)
        wrapper = _wrap(fn, spec)
        try:
            _wrappers[fn] = wrapper
        except TypeError:  # not weak-referenceable: no memo
            pass
        return wrapper

    return decorate(task) if task is not None else decorate
