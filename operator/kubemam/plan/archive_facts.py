"""What the archive steps share (plan/archiving.py places copies, plan/fixity.py re-hashes them,
plan/migrate.py writes preservation masters, plan/purge.py deletes them): the facts, the outcome, the
request annotations, the locations as the worker sees them, and the step pattern for archive Jobs.

Annotations carry requests a person makes (the spec stays what the asset *is*):
  archive.kubemam.io/restore=<token>       bring the archived set back to the hot tier (new token, new request)
  archive.kubemam.io/fixity-check=<token>  re-hash every copy now, outside the policy's schedule
  archive.kubemam.io/legal-hold="true"     hold this asset's copies (Object Lock legal hold, deletion blocked)
  archive.kubemam.io/confirm-vacate=<token> delete now the copies a policy edit no longer needs (the token
                                           is in the Replicated condition), instead of after the grace
Not under kubemam.io/: Kopf keeps its own state there and ignores changes to those annotations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubemam.api.archive import ArchivePolicySpec, Location
from kubemam.api.asset import MediaAssetSpec, MediaAssetStatus, StepJob, StorageCopy, StorageStatus
from kubemam.api.common import GROUP
from kubemam.archive.ebucore import RightsSummary
from kubemam.config import OperatorConfig
from kubemam.plan.conditions import Verdict
from kubemam.plan.jobs import Owner, StepJobRequest
from kubemam.plan.jobstate import JobObservation
from kubemam.plan.stepjob import StepRun, build_or_refuse, observe
from kubemam.steps.archive import LocationInput
from kubemam.steps.registry import ARCHIVE, FIXITY

RESTORE_ANNOTATION = f"archive.{GROUP}/restore"
FIXITY_ANNOTATION = f"archive.{GROUP}/fixity-check"
LEGAL_HOLD_ANNOTATION = f"archive.{GROUP}/legal-hold"
RETRY_ANNOTATION = f"archive.{GROUP}/retry"
CONFIRM_VACATE_ANNOTATION = f"archive.{GROUP}/confirm-vacate"


@dataclass(frozen=True)
class ArchiveFacts:
    name: str
    namespace: str
    uid: str
    spec: MediaAssetSpec
    status: MediaAssetStatus  # with the ingest result mirrored in
    policy: ArchivePolicySpec
    annotations: dict[str, str]
    rights: list[RightsSummary]
    jobs: list[JobObservation]
    finished: list[StepJob]  # status.jobs: what ran before (a deleted Job is not run again)


@dataclass
class ArchiveOutcome:
    create_jobs: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[StepJob] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    storage: StorageStatus | None = None
    holding: bool = False  # the first archive is not done: the asset is not Ready yet
    failed: Verdict | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    fixity_failures: int = 0  # bad copies found by a fixity run whose result is first seen now
    fixity_repaired: list[str] = field(default_factory=list)  # their "location:key" (the first few)
    copied: dict[str, int] = field(default_factory=dict)  # tier -> bytes, from a place run first seen now
    wake: datetime | None = None  # the next instant time alone changes this plan (plan/archive_wake.py)


def legal_hold(policy: ArchivePolicySpec | None, annotations: dict[str, str]) -> bool:
    held = policy.retention.legal_hold if policy is not None and policy.retention else False
    return held or annotations.get(LEGAL_HOLD_ANNOTATION, "").lower() == "true"


def asset_prefix(location: Location, namespace: str, name: str) -> str:
    return f"{location.uri.rstrip('/')}/{namespace}/{name}"


def credentials_env(index: int) -> str:
    return f"KUBEMAM_LOCATION_{index}"


def location_inputs(policy: ArchivePolicySpec, namespace: str, name: str,
                    config: OperatorConfig) -> tuple[list[LocationInput], tuple[tuple[str, str, str], ...]]:
    """Every policy location as the worker sees it, and the Secret references its credentials travel by."""
    inputs, secret_env = [], []
    for index, loc in enumerate(policy.locations):
        prefix = None
        if loc.credentials_secret_ref is not None:
            prefix = credentials_env(index)
            for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                secret_env.append((f"{prefix}_{variable.removeprefix('AWS_')}", loc.credentials_secret_ref.name,
                                   variable))
        inputs.append(LocationInput(name=loc.name, uri=asset_prefix(loc, namespace, name),
                                    endpoint=loc.endpoint or config.s3_endpoint, credentials=prefix, site=loc.site,
                                    offsite=loc.offsite, object_lock=loc.object_lock))
    return inputs, tuple(secret_env)


def copy_locations(copies: list[StorageCopy], first_index: int) -> tuple[list[LocationInput],
                                                                          tuple[tuple[str, str, str], ...]]:
    """Locations as the status recorded them (endpoint, credentials Secret name): copies at a location the
    policy no longer names (or with the policy gone) can still be reached."""
    locations, env = [], []
    for index, copy in enumerate(copies, start=first_index):
        prefix = credentials_env(index) if copy.credentials_secret else None
        if prefix and copy.credentials_secret:
            env += [(f"{prefix}_ACCESS_KEY_ID", copy.credentials_secret, "AWS_ACCESS_KEY_ID"),
                    (f"{prefix}_SECRET_ACCESS_KEY", copy.credentials_secret, "AWS_SECRET_ACCESS_KEY")]
        locations.append(LocationInput(name=copy.location, uri=copy.uri, endpoint=copy.endpoint, credentials=prefix,
                                       site=copy.site, offsite=copy.offsite))
    return locations, tuple(env)


def secret_name(location: Location | None) -> str | None:
    ref = location.credentials_secret_ref if location is not None else None
    return ref.name if ref is not None else None


def find_job(facts: ArchiveFacts, name: str) -> JobObservation | None:
    return observe(facts.jobs, facts.finished, name)


def start_job(out: ArchiveOutcome, request: StepJobRequest, observed: JobObservation | None, start: bool,
              config: OperatorConfig) -> None:
    """The step pattern (plan/stepjob.py): create when missing and allowed, record in status.jobs."""
    job, refused = build_or_refuse(request, config) if observed is None and start else (None, None)
    record_run(out, StepRun(request, observed, job, refused=refused))


def record_run(out: ArchiveOutcome, run: StepRun) -> None:
    """A planned run into the outcome: its Job to create, its status.jobs record, or why its input is refused."""
    if run.create is not None:
        out.create_jobs.append(run.create)
    if run.refused is None:
        out.jobs.append(run.record)
    elif out.failed is None:  # the archived set's input cannot be staged: no Job, a condition naming why
        out.failed = Verdict("Archived", "False", "InputTooLarge", run.failure())


def archive_request(facts: ArchiveFacts, step: str, inputs: dict[str, Any],
                    secret_env: tuple[tuple[str, str, str], ...] = (), scratch_bytes: int | None = None,
                    ) -> StepJobRequest:
    return StepJobRequest(owner=Owner("MediaAsset", facts.name, facts.uid, facts.namespace), step=step,
                          inputs=inputs, secret_env=secret_env, scratch_bytes=scratch_bytes)


def busy_with(facts: ArchiveFacts, planned: str) -> JobObservation | None:
    """Another archive or fixity Job of the asset still pending or running: one at a time, or a move
    could empty a location another run is still copying into."""
    return next((j for j in facts.jobs if j.step in (ARCHIVE, FIXITY) and j.state in ("Pending", "Running")
                 and j.name != planned), None)
