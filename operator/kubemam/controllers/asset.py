"""MediaAsset reconcile: gather what the API server holds, plan, then act on the difference."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubemam import metrics
from kubemam.api.archive import ArchivePolicySpec
from kubemam.api.asset import MediaAssetSpec, MediaAssetStatus
from kubemam.api.common import API_VERSION, GROUP
from kubemam.api.kinds import ARCHIVE_POLICY, MEDIA_ASSET, RIGHTS_WINDOW, TRANSCODE_LADDER
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.api.rights import RightsWindowSpec
from kubemam.archive.ebucore import RightsSummary
from kubemam.config import OperatorConfig
from kubemam.controllers.keys import ensure_content_keys
from kubemam.kubeapi import KubeApi
from kubemam.media.progress import latest_progress
from kubemam.plan.archive import policy_problems
from kubemam.plan.archiving import ArchiveOutcome
from kubemam.plan.asset import plan_asset
from kubemam.plan.conditions import status_patch
from kubemam.plan.facts import AssetFacts
from kubemam.plan.jobs import asset_jobs_selector
from kubemam.plan.jobstate import JobObservation, observe_job
from kubemam.plan.selectors import selected
from kubemam.steps.registry import ARCHIVE

log = logging.getLogger(__name__)

# Handlers of the asset and of its Jobs may reconcile the same asset at once; one at a time.
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def _owned_jobs(api: KubeApi, body: dict[str, Any]) -> list[JobObservation]:
    meta = body["metadata"]
    selector = asset_jobs_selector(meta["name"])
    observations = []
    for job in api.list_jobs(meta["namespace"], selector):
        owners = job["metadata"].get("ownerReferences") or []
        if not any(o.get("uid") == meta["uid"] for o in owners):
            continue  # a Job left by an earlier asset of the same name
        observation = observe_job(job)
        if observation.state in ("Succeeded", "Failed"):
            message = api.termination_message(meta["namespace"], observation.name)
            observation = observe_job(job, message)
        observations.append(observation)
    return observations


S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def s3_secret_problem(api: KubeApi, config: OperatorConfig, namespace: str) -> str | None:
    """What is wrong with the S3 credentials Secret the step Jobs name in this namespace, if anything."""
    if not config.s3_credentials_secret:
        return None
    keys = api.secret_keys(namespace, config.s3_credentials_secret)
    if keys is None:
        return (f"Secret {config.s3_credentials_secret!r} (S3 credentials for the step Jobs) is not in namespace "
                f"{namespace}; create it with keys {' and '.join(S3_KEYS)}")
    missing = [k for k in S3_KEYS if k not in keys]
    if missing:
        return f"Secret {config.s3_credentials_secret!r} in namespace {namespace} lacks {', '.join(missing)}"
    return None


def gather(api: KubeApi, body: dict[str, Any], config: OperatorConfig | None = None) -> AssetFacts:
    meta = body["metadata"]
    namespace = meta["namespace"]
    spec = MediaAssetSpec.model_validate(body.get("spec") or {})
    status = MediaAssetStatus.model_validate(body.get("status") or {})
    ladder_found, ladder = None, None
    if spec.ladder_ref:
        ladder_body = api.get(TRANSCODE_LADDER.plural, namespace, spec.ladder_ref.name)
        ladder_found = ladder_body is not None
        if ladder_body is not None:
            # An invalid ladder is reported on the ladder itself; the asset plans without it.
            with contextlib.suppress(ValidationError):
                ladder = TranscodeLadderSpec.model_validate(ladder_body.get("spec") or {})
    policy_found, policy = None, None
    if spec.archive_policy_ref:
        policy_body = api.get(ARCHIVE_POLICY.plural, namespace, spec.archive_policy_ref.name)
        policy_found = policy_body is not None
        if policy_body is not None:
            # A policy that does not validate, or that its own checks refuse, archives nothing.
            with contextlib.suppress(ValidationError):
                candidate = ArchivePolicySpec.model_validate(policy_body.get("spec") or {})
                policy = None if policy_problems(candidate) else candidate
    jobs = _owned_jobs(api, body)
    running = next((j for j in jobs if j.state == "Running"), None)
    log_tail = api.running_pod_log_tail(namespace, running.name) if running else None
    return AssetFacts(
        name=meta["name"],
        namespace=namespace,
        uid=meta["uid"],
        generation=int(meta.get("generation") or 0),
        spec=spec,
        status=status,
        ladder_found=ladder_found,
        archive_policy_found=policy_found,
        jobs=jobs,
        progress=latest_progress(log_tail) if log_tail else None,
        ladder=ladder,
        archive_policy=policy,
        annotations=dict(meta.get("annotations") or {}),
        rights=_rights_summary(api, namespace, meta["name"], meta.get("labels") or {}) if policy else [],
        s3_secret_problem=s3_secret_problem(api, config, namespace) if config is not None else None,
    )


def _rights_summary(api: KubeApi, namespace: str, name: str, labels: dict[str, str]) -> list[RightsSummary]:
    """The licence windows covering the asset, as its EBUCore sidecar records them."""
    summaries = []
    for window in api.list_objects(RIGHTS_WINDOW.plural, namespace):
        try:
            spec = RightsWindowSpec.model_validate(window.get("spec") or {})
        except ValidationError:
            continue  # reported on the window itself
        if selected(spec.assets, name, labels):
            summaries.append(RightsSummary(window=window["metadata"]["name"], start=spec.start, end=spec.end,
                                           territories=list(spec.territories), channels=list(spec.channels)))
    return sorted(summaries, key=lambda r: r.window)


def reconcile(api: KubeApi, config: OperatorConfig, namespace: str, name: str) -> None:
    """Bring one asset's Jobs and status to what its spec and the cluster call for."""
    with _locks[(namespace, name)]:
        body = api.get(MEDIA_ASSET.plural, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        facts = gather(api, body, config)
        plan = plan_asset(facts, config, datetime.now(UTC))
        if plan.key_secret is not None and plan.create_jobs:
            ensure_content_keys(api, namespace, plan.key_secret, body)  # before the Job that mounts it
        for superseded in plan.delete_jobs:
            # Its inputs changed (a marker, QC or ladder edit): one Job per step runs, the newest.
            api.delete_job(namespace, superseded)
            log.info("deleted superseded Job %s/%s", namespace, superseded)
        for job in plan.create_jobs:
            if api.create_job(job):
                log.info("created Job %s/%s", namespace, job["metadata"]["name"])
        patch = status_patch(body.get("status"), plan.status.to_wire())
        if patch:
            api.patch_status(MEDIA_ASSET.plural, namespace, name, patch)
        if plan.archive is not None:
            _archive_effects(api, body, plan.archive)
        _expire_superseded(api, namespace, facts.jobs, plan.status.jobs or [])


SUPERSEDED_TTL_SECONDS = 600


def _expire_superseded(api: KubeApi, namespace: str, jobs: list[JobObservation], current: list[Any]) -> None:
    """Finished Jobs the plan no longer names (an earlier input, placement or fixity run; a transcode whose
    renditions are in status) are let go: their outcome is in the status already, and a schedule or a
    stream of edits would pile them up forever."""
    planned = {j.name for j in current}
    for job in jobs:
        thawing = job.step == ARCHIVE and bool((job.result or {}).get("restoring"))  # polls start from this one
        if job.state in ("Succeeded", "Failed") and job.name not in planned \
                and not thawing and not job.expiring:  # annotated once, not on every reconcile
            api.annotate_job(namespace, job.name, {f"{GROUP}/superseded": "true"}, ttl_seconds=SUPERSEDED_TTL_SECONDS)


def _archive_effects(api: KubeApi, body: dict[str, Any], outcome: ArchiveOutcome) -> None:
    """Events and metrics for what the archive side saw happen in this reconcile (each seen once)."""
    namespace = body["metadata"]["namespace"]
    for tier, copied in outcome.copied.items():
        if copied:
            metrics.TIERED_BYTES.labels(namespace, tier).inc(copied)
    for repaired in outcome.fixity_repaired:
        metrics.FIXITY_FAILURES.labels(namespace, repaired.partition(":")[0]).inc()
    if outcome.fixity_failures > len(outcome.fixity_repaired):
        metrics.FIXITY_FAILURES.labels(namespace, "other").inc(outcome.fixity_failures - len(outcome.fixity_repaired))
    for type_, reason, message in outcome.events:
        api.create_event(asset_event(body, type_, reason, message))


def asset_event(body: dict[str, Any], type_: str, reason: str, message: str) -> dict[str, Any]:
    meta = body["metadata"]
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": API_VERSION, "kind": MEDIA_ASSET.kind, "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "reason": reason, "message": message[:1024], "type": type_, "firstTimestamp": now, "lastTimestamp": now,
        "count": 1, "source": {"component": "kubemam"},
    }


def assets_referencing(api: KubeApi, namespace: str, field: str, name: str) -> list[str]:
    """Names of the assets whose spec.<field>.name is name."""
    return [
        a["metadata"]["name"]
        for a in api.list_objects(MEDIA_ASSET.plural, namespace)
        if ((a.get("spec") or {}).get(field) or {}).get("name") == name
    ]
