"""Whether zerogpu is switched on, and the settings it reads from the environment.

zerogpu is *enabled* when a daemon socket is configured (``ZEROGPU_SOCKET``) or
``ZEROGPU=1``; ``ZEROGPU=0`` switches it off whatever else is set. When it is
off, ``@GPU`` returns functions unchanged and torch is never touched, so the
same app runs on a laptop with no daemon.
"""
import os

__all__ = ["enabled", "app_name", "socket_path"]


def enabled() -> bool:
    switch = os.environ.get("ZEROGPU", "").strip()
    if switch == "0":
        return False
    return switch == "1" or bool(os.environ.get("ZEROGPU_SOCKET"))


def app_name():
    """The app this process's calls belong to (``ZEROGPU_APP``); None: the daemon's default."""
    return os.environ.get("ZEROGPU_APP") or None


def socket_path():
    """``ZEROGPU_SOCKET``, or None for libzerogpu's default path."""
    return os.environ.get("ZEROGPU_SOCKET") or None
