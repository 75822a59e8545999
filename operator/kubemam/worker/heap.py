"""One malloc arena for the worker's threads, so its memory does not grow with the programme.

The workers move media in MiB-sized pieces on several threads (two tracks downloading at once, the commit's
eight uploads, a copy's parts). glibc gives each thread that allocates at the same time as another an arena of
its own, and every arena keeps the space its pieces freed: with ten threads, ten sets of cached pieces, more
of them the longer the programme runs. The package step's Python grew 90 → 107 MiB from a 10- to a 120-minute
programme (bench/long_master.py --only package), and 90 → 96 MiB with one arena, where a piece one thread
frees is the next piece another thread takes. Pinning the mmap threshold instead (each piece mapped and
unmapped) held 87 → 95 MiB too, but costs ~0.45 s of CPU per GiB read in 8 MiB pieces (page faults and
zeroing): minutes on a terabyte master. The GIL already lets one thread at a time allocate, so one arena's
lock costs little. Set in the worker's process: ffmpeg and its other children keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter


def share_one_arena() -> bool:
    """Limit glibc to one arena for threads created from now on (True when it took); elsewhere nothing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS, musl), no CDLL(None) (Windows)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_ARENA_MAX, 1) != 1:
        log.warning("the C library refused one malloc arena; threads keep arenas of their own")
        return False
    return True
