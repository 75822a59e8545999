"""Freed large buffers go back to the kernel, so a worker's memory does not grow with the programme.

The workers move media in MiB-sized pieces on several threads (a download's 8 MiB reads, the commit's
uploads, a copy's parts). glibc serves a request above its mmap threshold with its own mapping and unmaps it
on free, but the first such free raises the threshold to that size: from then on the pieces come from the
threads' arenas, whose freed space is kept, and fragments with every piece. The package step's Python grew
89 → 109 MiB from a 10- to a 120-minute programme that way, and 87 → 95 MiB with the threshold pinned
(bench/long_master.py --only package). Set in the worker's process, so ffmpeg and its other children keep
glibc's default.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter; setting it also turns its dynamic adjustment off
MMAP_THRESHOLD = 256 * 1024  # glibc's dynamic threshold starts at 128 KiB; pieces at least this big are mapped


def return_freed_buffers() -> bool:
    """Pin glibc's mmap threshold (True when it took). Elsewhere (no glibc mallopt) nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS, musl), no CDLL(None) (Windows)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        log.warning("the C library refused an mmap threshold of %d bytes; large buffers stay in the heap",
                    MMAP_THRESHOLD)
        return False
    return True
