"""What feeds the metrics (metrics.py derives the numbers): Job and MediaAsset watch events, and an
inventory that lists every namespace the operator has seen every 15 s.

None of it changes anything in the cluster; a failure here is logged and never fails a reconcile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubemam import metrics
from kubemam.api.kinds import MEDIA_ASSET, RIGHTS_WINDOW, TRANSCODE_LADDER
from kubemam.health import HEARTBEATS, Heartbeats
from kubemam.kubeapi import KubeApi
from kubemam.plan.jobs import MANAGED_SELECTOR

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


def _ladder_spec(api: KubeApi, namespace: str, spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    ladder = (spec.get("ladderRef") or {}).get("name")
    if not ladder or (spec.get("qc") or {}).get("targetLufs") is not None:
        return None
    try:
        body = api.get(TRANSCODE_LADDER.plural, namespace, ladder)
    except Exception:  # noqa: BLE001 - metrics are best effort: the default target then
        log.warning("could not read ladder %s/%s for the QC loudness target", namespace, ladder)
        return None
    return (body or {}).get("spec")


def asset_event(api: KubeApi, event_type: str | None, body: Mapping[str, Any]) -> None:
    """A MediaAsset changed: its running step's progress gauges, and a new ingest QC result once."""
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
        QC.observe(namespace, name, status, metrics.qc_target(spec, _ladder_spec(api, namespace, spec)))


def _list(call: Callable[..., list[dict[str, Any]]], *args: Any) -> list[dict[str, Any]]:
    try:
        return call(*args)
    except ApiException as err:
        if err.status in (403, 404):  # a namespace gone, or one the operator may not read
            return []
        raise


def sweep(api: KubeApi, now: datetime | None = None) -> None:
    """List assets, windows and kubemam Jobs in every namespace seen; publish the inventory gauges.
    A namespace with none of them is forgotten (its series removed) until an event brings it back."""
    assets: dict[str, list[dict[str, Any]]] = {}
    windows: dict[str, list[dict[str, Any]]] = {}
    jobs: list[dict[str, Any]] = []
    for namespace in metrics.seen_namespaces():
        assets[namespace] = _list(api.list_objects, MEDIA_ASSET.plural, namespace)
        windows[namespace] = _list(api.list_objects, RIGHTS_WINDOW.plural, namespace)
        namespace_jobs = _list(api.list_jobs, namespace, MANAGED_SELECTOR)
        jobs.extend(namespace_jobs)
        PROGRESS.keep_only(namespace, (a["metadata"]["name"] for a in assets[namespace]))
        if not (assets[namespace] or windows[namespace] or namespace_jobs):
            metrics.forget_namespace(namespace)
    INVENTORY.publish(assets, windows, jobs, now or datetime.now(UTC))


class InventoryLoop:
    """`sweep` every `interval` seconds on a daemon thread; a failed sweep keeps the last values.

    Liveness (kubemam.health): the loop beats every turn; a sweep that hangs (a call that never
    returns) stops the beats, and `interval + stuck_seconds` later the probe fails."""

    def __init__(self, api: Callable[[], KubeApi], interval: float = INVENTORY_SECONDS,
                 first_delay: float = 1.0, stuck_seconds: float = 300.0,
                 heartbeats: Heartbeats = HEARTBEATS) -> None:
        self._api = api
        self._interval = interval
        self._first_delay = first_delay
        self._stuck = stuck_seconds
        self._heartbeats = heartbeats
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="metrics-inventory", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._heartbeats.finish(INVENTORY_HEARTBEAT)

    def _run(self) -> None:
        delay = self._first_delay
        self._heartbeats.beat(INVENTORY_HEARTBEAT, max(delay, self._interval) + self._stuck)
        while not self._stop.wait(delay):
            delay = self._interval
            self._heartbeats.beat(INVENTORY_HEARTBEAT, self._interval + self._stuck)
            try:
                sweep(self._api())
            except Exception:  # noqa: BLE001 - the loop must outlive an API outage
                log.warning("metrics inventory failed; keeping the last values", exc_info=True)
        self._heartbeats.finish(INVENTORY_HEARTBEAT)  # stopped: nothing to judge
