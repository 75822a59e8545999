"""An aimed clock: runs a callback for a key at the next instant that key needs it, and not otherwise.

The rights clock (keys: namespaces, controllers/rights.py) and the asset clock (keys: "namespace/name" of
MediaAssets, controllers/main.py) are two instances: what changes with time alone (a window opening, a tier
transition, a fixity slot, the safety-net re-check of an asset not Ready) is met to the second without a timer
per object.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from kubemam.health import HEARTBEATS, Heartbeats

log = logging.getLogger(__name__)

BEAT_SECONDS = 10.0
RETRY_FIRST_SECONDS = 1.0
# Stale heap entries (re-aimed or dropped keys) are swept once they outnumber the live alarms this much.
COMPACT_FACTOR = 2
COMPACT_MIN = 64


def retry_delay(failures: int, first: float = RETRY_FIRST_SECONDS, most: float = 30.0) -> float:
    """The wait before a key's next attempt after `failures` failed runs in a row: `first`, doubling,
    at most `most`."""
    return float(min(most, first * 2 ** min(max(0, failures - 1), 32)))  # a bounded exponent: no overflow


class AimedClock:
    """Wakes a key's callback at the instant it was aimed at, to the second.

    One thread keeps a heap of (instant, key) — a key has one alarm, the earliest it was aimed at —
    and hands each due key to a bounded pool of workers, so one key whose run blocks (a hung API
    call, until its timeout) never delays another's. A key never runs twice at once: an alarm or a
    poke that comes due while it runs makes one more run right after. Event handlers `poke` instead
    of running inline, so a burst of triggers collapses into one run. The callback returns the key's
    next instant (or None), so the clock keeps itself aimed. A callback that raises is retried after
    `retry_first` seconds, doubling up to `retry_max` for that key, reset by a success; while a key
    waits out its backoff a poke does not bring it forward (a hundred triggers would otherwise retry a
    failing key as fast as they come). Pokes come no sooner than `spacing` seconds after the key's last
    run ended: a burst of events (5,000 assets created, each poking its namespace) then costs a run every
    `spacing` seconds rather than back-to-back runs; alarms are exact. `poke(idle=…)` is a safety net: it does
    nothing for a key that runs or ran that recently.

    Liveness (kubemam.health): the clock thread beats `clock_heartbeat` at least every BEAT_SECONDS;
    each run is a task "<worker_heartbeat> <key>", stuck once it runs longer than `stuck_seconds`.
    """

    def __init__(self, callback: Callable[[str], datetime | None], *, name: str, clock_heartbeat: str,
                 worker_heartbeat: str, workers: int = 4, retry_first: float = RETRY_FIRST_SECONDS,
                 retry_max: float = 30.0, stuck_seconds: float = 300.0, heartbeats: Heartbeats = HEARTBEATS,
                 spacing: float = 0.0) -> None:
        self._callback = callback
        self._spacing = spacing
        self._last_end: dict[str, float] = {}  # when each key's last run ended
        self._clock_heartbeat = clock_heartbeat
        self._worker_heartbeat = worker_heartbeat
        self._retry_first = retry_first
        self._retry_max = retry_max
        self._stuck = stuck_seconds
        self._heartbeats = heartbeats
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._running: set[str] = set()
        self._again: set[str] = set()  # came due while running: one more run after this one
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}  # in backoff: no run before this instant
        self._ready: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._wake = threading.Condition()
        self._stopped = False
        # Daemon threads of our own rather than a ThreadPoolExecutor, whose threads the interpreter
        # joins at exit: a stuck worker must not keep a stopping operator alive.
        self._threads = [threading.Thread(target=self._dispatch, name=f"{name}-clock", daemon=True)] + [
            threading.Thread(target=self._work, name=f"{name}-worker-{n}", daemon=True) for n in range(workers)]
        for thread in self._threads:
            thread.start()

    def aim(self, key: str, instant: datetime | None) -> None:
        if instant is None:
            return
        with self._wake:
            self._aim(key, instant.timestamp())

    def reset(self, key: str, instant: datetime | None) -> None:
        """The key's alarm is now this instant, later or earlier than before (None: no alarm): what a fresh
        look at its object found supersedes what an older one did."""
        with self._wake:
            if instant is None:
                self._due.pop(key, None)
                self._compact()
            else:
                self._aim(key, instant.timestamp(), replace=True)

    def ensure(self, key: str, instant: datetime | None) -> None:
        """Aim the key only if it has no alarm and is not running (a run re-aims it when it ends)."""
        if instant is None:
            return
        with self._wake:
            if key not in self._due and key not in self._running:
                self._aim(key, instant.timestamp())

    def poke(self, key: str, idle: float = 0.0) -> None:
        """Run as soon as possible (`spacing` after the last run); a burst of pokes (100 windows resuming) is
        one run. `idle`: only if the key is not running and its last run ended at least that long ago."""
        with self._wake:
            now = time.time()
            last = self._last_end.get(key)
            if idle and (key in self._running or (last is not None and now - last < idle)):
                return
            self._aim(key, max(now, last + self._spacing) if last is not None else now)

    def drop(self, key: str) -> None:
        """Forget the key's alarm (its object is gone); a run under way finishes."""
        with self._wake:
            self._due.pop(key, None)
            self._again.discard(key)
            self._failures.pop(key, None)
            self._retry_at.pop(key, None)
            self._last_end.pop(key, None)
            self._compact()

    def alarm(self, key: str) -> datetime | None:
        """When the key is due next (None: no alarm)."""
        with self._wake:
            due = self._due.get(key)
        return datetime.fromtimestamp(due, UTC) if due is not None else None

    def stop(self) -> None:
        """Stop dispatching; a run in progress finishes on its own (its thread is a daemon)."""
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        for _ in self._threads[1:]:
            self._ready.put(None)
        self._heartbeats.finish(self._clock_heartbeat)

    def _aim(self, key: str, when: float, replace: bool = False) -> None:
        """Holding self._wake."""
        when = max(when, self._retry_at.get(key, when))
        due = self._due.get(key)
        if due is not None and (due == when or (due < when and not replace)):
            return  # an earlier alarm covers it: that run re-aims at the next instant
        self._due[key] = when
        heapq.heappush(self._heap, (when, key))
        self._compact()
        self._wake.notify_all()

    def _compact(self) -> None:
        """Holding self._wake: entries of re-aimed and dropped keys go, so the heap stays the size of the
        live alarms (10,000 archived assets re-aimed daily must not grow it for ever)."""
        if len(self._heap) > COMPACT_FACTOR * len(self._due) + COMPACT_MIN:
            self._heap = [(when, key) for key, when in self._due.items()]
            heapq.heapify(self._heap)

    def _dispatch(self) -> None:
        while True:
            with self._wake:
                if self._stopped:
                    return
                self._heartbeats.beat(self._clock_heartbeat, self._stuck)
                now = time.time()
                if not self._heap or self._heap[0][0] > now:
                    # Wake at least every BEAT_SECONDS, so an idle clock still shows it is alive.
                    self._wake.wait(timeout=BEAT_SECONDS if not self._heap else
                                    min(BEAT_SECONDS, self._heap[0][0] - now))
                    continue
                when, key = heapq.heappop(self._heap)
                if self._due.get(key) != when:
                    continue  # re-aimed or dropped since
                del self._due[key]
                if key in self._running:
                    self._again.add(key)
                    continue
                self._running.add(key)
            self._ready.put(key)

    def _work(self) -> None:
        while (key := self._ready.get()) is not None:
            following: datetime | None = None
            failed: Exception | None = None
            failures, delay = 0, 0.0
            try:
                with self._heartbeats.busy(f"{self._worker_heartbeat} {key}", self._stuck):
                    following = self._callback(key)
            except Exception as err:  # noqa: BLE001 - the clock must outlive one failed run
                failed = err
            with self._wake:
                self._running.discard(key)
                self._last_end[key] = time.time()
                if failed is None:
                    self._failures.pop(key, None)
                    self._retry_at.pop(key, None)
                    if following is not None:
                        self._aim(key, following.timestamp())
                else:
                    failures = self._failures[key] = self._failures.get(key, 0) + 1
                    delay = retry_delay(failures, self._retry_first, self._retry_max)
                    self._retry_at[key] = time.time() + delay
                    self._aim(key, self._retry_at[key])
                if key in self._again:  # poked (or an alarm came due) during the run
                    self._again.discard(key)
                    self._aim(key, time.time() + self._spacing)
            if failed is not None:
                log.warning("%s of %s failed (%d in a row); retrying in %.0f s: %s: %s", self._worker_heartbeat, key,
                            failures, delay, type(failed).__name__, failed, exc_info=failures == 1)
