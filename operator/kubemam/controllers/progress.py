"""Step progress for every running step from one loop, instead of a 2 s Kopf timer per running asset.

The worker prints `KUBEMAM_PROGRESS` lines on stdout (media/progress.py); an asset reconcile reads the
running pod's log tail and writes `status.progress`. A timer per running asset reconciled each one in
full every 2 s whether or not anything moved: a thousand running steps were 500 reconciles a second.
Here one loop reads log tails within a budget of reads per turn (least recently read first, so every
step is read in turn however many run) and reconciles an asset only when what it would write moves on:

- the first sight of a running step (its step name and 0 %);
- a progress report that moved by PROGRESS_MIN_PERCENT, or moved at all after PROGRESS_MIN_INTERVAL
  (the asset planner writes no more often than that: plan/asset.py);
- no running pod to read (a pod that waits: an image pull, a Secret missing) every WAITING_RECHECK,
  so the reconcile can say why it waits.

The choice is pure (`due`), with the clock passed in; the loop around it has the side effects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubemam.controllers.indexes import RunningStep
from kubemam.media.progress import latest_progress
from kubemam.plan.asset import PROGRESS_MIN_INTERVAL, PROGRESS_MIN_PERCENT

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 2.0
HEARTBEAT = "progress loop"
WAITING_RECHECK_SECONDS = 10.0


@dataclass
class _Seen:
    progress: dict[str, Any] | None  # what the last reconcile this loop asked for saw
    reconciled_at: float
    read_at: float


def _percent(progress: dict[str, Any] | None) -> float:
    try:
        return float((progress or {}).get("percent") or 0)
    except (TypeError, ValueError):
        return 0.0


def due(seen: _Seen | None, progress: dict[str, Any] | None, now: float) -> bool:
    """Whether a reconcile would write something new, from the newest report read (None: no running pod)."""
    if seen is None:
        return True
    if progress is None:
        return now - seen.reconciled_at >= WAITING_RECHECK_SECONDS
    if progress == seen.progress:
        return False
    if seen.progress is None or progress.get("step") != seen.progress.get("step"):
        return True
    return (abs(_percent(progress) - _percent(seen.progress)) >= PROGRESS_MIN_PERCENT
            or now - seen.reconciled_at >= PROGRESS_MIN_INTERVAL.total_seconds())


class ProgressWatcher:
    """`tick` once a turn (telemetry.InventoryLoop runs it): read up to `reads_per_turn` log tails of the
    running steps, least recently read first, and reconcile the assets whose progress moved on."""

    def __init__(self, running: Callable[[], list[RunningStep]], read_tail: Callable[[str, str], str | None],
                 reconcile: Callable[[str, str], None], reads_per_turn: int = 50) -> None:
        self._running = running
        self._read_tail = read_tail
        self._reconcile = reconcile
        self._reads_per_turn = max(1, reads_per_turn)
        self._seen: dict[RunningStep, _Seen] = {}

    def tick(self, now: float) -> list[RunningStep]:
        """One turn; returns the steps whose assets it reconciled."""
        steps = self._running()
        current = set(steps)
        for gone in [step for step in self._seen if step not in current]:
            del self._seen[gone]  # finished: its Job's events reconcile the asset
        ordered = sorted(steps, key=lambda s: (self._seen[s].read_at if s in self._seen else float("-inf"),
                                               s.namespace, s.asset))
        reconciled = []
        for step in ordered[:self._reads_per_turn]:
            tail = self._read_tail(step.namespace, step.job)
            progress = latest_progress(tail) if tail else None
            seen = self._seen.get(step)
            if due(seen, progress, now):
                try:
                    self._reconcile(step.namespace, step.asset)
                except Exception as err:  # noqa: BLE001 - one asset's failed reconcile must not stop the others
                    log.warning("progress of %s/%s not written: %s: %s", step.namespace, step.asset,
                                type(err).__name__, err)
                    self._seen[step] = _Seen(seen.progress if seen else None, seen.reconciled_at if seen else now, now)
                    continue
                self._seen[step] = _Seen(progress, now, now)
                reconciled.append(step)
            elif seen is not None:
                seen.read_at = now
        return reconciled
