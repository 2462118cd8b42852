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
    if "gradio" not in sys.modules:  # never import Gradio for an app that does not use it
        return None
    try:
        from gradio.context import LocalContext
    except ImportError:
        return None
    request = LocalContext.request.get(None)
    headers = getattr(request, "headers", None)
    if headers is None:
        return None
    token = headers.get("x-ip-token")
    client = getattr(request, "client", None)
    ip = getattr(client, "host", None)
    if not token and not ip:
        return None
    return Visitor(token or None, None if token else ip, None)


def current_visitor() -> Visitor:
    v = _current.get()
    if v is not None:
        return v
    return _gradio_visitor() or Visitor()
