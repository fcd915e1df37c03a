"""Giving freed memory back to the operating system in long-running processes.

A fusion allocates and frees many batch-sized float32 buffers. glibc keeps freed heap memory
for reuse, so a WebUI process that fuses again and again (an X/Y/Z sweep over mu) would keep
growing in resident size although nothing is live. ``release_free_memory`` asks glibc to return
what is free (``malloc_trim``); elsewhere (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _trim():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return free heap memory to the OS where the C library allows it; True if it could."""
    fn = _trim()
    if fn is None:
        return False
    fn(0)
    return True
