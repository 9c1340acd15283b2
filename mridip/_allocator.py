"""Keep freed CPU memory in the process during a fit (glibc only).

A DIP step on the CPU allocates and frees the same large activation buffers every step (hundreds
of MiB at 128²). glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh
``mmap`` pages and unmaps them on free, so every step page-faults and zero-fills those buffers
again. :func:`keep_freed_memory` asks glibc to serve them from its heap and not to return freed
heap memory to the system, so that later steps reuse the pages. The process's resident memory
then stays at its peak until it exits (``malloc_trim`` still returns it on demand).

Set ``MRIDIP_KEEP_FREED_MEMORY=0`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Switch glibc to heap-only allocation without trimming, once per process.

    Returns
    -------
    bool
        Whether the setting is in effect (False on other C libraries or platforms, or when
        ``MRIDIP_KEEP_FREED_MEMORY=0``).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("MRIDIP_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith(
        "linux"
    ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; the largest int keeps the heap from being trimmed
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
