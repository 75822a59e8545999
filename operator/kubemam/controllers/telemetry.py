"""What feeds the metrics (metrics.py derives the numbers): Job and MediaAsset watch events, and an
inventory of every namespace the operator has seen, counted from its indexes every 15 s (no API call).

None of it changes anything in the cluster; a failure here is logged and never fails a reconcile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubemam import metrics
from kubemam.controllers.indexes import Watched
from kubemam.health import HEARTBEATS, Heartbeats

log = logging.getLogger(__name__)

INVENTORY_SECONDS = 15.0
INVENTORY_HEARTBEAT = "metrics inventory"

JOBS = metrics.JobCounter()
QC = metrics.QCCounter()
PROGRESS = metrics.StepProgress()
INVENTORY = metrics.Inventory()


def job_event(body: Mapping[str, Any]) -> None:
    """A kubemam Job changed: count it once when it has finished (after this process started)."""
    namespace = (body.get("metadata") or {}).get("namespace")
    if namespace:
        metrics.note_namespace(namespace)
    JOBS.observe(body)


def _ladder_spec(watched: Watched, namespace: str, spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    ladder = (spec.get("ladderRef") or {}).get("name")
    if not ladder or (spec.get("qc") or {}).get("targetLufs") is not None:
        return None
    return watched.ladder(namespace, ladder)


def asset_event(watched: Watched, event_type: str | None, body: Mapping[str, Any]) -> None:
    """A MediaAsset changed: its running step's progress gauges, and a new ingest QC result once. No API
    call (the ladder comes from the index), so Kopf runs it on its event loop, not in a handler thread."""
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace"), meta.get("name")
    if not namespace or not name:
        return
    metrics.note_namespace(namespace)
    if event_type == "DELETED" or meta.get("deletionTimestamp"):
        PROGRESS.forget(namespace, name)
        return
    status = body.get("status") or {}
    PROGRESS.observe(namespace, name, status)
    if QC.pending(namespace, name, status):
        spec = body.get("spec") or {}
        QC.observe(namespace, name, status, metrics.qc_target(spec, _ladder_spec(watched, namespace, spec)))


def sweep(watched: Watched, now: datetime | None = None) -> None:
    """Count assets, windows and kubemam Jobs in every namespace seen, from the operator's indexes; publish
    the inventory gauges. A namespace with none of them is forgotten (its series removed) until an event
    brings it back."""
    assets: dict[str, list[dict[str, Any]]] = {}
    windows: dict[str, list[dict[str, Any]]] = {}
    jobs: list[dict[str, Any]] = []
    for namespace in metrics.seen_namespaces():
        assets[namespace] = watched.namespace_assets(namespace)
        windows[namespace] = watched.namespace_windows(namespace)
        namespace_jobs = watched.namespace_jobs(namespace)
        jobs.extend(namespace_jobs)
        PROGRESS.keep_only(namespace, (a["metadata"]["name"] for a in assets[namespace]))
        if not (assets[namespace] or windows[namespace] or namespace_jobs):
            metrics.forget_namespace(namespace)
    INVENTORY.publish(assets, windows, jobs, now or datetime.now(UTC))


class InventoryLoop:
    """`sweep` every `interval` seconds on a daemon thread; a failed sweep keeps the last values.

    Liveness (kubemam.health): the loop beats every turn; a sweep that hangs stops the beats, and
    `interval + stuck_seconds` later the probe fails."""

    def __init__(self, sweep: Callable[[], object], interval: float = INVENTORY_SECONDS,
                 first_delay: float = 1.0, stuck_seconds: float = 300.0,
                 heartbeats: Heartbeats = HEARTBEATS, name: str = INVENTORY_HEARTBEAT) -> None:
        self._name = name  # the thread's and the heartbeat's (the progress loop runs on this class too)
        self._sweep = sweep
        self._interval = interval
        self._first_delay = first_delay
        self._stuck = stuck_seconds
        self._heartbeats = heartbeats
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name.replace(" ", "-"), daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._heartbeats.finish(self._name)

    def _run(self) -> None:
        delay = self._first_delay
        self._heartbeats.beat(self._name, max(delay, self._interval) + self._stuck)
        while not self._stop.wait(delay):
            delay = self._interval
            self._heartbeats.beat(self._name, self._interval + self._stuck)
            try:
                self._sweep()
            except Exception:  # noqa: BLE001 - the loop must outlive whatever one sweep met
                log.warning("%s failed; keeping the last values", self._name, exc_info=True)
        self._heartbeats.finish(self._name)  # stopped: nothing to judge
