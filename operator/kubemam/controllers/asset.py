"""MediaAsset reconcile: gather what the API server holds, plan, then act on the difference."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from kubemam import metrics
from kubemam.api.archive import ArchivePolicySpec
from kubemam.api.asset import MediaAssetSpec, MediaAssetStatus, QCApproval
from kubemam.api.common import API_VERSION, GROUP
from kubemam.api.kinds import MEDIA_ASSET
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.api.rights import RightsWindowSpec
from kubemam.archive.ebucore import RightsSummary
from kubemam.config import OperatorConfig
from kubemam.controllers import finalizer
from kubemam.controllers.indexes import JOB_RESULTS, JOB_TRANSITIONS, WAITING_REFERENCES, Watched, job_view
from kubemam.controllers.keys import ensure_content_keys
from kubemam.controllers.stepjobs import create_step_job
from kubemam.kubeapi import JobRefused, KubeApi
from kubemam.media.progress import latest_progress
from kubemam.plan import recheck
from kubemam.plan.archive import policy_problems
from kubemam.plan.archiving import ArchiveOutcome
from kubemam.plan.asset import plan_asset
from kubemam.plan.conditions import status_patch
from kubemam.plan.facts import AssetFacts
from kubemam.plan.hashing import input_hash
from kubemam.plan.jobs import LABEL_STEP
from kubemam.plan.jobstate import JobObservation, observe_job
from kubemam.plan.qcgate import approval_request
from kubemam.plan.selectors import selected
from kubemam.steps.registry import ARCHIVE, INGEST
from kubemam.timestamps import parse_time

log = logging.getLogger(__name__)

# Handlers of the asset and of its Jobs may reconcile the same asset at once; one at a time.
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def _owned_jobs(api: KubeApi, body: dict[str, Any], watched: Watched) -> list[JobObservation]:
    """The asset's Jobs as the Job index holds them (keyed by this asset's uid: a Job left by an earlier
    asset of the same name is not its); a finished one's result read once (indexes.JOB_RESULTS)."""
    meta = body["metadata"]
    namespace = meta["namespace"]
    observations = []
    for job in sorted(watched.owned_jobs(namespace, meta["uid"]), key=lambda j: j["metadata"].get("name", "")):
        observation = observe_job(job)
        if observation.state in ("Succeeded", "Failed"):
            message = JOB_RESULTS.get(str(job["metadata"].get("uid") or ""),
                                      partial(api.termination_message, namespace, observation.name))
            observation = observe_job(job, message)
        observations.append(observation)
    return observations


S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def s3_problem_from_waiting(secret: str, namespace: str, waiting: list[tuple[str, str]]) -> str | None:
    """The S3 credentials Secret's problem, from the kubelet's words for a step pod that cannot start."""
    for reason, message in waiting:
        if reason != "CreateContainerConfigError":
            continue
        if message == f'secret "{secret}" not found':
            return (f"Secret {secret!r} (S3 credentials for the step Jobs) is not in namespace {namespace}; "
                    f"create it with keys {' and '.join(S3_KEYS)}")
        missing = re.fullmatch(rf"couldn't find key (\S+) in Secret {re.escape(namespace)}/{re.escape(secret)}",
                               message)
        if missing:
            return (f"Secret {secret!r} in namespace {namespace} lacks {missing.group(1)}: the step pods cannot "
                    f"start until it has {' and '.join(S3_KEYS)}")
    return None


def s3_secret_problem(api: KubeApi, config: OperatorConfig, namespace: str, waiting_job: str | None) -> str | None:
    """What is wrong with the S3 credentials Secret, as the asset's step pod found it. The operator never reads
    that Secret: pods take its keys by secretKeyRef, and the kubelet says what is missing. waiting_job: an
    active Job of the asset with no running pod, whose pods are asked why they wait."""
    if not config.s3_credentials_secret or waiting_job is None:
        return None
    return s3_problem_from_waiting(config.s3_credentials_secret, namespace,
                                   api.waiting_containers(namespace, waiting_job))


def gather(api: KubeApi, body: dict[str, Any], watched: Watched, config: OperatorConfig | None = None) -> AssetFacts:
    """The asset's facts: ladder, policy, windows and Jobs from the operator's indexes; the API server is asked
    only for what no watch carries (a running step's log tail, a finished Job's result once, why a step pod waits)."""
    meta = body["metadata"]
    namespace = meta["namespace"]
    spec = MediaAssetSpec.model_validate(body.get("spec") or {})
    status = MediaAssetStatus.model_validate(body.get("status") or {})
    ladder_found, ladder = None, None
    if spec.ladder_ref:
        ladder_name = spec.ladder_ref.name
        ladder_spec = WAITING_REFERENCES.resolve(namespace, "ladderRef", ladder_name, meta["name"],
                                                 lambda: watched.ladder(namespace, ladder_name))
        ladder_found = ladder_spec is not None
        if ladder_spec is not None:
            # An invalid ladder is reported on the ladder itself; the asset plans without it.
            with contextlib.suppress(ValidationError):
                ladder = TranscodeLadderSpec.model_validate(ladder_spec)
    policy_found, policy = None, None
    if spec.archive_policy_ref:
        policy_name = spec.archive_policy_ref.name
        policy_spec = WAITING_REFERENCES.resolve(namespace, "archivePolicyRef", policy_name, meta["name"],
                                                 lambda: watched.policy(namespace, policy_name))
        policy_found = policy_spec is not None
        if policy_spec is not None:
            # A policy that does not validate, or that its own checks refuse, archives nothing.
            with contextlib.suppress(ValidationError):
                candidate = ArchivePolicySpec.model_validate(policy_spec)
                policy = None if policy_problems(candidate) else candidate
    jobs = _owned_jobs(api, body, watched)
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
        rights=_rights_summary(watched, namespace, meta["name"], meta.get("labels") or {}) if policy else [],
        s3_secret_problem=s3_secret_problem(api, config, namespace, running.name if running and log_tail is None
                                            else None) if config is not None else None,
        qc_approval=approval_request(meta),
    )


def _rights_summary(watched: Watched, namespace: str, name: str, labels: dict[str, str]) -> list[RightsSummary]:
    """The licence windows covering the asset, as its EBUCore sidecar records them."""
    summaries = []
    for window in watched.namespace_windows(namespace):
        try:
            spec = RightsWindowSpec.model_validate(window["spec"])
        except ValidationError:
            continue  # reported on the window itself
        if selected(spec.assets, name, labels):
            summaries.append(RightsSummary(window=window["metadata"]["name"], start=spec.start, end=spec.end,
                                           territories=list(spec.territories), channels=list(spec.channels)))
    return sorted(summaries, key=lambda r: r.window)


def next_recheck(watched: Watched, body: dict[str, Any], config: OperatorConfig, now: datetime) -> datetime | None:
    """When the asset is next planned though no event came (plan/recheck.py), judged from its body as a watch
    event brought it and its Jobs as the index holds them."""
    meta = body.get("metadata") or {}
    jobs = {o.name: o.state for o in map(observe_job, watched.owned_jobs(meta.get("namespace") or "",
                                                                           meta.get("uid") or ""))}
    return _recheck_at(config, body, body.get("status") or {}, jobs, now)


def _recheck_at(config: OperatorConfig, body: dict[str, Any], status: dict[str, Any], job_states: dict[str, str],
                now: datetime) -> datetime | None:
    """plan/recheck.py for this asset with `status`, under the operator's settings."""
    created = parse_time(str((body.get("metadata") or {}).get("creationTimestamp") or ""))
    return recheck.next_recheck(body.get("spec") or {}, status, created, job_states, now,
                                timedelta(seconds=config.recheck_seconds),
                                timedelta(seconds=config.archive_check_seconds))


# A status write guarded by the resourceVersion read, refused because another writer (the rights planner's
# Distributed condition and records) came in between: the reconcile runs again on the fresh object this often.
STATUS_CONFLICT_ATTEMPTS = 5


class _StatusConflict(Exception):
    pass


def reconcile(api: KubeApi, config: OperatorConfig, watched: Watched, namespace: str, name: str,
              seen: dict[str, Any] | None = None) -> datetime | None:
    """Bring one asset's Jobs and status to what its spec and the cluster call for. Returns when time alone
    next changes its plan (a tier transition, a fixity slot...) or is due a safety-net look (plan/recheck.py):
    the asset clock wakes it then; None for neither.
    Its status write is guarded by the resourceVersion it read: a merge patch replaces the conditions list
    whole, and written over a newer object it would drop the rights planner's Distributed condition.
    `seen`: the asset as its own watch event brought it, planned from on the first attempt instead of a GET
    (a conflict means it was not the latest: the next attempt reads it)."""
    with _locks[(namespace, name)]:
        for attempt in range(STATUS_CONFLICT_ATTEMPTS):
            try:
                return _reconcile_once(api, config, watched, namespace, name, seen if attempt == 0 else None)
            except _StatusConflict:
                log.debug("asset %s/%s changed while it was reconciled (attempt %d); again", namespace, name,
                          attempt + 1)
        raise RuntimeError(f"asset {namespace}/{name} kept changing while its status was written "
                           f"({STATUS_CONFLICT_ATTEMPTS} attempts); retried")


def _reconcile_once(api: KubeApi, config: OperatorConfig, watched: Watched, namespace: str,
                    name: str, seen: dict[str, Any] | None = None) -> datetime | None:
    body = seen if seen is not None else api.get(MEDIA_ASSET.plural, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    facts = gather(api, body, watched, config)
    now = datetime.now(UTC)
    plan = plan_asset(facts, config, now)
    if plan.key_secret is not None and plan.create_jobs:
        problem = ensure_content_keys(api, namespace, plan.key_secret, body)  # before the Job that mounts it
        if problem is not None:  # a Secret not the asset's under a key name: planned again, without that Job
            plan = plan_asset(dataclasses.replace(facts, key_secret_problem=problem), config, now)
    for superseded in plan.delete_jobs:
        # Its inputs changed (a marker, QC or ladder edit): one Job per step runs, the newest.
        api.delete_job(namespace, superseded)
        log.info("deleted superseded Job %s/%s", namespace, superseded)
    # Before any Job but an ingest the asset carries the finalizer: from then on it may be archived or
    # published, and deleting it needs its delete handler. Not before: a new asset's first write is its Job.
    version = body["metadata"].get("resourceVersion")
    if any(job["metadata"]["labels"].get(LABEL_STEP) != INGEST for job in plan.create_jobs):
        version = _hold_by_finalizer(api, body)
    made = []
    for job in plan.create_jobs:
        try:
            uid = create_step_job(api, job)
        except JobRefused as refused:  # no retry mends it: the asset says why, the asset clock asks again
            plan = plan_asset(dataclasses.replace(facts, job_refused=str(refused)), config, now)
            break
        if uid is not None:
            made.append((uid, job))
            log.info("created Job %s/%s", namespace, job["metadata"]["name"])
    # A Job made here is recorded as made before its first event can come (it often comes before the status
    # write below): the status records it as Pending, as that event shows it, so the event needs no reconcile
    # (one GET, gather and plan per Job made, queued behind a burst of new assets). If the status write
    # fails, the record goes: the Job's next event reconciles its asset.
    listed = {j.name for j in plan.status.jobs or []}
    made_uids = []
    for uid, job in made:
        if job["metadata"]["name"] in listed:
            made_uids.append(uid)
            JOB_TRANSITIONS.record(uid, job_view(job))  # as its first event shows it: no status yet, Pending
    gate = plan.qc_gate
    written = plan.status.to_wire()
    try:
        if gate is not None and gate.approval is not None and gate.newly_approved:
            # Before the status that records it: a crash in between re-audits under the same Event name.
            api.create_event(qc_approval_event(body, gate.approval, gate.verdict.message))
        patch = status_patch(body.get("status"), written)
        if patch:
            try:
                api.patch_status(MEDIA_ASSET.plural, namespace, name, patch, version)
            except ApiException as err:
                if err.status == 409:
                    raise _StatusConflict from err
                raise
    except BaseException:
        for uid in made_uids:
            JOB_TRANSITIONS.forget(uid)
        raise
    if plan.archive is not None:
        _archive_effects(api, body, plan.archive)
    _expire_superseded(api, namespace, facts.jobs, plan.status.jobs or [])
    looked_again = _recheck_at(config, body, written,
                               {str(job.get("name")): str(job.get("state")) for job in written.get("jobs") or []},
                               now)
    wake = plan.archive.wake if plan.archive is not None else None
    return min((w for w in (wake, looked_again) if w is not None), default=None)


def _hold_by_finalizer(api: KubeApi, body: dict[str, Any]) -> str | None:
    """controllers/finalizer.py `hold`; a 409 (the asset changed since it was read) reconciles again."""
    try:
        return finalizer.hold(api, body["metadata"])
    except ApiException as err:
        if err.status == 409:
            raise _StatusConflict from err
        raise


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


def qc_approval_event(body: dict[str, Any], approval: QCApproval, message: str) -> dict[str, Any]:
    """The audit Event of a QC sign-off, named after the sign-off so it is written once."""
    event = asset_event(body, "Normal", "QCApproved", message)
    key = f"{body['metadata']['uid']}/{approval.at.isoformat()}/{approval.reason}"
    event["metadata"] = {"name": f"{body['metadata']['name'][:200]}.qcapproved.{input_hash(key)[:16]}",
                         "namespace": body["metadata"]["namespace"]}
    return event
