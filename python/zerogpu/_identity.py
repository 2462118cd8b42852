"""Who a call is for: the visitor whose quota pays for it.

An app names its visitor with ``zerogpu.visitor(token=...)`` (a context
manager over a context variable, so it follows threads started with a copied
context and asyncio tasks) or, inside a Gradio event, zerogpu reads the
``X-IP-Token`` header of the request that Gradio is serving, as the hosted
``spaces`` package does. Without either, the call is the app's own.
"""
import contextlib
import contextvars
import sys
from typing import NamedTuple, Optional

__all__ = ["Visitor", "visitor", "current_visitor"]


class Visitor(NamedTuple):
    token: Optional[str] = None  # a signed visitor token (JWT) issued for zerogpud
    ip: Optional[str] = None  # else the visitor's address: metered as anonymous
    name: Optional[str] = None  # free text for the ledger when neither is known


_current: contextvars.ContextVar = contextvars.ContextVar("zerogpu_visitor", default=None)


@contextlib.contextmanager
def visitor(token=None, *, ip=None, name=None):
    """Charge the calls made inside the block to this visitor.

    >>> with zerogpu.visitor(token=request.headers["X-IP-Token"]):
    ...     generate(prompt)
    """
    for what, value in (("token", token), ("ip", ip), ("name", name)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"zerogpu.visitor: {what} must be a str, not {type(value).__name__}")
    reset = _current.set(Visitor(token or None, ip or None, name or None))
    try:
        yield
    finally:
        _current.reset(reset)


def _gradio_visitor():
    """The visitor of the Gradio request being served, when Gradio is loaded and serving one."""
    request = _gradio_request()
    headers = getattr(request, "headers", None)
    if headers is None:
        return None
    token = headers.get("x-ip-token")
    ip = getattr(getattr(request, "client", None), "host", None)
    if not token and not ip:
        return None
    return Visitor(token or None, None if token else ip, None)


def _gradio_request():
    if "gradio" not in sys.modules:
        return None
    try:
        from gradio.context import LocalContext
    except ImportError:
        return None
    return LocalContext.request.get(None)


_shown_classes = {}


def _title(err):
    """The title of the hosted client's toast for what went wrong."""
    from ._native import QuotaExceeded, TaskAborted

    if isinstance(err, QuotaExceeded):
        return "ZeroGPU quota exceeded"
    if isinstance(err, TaskAborted):
        return "ZeroGPU worker error"
    return "ZeroGPU"


def shown_by_gradio(err):
    """err, or inside a Gradio event an equal error that is also a ``gr.Error``, so that
    Gradio shows the visitor its message (quota, queue, abort) as the hosted client does,
    in an error toast with the hosted title. It stays an instance of err's class for the
    app's own ``except`` clauses."""
    if _gradio_request() is None:
        return err
    import gradio as gr

    cls = _shown_classes.get(type(err))
    if cls is None:
        cls = type(type(err).__name__, (type(err), gr.Error),
                   {"__module__": "zerogpu", "__str__": lambda self: self.message})
        _shown_classes[type(err)] = cls
    shown = cls(str(err), title=_title(err))
    shown.code, shown.name = err.code, err.name
    return shown


def current_visitor() -> Visitor:
    v = _current.get()
    if v is not None:
        return v
    return _gradio_visitor() or Visitor()
