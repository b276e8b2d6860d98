"""Handing freed memory back to the system after a burst, and reading what a process holds.

CPython takes anything above 512 bytes (payloads, COPY buffers, the lists of a batch)
from the C allocator. glibc serves a request below its mmap threshold from a heap, and
that threshold follows the largest block freed so far (up to 32 MiB on 64-bit): after
the first 3 MiB message is freed, the next ones come from the heap, and a heap gives
memory back to the system only from its top. A burst of large messages would leave the
worker's resident set at the burst's peak for good, though Python has freed it all.
``malloc_trim(0)`` returns every free page of every arena wherever it lies (glibc
≥ 2.8, by ``madvise``); it costs a walk over the free lists, so it runs after a burst
(:class:`TrimAfterBurst`), not per message. Where the C library has no
``malloc_trim`` (musl, macOS), trimming does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        function = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


_MALLOC_TRIM = _malloc_trim()


def trim() -> bool:
    """Give freed heap memory back to the system; False where the C library cannot."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux ``/proc/<pid>/status`` VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS in /proc/{pid}/status")


class TrimAfterBurst:
    """When to trim: a second after the in-flight window drained from a burst.

    The broker adapter reports every release of bytes (:meth:`released`) and arms a
    timer of :attr:`delay_s` when told to; when it fires it asks :meth:`due`. A trim
    is due if at least an eighth of the window passed through since the last one and
    the window still holds at most an eighth of itself: once at the end of a burst,
    and under a steady stream at most once per ``delay_s`` (a trim walks the
    allocator's free lists, milliseconds on a large heap).
    """

    delay_s = 1.0

    def __init__(self, window_bytes: int) -> None:
        self._low = window_bytes // 8
        self._released = 0
        self._armed = False

    def released(self, held: int, size: int) -> bool:
        """True when the caller should arm the timer."""
        self._released += size
        if self._armed or self._released < self._low or held > self._low:
            return False
        self._armed = True
        return True

    def due(self, held: int) -> bool:
        self._armed = False
        if held > self._low:
            return False
        self._released = 0
        return True
