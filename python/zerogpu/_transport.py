"""Messages between the app process and its workers: length-prefixed pickles on a socketpair."""
import io
import pickle
import struct
import sys

__all__ = ["send", "recv", "dumps", "dumps_result", "PicklingFailed"]

_HEADER = struct.Struct("!Q")
_SMALL = 1 << 16  # below this, header and payload go in one write


class PicklingFailed(Exception):
    """Internal: why an object could not be pickled; the caller says whose it was."""


def dumps(obj) -> bytes:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as err:
        raise PicklingFailed(f"{err} (in an object of type {_type_name(obj)})") from err


class _ResultPickler(pickle.Pickler):
    """Pickles a result with its tensors on the CPU: a CUDA tensor pickled as it is would
    make the app initialise CUDA to load it, which the app must never do."""

    def __init__(self, file, tensor_type):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.tensor_type = tensor_type

    def reducer_override(self, obj):
        if isinstance(obj, self.tensor_type) and obj.device.type != "cpu":
            cpu = obj.detach().to("cpu")
            if cpu.device.type != "cpu":  # a subclass that still claims another device
                cpu = cpu.as_subclass(self.tensor_type)
            return cpu.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
        return NotImplemented


def dumps_result(obj) -> bytes:
    """dumps(), moving tensors on a GPU to the CPU on the way (see _ResultPickler)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return dumps(obj)
    buf = io.BytesIO()
    try:
        _ResultPickler(buf, torch.Tensor).dump(obj)
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as err:
        raise PicklingFailed(f"{err} (in an object of type {_type_name(obj)})") from err
    return buf.getvalue()


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
