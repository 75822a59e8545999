"""The operator's registration table: every Kopf handler, its stable id, and where it hands off.

Handler ids and the persistence prefix are pinned: changing them later makes Kopf forget
what it did. Handlers return None and patch declared status fields themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

import kopf

from kubemam import config as config_module
from kubemam import health, metrics
from kubemam.api.common import FINALIZER, GROUP, VERSION
from kubemam.api.kinds import ARCHIVE_POLICY, MEDIA_ASSET, RIGHTS_WINDOW, TRANSCODE_LADDER
from kubemam.config import OperatorConfig
from kubemam.controllers import (
    archive,
    asset,
    diffbase,
    indexes,
    policies,
    progress,
    rights,
    session,
    shutdown,
    telemetry,
)
from kubemam.controllers.clock import AimedClock
from kubemam.kubeapi import KubeApi
from kubemam.plan.jobs import LABEL_STEP, MANAGED_SELECTOR
from kubemam.plan.jobstate import job_state

ASSETS = (GROUP, VERSION, MEDIA_ASSET.plural)
LADDERS = (GROUP, VERSION, TRANSCODE_LADDER.plural)
WINDOWS = (GROUP, VERSION, RIGHTS_WINDOW.plural)
POLICIES = (GROUP, VERSION, ARCHIVE_POLICY.plural)


@cache
def api() -> KubeApi:
    return KubeApi(timeout=(settings().api_connect_timeout_seconds, settings().api_read_timeout_seconds))


@cache
def settings() -> OperatorConfig:
    return config_module.load()


operator_settings = settings  # where a Kopf keyword argument named `settings` hides the function


_KOPF_SETTINGS: list[kopf.OperatorSettings] = []  # Kopf's, as `configure` got them (its thread pool is there)
# MediaAssets' diff base, in memory (controllers/diffbase.py); the other kinds' in annotations.
_DIFF_BASE = diffbase.MemoryDiffBaseStorage(
    MEDIA_ASSET.kind, diffbase.LeanAnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration"))
# Assets whose ADDED event came from the watch and whose creation handler has not run yet: only these are planned
# from the event's body (after a restart every asset is a creation to Kopf, and a listed body may be old).
_JUST_ADDED: set[str] = set()


async def _on_handler_threads(work: Callable[..., None], *args: Any) -> None:
    """Blocking work (a reconcile) of an async handler, run on Kopf's own handler threads as a sync handler is."""
    await asyncio.get_running_loop().run_in_executor(_KOPF_SETTINGS[-1].execution.executor, work, *args)


@kopf.on.startup(id="configure")
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    _KOPF_SETTINGS[:] = [settings]
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = diffbase.UnmarkedAnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = _DIFF_BASE
    # Explicit watch timeouts: a silently dead watch connection is re-established.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 8
    # After its own patch, Kopf waits this long for the watch to bring that version before it takes an event
    # as the latest state. Behind a burst the watch runs more than its default 5 s late: Kopf then saw the
    # asset's status write (older than its annotations) as a new creation and ran the handler again, for
    # 841 of 1,000 assets created at once (a GET, a reconcile and a PATCH each). The wait ends as soon as the
    # version arrives.
    settings.persistence.consistency_timeout = 60.0
    # Kopf's own API calls (patches, posts, watch connections) time out like ours (kubeapi.py): a hung
    # one fails and Kopf retries it with its error backoffs instead of waiting for ever.
    ours = operator_settings()
    settings.networking.connect_timeout = ours.api_connect_timeout_seconds
    settings.networking.request_timeout = ours.api_connect_timeout_seconds + ours.api_read_timeout_seconds
    settings.watching.connect_timeout = ours.api_connect_timeout_seconds
    # A handler that raises met a transient fault (handlers never raise for bad input): retry in 15 s
    # rather than Kopf's 60, so work resumes well inside a minute after an outage ends.
    settings.execution.default_backoff = 15.0
    # A deleted asset whose progress timer was mid-run keeps its finalizer until Kopf looks again: every
    # 60 s by default, which held every deletion during a running step a whole minute. The timer's run
    # is one reconcile (a second or two), so look again after 1 s.
    settings.background.cancellation_polling = 1.0


@kopf.on.startup(id="stop-on-signal")
async def stop_on_signal(**_: Any) -> None:
    """SIGTERM stops the operator even when asyncio's self-pipe is full (controllers/shutdown.py)."""
    shutdown.install()


@kopf.on.login(id="login")
async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """Kopf's credentials, in a session with a bounded connection pool (controllers/session.py)."""
    return await session.login(**kwargs)


def _ns(namespace: str | None) -> str:
    """Every kubemam kind and Job is namespaced; Kopf types namespace as optional for all kinds."""
    if namespace is None:
        raise kopf.PermanentError("a namespaced object arrived without a namespace")
    return namespace


def _reconcile_assets_referencing(kwargs: dict[str, Any], namespace: str, field: str, name: str) -> None:
    """A ladder or policy changed or went: every asset naming it plans again."""
    watched = _watched(kwargs)
    for asset_name in watched.assets_referencing(namespace, field, name):
        _reconcile(namespace, asset_name, watched)


def _reconcile_assets_waiting(kwargs: dict[str, Any], namespace: str, field: str, name: str) -> None:
    """A ladder or policy appeared (created, or seen on start): the assets whose plan found it missing, or
    that named it when it was deleted, plan again. The others have their own handlers still to run (or, on
    start, their resume). Assets not reconciled (an API error) wait again, for the handler's retry."""
    watched = _watched(kwargs)
    waiting = indexes.WAITING_REFERENCES.take(namespace, field, name)
    for done, asset_name in enumerate(waiting):
        try:
            _reconcile(namespace, asset_name, watched)
        except Exception:
            indexes.WAITING_REFERENCES.note(namespace, field, name, waiting[done:])
            raise


def _reconcile_assets_for(reason: Any, kwargs: dict[str, Any], namespace: str, field: str, name: str) -> None:
    if reason == kopf.Reason.UPDATE:
        _reconcile_assets_referencing(kwargs, namespace, field, name)
    else:
        _reconcile_assets_waiting(kwargs, namespace, field, name)


# --- Indexes: what a reconcile reads, kept from the watches (controllers/indexes.py) ----------------
# Kopf fills them before any other handler runs and passes them to every handler by these ids. They are
# async: Kopf runs a sync handler on its thread pool, and every event of an asset waited for its index
# updates behind the reconciles that hold those threads in API calls (1,000 assets created at once). An asset
# has one index (asset_entries), not one per reader: Kopf's cost is per handler call (docs/architecture.md).


@kopf.index(*LADDERS, id="ladder_specs")
async def ladder_specs(namespace: str | None, name: str, body: Any, **_: Any) -> dict[Any, Any]:
    return indexes.spec_entry(_ns(namespace), name, body)


@kopf.index(*POLICIES, id="policy_specs")
async def policy_specs(namespace: str | None, name: str, body: Any, **_: Any) -> dict[Any, Any]:
    return indexes.spec_entry(_ns(namespace), name, body)


@kopf.index(*WINDOWS, id="window_specs")
async def window_specs(namespace: str | None, name: str, body: Any, **_: Any) -> dict[Any, Any]:
    return indexes.window_entry(_ns(namespace), name, body)


@kopf.index(*ASSETS, id="asset_entries")
async def asset_entries(namespace: str | None, name: str, body: Any, **_: Any) -> dict[Any, Any]:
    return indexes.asset_entry(_ns(namespace), name, body)


@kopf.index("batch", "v1", "jobs", labels=MANAGED_SELECTOR, id="asset_jobs")
async def asset_jobs(namespace: str | None, body: Any, **_: Any) -> dict[Any, Any]:
    return indexes.job_entry(_ns(namespace), body)


def _watched(kwargs: dict[str, Any]) -> indexes.Watched:
    watched = indexes.Watched(ladders=kwargs["ladder_specs"], policies=kwargs["policy_specs"],
                              windows=kwargs["window_specs"], jobs=kwargs["asset_jobs"],
                              assets=kwargs["asset_entries"])
    if rights.ASSETS.index is None:
        # A handler runs only once Kopf has filled every index: from now on the rights gather reads them.
        rights.ASSETS.use(watched.rights_assets)
    return watched


# --- MediaAsset ------------------------------------------------------------------------------


@kopf.on.resume(*ASSETS, id="asset")
@kopf.on.create(*ASSETS, id="asset")
@kopf.on.update(*ASSETS, id="asset")
@metrics.reconciled("MediaAsset")
def asset_changed(namespace: str | None, name: str, body: Any, reason: Any, **kwargs: Any) -> None:
    # A new asset is planned from its ADDED event's body: one GET fewer per asset in a burst. It has no Jobs
    # yet, so a body that is no longer the latest can delete nothing. Every other run reads the asset afresh:
    # on start every asset is a creation to Kopf (its diff base is in memory), and a listed body may be
    # minutes old when its turn comes (a Job made meanwhile from a newer spec would be deleted as superseded).
    uid = str(body.get("metadata", {}).get("uid") or "")
    seen = dict(body) if reason == kopf.Reason.CREATE and uid in _JUST_ADDED else None
    _JUST_ADDED.discard(uid)
    _reconcile(_ns(namespace), name, _watched(kwargs), seen)


ASSET_CLOCK_HEARTBEAT = "asset clock"
ASSET_WORKER_HEARTBEAT = "asset reconcile"
ASSET_CLOCK_WORKERS = 2
ASSET_RETRY_MAX_SECONDS = 300.0
_asset_clock: AimedClock | None = None  # built at startup, with the operator's indexes


def _reconcile(namespace: str, name: str, watched: indexes.Watched, seen: dict[str, Any] | None = None) -> None:
    """Reconcile the asset, then set its alarm on the asset clock: the next instant time alone changes its
    plan, or its safety-net look is due (asset.reconcile)."""
    wake = asset.reconcile(api(), settings(), watched, namespace, name, seen)
    if _asset_clock is not None:
        _asset_clock.reset(f"{namespace}/{name}", wake)


@metrics.reconciled("MediaAsset")
def _reconcile_asset(namespace: str, name: str, watched: indexes.Watched) -> None:
    _reconcile(namespace, name, watched)


@kopf.on.startup(id="asset-clock-start")
def asset_clock_start(**kwargs: Any) -> None:
    """What comes with time and not with events: tier transitions, fixity slots, the grace of extra copies,
    thaw polls, and the safety-net look at an asset not Ready (plan/recheck.py). One clock wakes each asset
    at its next such instant (every reconcile sets it; every asset event aims one that has none), instead
    of Kopf timers per asset: a timer is a task per asset holding its latest body, and its turns cost CPU
    while a catalogue sits idle."""
    global _asset_clock
    watched = _watched(kwargs)

    @metrics.reconciled("MediaAsset")
    def reconcile(namespace: str, name: str) -> datetime | None:
        return asset.reconcile(api(), settings(), watched, namespace, name)

    def wake(key: str) -> datetime | None:
        namespace, _, name = key.partition("/")
        return reconcile(namespace, name)

    _asset_clock = AimedClock(wake, name="asset",
                              clock_heartbeat=ASSET_CLOCK_HEARTBEAT, worker_heartbeat=ASSET_WORKER_HEARTBEAT,
                              workers=ASSET_CLOCK_WORKERS, retry_max=ASSET_RETRY_MAX_SECONDS,
                              stuck_seconds=settings().stuck_seconds)


@kopf.on.cleanup(id="asset-clock-stop")
def asset_clock_stop(**_: Any) -> None:
    if _asset_clock is not None:
        _asset_clock.stop()


def _aim_unless_set(watched: indexes.Watched, event_type: str | None, body: Any) -> None:
    """An asset event: one the clock holds no alarm for (never reconciled here: its handler still queued, or
    Kopf lost it) gets one from what the event shows; a deleted one is forgotten."""
    if _asset_clock is None:
        return
    meta = body.get("metadata") or {}
    key = f"{meta.get('namespace')}/{meta.get('name')}"
    if event_type == "DELETED":
        _asset_clock.drop(key)
    elif not meta.get("deletionTimestamp") and _asset_clock.alarm(key) is None:
        _asset_clock.ensure(key, asset.next_recheck(watched, dict(body), settings(), datetime.now(UTC)))


@kopf.on.startup(id="progress-start")
def progress_start(memo: Any, **kwargs: Any) -> None:
    """Running steps' progress reaches their assets' status from one loop (controllers/progress.py), not
    from a timer per running asset."""
    watched = _watched(kwargs)
    watcher = progress.ProgressWatcher(watched.running_steps, lambda ns, job: api().running_pod_log_tail(ns, job),
                                       lambda ns, name: _reconcile_asset(ns, name, watched))
    memo.progress = telemetry.InventoryLoop(lambda: watcher.tick(time.monotonic()),
                                            interval=progress.INTERVAL_SECONDS,
                                            stuck_seconds=settings().stuck_seconds, name=progress.HEARTBEAT)
    memo.progress.start()


@kopf.on.cleanup(id="progress-stop")
def progress_stop(memo: Any, **_: Any) -> None:
    if getattr(memo, "progress", None) is not None:
        memo.progress.stop()


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED_SELECTOR, id="job-mirror")
async def job_changed(body: Any, namespace: str | None, type: str | None, **kwargs: Any) -> None:  # noqa: A002
    """Async, so that the many Job events that change nothing cost no trip through the handler threads; a
    reconcile they call for runs on those threads. Each finished step Job is counted here too, once, with its
    duration (in memory only): one handler per Job event, since Kopf's cost per handler call is most of an
    event's."""
    telemetry.job_event(body)
    if (body.get("metadata", {}).get("labels") or {}).get(LABEL_STEP) == rights.DISTRIBUTE:
        # Only an ending (or a deletion) changes what the rights planner does: while its Job runs it waits. A
        # Job's other events (its pod made, started, a ready count) would each cost a gather and a plan of the
        # whole namespace, on the CPU the takedown's own pod needs.
        if type == "DELETED" or job_state(dict(body))[0] in ("Succeeded", "Failed"):
            _rights_now(_ns(namespace))
        return
    # Only a change the planner sees reconciles the owner (controllers/indexes.py JobTransitions): the Job
    # controller's other status writes (a refused pod, a ready count) are most of a Job's events.
    uid = str(body.get("metadata", {}).get("uid") or "")
    view = indexes.job_view(dict(body))
    if type == "DELETED":
        indexes.JOB_TRANSITIONS.forget(uid)
    elif not indexes.JOB_TRANSITIONS.changed(uid, view):
        return
    owners = [owner["name"] for owner in body.get("metadata", {}).get("ownerReferences") or []
              if owner.get("kind") == MEDIA_ASSET.kind and owner.get("controller")]
    if owners:
        await _on_handler_threads(_reconcile_job_owners, _ns(namespace), owners, _watched(kwargs))
    if type != "DELETED":
        indexes.JOB_TRANSITIONS.record(uid, view)  # after the reconcile: a failed one is tried on the next event


@metrics.reconciled("Job")
def _reconcile_job_owners(namespace: str, owners: list[str], watched: indexes.Watched) -> None:
    for owner in owners:
        _reconcile(namespace, owner, watched)


@kopf.on.field(*ASSETS, field="status.packages", id="asset-packaged")
@kopf.on.field(*ASSETS, field="metadata.labels", id="asset-labels")
@kopf.on.field(*ASSETS, field="status.qcApproval", id="asset-qc-approval")
@kopf.on.field(*ASSETS, field="status.qc.verdict", id="asset-qc-verdict")
async def asset_distribution_inputs(namespace: str | None, **_: Any) -> None:
    """A newly packaged, relabelled or QC-approved asset may now be (or no longer be) licensed somewhere."""
    _rights_now(_ns(namespace))


def _held(meta: Any, **_: Any) -> bool:
    """Deleting the asset waits for its delete handler once the asset carries the finalizer, which its
    reconcile puts on before any Job but an ingest (controllers/finalizer.py). Left to
    Kopf, the finalizer came in a patch of its own before any handler ran, and no handler ran until that
    patch came back through the watch: behind a burst of new assets that round trip was a third of Kopf's
    patches and most of the wait for an asset's first Job."""
    return FINALIZER in ((meta or {}).get("finalizers") or [])


@kopf.on.delete(*ASSETS, id="asset-deleted", when=_held)
def asset_deleted(body: Any, **_: Any) -> None:
    """The finalizer stays until the asset is taken down from every distribution target (the rights
    clock is poked meanwhile), then until a legal hold and retention allow it and every archived copy
    is purged."""
    if _asset_clock is not None:
        _asset_clock.drop(f"{body['metadata']['namespace']}/{body['metadata']['name']}")
    try:
        archive.take_down_first(api(), dict(body), _rights_now)
        archive.delete_archived(api(), settings(), dict(body))
    except archive.DeletionPending as pending:
        raise kopf.TemporaryError(str(pending), delay=pending.delay) from None


# --- TranscodeLadder -------------------------------------------------------------------------


@kopf.on.resume(*LADDERS, id="ladder")
@kopf.on.create(*LADDERS, id="ladder")
@kopf.on.update(*LADDERS, id="ladder")
@metrics.reconciled("TranscodeLadder")
def ladder_changed(namespace: str | None, name: str, reason: Any, **kwargs: Any) -> None:
    policies.reconcile_ladder(api(), _ns(namespace), name)
    _reconcile_assets_for(reason, kwargs, _ns(namespace), "ladderRef", name)


@kopf.on.event(*LADDERS, id="ladder-gone")
async def ladder_gone(type: str | None, namespace: str | None, name: str, **kwargs: Any) -> None:  # noqa: A002
    """A ladder has no finalizer: deleted, it may be gone before `ladder-deleted` runs. Its assets then wait for
    it, so that one made again under its name reconciles them (`ladder` on create takes only those waiting)."""
    if type == "DELETED":
        _note_waiting(kwargs, _ns(namespace), "ladderRef", name)


def _note_waiting(kwargs: dict[str, Any], namespace: str, field: str, name: str) -> None:
    assets = _watched(kwargs).assets_referencing(namespace, field, name)
    indexes.WAITING_REFERENCES.note(namespace, field, name, assets)


@kopf.on.delete(*LADDERS, id="ladder-deleted", optional=True)
@metrics.reconciled("TranscodeLadder")
def ladder_deleted(namespace: str | None, name: str, **kwargs: Any) -> None:
    _reconcile_assets_referencing(kwargs, _ns(namespace), "ladderRef", name)


# --- RightsWindow ----------------------------------------------------------------------------


@cache
def rights_clock() -> rights.RightsClock:
    # Window handlers only poke the clock; the reconcile it runs is what kubemam_reconcile_total counts.
    return rights.RightsClock(metrics.reconciled("RightsWindow")(
        lambda namespace: rights.reconcile_rights(api(), settings(), namespace)),
        workers=settings().rights_workers, retry_max=settings().rights_retry_max_seconds,
        stuck_seconds=settings().stuck_seconds)


def _rights_now(namespace: str) -> None:
    """Reconcile the namespace's rights as soon as the rights clock can (bursts collapse into one run);
    the run aims the clock at the namespace's next window transition."""
    rights_clock().poke(namespace)


@kopf.on.resume(*WINDOWS, id="window")
@kopf.on.create(*WINDOWS, id="window")
@kopf.on.update(*WINDOWS, id="window")
def window_changed(namespace: str | None, **kwargs: Any) -> None:
    _watched(kwargs)
    _rights_now(_ns(namespace))


@kopf.timer(*WINDOWS, id="window-clock", interval=30.0, initial_delay=30.0)
def window_safety_net(namespace: str | None, **kwargs: Any) -> None:
    """A safety net (it also picks up changed distribution targets); transitions are met to the second by the
    rights clock. Every window has this timer, so it pokes only a namespace that has not run for a while: 50
    windows must not make 50 reconciles of the namespace every 30 s."""
    _watched(kwargs)
    rights_clock().poke(_ns(namespace), idle=rights.SAFETY_NET_IDLE_SECONDS)


@kopf.on.delete(*WINDOWS, id="window-deleted", optional=True)
def window_deleted(namespace: str | None, **_: Any) -> None:
    """A deleted window licenses nothing: what it alone covered is taken down."""
    _rights_now(_ns(namespace))


# --- ArchivePolicy ---------------------------------------------------------------------------


@kopf.on.resume(*POLICIES, id="policy")
@kopf.on.create(*POLICIES, id="policy")
@kopf.on.update(*POLICIES, id="policy")
@metrics.reconciled("ArchivePolicy")
def policy_changed(namespace: str | None, name: str, reason: Any, **kwargs: Any) -> None:
    policies.reconcile_policy(api(), _ns(namespace), name)
    _reconcile_assets_for(reason, kwargs, _ns(namespace), "archivePolicyRef", name)


@kopf.timer(*POLICIES, id="policy-recount", interval=60.0, initial_delay=60.0)
@metrics.reconciled("ArchivePolicy")
def policy_recount(namespace: str | None, name: str, **_: Any) -> None:
    """Keeps assetsCovered current as assets come and go."""
    policies.reconcile_policy(api(), _ns(namespace), name)


@kopf.on.event(*POLICIES, id="policy-gone")
async def policy_gone(type: str | None, namespace: str | None, name: str, **kwargs: Any) -> None:  # noqa: A002
    """As `ladder-gone`, for an ArchivePolicy."""
    if type == "DELETED":
        _note_waiting(kwargs, _ns(namespace), "archivePolicyRef", name)


@kopf.on.delete(*POLICIES, id="policy-deleted", optional=True)
@metrics.reconciled("ArchivePolicy")
def policy_deleted(namespace: str | None, name: str, **kwargs: Any) -> None:
    _reconcile_assets_referencing(kwargs, _ns(namespace), "archivePolicyRef", name)


# --- Metrics ---------------------------------------------------------------------------------
# Read-only observers (controllers/telemetry.py): they never change an object. New reconciling
# handlers get `@metrics.reconciled(KIND)` right above `def`.


@kopf.on.event(*ASSETS, id="asset-metrics")
async def asset_metrics(event: Any, body: Any, **kwargs: Any) -> None:
    """Running-step progress gauges, and each new ingest QC result counted once (in memory only: async, so
    that it takes no handler thread from the reconciles). The asset clock's safety net and the bookkeeping of
    new and deleted assets ride along: one handler per event, not three."""
    watched = _watched(kwargs)
    event_type = (event or {}).get("type")
    telemetry.asset_event(watched, event_type, body)
    _aim_unless_set(watched, event_type, body)
    uid = str(body.get("metadata", {}).get("uid") or "")
    if event_type == "ADDED":  # Kopf runs event handlers before the creation handler of the same event
        _JUST_ADDED.add(uid)
    elif event_type == "DELETED":
        _JUST_ADDED.discard(uid)
        _DIFF_BASE.forget(uid)


@kopf.on.startup(id="metrics-inventory-start")
def metrics_inventory_start(memo: Any, **kwargs: Any) -> None:
    """Assets per phase, open windows and queued Jobs: counted from the indexes every 15 s."""
    watched = _watched(kwargs)
    memo.inventory = telemetry.InventoryLoop(lambda: telemetry.sweep(watched),
                                             stuck_seconds=settings().stuck_seconds)
    memo.inventory.start()


@kopf.on.cleanup(id="metrics-inventory-stop")
def metrics_inventory_stop(memo: Any, **_: Any) -> None:
    if getattr(memo, "inventory", None) is not None:
        memo.inventory.stop()


# --- Liveness --------------------------------------------------------------------------------
# `kubemam run --liveness=URL` serves Kopf's /healthz; it answers only while every probe handler
# succeeds, and Kopf alone would only prove its event loop answers.

KOPF_THREADS_HEARTBEAT = "kopf handler threads"


@kopf.on.probe(id="heartbeats")
async def heartbeats(settings: kopf.OperatorSettings, **_: Any) -> dict[str, float]:
    """Fails while a thread of ours is stuck (kubemam.health): the rights or asset clock or one of
    their workers, the metrics inventory, the progress loop, or Kopf's handler threads — a no-op handed
    to their pool that has not run within the limit means every thread is blocked. Async, so that a
    full pool cannot stop the probe itself from answering."""
    beats = health.HEARTBEATS
    if not beats.running(KOPF_THREADS_HEARTBEAT):
        beats.start(KOPF_THREADS_HEARTBEAT, operator_settings().stuck_seconds)
        settings.execution.executor.submit(beats.finish, KOPF_THREADS_HEARTBEAT)
    stuck = beats.stale()
    if stuck:
        raise kopf.PermanentError("stuck: " + "; ".join(str(s) for s in stuck))
    return beats.ages()
