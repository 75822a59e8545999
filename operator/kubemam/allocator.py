"""Fewer glibc malloc arenas for the operator process, set before its threads start.

glibc gives a thread that allocates under contention its own arena, up to eight per core, and memory
freed in an arena is seldom returned to the system. The operator's handler threads, the rights clock's
workers and the loops each parse large JSON (a watch list of thousands of objects) in whatever arena
they hold, so the peak of a burst stays resident in many arenas at once. bench/scale.py measures it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's malloc.h
DEFAULT_ARENAS = 2


def cap_malloc_arenas(environ: dict[str, str] | None = None) -> int | None:
    """Cap glibc's arenas at KUBEMAM_MALLOC_ARENAS (2; 0 leaves glibc's default); returns the cap set, or
    None where nothing was set (glibc's own MALLOC_ARENA_MAX is the user's choice; not glibc)."""
    env = os.environ if environ is None else environ
    if env.get("MALLOC_ARENA_MAX"):
        return None
    text = env.get("KUBEMAM_MALLOC_ARENAS", str(DEFAULT_ARENAS)).strip()
    if not text.isdigit():
        raise ValueError(f"KUBEMAM_MALLOC_ARENAS={text!r}: give a whole number of arenas (0 = glibc's default)")
    arenas = int(text)
    if arenas == 0:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return arenas if libc.mallopt(M_ARENA_MAX, arenas) == 1 else None
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return None
