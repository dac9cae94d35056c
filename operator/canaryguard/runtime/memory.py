"""Memory freed by the process handed back to the system, once a period.

glibc keeps memory that Python freed (the start-up's lists of thousands of objects, answers
parsed in worker threads) in its arenas for reuse, so the resident size stays at its peak.
`malloc_trim(0)` returns what is free. Without glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def trimmer() -> Callable[[], int] | None:
    """glibc's `malloc_trim(0)`, or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def call() -> int:
        return int(trim(0))

    return call


async def trim_periodically(stop: asyncio.Event, period: float = 60.0) -> None:
    """Until `stop` is set: every `period` seconds, hand freed memory back."""
    trim = trimmer()
    if trim is None:
        log.info("malloc_trim is not available: freed memory stays with the process")
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period)
        trim()
