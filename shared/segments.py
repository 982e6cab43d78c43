"""Shared-memory segments and the ctypes views made on them.

A view made with ``from_buffer`` pins its segment: ``SharedMemory.close()`` fails while
any view lives.  So every segment is wrapped in one :class:`Segment` that hands out the
views and drops them all before it closes.  Ring-3 creates and unlinks the segments;
ring-0 workers attach by name.  Names carry the creating process's pid, so a later run
can sweep the segments of a ring-3 that died without cleaning up (:func:`sweep_stale`).
"""

from __future__ import annotations

import ctypes
import gc
import os
import secrets
from multiprocessing import shared_memory
from pathlib import Path
from typing import TypeVar

SEGMENT_PREFIX = "ringsim_"
_SHM_DIR = Path("/dev/shm")

CT = TypeVar("CT", bound=ctypes.Structure)


def new_segment_name(tag: str) -> str:
    """A fresh name: prefix, creator pid, a random token, and what the segment holds."""
    return f"{SEGMENT_PREFIX}{os.getpid()}_{secrets.token_hex(4)}_{tag}"


class Segment:
    """One shared-memory segment and every ctypes view on it."""

    def __init__(self, name: str, size: int = 0, *, create: bool) -> None:
        self.name = name
        self.owner = create
        self._shm = shared_memory.SharedMemory(name=name, create=create, size=max(size, 1))
        self._views: list[ctypes._CData] = []
        self._words: list[memoryview] = []
        self._closed = False

    @classmethod
    def create(cls, tag: str, size: int) -> Segment:
        return cls(new_segment_name(tag), size, create=True)

    @classmethod
    def attach(cls, name: str) -> Segment:
        return cls(name, create=False)

    @property
    def size(self) -> int:
        return self._shm.size

    def _buffer(self) -> memoryview:
        buffer = self._shm.buf
        if buffer is None:
            raise ValueError(f"segment {self.name} is closed")
        return buffer

    def view(self, ctype: type[CT], offset: int = 0) -> CT:
        """A ctypes object living in this segment at *offset*."""
        obj: CT = ctype.from_buffer(self._buffer(), offset)
        self._views.append(obj)
        return obj

    def words(self) -> memoryview:
        """The whole segment as unsigned 64-bit words (statistics rows)."""
        view = self._buffer().cast("Q")
        self._words.append(view)
        return view

    def close(self) -> None:
        """Drop our views and unmap the segment (the name stays until :meth:`unlink`).

        Views handed to others (device halves, dispatchers) should have been dropped
        by their owners first; if one still lives, the segment is detached and its
        mapping goes away with that last view.
        """
        if self._closed:
            return
        self._views.clear()
        for view in self._words:
            view.release()
        self._words.clear()
        gc.collect()
        try:
            self._shm.close()
        except BufferError:
            self._detach()
        self._closed = True

    def _detach(self) -> None:
        """Give up our handles while someone else's view still pins the mapping.

        The mapping then lives exactly as long as the last view and goes with it;
        SharedMemory must not try (and fail, noisily) to close it again when collected.
        """
        shm = self._shm
        shm._buf = None  # type: ignore[attr-defined]
        shm._mmap = None  # type: ignore[attr-defined]
        if shm._fd >= 0:  # type: ignore[attr-defined]
            os.close(shm._fd)  # type: ignore[attr-defined]
            shm._fd = -1  # type: ignore[attr-defined]

    def unlink(self) -> None:
        """Remove the name; only the creator (ring-3) does this."""
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass


def sweep_stale() -> list[str]:
    """Unlink ringsim segments whose creating process no longer exists.

    Only names with ringsim's prefix and a pid that is not alive are touched, so a
    concurrent run's segments are safe.  Returns the names removed.
    """
    removed: list[str] = []
    if not _SHM_DIR.is_dir():
        return removed
    for entry in _SHM_DIR.iterdir():
        name = entry.name
        if not name.startswith(SEGMENT_PREFIX):
            continue
        pid_text = name[len(SEGMENT_PREFIX):].split("_", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        try:
            entry.unlink()
            removed.append(name)
        except OSError:
            continue
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
