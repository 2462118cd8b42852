"""Shared host memory for the tensors an app places "on cuda" before any call.

The app process has no GPU, so ``.to('cuda')`` copies a tensor's data here
instead: anonymous shared mappings (MAP_SHARED), which every worker forked
later sees at the same address without a copy. The original CPU storage is
then dropped by the caller (``param.data = placed``), so the weights exist
once in host memory, however many workers there are.

A bump allocator in segments of at least 256 MiB; pages never written cost
nothing. Space is not reused when a placed tensor dies: apps place their
models once, at start-up.
"""
import bisect
import ctypes
import mmap
import threading

__all__ = ["Arena", "ALIGN"]

ALIGN = 512  # every tensor starts on a 512-byte boundary, here and in its GPU copy
_SEGMENT = 256 << 20


class Segment:
    __slots__ = ("mm", "size", "used", "base")

    def __init__(self, size):
        self.mm = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.size = size
        self.used = 0
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.mm))


class Arena:
    def __init__(self):
        self.segments = []  # in order of base address, for lookups by pointer
        self._lock = threading.Lock()

    def alloc(self, nbytes):
        """A fresh (segment, offset) with room for nbytes."""
        need = -(-nbytes // ALIGN) * ALIGN
        with self._lock:
            for seg in self.segments:
                if seg.size - seg.used >= need:
                    break
            else:
                seg = Segment(max(_SEGMENT, -(-need // mmap.PAGESIZE) * mmap.PAGESIZE))
                bisect.insort(self.segments, seg, key=lambda s: s.base)
            off = seg.used
            seg.used += need
            return seg, off

    def find(self, address):
        """The segment holding address, or None."""
        i = bisect.bisect_right([s.base for s in self.segments], address) - 1
        if i >= 0 and address < self.segments[i].base + self.segments[i].size:
            return self.segments[i]
        return None

    def place(self, torch, t):
        """A copy of CPU tensor t (same shape, dtype, values) whose data lives in the arena."""
        nbytes = t.numel() * t.element_size()
        if nbytes == 0:
            return torch.empty(t.shape, dtype=t.dtype)
        seg, off = self.alloc(nbytes)
        dst = torch.frombuffer(seg.mm, dtype=torch.uint8, count=nbytes, offset=off)
        dst = dst.view(t.dtype).view(t.shape)
        dst.copy_(t)
        return dst

    def holds(self, t):
        return t.numel() > 0 and self.find(t.data_ptr()) is not None

    def bytes_used(self):
        return sum(s.used for s in self.segments)
