"""Heartbeats of the operator's own threads, judged by the liveness probe (`@kopf.on.probe`).

Kopf's /healthz only proves that its event loop answers. The rights clock, its workers, the metrics
inventory and Kopf's handler threads can hang on their own (a deadlock, a call that never returns),
and then takedowns stop while the pod looks alive. Each reports here, in one of two ways:

- a **loop** beats on every turn (`beat`): stale when it has not beaten for its limit;
- a **task** is timed while it runs (`busy`): stale when it has run longer than its limit.

`stale(now)` is the judgment, a pure function of what was reported and the clock (injected, so unit
tests need no sleeping); the probe fails while anything is stale, and the kubelet restarts the pod.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Stale:
    """A loop that stopped beating or a task that runs too long: `age` seconds, over `limit`."""

    name: str
    age: float
    limit: float

    def __str__(self) -> str:
        return f"{self.name}: {self.age:.0f} s (limit {self.limit:.0f} s)"


@dataclass(frozen=True)
class _Mark:
    since: float  # the last beat (a loop) or the start (a task)
    limit: float


class Heartbeats:
    """Thread-safe: loops and tasks report from their own threads, the probe reads from Kopf's loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._marks: dict[str, _Mark] = {}

    def beat(self, name: str, limit: float) -> None:
        """A loop's turn: it is alive now, and must beat again within `limit` seconds."""
        with self._lock:
            self._marks[name] = _Mark(self._clock(), limit)

    def start(self, name: str, limit: float) -> None:
        """A task began (one per name at a time); it must `finish` within `limit` seconds."""
        self.beat(name, limit)

    def finish(self, name: str) -> None:
        with self._lock:
            self._marks.pop(name, None)

    def running(self, name: str) -> bool:
        with self._lock:
            return name in self._marks

    @contextmanager
    def busy(self, name: str, limit: float) -> Iterator[None]:
        """Time the block as a task called `name`."""
        self.start(name, limit)
        try:
            yield
        finally:
            self.finish(name)

    def stale(self, now: float | None = None) -> list[Stale]:
        """Everything over its limit at `now` (default: the clock), oldest first."""
        at = self._clock() if now is None else now
        with self._lock:
            marks = dict(self._marks)
        found = [Stale(name, at - mark.since, mark.limit) for name, mark in marks.items()
                 if at - mark.since > mark.limit]
        return sorted(found, key=lambda s: -s.age)

    def ages(self, now: float | None = None) -> dict[str, float]:
        """Seconds since each loop's beat or task's start: what /healthz shows."""
        at = self._clock() if now is None else now
        with self._lock:
            return {name: round(at - mark.since, 1) for name, mark in sorted(self._marks.items())}


# The process's heartbeats: the operator's threads report here, the probe handler reads them.
HEARTBEATS = Heartbeats()
