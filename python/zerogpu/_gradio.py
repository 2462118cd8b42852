"""Gradio feedback from a GPU worker to the page, as users see it without zerogpu.

Inside a Gradio event, ``gr.Info``, ``gr.Warning``, ``gr.Success`` and a
``gr.Progress`` tracker (and tqdm with ``track_tqdm``) talk to the Blocks' queue
of the event being served. A worker is another process with no queue of its
own, so zerogpu gives it a stand-in: the call carries the event's id (and which
argument is its Progress tracker), the worker's Gradio context points at a relay
queue, and every ``set_progress`` or ``log_message`` it makes travels to the app
as a message, where the call, still waiting for its result, hands it to the real
queue. ``gr.Error`` raised in the worker comes back as the call's exception, as
any exception does.

Nothing here runs outside a Gradio event: the app imports Gradio only when it is
already loaded, and a worker only when the call came from an event.
"""
import sys
import warnings
from typing import NamedTuple, Optional

__all__ = ["Event", "current_event", "in_worker", "deliver", "duration_warning"]

DURATION_TITLE = "ZeroGPU duration"
DURATION_WARNING = "GPU task is exceeding its requested duration and might be aborted"


class Event(NamedTuple):
    """The Gradio event a call serves, as the app sees it."""
    blocks: object  # not sent to the worker
    event_id: str
    progress_at: Optional[object]  # where the Progress tracker is among the arguments

    def for_worker(self):
        """What the worker needs of it: picklable."""
        return {"event_id": self.event_id, "progress_at": self.progress_at}


def _local_context():
    if "gradio" not in sys.modules:
        return None
    try:
        from gradio.context import LocalContext
    except ImportError:
        return None
    return LocalContext


def current_event(args, kwargs):
    """The Gradio event this thread serves, or None."""
    ctx = _local_context()
    if ctx is None:
        return None
    blocks, event_id = ctx.blocks.get(None), ctx.event_id.get(None)
    if blocks is None or event_id is None or getattr(blocks, "_queue", None) is None:
        return None
    progress = ctx.progress.get(None)
    at = None
    if progress is not None:
        at = next((i for i, a in enumerate(args) if a is progress), None)
        if at is None:
            at = next((k for k, v in kwargs.items() if v is progress), None)
    return Event(blocks, event_id, at)


# ---------------------------------------------------------------------------
# In the worker.
# ---------------------------------------------------------------------------

class _RelayQueue:
    """Stands in for the Blocks' queue in a worker: what Gradio's helpers call on it
    goes to the app."""

    def __init__(self, send):
        self._send = send

    def set_progress(self, event_id, iterables):
        units = None
        if iterables is not None:  # TrackedIterable holds its iterator: send the numbers
            units = [(it.index, it.length, it.desc, it.unit, it.progress) for it in iterables]
        self._send(("gradio", "set_progress", units))

    def log_message(self, event_id, log, title, level, duration=10, visible=True):
        self._send(("gradio", "log_message", {"log": log, "title": title, "level": level,
                                              "duration": duration, "visible": visible}))


class _RelayBlocks:
    def __init__(self, send):
        self._queue = _RelayQueue(send)


class in_worker:
    """Around one call in a worker: Gradio's context points at the relay (a context
    manager; nothing happens when the call did not come from an event)."""

    def __init__(self, event, args, kwargs, send):
        self.event, self.args, self.kwargs, self.send = event, args, kwargs, send
        self.tokens = []

    def __enter__(self):
        if self.event is None:
            return self
        from gradio.context import LocalContext  # the app had it: so does its fork
        at = self.event["progress_at"]
        progress = None
        if isinstance(at, int) and at < len(self.args):
            progress = self.args[at]
        elif isinstance(at, str):
            progress = self.kwargs.get(at)
        self.tokens = [(LocalContext.blocks, LocalContext.blocks.set(_RelayBlocks(self.send))),
                       (LocalContext.event_id, LocalContext.event_id.set(self.event["event_id"])),
                       (LocalContext.in_event_listener, LocalContext.in_event_listener.set(True)),
                       (LocalContext.progress, LocalContext.progress.set(progress))]
        return self

    def __exit__(self, *exc):
        for var, token in reversed(self.tokens):
            var.reset(token)
        return False


# ---------------------------------------------------------------------------
# In the app.
# ---------------------------------------------------------------------------

def deliver(event, message):
    """Hands a relayed ("gradio", method, data) message to the event's real queue."""
    if event is None:
        return
    _, method, data = message
    queue = event.blocks._queue
    if method == "set_progress":
        from gradio.helpers import TrackedIterable
        iterables = None if data is None else [
            TrackedIterable(None, index, length, desc, unit, None, progress)
            for index, length, desc, unit, progress in data]
        queue.set_progress(event.event_id, iterables)
    elif method == "log_message":
        queue.log_message(event_id=event.event_id, **data)


def duration_warning(event, message):
    """The lease passed its deadline: the visitor sees it as the hosted client shows it (a
    warning toast), the app's log as a warning otherwise."""
    if event is not None:
        event.blocks._queue.log_message(event_id=event.event_id, log=DURATION_WARNING,
                                        title=DURATION_TITLE, level="warning", duration=10,
                                        visible=True)
        return
    warnings.warn(f"{DURATION_WARNING} ({message or 'deadline passed'})", RuntimeWarning,
                  stacklevel=5)
