"""OpenMP and fork: why a worker could hang, and what zerogpu does about it.

A worker is a fork of the app. PyPI's torch runs its CPU ops on GNU OpenMP
(libgomp), whose thread pool does not survive fork: each thread that ran a
parallel region keeps a pool of helper threads, and a child forked from that
thread inherits the pool's bookkeeping but none of its threads, so its first
parallel region waits forever for helpers that do not exist (any CPU op on a
tensor of some size, in the worker). torch's own DataLoader avoids this by
making its forked workers single-threaded.

zerogpu does better: right before it forks, the forking thread asks every
libgomp loaded in the process to let go of that thread's pool
(``omp_pause_resource_all``, OpenMP 5.0, in libgomp since GCC 9). The child then
starts a fresh pool and runs its CPU ops with every thread; the app's next
parallel region starts its helpers again (a fraction of a millisecond, once per
new worker). Only where that is not possible (an older libgomp) is the worker
made single-threaded before it runs anything. LLVM's and Intel's OpenMP
runtimes handle fork themselves and are left alone.
"""
import ctypes
import sys

__all__ = ["release_thread_pool", "after_fork_in_child"]

_OMP_PAUSE_SOFT = 1
_handles = {}  # path -> ctypes handle of a loaded libgomp (or None: it cannot pause)


def _loaded_libgomps():
    paths = set()
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1] if "/" in line else ""
                if "libgomp" in path.rsplit("/", 1)[-1]:
                    paths.add(path)
    except OSError:
        return []
    return sorted(paths)


def _pause_function(path):
    if path not in _handles:
        try:
            fn = ctypes.CDLL(path).omp_pause_resource_all
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        except (OSError, AttributeError):
            fn = None
        _handles[path] = fn
    return _handles[path]


def release_thread_pool():
    """In the thread about to fork: releases its OpenMP thread pool in every libgomp of the
    process. Returns True when the child may use OpenMP freely (also when no libgomp is
    loaded), False when a libgomp could not release it."""
    ok = True
    for path in _loaded_libgomps():
        fn = _pause_function(path)
        ok = ok and fn is not None and fn(_OMP_PAUSE_SOFT) == 0
    return ok


def after_fork_in_child(pool_released):
    """In the new worker, before anything runs: when the pool could not be released, CPU
    ops run on one thread (torch's DataLoader workers do the same)."""
    if pool_released:
        return
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
