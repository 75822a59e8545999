"""Deleting an archived asset: wait while a legal hold or retention protects it, then purge every copy.

Runs from the asset's delete handler; Kopf keeps the finalizer until this returns, so the
MediaAsset (and with it the record of where its copies are) exists until the copies are gone.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubemam.api.archive import ArchivePolicySpec
from kubemam.api.asset import MediaAssetStatus, StorageStatus
from kubemam.api.kinds import ARCHIVE_POLICY, MEDIA_ASSET
from kubemam.config import OperatorConfig
from kubemam.controllers.asset import asset_event
from kubemam.kubeapi import KubeApi
from kubemam.plan.archiving import deletion_blocker, purge_request
from kubemam.plan.conditions import Verdict, apply_verdicts
from kubemam.plan.jobs import LABEL_STEP, MANAGED_SELECTOR, build_step_job
from kubemam.plan.jobstate import observe_job

log = logging.getLogger(__name__)


class DeletionPending(Exception):
    """Not yet: the handler is called again after `delay` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


def _say(api: KubeApi, body: dict[str, Any], verdict: Verdict, now: datetime) -> None:
    status = MediaAssetStatus.model_validate(body.get("status") or {})
    generation = int(body["metadata"].get("generation") or 0)
    conditions = apply_verdicts(status.conditions, [verdict], generation, now)
    if conditions != status.conditions or status.phase != "Deleting":
        api.patch_status(MEDIA_ASSET.plural, body["metadata"]["namespace"], body["metadata"]["name"],
                         {"phase": "Deleting", "conditions": [c.to_wire() for c in conditions]})


def delete_archived(api: KubeApi, config: OperatorConfig, body: dict[str, Any]) -> None:
    """Return when the asset's copies are gone (or it has none); raise DeletionPending while they may not go."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    ref = ((body.get("spec") or {}).get("archivePolicyRef") or {}).get("name")
    storage_raw = (body.get("status") or {}).get("storage")
    if not ref or not storage_raw or not storage_raw.get("copies"):
        return  # nothing was archived
    now = datetime.now(UTC)
    storage = StorageStatus.model_validate(storage_raw)
    policy_body = api.get(ARCHIVE_POLICY.plural, namespace, ref)
    policy = None
    if policy_body is not None:
        try:
            policy = ArchivePolicySpec.model_validate(policy_body.get("spec") or {})
        except ValidationError:
            policy = None  # the copies recorded in status are purged instead
    annotations = dict(meta.get("annotations") or {})
    blocker = deletion_blocker(policy, annotations, storage, now)
    if blocker is not None:
        _say(api, body, blocker, now)
        until = storage.retain_until
        # Retention waits until it ends (re-checked at least hourly); a hold is re-checked every 10 s.
        delay = 10.0 if blocker.reason == "LegalHold" or until is None else \
            min(3600.0, max(10.0, (until - now).total_seconds()))
        raise DeletionPending(blocker.message, delay)
    request = purge_request(name, namespace, meta["uid"], policy, storage.copies or [], config)
    selector = {**MANAGED_SELECTOR, LABEL_STEP: request.step}
    jobs = [observe_job(j) for j in api.list_jobs(namespace, selector) if j["metadata"]["name"] == request.name]
    if not jobs:
        if not api.create_job(build_step_job(request, config)):
            if api.list_jobs(namespace, selector):
                raise DeletionPending("purging the archived copies", 3)
            # The namespace is being deleted: no Job can run. The copies stay where they are (nothing is
            # lost) and the asset goes, or it would hold the namespace forever.
            log.warning("namespace %s is terminating: the archived copies of %s are kept, not purged", namespace,
                        name)
            return
        _say(api, body, Verdict("Deletable", "True", "Purging", f"Job {request.name} deletes every copy"), now)
        raise DeletionPending("purging the archived copies", 3)
    job = jobs[0]
    if job.state == "Failed":
        message = api.termination_message(namespace, request.name) or job.message or "see the Job's log"
        _say(api, body, Verdict("Deletable", "False", "PurgeFailed", f"Job {request.name} failed: {message}"), now)
        api.delete_job(namespace, request.name)  # run it again after the delay
        raise DeletionPending(f"purge failed: {message}", 60)
    if job.state != "Succeeded":
        raise DeletionPending("purging the archived copies", 3)
    api.create_event(asset_event(body, "Normal", "Purged", f"every archived copy deleted by Job {request.name}"))
    log.info("purged the archived copies of %s/%s", namespace, name)
