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

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import yaml
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from kubemam.api.asset import MediaAssetStatus
from kubemam.api.distribution import TARGETS_CONFIGMAP, TARGETS_KEY, DistributionTarget, parse_targets
from kubemam.api.kinds import MEDIA_ASSET, RIGHTS_WINDOW
from kubemam.api.rights import RightsWindowSpec
from kubemam.config import OperatorConfig
from kubemam.controllers import finalizer
from kubemam.controllers.clock import RETRY_FIRST_SECONDS, AimedClock, retry_delay
from kubemam.controllers.stepjobs import create_step_job
from kubemam.health import HEARTBEATS, Heartbeats
from kubemam.kubeapi import KubeApi
from kubemam.metrics import (
    DISTRIBUTION_ACTIONS,
    DISTRIBUTION_FAILED_ATTEMPTS,
    DISTRIBUTION_QUARANTINED,
    TAKEDOWN_LATENCY,
)
from kubemam.plan.distribution import (
    APPLIED,
    CANCELLED,
    AnnotateJob,
    AssetFacts,
    CancelJob,
    CreateEvent,
    CreateJob,
    DistributeJob,
    DistributionFacts,
    DistributionPlan,
    PatchAssetStatus,
    PatchWindowStatus,
    WindowFacts,
    inputs_needed,
    observe_job,
    plan_distribution,
    staged_input_sha256,
    still_distributed,
)
from kubemam.plan.jobs import LABEL_MANAGED_BY, LABEL_STEP
from kubemam.plan.staging import INPUT_KEY, config_map_name
from kubemam.steps.registry import DISTRIBUTE

log = logging.getLogger(__name__)

__all__ = ["DISTRIBUTE", "RightsClock", "jobs_refused", "reconcile_rights", "retry_delay", "still_distributed"]

# The rights clock's liveness (kubemam.health): its thread beats at least every clock.BEAT_SECONDS; each
# namespace's run is a task named "rights reconcile <namespace>".
CLOCK_HEARTBEAT = "rights clock"
WORKER_HEARTBEAT = "rights reconcile"

_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
# Namespaces where a distribute Job could not be created and none exists: the namespace is being
# deleted (the API server refuses new objects), so no takedown can run there any more.
_refused: set[str] = set()
# A finished batch's records are written this many at a time (under the API client's pool of connections).
WRITE_THREADS = 8
W = TypeVar("W")
SLOW_RECONCILE_SECONDS = 1.0  # a reconcile this slow says where its time went
# After a conditions write lost a race (409), the next reconcile comes this soon.
CONFLICT_RETRY_SECONDS = 1.0
# Pokes (asset and Job events) run a namespace no sooner than this after its last run ended: a reconcile of a
# 5,000-title namespace is 1-2 s of CPU, and a burst of events must not run it back to back.
POKE_SPACING_SECONDS = 1.0
# The windows' 30 s timer is a safety net: it pokes only a namespace that has not run for this long.
SAFETY_NET_IDLE_SECONDS = 25.0


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
    return AssetFacts(meta["name"], dict(meta.get("labels") or {}), status, int(meta.get("generation") or 0),
                      meta.get("resourceVersion"), deleting=bool(meta.get("deletionTimestamp")))


def _staged_input(api: KubeApi, namespace: str, body: dict[str, Any]) -> str | None:
    """A large batch's input, from the ConfigMap the Job owns: read only when the planner needs the input
    (to record the Job; failures are counted from its actions-hash annotation)."""
    if staged_input_sha256(body) is None or not inputs_needed(body):
        return None
    data = api.config_map_data(namespace, config_map_name(str(body["metadata"]["name"])))
    return (data or {}).get(INPUT_KEY)


def _job(api: KubeApi, namespace: str, body: dict[str, Any]) -> DistributeJob:
    """A distribute Job; a failed one not yet recorded with its worker's report (which actions failed),
    read once from its pod's termination message."""
    staged = _staged_input(api, namespace, body)
    seen = observe_job(body, staged_input=staged)
    if seen.state == "Failed" and not seen.applied:
        seen = observe_job(body, api.termination_message(namespace, seen.name), staged)
    return seen


class AssetSource:
    """The namespace's assets for the rights planner: from the operator's index (controllers/indexes.py
    asset_entry) once Kopf has filled it, else by a LIST. An index trails the API server by a watch
    event: it is used only once it shows every status this process wrote there (read your own writes, by
    resourceVersion); otherwise the gather waits for it up to CATCH_UP_SECONDS, then LISTs."""

    CATCH_UP_SECONDS = 2.0

    def __init__(self) -> None:
        self.index: Callable[[str], list[dict[str, Any]]] | None = None
        self.written: defaultdict[str, dict[str, str]] = defaultdict(dict)  # namespace -> asset -> version
        self.distrusted: set[str] = set()
        self.lock = threading.Lock()

    def use(self, index: Callable[[str], list[dict[str, Any]]]) -> None:
        self.index = index

    def wrote(self, namespace: str, name: str, version: str) -> None:
        with self.lock:
            self.written[namespace][name] = version

    def distrust(self, namespace: str) -> None:
        """A guarded write met a newer asset than the index showed (409): someone else's writes are still on
        their way to it (Kopf works through a backlog of events after a bulk change). The next gather LISTs,
        so the planner does not plan the same stale batch again every second until the index catches up."""
        with self.lock:
            self.distrusted.add(namespace)

    def _behind(self, namespace: str, bodies: list[dict[str, Any]]) -> bool:
        """Some write of ours is not in the index yet (each one seen is forgotten)."""
        with self.lock:
            mine = self.written[namespace]
            if not mine:
                return False
            seen = {b["metadata"]["name"]: str(b["metadata"].get("resourceVersion") or "") for b in bodies}
            for name, version in list(mine.items()):
                if name not in seen or _not_older(seen[name], version):
                    del mine[name]  # deleted since, or the index holds our write or a later one
            return bool(mine)

    def assets(self, api: KubeApi, namespace: str) -> list[dict[str, Any]]:
        with self.lock:
            distrusted = namespace in self.distrusted
            self.distrusted.discard(namespace)
        if self.index is not None and not distrusted:
            deadline = time.monotonic() + self.CATCH_UP_SECONDS
            while True:
                bodies = self.index(namespace)
                if not self._behind(namespace, bodies):
                    return bodies
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
            log.info("the asset index of %s is behind this operator's own writes; listing instead", namespace)
        bodies = api.list_objects(MEDIA_ASSET.plural, namespace)
        with self.lock:
            self.written[namespace].clear()  # a LIST is at least as new as every write that answered before it
        return bodies


def _not_older(seen: str, written: str) -> bool:
    """The index's resourceVersion is the one written or a later one. Versions are opaque to clients, but
    etcd's are its revision (a number that only grows); one that is not a number must match exactly."""
    if seen == written:
        return True
    return seen.isdigit() and written.isdigit() and int(seen) > int(written)


ASSETS = AssetSource()


def gather(api: KubeApi, namespace: str) -> tuple[DistributionFacts, dict[str, dict[str, Any]]]:
    """The planner's facts, and the metadata of the assets that do not hold the finalizer yet, by name."""
    windows = [_window(w) for w in api.list_objects(RIGHTS_WINDOW.plural, namespace)]
    bodies = ASSETS.assets(api, namespace)
    assets = [_asset(namespace, a) for a in bodies]
    unheld = {a["metadata"]["name"]: {**a["metadata"], "namespace": namespace}
              for a in bodies if not finalizer.holds(a["metadata"])}
    jobs = [_job(api, namespace, j)
            for j in api.list_jobs(namespace, {LABEL_MANAGED_BY: "kubemam", LABEL_STEP: DISTRIBUTE})]
    targets, problem = _targets(api, namespace)
    return DistributionFacts(namespace, windows, assets, jobs, targets, problem), unheld


def jobs_refused(namespace: str) -> bool:
    """The namespace refused this process's last distribute Job and holds none: it is being deleted."""
    return namespace in _refused


def _observe(namespace: str, plan: DistributionPlan) -> None:
    for seen in plan.observations:
        DISTRIBUTION_ACTIONS.labels(namespace=namespace, channel=seen.channel, action=seen.action).inc()
        if seen.takedown_latency is not None:
            TAKEDOWN_LATENCY.labels(channel=seen.channel).observe(seen.takedown_latency)
    for line in plan.audit:
        log.info(json.dumps(line))
    if plan.failed_attempts is not None:
        DISTRIBUTION_FAILED_ATTEMPTS.labels(namespace=namespace).set(plan.failed_attempts)
    DISTRIBUTION_QUARANTINED.labels(namespace=namespace).set(plan.quarantined)


def _patch_asset(api: KubeApi, namespace: str, write: PatchAssetStatus,
                 unheld: Mapping[str, dict[str, Any]] | None = None) -> bool:
    """The asset's records (and conditions or Pending records only if the asset did not change since it
    was read: the asset controller writes its conditions too, and an asset may have begun to go). False:
    the guarded part lost that race (or the asset is gone) and waits for the next reconcile; the
    records of finished Jobs (`fallback`) were written all the same. An asset about to be published
    (`required`) that does not hold the finalizer is given it first (`unheld`: its metadata as read), so
    deleting it waits for its takedown."""
    resource_version = write.resource_version
    try:
        if write.required and unheld and write.asset in unheld:
            resource_version = finalizer.hold(api, unheld[write.asset])
            if resource_version is None:
                ASSETS.distrust(namespace)  # gone, and the index may not know yet
                return False
        version = api.patch_status_version(MEDIA_ASSET.plural, namespace, write.asset, write.patch,
                                           resource_version)
        if version:
            ASSETS.wrote(namespace, write.asset, version)
        elif version is None and write.required:
            ASSETS.distrust(namespace)  # gone, and the index may not know yet
        return version is not None
    except ApiException as err:
        if err.status != 409 or write.resource_version is None:
            raise
    ASSETS.distrust(namespace)
    if write.fallback:
        version = api.patch_status_version(MEDIA_ASSET.plural, namespace, write.asset, write.fallback)
        if version:
            ASSETS.wrote(namespace, write.asset, version)
    return False


def _create_job(api: KubeApi, namespace: str, write: CreateJob) -> None:
    if create_step_job(api, write.job):
        _refused.discard(namespace)
        log.info("created Job %s/%s: %d publish, %d takedown", namespace, write.name,
                 sum(a.action == "publish" for a in write.inputs.actions),
                 sum(a.action == "takedown" for a in write.inputs.actions))
    elif not any(j["metadata"]["name"] == write.name
                 for j in api.list_jobs(namespace, {LABEL_MANAGED_BY: "kubemam", LABEL_STEP: DISTRIBUTE})):
        _refused.add(namespace)  # not a 409: the namespace is terminating
        log.warning("namespace %s refuses distribute Job %s: it is being deleted, nothing can be taken down "
                    "there any more", namespace, write.name)


def _cancel_job(api: KubeApi, namespace: str, write: CancelJob) -> None:
    """Marked first (never recorded, whatever its pod managed), then deleted with its pod; the Job stays
    listed until the pod is gone, and until then no other batch starts."""
    log.info("cancelling armed Job %s/%s: %s", namespace, write.job, write.why)
    api.annotate_job(namespace, write.job, {APPLIED: "true", CANCELLED: "true"})  # 404: gone already
    api.delete_job(namespace, write.job, foreground=True)


def _each(pool: ThreadPoolExecutor | None, fn: Callable[[W], bool], writes: list[W]) -> list[bool]:
    """fn over writes that do not depend on one another (asset records, Events), WRITE_THREADS at once:
    1,000 takedowns recorded are 1,000 status writes. The first error is raised once all have ended."""
    if pool is None or len(writes) < 2:
        return [fn(w) for w in writes]
    futures = [pool.submit(fn, w) for w in writes]
    wait(futures)
    return [f.result() for f in futures]


def _event(api: KubeApi, write: CreateEvent) -> bool:
    api.create_event(write.event)
    return True


def _runs(writes: list[Any]) -> list[list[Any]]:
    """The writes in order, consecutive ones of one kind together."""
    runs: list[list[Any]] = []
    for write in writes:
        if runs and type(runs[-1][0]) is type(write):
            runs[-1].append(write)
        else:
            runs.append([write])
    return runs


def act(api: KubeApi, namespace: str, plan: DistributionPlan,
        unheld: Mapping[str, dict[str, Any]] | None = None) -> bool:
    """The metrics and the audit log, then the plan's writes in its order (consecutive asset records or Events
    WRITE_THREADS at a time). Counted first, so whoever reads a record (history, asset status) finds it
    counted; a reconcile that fails before the Job is marked applied counts it again. False when an asset's
    conditions must be written again."""
    _observe(namespace, plan)
    settled = True
    many = len(plan.of(PatchAssetStatus)) > 1 or len(plan.of(CreateEvent)) > 1
    with ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix=f"rights-{namespace}") if many else nullcontext() \
            as pool:
        for run in _runs(plan.writes):
            if isinstance(run[0], PatchAssetStatus):
                landed = _each(pool, lambda w: _patch_asset(api, namespace, w, unheld), run)
                settled = settled and all(landed)
                for write, ok in zip(run, landed, strict=True):
                    if not ok and write.required:
                        # The batch publishes an asset that changed since it was read (it may be going) or is
                        # gone: nothing more this run — the Job must not publish what no record would show.
                        log.info("asset %s/%s changed while its publish was planned; planning again", namespace,
                                 write.asset)
                        return False
            elif isinstance(run[0], CreateEvent):
                _each(pool, lambda e: _event(api, e), run)
            else:
                for write in run:
                    if isinstance(write, CreateJob):
                        _create_job(api, namespace, write)
                    elif isinstance(write, CancelJob):
                        _cancel_job(api, namespace, write)
                    elif isinstance(write, PatchWindowStatus):
                        api.patch_status(RIGHTS_WINDOW.plural, namespace, write.window, write.patch)
                    elif isinstance(write, AnnotateJob):
                        api.annotate_job(namespace, write.job, write.annotations, ttl_seconds=write.ttl_seconds)
    return settled


def reconcile_rights(api: KubeApi, config: OperatorConfig, namespace: str,
                     now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> datetime | None:
    """Returns the next instant this namespace needs a reconcile (a window transition, a retry, or
    soon when an asset's conditions lost a race with the asset controller)."""
    with _locks[namespace]:
        started = time.monotonic()
        facts, unheld = gather(api, namespace)
        gathered = time.monotonic()
        at = now()
        plan = plan_distribution(facts, config, at)
        planned = time.monotonic()
        settled = act(api, namespace, plan, unheld)
        acted = time.monotonic()
        if plan.job is not None or acted - started > SLOW_RECONCILE_SECONDS:
            # Where a takedown's seconds go before its Job exists (bench/takedown.py reads this line).
            records = sum("distribution" in w.patch for w in plan.of(PatchAssetStatus))
            log.info("rights %s: gather %.2f s (%d assets, %d windows, %d Jobs), plan %.2f s, act %.2f s "
                     "(%d writes: %d asset records, %d asset conditions)", namespace, gathered - started,
                     len(facts.assets), len(facts.windows), len(facts.jobs), planned - gathered, acted - planned,
                     len(plan.writes), records, len(plan.of(PatchAssetStatus)) - records)
        if settled:
            return plan.wake
        soon = at + timedelta(seconds=CONFLICT_RETRY_SECONDS)
        return min(plan.wake, soon) if plan.wake else soon


class RightsClock(AimedClock):
    """Wakes a namespace's rights reconcile at its next window transition, to the second (controllers/clock.py:
    a bounded pool of workers, one run per namespace at a time, pokes collapsing into one run, backoff after a
    failure up to `retry_max` seconds). Liveness: CLOCK_HEARTBEAT beats, each run is "WORKER_HEARTBEAT <namespace>".
    """

    def __init__(self, callback: Callable[[str], datetime | None], *, workers: int = 4,
                 retry_first: float = RETRY_FIRST_SECONDS, retry_max: float = 30.0, stuck_seconds: float = 300.0,
                 heartbeats: Heartbeats = HEARTBEATS, spacing: float = POKE_SPACING_SECONDS) -> None:
        super().__init__(callback, name="rights", clock_heartbeat=CLOCK_HEARTBEAT, worker_heartbeat=WORKER_HEARTBEAT,
                         workers=workers, retry_first=retry_first, retry_max=retry_max, stuck_seconds=stuck_seconds,
                         heartbeats=heartbeats, spacing=spacing)
