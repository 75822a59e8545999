"""The operator's Prometheus metrics (served on KUBEMAM_METRICS_PORT, default 8080; 0 turns it off).

Labels stay bounded: kind, step, namespace, channel, phase, check and outcome — never an asset or
window name, with one exception: the gauges of a *running* step (kubemam_step_progress_ratio,
kubemam_step_fps) name the asset, and their series are removed when the step ends. Counters and
histograms never carry an asset name.

How each value is derived lives here as pure functions (a Job, an asset's status, a list of
objects in; numbers out), unit-tested; controllers/telemetry.py and controllers/main.py feed them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any, TypeVar, cast, get_args

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from kubemam import __version__
from kubemam.api.asset import AssetPhase
from kubemam.api.qc import QCCheck
from kubemam.plan.jobs import LABEL_STEP
from kubemam.plan.jobstate import job_state
from kubemam.steps.registry import INGEST, STEPS
from kubemam.timestamps import parse_time

log = logging.getLogger(__name__)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


# Always 1 while the operator runs, labelled with what runs: the KubemamOperatorDown alert fires when
# Prometheus has none for 5 minutes (absent(kubemam_build_info)), and version upgrades show on dashboards.
# Kopf's version is read from its distribution's metadata: metrics.py does not import Kopf.
BUILD_INFO = Gauge("kubemam_build_info", "Always 1: the kubemam, Python and Kopf versions of the running operator",
                   ["version", "python", "kopf"])
BUILD_INFO.labels(version=__version__, python=platform.python_version(), kopf=_version("kopf")).set(1)

# Time the operator spent in Python's cyclic garbage collector (controllers/collector.py sets its pace): behind
# a burst of new assets it was a fifth of the operator's CPU before the pace was set.
GC_SECONDS = Counter("kubemam_operator_gc_seconds", "CPU seconds the operator spent in Python's cyclic garbage "
                     "collector", ["generation"])

DISTRIBUTION_ACTIONS = Counter("kubemam_distribution_actions_total", "Verified publishes and takedowns",
                               ["namespace", "channel", "action"])
TAKEDOWN_LATENCY = Histogram("kubemam_takedown_latency_seconds",
                             "From the end of a window's licence to the verified removal from the origin",
                             ["channel"], buckets=(1, 2, 3, 5, 10, 30, 60, 300, 3600))
# Alert on this: publishes/takedowns that keep failing (a takedown that cannot be verified).
DISTRIBUTION_FAILED_ATTEMPTS = Gauge("kubemam_distribution_failed_attempts",
                                     "Consecutive failed distribute Jobs for a namespace's pending actions",
                                     ["namespace"])
# Alert on this too: (asset, target) pairs whose publish or takedown failed and is held back (retried
# with backoff) while the rest of the namespace's distribution goes on: a broken target.
DISTRIBUTION_QUARANTINED = Gauge("kubemam_distribution_quarantined",
                                 "(asset, target) pairs whose publish or takedown keeps failing: held back and "
                                 "retried with backoff while the namespace's other actions go on", ["namespace"])


def serve() -> None:
    port = int(os.environ.get("KUBEMAM_METRICS_PORT") or 8080)
    if port == 0:
        return
    try:
        start_http_server(port)
    except OSError as err:  # another operator on this machine (a test next to the demo) has the port
        log.warning("metrics not served on :%d: %s", port, err)

# Archive (issue 7): set by controllers/archive.py.
ARCHIVE_UNDER_REPLICATED = Gauge("kubemam_archive_under_replicated_assets",
                                 "Archived assets with fewer verified copies than their policy's minCopies",
                                 ["namespace"])
ARCHIVE_COPIES_MISSING = Gauge("kubemam_archive_copies_missing",
                               "Verified copies still missing to reach every archived asset's minCopies",
                               ["namespace"])
FIXITY_FAILURES = Counter("kubemam_fixity_failures_total",
                          "Copies found missing or changed by a fixity check (each is repaired from a good copy)",
                          ["namespace", "location"])
FIXITY_CHECKED_BYTES = Counter("kubemam_fixity_checked_bytes_total", "Bytes re-hashed by fixity checks",
                               ["namespace"])
TIERED_BYTES = Counter("kubemam_tiered_bytes_total", "Bytes copied into a tier or location by archive Jobs",
                       ["namespace", "tier"])


# --- Reconciles (controllers/main.py: the @reconciled(kind) decorator) -------------------------------

RECONCILE_TOTAL = Counter("kubemam_reconcile_total", "Handler runs (reconciles) per kind and outcome",
                          ["kind", "outcome"])
RECONCILE_DURATION = Histogram("kubemam_reconcile_duration_seconds", "How long one reconcile took", ["kind"],
                               buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

# --- Step Jobs (controllers/telemetry.py, from Job events) --------------------------------------------

JOBS_TOTAL = Counter("kubemam_jobs_total", "Step Jobs that finished while this operator ran", ["step", "outcome"])
JOB_DURATION = Histogram("kubemam_job_duration_seconds", "From a step Job's start to its completion or failure",
                         ["step", "outcome"],
                         buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800))
JOBS_QUEUED = Gauge("kubemam_jobs_queued", "Unfinished step Jobs not running yet (suspended by Kueue, pods pending)",
                    ["step"])

# --- Inventory (controllers/telemetry.py lists the objects every 15 s) -------------------------------

ASSETS = Gauge("kubemam_assets", "MediaAssets per phase", ["namespace", "phase"])
WINDOWS_OPEN = Gauge("kubemam_rights_windows_open", "RightsWindows whose licence period is open now", ["namespace"])
WINDOWS_CLOSING = Gauge("kubemam_rights_windows_closing_24h", "Open RightsWindows that end within 24 hours",
                        ["namespace"])

# --- Running steps and QC (controllers/telemetry.py, from MediaAsset events) --------------------------

STEP_PROGRESS = Gauge("kubemam_step_progress_ratio", "Progress of an asset's running step, 0 to 1",
                      ["namespace", "asset", "step"])
STEP_FPS = Gauge("kubemam_step_fps", "Frames per second of an asset's running step", ["namespace", "asset", "step"])
QC_FAILURES = Counter("kubemam_qc_failures_total",
                      "Ingest QC results that failed, once per failing check (errors by the QC policy)",
                      ["namespace", "check"])
LOUDNESS_DEVIATION = Histogram("kubemam_loudness_deviation_lu",
                               "|integrated loudness - QC target| of each ingested master, in LU",
                               buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10))

# Anything that finished before this instant (floored to the second, the API's resolution) happened
# before this process: a resumed Job or QC result is not counted twice across a restart.
PROCESS_START = datetime.now(UTC).replace(microsecond=0)
DEFAULT_TARGET_LUFS = -23.0
PHASES: tuple[str, ...] = get_args(AssetPhase)
QC_CHECKS: frozenset[str] = frozenset(get_args(QCCheck))
CLOSING_WITHIN = timedelta(hours=24)

F = TypeVar("F", bound=Callable[..., Any])




# --- namespaces the operator has seen (the inventory lists these) -------------------------------------

_namespaces: set[str] = set()
_namespaces_lock = threading.Lock()


def note_namespace(namespace: str) -> None:
    with _namespaces_lock:
        _namespaces.add(namespace)


def seen_namespaces() -> list[str]:
    with _namespaces_lock:
        return sorted(_namespaces)


def forget_namespace(namespace: str) -> None:
    with _namespaces_lock:
        _namespaces.discard(namespace)


# --- reconciles -----------------------------------------------------------------------------------------


def reconciled(kind: str) -> Callable[[F], F]:
    """Count and time every run of a handler as one reconcile of `kind`
    (kubemam_reconcile_total{kind,outcome=success|error}, kubemam_reconcile_duration_seconds{kind}).

    Put it directly above `def`, below the Kopf decorators, so Kopf registers the wrapped function;
    ids and arguments are unchanged, an exception is counted and re-raised. Works for handlers
    and for plain callbacks whose first argument is the namespace.
    """

    def note(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        namespace = kwargs.get("namespace", args[0] if args else None)
        if isinstance(namespace, str) and namespace:
            note_namespace(namespace)

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            note(args, kwargs)
            started = time.monotonic()
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                RECONCILE_TOTAL.labels(kind=kind, outcome="error").inc()
                raise
            finally:
                RECONCILE_DURATION.labels(kind=kind).observe(time.monotonic() - started)
            RECONCILE_TOTAL.labels(kind=kind, outcome="success").inc()
            return result

        return cast(F, run)

    return wrap


# --- remember-once, bounded -----------------------------------------------------------------------------


class Once:
    """Keys seen before, the newest `capacity` of them: `first(key)` is True once per key."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def first(self, key: Hashable) -> bool:
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return True

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)


# --- step Jobs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFinish:
    uid: str
    step: str
    outcome: str  # succeeded | failed
    finished_at: datetime
    duration_seconds: float | None  # None when the Job never started (no status.startTime)


def _true_condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cast(Mapping[str, Any], cond)
    return None


def job_step(job: Mapping[str, Any]) -> str:
    """The Job's registered step; anything else is "unknown", so the label's values stay the registry's."""
    step = str(((job.get("metadata") or {}).get("labels") or {}).get(LABEL_STEP) or "")
    return step if step in STEPS else "unknown"


def job_finish(job: Mapping[str, Any]) -> JobFinish | None:
    """How a finished Job ended and how long it ran: status.startTime to status.completionTime
    (Complete) or to the Failed condition's lastTransitionTime. None while it has not finished."""
    status = job.get("status") or {}
    state, _ = job_state(dict(job))
    if state == "Succeeded":
        outcome = "succeeded"
        complete = _true_condition(job, "Complete") or {}
        finished = parse_time(status.get("completionTime")) or parse_time(complete.get("lastTransitionTime"))
    elif state == "Failed":
        outcome = "failed"
        finished = parse_time((_true_condition(job, "Failed") or {}).get("lastTransitionTime"))
    else:
        return None
    if finished is None:
        return None
    started = parse_time(status.get("startTime"))
    duration = max(0.0, (finished - started).total_seconds()) if started is not None else None
    return JobFinish(uid=str((job.get("metadata") or {}).get("uid") or ""), step=job_step(job), outcome=outcome,
                     finished_at=finished, duration_seconds=duration)


def job_queued(job: Mapping[str, Any]) -> bool:
    """An unfinished Job that is not running yet: suspended (Kueue admits it by unsuspending) or
    with no ready pod (pods pending: not scheduled, image pulling, or not created yet)."""
    state, _ = job_state(dict(job))
    if state in ("Succeeded", "Failed") or (job.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if (job.get("spec") or {}).get("suspend"):
        return True
    status = job.get("status") or {}
    if "ready" in status:
        return not status.get("ready")
    return not status.get("active")  # an API server without status.ready


class JobCounter:
    """Counts each Job once (by uid, the newest 10 000 remembered), and only Jobs that finished after
    `since` — a resume after a restart replays every finished Job."""

    def __init__(self, since: datetime = PROCESS_START, capacity: int = 10_000) -> None:
        self.since = since
        self._once = Once(capacity)

    def observe(self, job: Mapping[str, Any]) -> JobFinish | None:
        """The Job's finish when it is counted now, else None."""
        finish = job_finish(job)
        if finish is None or not finish.uid or finish.finished_at < self.since:
            return None
        if not self._once.first(finish.uid):
            return None
        JOBS_TOTAL.labels(step=finish.step, outcome=finish.outcome).inc()
        if finish.duration_seconds is not None:
            JOB_DURATION.labels(step=finish.step, outcome=finish.outcome).observe(finish.duration_seconds)
        return finish


# --- QC -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QCOutcome:
    key: tuple[str, str, str, str]  # namespace, asset, ingest Job, checkedAt: one ingest result
    failed_checks: tuple[str, ...]
    deviation_lu: float | None


def qc_target(asset_spec: Mapping[str, Any] | None, ladder_spec: Mapping[str, Any] | None) -> float:
    """The loudness target QC judged against: the asset's QC policy, else its ladder's, else EBU R128."""
    for spec in (asset_spec, ladder_spec):
        target = ((spec or {}).get("qc") or {}).get("targetLufs")
        if isinstance(target, int | float) and not isinstance(target, bool):
            return float(target)
    return DEFAULT_TARGET_LUFS


def qc_key(namespace: str, asset: str, status: Mapping[str, Any],
           since: datetime = PROCESS_START) -> tuple[str, str, str, str] | None:
    """Which ingest result status.qc is — None when there is none, or it was checked before `since`."""
    qc = status.get("qc")
    if not isinstance(qc, Mapping) or not qc.get("verdict"):
        return None
    checked = parse_time(qc.get("checkedAt"))
    if checked is None or checked < since:
        return None
    ingest = [j for j in status.get("jobs") or [] if isinstance(j, Mapping) and j.get("step") == INGEST]
    job = str(ingest[-1].get("name") or "") if ingest else ""
    return namespace, asset, job, str(qc.get("checkedAt"))


def qc_outcome(namespace: str, asset: str, status: Mapping[str, Any], target_lufs: float,
               since: datetime = PROCESS_START) -> QCOutcome | None:
    """The checks an ingest result failed (severity error; one per check, whatever the issue count)
    and |integrated loudness - target|."""
    key = qc_key(namespace, asset, status, since)
    if key is None:
        return None
    qc = cast(Mapping[str, Any], status["qc"])
    checks: set[str] = set()
    if qc.get("verdict") == "Failed":
        for issue in qc.get("issues") or []:
            if isinstance(issue, Mapping) and issue.get("severity") == "error":
                check = str(issue.get("check") or "")
                checks.add(check if check in QC_CHECKS else "other")
        if not checks:
            checks.add("unknown")  # failed, but the issues were not kept
    integrated = (qc.get("loudness") or {}).get("integratedLufs")
    deviation = abs(float(integrated) - target_lufs) if isinstance(integrated, int | float) else None
    return QCOutcome(key=key, failed_checks=tuple(sorted(checks)), deviation_lu=deviation)


class QCCounter:
    """Counts each ingest result once: the first time its status.qc is seen, if checked after `since`."""

    def __init__(self, since: datetime = PROCESS_START, capacity: int = 10_000) -> None:
        self.since = since
        self._once = Once(capacity)

    def pending(self, namespace: str, asset: str, status: Mapping[str, Any]) -> bool:
        """Whether status.qc is an ingest result not counted yet (then `observe` it with its target)."""
        key = qc_key(namespace, asset, status, self.since)
        return key is not None and key not in self._once

    def observe(self, namespace: str, asset: str, status: Mapping[str, Any], target_lufs: float) -> QCOutcome | None:
        outcome = qc_outcome(namespace, asset, status, target_lufs, self.since)
        if outcome is None or not self._once.first(outcome.key):
            return None
        for check in outcome.failed_checks:
            QC_FAILURES.labels(namespace=namespace, check=check).inc()
        if outcome.deviation_lu is not None:
            LOUDNESS_DEVIATION.observe(outcome.deviation_lu)
        return outcome


# --- running steps --------------------------------------------------------------------------------------


def step_progress(status: Mapping[str, Any]) -> tuple[str, float, float | None] | None:
    """(step, ratio 0..1, fps) while one of the asset's step Jobs runs and status.progress says how far."""
    if not any(isinstance(j, Mapping) and j.get("state") == "Running" for j in status.get("jobs") or []):
        return None
    progress = status.get("progress")
    if not isinstance(progress, Mapping) or not progress.get("step"):
        return None
    try:
        ratio = min(1.0, max(0.0, float(progress.get("percent") or 0) / 100))
        fps = float(progress["fps"]) if progress.get("fps") is not None else None
    except (TypeError, ValueError):
        return None
    return str(progress["step"]), ratio, fps


class StepProgress:
    """The running-step gauges, one series per running asset; removed when the step ends."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], tuple[str, bool]] = {}  # (ns, asset) -> (step, has fps)
        self._lock = threading.Lock()

    def observe(self, namespace: str, asset: str, status: Mapping[str, Any] | None) -> None:
        current = step_progress(status or {})
        with self._lock:
            key = (namespace, asset)
            previous = self._series.get(key)
            if current is None:
                if previous is not None:
                    self._remove(key, previous)
                    del self._series[key]
                return
            step, ratio, fps = current
            if previous is not None and (previous[0] != step or (previous[1] and fps is None)):
                self._remove(key, previous)
            STEP_PROGRESS.labels(namespace=namespace, asset=asset, step=step).set(ratio)
            if fps is not None:
                STEP_FPS.labels(namespace=namespace, asset=asset, step=step).set(fps)
            self._series[key] = (step, fps is not None)

    def forget(self, namespace: str, asset: str) -> None:
        self.observe(namespace, asset, None)

    def keep_only(self, namespace: str, assets: Iterable[str]) -> None:
        """Drop the series of this namespace's assets that no longer exist (a missed delete event)."""
        alive = set(assets)
        with self._lock:
            gone = [key for key in self._series if key[0] == namespace and key[1] not in alive]
        for key in gone:
            self.forget(*key)

    @staticmethod
    def _remove(key: tuple[str, str], previous: tuple[str, bool]) -> None:
        with contextlib.suppress(KeyError):
            STEP_PROGRESS.remove(key[0], key[1], previous[0])
        if previous[1]:
            with contextlib.suppress(KeyError):
                STEP_FPS.remove(key[0], key[1], previous[0])


# --- inventory ------------------------------------------------------------------------------------------


def asset_phases(assets: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Assets per phase, every known phase present (0 when none); no status yet counts as Pending."""
    counts = dict.fromkeys(PHASES, 0)
    for body in assets:
        phase = str((body.get("status") or {}).get("phase") or "Pending")
        counts[phase] = counts.get(phase, 0) + 1
    return counts


def window_counts(windows: Iterable[Mapping[str, Any]], now: datetime) -> tuple[int, int]:
    """(open now, open and ending within 24 h): start <= now < end; a window being deleted is not open."""
    open_, closing = 0, 0
    for body in windows:
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            continue
        spec = body.get("spec") or {}
        start, end = parse_time(spec.get("start")), parse_time(spec.get("end"))
        if start is None or end is None or not start <= now < end:
            continue
        open_ += 1
        closing += end - now <= CLOSING_WITHIN
    return open_, closing


def queued_by_step(jobs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Queued Jobs per step, with 0 for every step that has Jobs at all."""
    counts: dict[str, int] = {}
    for job in jobs:
        step = job_step(job)
        counts[step] = counts.get(step, 0) + job_queued(job)
    return counts


class _Family:
    """A gauge family set whole from one computation: label sets that vanished are removed."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self.present: set[tuple[str, ...]] = set()

    def replace(self, values: Mapping[tuple[str, ...], float]) -> None:
        for labels in self.present - set(values):
            with contextlib.suppress(KeyError):
                self.gauge.remove(*labels)
        for labels, value in values.items():
            self.gauge.labels(*labels).set(value)
        self.present = set(values)


class Inventory:
    """kubemam_assets, kubemam_rights_windows_open/_closing_24h and kubemam_jobs_queued from one listing
    of every watched namespace; namespaces, phases and steps that vanished are removed."""

    def __init__(self) -> None:
        self._assets = _Family(ASSETS)
        self._open = _Family(WINDOWS_OPEN)
        self._closing = _Family(WINDOWS_CLOSING)
        self._queued = _Family(JOBS_QUEUED)
        self._lock = threading.Lock()

    def publish(self, assets: Mapping[str, list[dict[str, Any]]], windows: Mapping[str, list[dict[str, Any]]],
                jobs: Iterable[Mapping[str, Any]], now: datetime) -> None:
        asset_values: dict[tuple[str, ...], float] = {}
        for namespace, bodies in assets.items():
            if bodies:
                for phase, count in asset_phases(bodies).items():
                    asset_values[(namespace, phase)] = count
        open_values: dict[tuple[str, ...], float] = {}
        closing_values: dict[tuple[str, ...], float] = {}
        for namespace, bodies in windows.items():
            if bodies:
                open_values[(namespace,)], closing_values[(namespace,)] = window_counts(bodies, now)
        with self._lock:
            self._assets.replace(asset_values)
            self._open.replace(open_values)
            self._closing.replace(closing_values)
            self._queued.replace({(step,): count for step, count in queued_by_step(jobs).items()})
