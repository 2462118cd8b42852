"""Messages between the app process and its workers: length-prefixed pickles on a socketpair."""
import pickle
import struct

__all__ = ["send", "recv", "dumps", "PicklingFailed"]

_HEADER = struct.Struct("!Q")
_SMALL = 1 << 16  # below this, header and payload go in one write


class PicklingFailed(Exception):
    """Internal: why an object could not be pickled; the caller says whose it was."""


def dumps(obj) -> bytes:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as err:
        raise PicklingFailed(f"{err} (in an object of type {_type_name(obj)})") from err


def _type_name(obj) -> str:
    t = type(obj)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def send(sock, payload: bytes) -> None:
    header = _HEADER.pack(len(payload))
    if len(payload) < _SMALL:
        sock.sendall(header + payload)
    else:
        sock.sendall(header)
        sock.sendall(payload)


def _recv_exact(sock, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise EOFError("the peer closed the connection")
        got += k
    return buf


def recv(sock):
    """The next message, unpickled; EOFError when the peer is gone."""
    (n,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    return pickle.loads(_recv_exact(sock, n))
