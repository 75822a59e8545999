"""The operator's registration table: every Kopf handler, its stable id, and where it hands off.

Handler ids and the persistence prefix are pinned: changing them later makes Kopf forget
what it did. Handlers return None and patch declared status fields themselves.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import kopf

from kubemam import config as config_module
from kubemam import health, metrics
from kubemam.api.common import GROUP, VERSION
from kubemam.api.kinds import ARCHIVE_POLICY, MEDIA_ASSET, RIGHTS_WINDOW, TRANSCODE_LADDER
from kubemam.config import OperatorConfig
from kubemam.controllers import archive, asset, policies, rights, telemetry
from kubemam.kubeapi import KubeApi
from kubemam.plan.jobs import LABEL_STEP, MANAGED_SELECTOR

FINALIZER = f"{GROUP}/finalizer"
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


@kopf.on.startup(id="configure")
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Explicit watch timeouts: a silently dead watch connection is re-established.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 8
    # Kopf's own API calls (patches, posts, watch connections) time out like ours (kubeapi.py): a hung
    # one fails and Kopf retries it with its error backoffs instead of waiting for ever.
    ours = operator_settings()
    settings.networking.connect_timeout = ours.api_connect_timeout_seconds
    settings.networking.request_timeout = ours.api_connect_timeout_seconds + ours.api_read_timeout_seconds
    settings.watching.connect_timeout = ours.api_connect_timeout_seconds
    # A handler that raises met a transient fault (handlers never raise for bad input): retry in 15 s
    # rather than Kopf's 60, so work resumes well inside a minute after an outage ends.
    settings.execution.default_backoff = 15.0


def _ns(namespace: str | None) -> str:
    """Every kubemam kind and Job is namespaced; Kopf types namespace as optional for all kinds."""
    if namespace is None:
        raise kopf.PermanentError("a namespaced object arrived without a namespace")
    return namespace


def _not_ready(status: Any, **_: Any) -> bool:
    ready = next((c for c in (status or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    return ready is None or ready.get("status") != "True"


def _reconcile_assets_referencing(namespace: str, field: str, name: str) -> None:
    for asset_name in asset.assets_referencing(api(), namespace, field, name):
        asset.reconcile(api(), settings(), namespace, asset_name)


# --- MediaAsset ------------------------------------------------------------------------------


@kopf.on.resume(*ASSETS, id="asset")
@kopf.on.create(*ASSETS, id="asset")
@kopf.on.update(*ASSETS, id="asset")
@metrics.reconciled("MediaAsset")
def asset_changed(namespace: str | None, name: str, **_: Any) -> None:
    asset.reconcile(api(), settings(), _ns(namespace), name)


@kopf.timer(*ASSETS, id="asset-recheck", interval=settings().recheck_seconds,
            initial_delay=settings().recheck_seconds, when=_not_ready)
@metrics.reconciled("MediaAsset")
def asset_recheck(namespace: str | None, name: str, **_: Any) -> None:
    """A safety net for an asset that is not Ready: watches can miss what a timer will not."""
    asset.reconcile(api(), settings(), _ns(namespace), name)


def _step_running(status: Any, **_: Any) -> bool:
    return any(j.get("state") == "Running" for j in (status or {}).get("jobs") or [])


@kopf.timer(*ASSETS, id="asset-progress", interval=2.0, when=_step_running)
@metrics.reconciled("MediaAsset")
def asset_progress(namespace: str | None, name: str, **_: Any) -> None:
    """While a step runs, its newest progress line reaches the status every 2 s."""
    asset.reconcile(api(), settings(), _ns(namespace), name)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED_SELECTOR, id="job-mirror")
@metrics.reconciled("Job")
def job_changed(body: Any, namespace: str | None, **_: Any) -> None:
    if (body.get("metadata", {}).get("labels") or {}).get(LABEL_STEP) == rights.DISTRIBUTE:
        _rights_now(_ns(namespace))
        return
    for owner in body.get("metadata", {}).get("ownerReferences") or []:
        if owner.get("kind") == MEDIA_ASSET.kind and owner.get("controller"):
            asset.reconcile(api(), settings(), _ns(namespace), owner["name"])


@kopf.on.field(*ASSETS, field="status.packages", id="asset-packaged")
@kopf.on.field(*ASSETS, field="metadata.labels", id="asset-labels")
def asset_distribution_inputs(namespace: str | None, **_: Any) -> None:
    """A newly packaged or relabelled asset may now be (or no longer be) licensed somewhere."""
    _rights_now(_ns(namespace))


def _archived(spec: Any, **_: Any) -> bool:
    return bool((spec or {}).get("archivePolicyRef"))


@kopf.timer(*ASSETS, id="asset-archive", interval=settings().archive_check_seconds,
            initial_delay=settings().archive_check_seconds, when=_archived)
@metrics.reconciled("MediaAsset")
def asset_archive_clock(namespace: str | None, name: str, **_: Any) -> None:
    """Tier transitions and fixity slots come with time, not with events: re-plan archived assets."""
    asset.reconcile(api(), settings(), _ns(namespace), name)


@kopf.on.delete(*ASSETS, id="asset-deleted")
def asset_deleted(body: Any, **_: Any) -> None:
    """The finalizer stays until the asset is taken down from every distribution target (the rights
    clock is poked meanwhile), then until a legal hold and retention allow it and every archived copy
    is purged."""
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
def ladder_changed(namespace: str | None, name: str, **_: Any) -> None:
    policies.reconcile_ladder(api(), _ns(namespace), name)
    _reconcile_assets_referencing(_ns(namespace), "ladderRef", name)


@kopf.on.delete(*LADDERS, id="ladder-deleted", optional=True)
@metrics.reconciled("TranscodeLadder")
def ladder_deleted(namespace: str | None, name: str, **_: Any) -> None:
    _reconcile_assets_referencing(_ns(namespace), "ladderRef", name)


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
@kopf.timer(*WINDOWS, id="window-clock", interval=30.0, initial_delay=30.0)
def window_changed(namespace: str | None, **_: Any) -> None:
    # The timer is a safety net (and picks up changed distribution targets); transitions are
    # met to the second by the rights clock.
    _rights_now(_ns(namespace))


@kopf.on.delete(*WINDOWS, id="window-deleted", optional=True)
def window_deleted(namespace: str | None, **_: Any) -> None:
    """A deleted window licenses nothing: what it alone covered is taken down."""
    _rights_now(_ns(namespace))


# --- ArchivePolicy ---------------------------------------------------------------------------


@kopf.on.resume(*POLICIES, id="policy")
@kopf.on.create(*POLICIES, id="policy")
@kopf.on.update(*POLICIES, id="policy")
@metrics.reconciled("ArchivePolicy")
def policy_changed(namespace: str | None, name: str, **_: Any) -> None:
    policies.reconcile_policy(api(), _ns(namespace), name)
    _reconcile_assets_referencing(_ns(namespace), "archivePolicyRef", name)


@kopf.timer(*POLICIES, id="policy-recount", interval=60.0, initial_delay=60.0)
@metrics.reconciled("ArchivePolicy")
def policy_recount(namespace: str | None, name: str, **_: Any) -> None:
    """Keeps assetsCovered current as assets come and go."""
    policies.reconcile_policy(api(), _ns(namespace), name)


@kopf.on.delete(*POLICIES, id="policy-deleted", optional=True)
@metrics.reconciled("ArchivePolicy")
def policy_deleted(namespace: str | None, name: str, **_: Any) -> None:
    _reconcile_assets_referencing(_ns(namespace), "archivePolicyRef", name)


# --- Metrics ---------------------------------------------------------------------------------
# Read-only observers (controllers/telemetry.py): they never change an object. New reconciling
# handlers get `@metrics.reconciled(KIND)` right above `def`.


@kopf.on.event(*ASSETS, id="asset-metrics")
def asset_metrics(event: Any, body: Any, **_: Any) -> None:
    """Running-step progress gauges, and each new ingest QC result counted once."""
    telemetry.asset_event(api(), (event or {}).get("type"), body)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED_SELECTOR, id="job-metrics")
def job_metrics(body: Any, **_: Any) -> None:
    """Each finished step Job counted once, with its duration."""
    telemetry.job_event(body)


@cache
def inventory() -> telemetry.InventoryLoop:
    return telemetry.InventoryLoop(api, stuck_seconds=settings().stuck_seconds)


@kopf.on.startup(id="metrics-inventory-start")
def metrics_inventory_start(**_: Any) -> None:
    """Assets per phase, open windows and queued Jobs: listed every 15 s."""
    inventory().start()


@kopf.on.cleanup(id="metrics-inventory-stop")
def metrics_inventory_stop(**_: Any) -> None:
    inventory().stop()


# --- Liveness --------------------------------------------------------------------------------
# `kubemam run --liveness=URL` serves Kopf's /healthz; it answers only while every probe handler
# succeeds, and Kopf alone would only prove its event loop answers.

KOPF_THREADS_HEARTBEAT = "kopf handler threads"


@kopf.on.probe(id="heartbeats")
async def heartbeats(settings: kopf.OperatorSettings, **_: Any) -> dict[str, float]:
    """Fails while a thread of ours is stuck (kubemam.health): the rights clock or one of its
    workers, the metrics inventory, or Kopf's handler threads — a no-op handed to their pool that has
    not run within the limit means every thread is blocked. Async, so that a full pool cannot stop
    the probe itself from answering."""
    beats = health.HEARTBEATS
    if not beats.running(KOPF_THREADS_HEARTBEAT):
        beats.start(KOPF_THREADS_HEARTBEAT, operator_settings().stuck_seconds)
        settings.execution.executor.submit(beats.finish, KOPF_THREADS_HEARTBEAT)
    stuck = beats.stale()
    if stuck:
        raise kopf.PermanentError("stuck: " + "; ".join(str(s) for s in stuck))
    return beats.ages()
