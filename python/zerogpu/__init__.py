"""zerogpu: borrow GPUs from zerogpud, one call at a time.

    import zerogpu

    @zerogpu.GPU(duration=30)
    def generate(prompt):
        ...

Enabled when ``ZEROGPU_SOCKET`` names the daemon's socket or ``ZEROGPU=1``;
otherwise ``@zerogpu.GPU`` returns functions unchanged. See docs/python.md.
"""
from . import _config, _torch
from ._aoti import AotiModel, aoti_apply, aoti_capture, aoti_compile
from ._decorator import GPU, UnpicklableError, shutdown, worker_pids
from ._identity import Visitor, current_visitor, visitor
from ._native import (Client, DaemonUnavailable, Lease, NoGPUAvailable, QuotaExceeded,
                      RequestRefused, TaskAborted, ZeroGPUError)
from ._worker import RemoteTraceback, WorkerDied

__version__ = "0.1.0"

__all__ = [
    "GPU", "visitor", "Visitor", "current_visitor", "enabled", "Client", "Lease",
    "ZeroGPUError", "QuotaExceeded", "NoGPUAvailable", "TaskAborted", "DaemonUnavailable",
    "RequestRefused", "UnpicklableError", "WorkerDied", "RemoteTraceback", "worker_pids",
    "shutdown", "CUDA_IN_MAIN", "aoti_capture", "aoti_compile", "aoti_apply", "AotiModel",
    "CompileRefused",
]

CUDA_IN_MAIN = _torch.CUDA_IN_MAIN
CompileRefused = _torch.CompileRefused


def enabled() -> bool:
    """Whether @GPU borrows GPUs in this process (see docs/python.md)."""
    return _config.enabled()


if _config.enabled():
    # torch must be patched before the app's start-up code places its model, which
    # may run before the first @GPU is applied.
    from ._decorator import _devices_or_empty

    _torch.install(_devices_or_empty)
