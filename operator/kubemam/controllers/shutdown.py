"""Stopping on SIGTERM, even when asyncio cannot hear it.

asyncio learns of a signal from a byte written to its self-pipe, the same pipe `call_soon_threadsafe`
writes to. Behind a burst (2,000 assets, every finished handler thread waking the loop) the pipe filled,
the signal's byte was dropped ("Exception ignored when trying to write to the signal wakeup fd:
BlockingIOError") and the operator never stopped: a pod past its grace period is killed, a test's
teardown waited in vain. The Python-level handler installed here still runs (CPython calls it from the
main thread whatever the pipe), and it hands the stop to Kopf's loop through `call_soon_threadsafe`, whose
callback is queued even when the pipe is full. It also arms a deadline: a stop that hangs ends the
process EXIT_SECONDS after the signal (every handler is safe to cut short and run again).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from types import FrameType

log = logging.getLogger(__name__)

EXIT_SECONDS = 20.0  # within a pod's default grace period of 30 s
STOP = asyncio.Event()  # Kopf's stop flag (kopf.run(stop_flag=STOP)); bound to Kopf's loop when it first waits
_loop: asyncio.AbstractEventLoop | None = None
_deadline_armed = threading.Event()


def install() -> None:
    """From Kopf's loop, in the main thread, once Kopf has installed its own signal handlers (a startup
    handler runs then): SIGTERM and SIGINT stop the operator through STOP."""
    global _loop
    _loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, _on_signal)


def _on_signal(number: int, frame: FrameType | None) -> None:
    if _loop is not None and not _loop.is_closed():
        _loop.call_soon_threadsafe(STOP.set)
    if not _deadline_armed.is_set():
        _deadline_armed.set()
        threading.Thread(target=_exit_later, args=(signal.Signals(number).name,), name="exit-deadline",
                         daemon=True).start()


def _exit_later(name: str, seconds: float = EXIT_SECONDS) -> None:
    time.sleep(seconds)
    log.warning("still stopping %.0f s after %s: exiting now", seconds, name)
    logging.shutdown()
    os._exit(1)
