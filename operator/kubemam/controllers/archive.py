"""Deleting an asset: first taken down from every distribution target, then (archived) wait while a
legal hold or retention protects it, then purge every copy.

Runs from the asset's delete handler; Kopf keeps the finalizer until this returns, so the
MediaAsset (and with it the record of where it is published and where its copies are) exists until
it is taken down and the copies are gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kubemam.api.archive import ArchivePolicySpec
from kubemam.api.asset import MediaAssetStatus, StorageStatus
from kubemam.api.kinds import ARCHIVE_POLICY, MEDIA_ASSET
from kubemam.config import OperatorConfig
from kubemam.controllers import rights
from kubemam.controllers.asset import asset_event
from kubemam.controllers.stepjobs import create_step_job
from kubemam.kubeapi import KubeApi
from kubemam.plan.archiving import deletion_blocker, purge_request
from kubemam.plan.conditions import Verdict, apply_verdicts
from kubemam.plan.jobs import LABEL_STEP, MANAGED_SELECTOR, build_step_job
from kubemam.plan.jobstate import observe_job, worker_error
from kubemam.steps.archive import FOREIGN_HOLD

log = logging.getLogger(__name__)

# How often the delete handler looks again while the rights planner takes the asset down: the
# takedown itself is a distribute Job of a few seconds; this only adds to when the asset goes.
TAKEDOWN_POLL_SECONDS = 1.0


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


def take_down_first(api: KubeApi, body: dict[str, Any], poke: Callable[[str], None]) -> None:
    """Return once the asset is on no distribution target (its status says TakenDown everywhere); raise
    DeletionPending meanwhile. The rights planner never publishes an asset being deleted and takes down
    what it published (`poke` asks it to reconcile now); its record is what lets the asset go."""
    meta = body["metadata"]
    namespace = meta["namespace"]
    targets = rights.still_distributed(body.get("status"))
    if not targets:
        return
    if rights.jobs_refused(namespace):
        # No Job can run in a namespace being deleted: the asset goes, or it would hold the namespace
        # for ever; what it published stays on the origins (said loudly, not silently lost).
        log.warning("namespace %s is terminating: %s/%s stays published on %s", namespace, namespace, meta["name"],
                    ", ".join(targets))
        return
    poke(namespace)
    where = ", ".join(targets)
    _say(api, body, Verdict("Deletable", "False", "TakingDown", f"taking down from {where} before the asset goes"),
         datetime.now(UTC))
    raise DeletionPending(f"taking down from {where} before the asset goes", TAKEDOWN_POLL_SECONDS)


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
        if not create_step_job(api, build_step_job(request, config)):
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
        message = worker_error(api.termination_message(namespace, request.name)) or job.message or "see the Job's log"
        # A legal hold kubemam did not set is never lifted by kubemam: said so, and checked again less often the
        # longer the deletion has waited (a tenth of it, 1 min to 1 h), so a dispute of months runs few pods.
        foreign = FOREIGN_HOLD in message
        _say(api, body, Verdict("Deletable", "False", "ForeignLegalHold" if foreign else "PurgeFailed",
                                f"Job {request.name} failed: {message}"), now)
        api.delete_job(namespace, request.name)  # run it again after the delay
        asked = meta.get("deletionTimestamp")
        waited = (now - datetime.fromisoformat(asked.replace("Z", "+00:00"))).total_seconds() if asked else 0.0
        raise DeletionPending(f"purge failed: {message}", min(3600.0, max(60.0, waited / 10)) if foreign else 60)
    if job.state != "Succeeded":
        raise DeletionPending("purging the archived copies", 3)
    api.create_event(asset_event(body, "Normal", "Purged", f"every archived copy deleted by Job {request.name}"))
    log.info("purged the archived copies of %s/%s", namespace, name)
