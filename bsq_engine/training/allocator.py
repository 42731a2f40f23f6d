"""Keep freed host memory in the process while a run trains (glibc's ``malloc``).

A CPU training step frees every activation and gradient at its end and allocates them
again in the next. With glibc's defaults, blocks above a *dynamic* threshold are mapped
fresh from the kernel and the top of the heap is handed back once enough of it is free, so
every step pays page faults (the kernel zeroes each new 4 KiB page) for memory it just
returned. ``benchmarks/allocator.py`` counts them with one model per process, as the
trainer has it (ResNet-20, batch 128, CPU, three runs): 5,100-12,300 faults and 16-36 ms of
system time per float step, 3,300-10,700 and 12-30 ms per BSQ step, 2-6% of the step's CPU
time; none with the setting.

:func:`keep_freed_memory` sets two of glibc's ``mallopt`` parameters for the duration of a
run: blocks below 32 MiB (glibc's largest allowed mmap threshold on 64-bit) come from the
heap, and the heap is not trimmed between steps. The step then reuses its own pages: no
faults after the first step. At the run's end the free memory goes back to the kernel
(``malloc_trim``) and the trim threshold comes down to 64 MiB, what glibc's own dynamic rule
sets (twice the mmap threshold) once it has raised the mmap threshold to its 32 MiB maximum.
The mmap threshold stays at 32 MiB: setting it turns glibc's adjustment off for the rest of
the process, and putting back the start-up 128 KiB would map and fault every larger block
from then on (one check with only ``MALLOC_TRIM_THRESHOLD_`` set, which has that effect:
730 ms of system time per ResNet-20 step).

Our choice, not the method's: it changes no computed value, only where the memory comes
from. Between steps the process keeps its peak instead of dropping below it; the peak
itself moved by -30 MB (float) and +55 MB (BSQ) of 1.2-1.4 GB in ``benchmarks/allocator.py``.
A no-op where the C library is not glibc (macOS, musl): those allocators have their own
policies. Nested and concurrent runs in one process (the thread worker) share one setting:
the first to enter sets it, the last to leave gives the memory back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["MMAP_THRESHOLD", "TRIM_AFTER", "TRIM_THRESHOLD", "keep_freed_memory", "supported"]

log = logging.getLogger(__name__)

# glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1 << 30  # in effect never while a run trains: its end trims instead
TRIM_AFTER = 2 * MMAP_THRESHOLD  # between runs: glibc's dynamic rule at that mmap threshold

_LOCK = threading.Lock()
_STATE = {"users": 0, "libc": None, "loaded": False}


def _libc():
    """glibc's handle, or None (another C library, or its symbols are missing)."""
    if not _STATE["loaded"]:
        _STATE["loaded"] = True
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                libc.malloc_trim.argtypes = [ctypes.c_size_t]
                _STATE["libc"] = libc
            except (OSError, AttributeError) as exc:
                log.info("allocator tuning unavailable: %s", exc)
    return _STATE["libc"]


def supported() -> bool:
    """True where :func:`keep_freed_memory` changes anything (Linux with glibc)."""
    return _libc() is not None


def _set(trim: int, mmap: int) -> bool:
    libc = _libc()
    # mallopt returns 1 on success, 0 when glibc refuses the value
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap)) & bool(libc.mallopt(_M_TRIM_THRESHOLD, trim))


@contextmanager
def keep_freed_memory() -> Iterator[bool]:
    """Within the block, freed memory stays in the process (see the module docstring).

    Yields whether the setting is in effect (False where it is not supported)."""
    if _libc() is None:
        yield False
        return
    with _LOCK:
        if _STATE["users"] == 0 and not _set(TRIM_THRESHOLD, MMAP_THRESHOLD):
            log.info("glibc refused the allocator settings; left as they were")
        _STATE["users"] += 1
    try:
        yield True
    finally:
        with _LOCK:
            _STATE["users"] -= 1
            if _STATE["users"] == 0:
                _set(TRIM_AFTER, MMAP_THRESHOLD)
                _libc().malloc_trim(0)
