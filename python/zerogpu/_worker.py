"""Worker processes: where a decorated function runs while its call holds a lease.

The app process forks a worker the first time a device (or set of devices) is
granted and keeps it, idle, for the next call granted the same devices: a warm
worker already has CUDA initialised and the model's weights on the GPU. The
worker sets ``CUDA_VISIBLE_DEVICES`` to the granted UUIDs before anything can
initialise CUDA, leads its own process group (so zerogpud's kill at the
deadline takes whatever it started too), and dies with the app process.

Messages (``_transport``): the app sends ``(kind, function id, args, kwargs,
gradio event or None)`` and the worker answers ``("ok", result)``;
``("item", value)``... then ``("end", None)`` for generators; ``("err", pickled
exception or None, traceback text, summary, "unpicklable" or None)``; or
``("unknown", None)`` for a function decorated after the worker was forked (the
pool never sends one there: it forks a fresh worker instead). Before its answer
a call may send ``("gradio", method, data)`` messages: feedback for the page of
the Gradio event it serves (``_gradio``). Results travel with their tensors on
the CPU (``_transport.dumps_result``): a CUDA tensor returned by a call arrives
in the app as a CPU tensor.
"""
import asyncio
import os
import select
import signal
import socket
import stat
import threading
import traceback

from . import _gradio, _openmp, _torch
from ._native import DaemonUnavailable, TaskAborted, ZeroGPUError
from ._transport import PicklingFailed, dumps, dumps_result, recv, send

__all__ = ["Pool", "WorkerDied", "RemoteTraceback"]

_ABORT_EVENT_WAIT_S = 2.0  # after a worker dies, how long the daemon's word on why may take


class RemoteTraceback(Exception):
    """The worker's traceback, attached as the cause of an exception re-raised in the app."""

    def __init__(self, text):
        super().__init__(text)
        self.text = text

    def __str__(self):
        return f'\n"""\nTraceback in the GPU worker:\n{self.text}"""'


class WorkerDied(ZeroGPUError):
    """The worker process ended during a call, and not by zerogpud's deadline."""


# ---------------------------------------------------------------------------
# The worker's side.
# ---------------------------------------------------------------------------

def _error_reply(err, fn_name):
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    summary = f"{fn_name} raised {type(err).__name__}: {err}"
    exc = None  # the app then gets a ZeroGPUError with the summary and the traceback
    if isinstance(err, Exception):  # not SystemExit & co: sys.exit() in a worker must
        try:  # not exit the app
            exc = dumps(err)
        except PicklingFailed:
            pass
    return ("err", exc, text, summary, None)


def _result_reply(tag, value, fn_name, what):
    try:
        return dumps_result((tag, value))
    except PicklingFailed as err:
        msg = f"{what} of {fn_name} cannot be sent back from the GPU worker: {err}"
        return dumps(("err", None, msg + "\n", msg, "unpicklable"))


async def _drain_async_gen(agen, emit):
    async for item in agen:
        emit(item)


_send_lock = threading.Lock()  # the call's own threads may report progress too


def _sender(sock):
    def send_message(message):
        payload = dumps(message)
        with _send_lock:
            send(sock, payload)
    return send_message


def _run(sock, kind, fn, args, kwargs, event):
    name = f"{getattr(fn, '__qualname__', fn)}()"
    try:
        _torch.worker_before_call()  # the first call moves the placed weights to the GPU
        with _gradio.in_worker(event, args, kwargs, _sender(sock)):
            reply = _call(sock, kind, fn, args, kwargs, name)
    except BaseException as err:  # noqa: BLE001 - everything goes back to the caller
        reply = dumps(_error_reply(err, name))
    with _send_lock:
        send(sock, reply)


def _call(sock, kind, fn, args, kwargs, name):
    """Runs fn as its kind asks; returns the last reply (a generator's items leave as
    they come)."""
    if kind == "call":
        reply = _result_reply("ok", fn(*args, **kwargs), name, "the result")
    elif kind == "async":
        reply = _result_reply("ok", asyncio.run(fn(*args, **kwargs)), name, "the result")
    else:
        def emit(item):
            payload = _result_reply("item", item, name, "an item")
            with _send_lock:
                send(sock, payload)
        if kind == "gen":
            for item in fn(*args, **kwargs):
                emit(item)
        else:
            asyncio.run(_drain_async_gen(fn(*args, **kwargs), emit))
        reply = dumps(("end", None))
    return reply


def _serve(sock, lookup):
    while True:
        try:
            message = recv(sock)
        except (EOFError, OSError):
            os._exit(0)  # the app closed us: nothing to flush, no atexit of the app's
        if message[0] == "caps":  # the share of each GPU the next calls may use
            _torch.set_memory_caps(message[1])
            continue
        kind, fn_id, args, kwargs, event = message
        fn = lookup(fn_id)
        if fn is None:
            send(sock, dumps(("unknown", None)))
            continue
        _run(sock, kind, fn, args, kwargs, event)


def _close_daemon_connections(daemon_path):
    """Closes this process's copies of the app's connections to zerogpud. A lease ends
    when its stream closes; a worker holding a copy would keep every lease of the app
    alive after the app died, itself included."""
    daemon_path = os.path.realpath(daemon_path)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            s = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            peer = s.getpeername() if s.family == socket.AF_UNIX else ""
            ours = isinstance(peer, str) and peer != "" and os.path.realpath(peer) == daemon_path
        except OSError:
            ours = False
        if ours:
            s.close()
        else:
            s.detach()


def _child(sock, uuids, simulated, lookup, inherited, daemon_path, omp_pool_released):
    # How a worker dies with its app: idle, it reads EOF on its socket, which only the
    # app holds (so other workers close their copies here); busy, it is attached to a
    # lease whose stream closes with the app, and zerogpud kills its process group.
    # (Not PR_SET_PDEATHSIG: that fires when the *thread* that forked us exits.)
    _openmp.after_fork_in_child(omp_pool_released)
    for s in inherited:
        s.close()
    _close_daemon_connections(daemon_path)
    os.setpgid(0, 0)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(uuids)
    os.environ["ZEROGPU_WORKER"] = "1"
    _torch.worker_started(simulated)
    _serve(sock, lookup)


# ---------------------------------------------------------------------------
# The app's side.
# ---------------------------------------------------------------------------

class Worker:
    def __init__(self, uuids, simulated, lookup, siblings, daemon_path):
        ours, theirs = socket.socketpair()
        omp_pool_released = _openmp.release_thread_pool()  # or the worker's CPU ops may hang
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                _child(theirs, uuids, simulated, lookup, [w.sock for w in siblings], daemon_path,
                       omp_pool_released)
            finally:
                os._exit(1)
        theirs.close()
        self.pid = pid
        self.sock = ours
        self.uuids = tuple(uuids)
        self.busy = False
        self.knows = 0  # function ids up to this one exist in the worker
        self.generation = 0  # the pool's generation it was forked in
        self.caps = None  # the memory caps it last heard (set_memory_caps)

    def alive(self):
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def kill(self):
        """Stops the worker and its process group and reaps it."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # not (or no longer) a group leader
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap()
        self.sock.close()

    def _reap(self):
        try:
            _, status = os.waitpid(self.pid, 0)
            return status
        except ChildProcessError:
            return None

    def send(self, payload):
        send(self.sock, payload)

    def set_memory_caps(self, caps):
        """Tells the worker the share of each of its GPUs its calls may use, when that
        changed (a half after a whole GPU, or back)."""
        if caps != self.caps:
            send(self.sock, dumps(("caps", caps)))
            self.caps = caps

    def receive(self, lease, client_closed, on_expired):
        """The worker's next message, watching the lease meanwhile.

        Calls on_expired(message) when the lease passes its deadline; raises
        TaskAborted when zerogpud killed the worker at its deadline, WorkerDied when it
        died otherwise, and DaemonUnavailable (after stopping the worker) when zerogpud
        went away.
        """
        sock_fd, lease_fd = self.sock.fileno(), lease.fileno()
        poller = select.poll()  # not select(): an app may well have fds above 1023
        poller.register(sock_fd, select.POLLIN)
        poller.register(lease_fd, select.POLLIN)
        ended = None  # the daemon's "released" event, once it came
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if sock_fd in ready:
                try:
                    return recv(self.sock)
                except EOFError:
                    raise self._death(lease, ended) from None
            if lease_fd in ready:
                try:
                    ev = lease.next_event(0)
                except ZeroGPUError as err:
                    self.kill()
                    client_closed()
                    raise DaemonUnavailable(
                        f"zerogpud closed the lease during the call, so the GPU worker was "
                        f"stopped: {err}") from None
                if ev is None:
                    continue
                if ev["kind"] == "expired":
                    on_expired(ev["message"])
                elif ev["kind"] == "released":
                    ended = ev
                    # The daemon killed the worker or is about to: the socket tells when.
                    poller.unregister(lease_fd)

    def _death(self, lease, ended):
        status = self._reap()
        self.sock.close()
        if ended is None and not lease.closed:
            try:  # the kill and the daemon's "released" event race; give the event a moment
                ev = lease.next_event(_ABORT_EVENT_WAIT_S)
                while ev is not None and ev["kind"] != "released":
                    ev = lease.next_event(_ABORT_EVENT_WAIT_S)
                ended = ev
            except ZeroGPUError:
                pass
        if ended is not None and ended["state"] == "expired":
            message = ended["message"] or f"GPU task aborted: exceeded its {lease.duration:g} s duration"
            return TaskAborted(message)
        return WorkerDied(f"the GPU worker (pid {self.pid}) died during the call: {_describe_status(status)}")


def _describe_status(status):
    if status is None:
        return "its exit status is unknown"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by signal {sig} ({signal.Signals(sig).name})"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exited with status {os.WEXITSTATUS(status)}"


class Pool:
    """The app's workers, by the devices they run on. One pool per process: a fork of
    the app (a server's worker processes) starts with none."""

    def __init__(self, lookup, known, daemon_path):
        self._lookup = lookup  # function id -> function, in a worker
        self._known = known  # the highest function id so far: a fork knows them all
        self._daemon_path = daemon_path
        self._workers = []
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._generation = 0  # workers forked before the last invalidate() are not reused

    def _own(self):
        if self._pid != os.getpid():
            self._workers = []
            self._pid = os.getpid()

    def checkout(self, uuids, simulated, fn_id, warm_pid=0):
        """An idle live worker on exactly these devices that knows function fn_id, else
        a new one; marked busy. warm_pid, the worker zerogpud handed the lease to (kept
        resident after an earlier call), is taken first. Returns (worker, whether it was
        forked now)."""
        with self._lock:
            return self._checkout(tuple(uuids), simulated, fn_id, warm_pid)

    def _checkout(self, uuids, simulated, fn_id, warm_pid):
        self._own()
        for w in sorted(self._workers, key=lambda w: w.pid != warm_pid):
            if w.busy or w.uuids != uuids:
                continue
            if w.alive() and fn_id <= w.knows and w.generation == self._generation:
                w.busy = True
                return w, False
            # Dead, forked before fn was decorated or before the app changed what its
            # workers must inherit: a fresh fork replaces it.
            self._retire(w)
        w = Worker(uuids, simulated, self._lookup, self._workers, self._daemon_path)
        w.knows = self._known()
        w.generation = self._generation
        w.busy = True
        self._workers.append(w)
        return w, True

    def checkin(self, w):
        w.busy = False

    def invalidate(self):
        """The app changed state its workers inherit by fork (a model's forward, after
        aoti_apply): no worker forked before is used again."""
        with self._lock:
            self._generation += 1

    def retire(self, w):
        with self._lock:
            self._retire(w)

    def _retire(self, w):
        if w in self._workers:
            self._workers.remove(w)
        if w.sock.fileno() >= 0:
            w.kill()

    def pids(self):
        with self._lock:
            self._own()
            return [w.pid for w in self._workers]

    def shutdown(self):
        for w in list(self._workers):
            self.retire(w)
