"""MediaAsset reconcile: gather what the API server holds, plan, then act on the difference."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubemam.api.asset import MediaAssetSpec, MediaAssetStatus
from kubemam.api.kinds import ARCHIVE_POLICY, MEDIA_ASSET, TRANSCODE_LADDER
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.config import OperatorConfig
from kubemam.controllers.keys import ensure_content_keys
from kubemam.kubeapi import KubeApi
from kubemam.media.progress import latest_progress
from kubemam.plan.asset import AssetFacts, JobObservation, plan_asset
from kubemam.plan.conditions import status_patch
from kubemam.plan.jobs import LABEL_ASSET, MANAGED_SELECTOR
from kubemam.plan.jobstate import observe_job

log = logging.getLogger(__name__)

# Handlers of the asset and of its Jobs may reconcile the same asset at once; one at a time.
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def _owned_jobs(api: KubeApi, body: dict[str, Any]) -> list[JobObservation]:
    meta = body["metadata"]
    selector = {**MANAGED_SELECTOR, LABEL_ASSET: meta["name"][:63].rstrip("-.")}
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


def gather(api: KubeApi, body: dict[str, Any]) -> AssetFacts:
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
    policy_found = None
    if spec.archive_policy_ref:
        policy_found = api.get(ARCHIVE_POLICY.plural, namespace, spec.archive_policy_ref.name) is not None
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
    )


def reconcile(api: KubeApi, config: OperatorConfig, namespace: str, name: str) -> None:
    """Bring one asset's Jobs and status to what its spec and the cluster call for."""
    with _locks[(namespace, name)]:
        body = api.get(MEDIA_ASSET.plural, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        facts = gather(api, body)
        plan = plan_asset(facts, config, datetime.now(UTC))
        if plan.key_secret is not None and plan.create_jobs:
            ensure_content_keys(api, namespace, plan.key_secret, body)  # before the Job that mounts it
        for job in plan.create_jobs:
            if api.create_job(job):
                log.info("created Job %s/%s", namespace, job["metadata"]["name"])
        patch = status_patch(body.get("status"), plan.status.to_wire())
        if patch:
            api.patch_status(MEDIA_ASSET.plural, namespace, name, patch)


def assets_referencing(api: KubeApi, namespace: str, field: str, name: str) -> list[str]:
    """Names of the assets whose spec.<field>.name is name."""
    return [
        a["metadata"]["name"]
        for a in api.list_objects(MEDIA_ASSET.plural, namespace)
        if ((a.get("spec") or {}).get(field) or {}).get("name") == name
    ]
