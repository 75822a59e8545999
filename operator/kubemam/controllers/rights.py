"""Rights enforcement for one namespace: gather → plan (plan/distribution.py, pure) → act.

Gather reads the windows, assets, distribute Jobs and the targets ConfigMap into plain facts; the
planner returns every write in the order it must happen (asset status, the next distribute Job,
window status, Events, then the finished Jobs marked applied); act performs them and updates the
metrics. One Job at a time per namespace, so a slow publish can never land after the takedown that
followed it.

The clock (RightsClock) wakes the reconcile at the next window transition to the second; Kopf's
resume handlers reconcile every window on start, so a window that closed while the operator was
down is taken down at once.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import yaml
from pydantic import ValidationError

from kubemam.api.asset import MediaAssetStatus
from kubemam.api.distribution import TARGETS_CONFIGMAP, TARGETS_KEY, DistributionTarget, parse_targets
from kubemam.api.kinds import MEDIA_ASSET, RIGHTS_WINDOW
from kubemam.api.rights import RightsWindowSpec
from kubemam.config import OperatorConfig
from kubemam.kubeapi import KubeApi
from kubemam.metrics import DISTRIBUTION_ACTIONS, DISTRIBUTION_FAILED_ATTEMPTS, TAKEDOWN_LATENCY
from kubemam.plan.distribution import (
    AnnotateJob,
    AssetFacts,
    CreateEvent,
    CreateJob,
    DistributionFacts,
    DistributionPlan,
    PatchAssetStatus,
    PatchWindowStatus,
    WindowFacts,
    observe_job,
    plan_distribution,
)
from kubemam.plan.jobs import LABEL_MANAGED_BY, LABEL_STEP
from kubemam.steps.registry import DISTRIBUTE

log = logging.getLogger(__name__)

__all__ = ["DISTRIBUTE", "RightsClock", "reconcile_rights"]

_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def _targets(api: KubeApi, namespace: str) -> tuple[list[DistributionTarget], str | None]:
    data = api.config_map_data(namespace, TARGETS_CONFIGMAP)
    if data is None:
        return [], None
    try:
        return parse_targets(yaml.safe_load(data.get(TARGETS_KEY) or "[]")), None
    except (ValueError, yaml.YAMLError) as err:  # pydantic's ValidationError is a ValueError
        return [], f"ConfigMap {TARGETS_CONFIGMAP} key {TARGETS_KEY} is invalid: {err}"


def _window(body: dict[str, Any]) -> WindowFacts:
    meta = body["metadata"]
    try:
        spec: RightsWindowSpec | None = RightsWindowSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        spec = None
    return WindowFacts(meta["name"], int(meta.get("generation") or 0), spec, dict(body.get("status") or {}),
                       deleting=bool(meta.get("deletionTimestamp")))


def _asset(namespace: str, body: dict[str, Any]) -> AssetFacts:
    meta = body["metadata"]
    try:
        status: MediaAssetStatus | None = MediaAssetStatus.model_validate(body.get("status") or {})
    except ValidationError:
        log.warning("asset %s/%s has a status that does not validate; left out of rights", namespace, meta["name"])
        status = None
    return AssetFacts(meta["name"], dict(meta.get("labels") or {}), status)


def gather(api: KubeApi, namespace: str) -> DistributionFacts:
    windows = [_window(w) for w in api.list_objects(RIGHTS_WINDOW.plural, namespace)]
    assets = [_asset(namespace, a) for a in api.list_objects(MEDIA_ASSET.plural, namespace)]
    jobs = [observe_job(j) for j in api.list_jobs(namespace, {LABEL_MANAGED_BY: "kubemam", LABEL_STEP: DISTRIBUTE})]
    targets, problem = _targets(api, namespace)
    return DistributionFacts(namespace, windows, assets, jobs, targets, problem)


def _observe(namespace: str, plan: DistributionPlan) -> None:
    for seen in plan.observations:
        DISTRIBUTION_ACTIONS.labels(namespace=namespace, channel=seen.channel, action=seen.action).inc()
        if seen.takedown_latency is not None:
            TAKEDOWN_LATENCY.labels(channel=seen.channel).observe(seen.takedown_latency)
    for line in plan.audit:
        log.info(json.dumps(line))
    if plan.failed_attempts is not None:
        DISTRIBUTION_FAILED_ATTEMPTS.labels(namespace=namespace).set(plan.failed_attempts)


def act(api: KubeApi, namespace: str, plan: DistributionPlan) -> None:
    """The metrics and the audit log, then the plan's writes in its order. Counted first, so whoever
    reads a record (history, asset status) finds it counted; a reconcile that fails before the Job is
    marked applied counts it again."""
    _observe(namespace, plan)
    for write in plan.writes:
        if isinstance(write, PatchAssetStatus):
            api.patch_status(MEDIA_ASSET.plural, namespace, write.asset, write.patch)
        elif isinstance(write, CreateJob):
            if api.create_job(write.job):
                log.info("created Job %s/%s: %d publish, %d takedown", namespace, write.name,
                         sum(a.action == "publish" for a in write.inputs.actions),
                         sum(a.action == "takedown" for a in write.inputs.actions))
        elif isinstance(write, PatchWindowStatus):
            api.patch_status(RIGHTS_WINDOW.plural, namespace, write.window, write.patch)
        elif isinstance(write, CreateEvent):
            api.create_event(write.event)
        elif isinstance(write, AnnotateJob):
            api.annotate_job(namespace, write.job, write.annotations, ttl_seconds=write.ttl_seconds)


def reconcile_rights(api: KubeApi, config: OperatorConfig, namespace: str,
                     now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> datetime | None:
    """Returns the next instant this namespace needs a reconcile (a window transition or a retry)."""
    with _locks[namespace]:
        facts = gather(api, namespace)
        plan = plan_distribution(facts, config, now())
        act(api, namespace, plan)
        return plan.wake


class RightsClock:
    """Wakes a namespace's rights reconcile at its next window transition, to the second.

    One thread and a heap of (instant, namespace); a namespace has one alarm, the earliest it was
    aimed at. Event handlers `poke` it instead of reconciling inline, so triggers that arrive while
    a reconcile runs collapse into one more run. The callback returns the following transition,
    so the clock keeps itself aimed.
    """

    def __init__(self, callback: Callable[[str], datetime | None]) -> None:
        self._callback = callback
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="rights-clock", daemon=True)
        self._thread.start()

    def aim(self, namespace: str, instant: datetime | None) -> None:
        if instant is None:
            return
        when = instant.timestamp()
        with self._wake:
            due = self._due.get(namespace)
            if due is not None and due <= when:
                return  # an earlier alarm covers it: that run re-aims at the next transition
            self._due[namespace] = when
            heapq.heappush(self._heap, (when, namespace))
            self._wake.notify()

    def poke(self, namespace: str) -> None:
        """Reconcile as soon as possible; a burst of pokes (100 windows resuming) is one run."""
        self.aim(namespace, datetime.now(UTC))

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.time():
                    self._wake.wait(timeout=None if not self._heap else max(0.0, self._heap[0][0] - time.time()))
                when, namespace = heapq.heappop(self._heap)
                if self._due.get(namespace) != when:
                    continue  # re-aimed since
                del self._due[namespace]
            try:
                self.aim(namespace, self._callback(namespace))
            except Exception:  # noqa: BLE001 - the clock must outlive one failed reconcile
                log.exception("rights reconcile of %s at its transition failed; retrying in 5 s", namespace)
                self.aim(namespace, datetime.fromtimestamp(time.time() + 5, UTC))
