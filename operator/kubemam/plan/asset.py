"""The MediaAsset planner: gathered facts and the clock in, desired Jobs and status out."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from pydantic import ValidationError

from kubemam.api.archive import ArchivePolicySpec
from kubemam.api.asset import (
    SUPPORTED_SOURCE_SCHEMES,
    MediaAssetSpec,
    MediaAssetStatus,
    PackageStatus,
    Previews,
    Progress,
    QCResult,
    RenditionStatus,
    StepJob,
    TechnicalMetadata,
)
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.archive.ebucore import RightsSummary
from kubemam.config import OperatorConfig
from kubemam.media.timecode import Timecode, TimecodeError
from kubemam.plan.archiving import ARCHIVE, ArchiveFacts, ArchiveOutcome, plan_archive
from kubemam.plan.conditions import Verdict, apply_verdicts
from kubemam.plan.jobs import Owner, StepJobRequest, build_step_job
from kubemam.plan.package import CPIX_TOKEN_ENV, KEYS_DIR_ENV, KEYS_MOUNT, PACKAGE, packaged, plan_package
from kubemam.plan.transcode import (
    TRANSCODE,
    TRANSCODE_CHUNKS,
    chunking,
    completed,
    fit_ladder,
    master_facts,
    transcode_inputs,
)

INGEST = "ingest"


@dataclass(frozen=True)
class JobObservation:
    """What the API server says about one of the asset's Jobs."""

    name: str
    step: str
    input_hash: str
    state: str  # Pending | Running | Succeeded | Failed
    message: str | None = None
    result: dict[str, Any] | None = None  # the worker's termination message, parsed
    expiring: bool = False  # the Job already has a ttlSecondsAfterFinished: it is being let go


@dataclass(frozen=True)
class AssetFacts:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: MediaAssetSpec
    status: MediaAssetStatus
    ladder_found: bool | None  # None: the asset names no ladder
    archive_policy_found: bool | None
    jobs: list[JobObservation] = field(default_factory=list)
    progress: dict[str, Any] | None = None  # the running step's newest progress record
    ladder: TranscodeLadderSpec | None = None  # the named ladder, when it exists and validates
    archive_policy: ArchivePolicySpec | None = None  # the named policy, when it exists and validates
    annotations: dict[str, str] = field(default_factory=dict)
    rights: list[RightsSummary] = field(default_factory=list)  # the windows covering the asset
    s3_secret_problem: str | None = None  # the S3 credentials Secret the Jobs name is missing or incomplete


@dataclass(frozen=True)
class KeySecret:
    """Content keys the operator must hold (generated once per tier) before the package Job runs."""

    name: str
    tiers: list[str]


@dataclass(frozen=True)
class AssetPlan:
    create_jobs: list[dict[str, Any]]
    status: MediaAssetStatus
    key_secret: KeySecret | None = None
    archive: ArchiveOutcome | None = None  # events, metrics and the next wake-up of the archive side


def source_problem(spec: MediaAssetSpec) -> str | None:
    scheme = urlparse(spec.source.uri).scheme.lower()
    if scheme not in SUPPORTED_SOURCE_SCHEMES:
        supported = ", ".join(f"{s}://" for s in SUPPORTED_SOURCE_SCHEMES)
        return f"source.uri scheme {scheme!r}:// is not supported (use {supported})"
    if scheme == "s3" and not urlparse(spec.source.uri).netloc:
        return "source.uri names no bucket (s3://BUCKET/KEY)"
    return None


def marker_problems(spec: MediaAssetSpec) -> list[str]:
    """What the schema cannot judge about markers: frames that do not exist, ends before starts."""
    timeline = spec.timeline
    rate = timeline.frame_rate if timeline else "25"
    drop = timeline.drop_frame if timeline else False
    problems = []
    for marker in spec.markers or []:
        try:
            start = Timecode.parse(marker.start, rate, drop)
            if marker.end is not None:
                end = Timecode.parse(marker.end, rate, drop)
                if end.to_frames(rate) < start.to_frames(rate):
                    problems.append(f"marker {marker.name!r}: end {marker.end} is before start {marker.start}")
        except TimecodeError as err:
            problems.append(f"marker {marker.name!r}: {err}")
    return problems


def step_output(config: OperatorConfig, facts: AssetFacts, step: str) -> str:
    return f"{config.library_uri.rstrip('/')}/assets/{facts.namespace}/{facts.name}/{step}"


def ingest_request(facts: AssetFacts, config: OperatorConfig) -> StepJobRequest:
    spec = facts.spec
    inputs: dict[str, Any] = {"source": spec.source.to_wire(), "output": step_output(config, facts, INGEST)}
    if spec.timeline:
        inputs["timeline"] = spec.timeline.to_wire()
    if spec.markers:
        inputs["markers"] = [m.to_wire() for m in spec.markers]
    # The asset's QC policy wins over its ladder's; without either the worker applies EBU R128.
    policy = spec.qc or (facts.ladder.qc if facts.ladder else None)
    if policy is not None:
        inputs["qc"] = policy.to_wire()
    if facts.ladder and facts.ladder.thumbnails:
        inputs["thumbnails"] = facts.ladder.thumbnails.to_wire()
    return StepJobRequest(
        owner=Owner("MediaAsset", facts.name, facts.uid, facts.namespace),
        step=INGEST,
        inputs=inputs,
    )


def _finished_before(status: MediaAssetStatus, job_name: str) -> JobObservation | None:
    """A Job that already finished and was then deleted (by hand or a TTL) is not run again."""
    for record in status.jobs or []:
        if record.name == job_name and record.state in ("Succeeded", "Failed"):
            return JobObservation(record.name, record.step, record.input_hash, record.state, record.message)
    return None


def _ingest_outcome(job: JobObservation | None) -> tuple[Verdict, str]:
    """The Ingested condition and the phase that follows from the ingest Job."""
    if job is None or job.state == "Pending":
        return Verdict("Ingested", "Unknown", "IngestPending", "the ingest Job is waiting to run"), "Ingesting"
    if job.state == "Running":
        return Verdict("Ingested", "Unknown", "IngestRunning", f"Job {job.name} is running"), "Ingesting"
    if job.state == "Failed":
        detail = f": {job.message}" if job.message else ""
        return Verdict("Ingested", "False", "IngestFailed", f"Job {job.name} failed{detail}"), "Failed"
    return Verdict("Ingested", "True", "IngestSucceeded", f"Job {job.name} succeeded"), "Ready"


def _mirror_result(status: MediaAssetStatus, job: JobObservation | None) -> MediaAssetStatus:
    """Copy what the worker reported (technical metadata, QC) into status, if it validates."""
    if job is None or job.state != "Succeeded" or not job.result:
        return status
    update: dict[str, Any] = {}
    try:
        if "technical" in job.result:
            update["technical"] = TechnicalMetadata.model_validate(job.result["technical"])
        if "qc" in job.result:
            update["qc"] = QCResult.model_validate(job.result["qc"])
        if "previews" in job.result:
            update["previews"] = Previews.model_validate(job.result["previews"])
    except ValidationError:
        return status  # a result we cannot read is not mirrored; the Job's outcome still is
    return status.model_copy(update=update)


def _progress(current: Progress | None, reported: dict[str, Any] | None, step: str, percent: int,
              now: datetime) -> Progress:
    """The step's progress: the worker's newest report while it runs; unchanged values are not rewritten."""
    desired = Progress(step=step, percent=percent)
    if reported and reported.get("step") == step:
        # A malformed report is ignored, not fatal.
        with contextlib.suppress(ValidationError, TypeError, ValueError):
            desired = Progress(step=step, percent=int(reported.get("percent", 0)), fps=reported.get("fps"),
                               eta_seconds=reported.get("etaSeconds"))
    if current is not None and (current.step, current.percent, current.fps, current.eta_seconds) == (
            desired.step, desired.percent, desired.fps, desired.eta_seconds):
        return current  # no status churn
    return desired.model_copy(update={"updated_at": now})


@dataclass
class StepOutcome:
    create_jobs: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[StepJob] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    renditions: list[RenditionStatus] | None = None
    phase: str | None = None  # None: this step is done and does not hold the asset back
    running: JobObservation | None = None
    packages: list[PackageStatus] | None = None
    key_secret: KeySecret | None = None


def _observe(facts: AssetFacts, name: str) -> JobObservation | None:
    return next((j for j in facts.jobs if j.name == name), None) or _finished_before(facts.status, name)


def _step_job(request: StepJobRequest, observed: JobObservation | None) -> StepJob:
    return StepJob(step=request.step, name=request.name, input_hash=request.digest,
                   state=observed.state if observed else "Pending", message=observed.message if observed else None)


def _ladder_request(facts: AssetFacts, ladder: TranscodeLadderSpec, step: str, inputs: dict[str, Any],
                    completions: int | None = None, parallelism: int | None = None) -> StepJobRequest:
    return StepJobRequest(
        owner=Owner("MediaAsset", facts.name, facts.uid, facts.namespace),
        step=step,
        inputs=inputs,
        resources=ladder.resources.to_wire() if ladder.resources else None,
        priority_class_name=ladder.priority_class_name,
        queue_name=ladder.queue_name,
        completions=completions,
        parallelism=parallelism,
    )


def plan_transcode(facts: AssetFacts, ladder: TranscodeLadderSpec, technical: TechnicalMetadata,
                   config: OperatorConfig) -> StepOutcome:
    """The renditions the ladder asks of this master: done ones kept, missing ones encoded by one Job
    (one decode), or by an Indexed Job of chunks and a stitch Job when the ladder chunks."""
    outcome = StepOutcome()
    root = f"{config.library_uri.rstrip('/')}/assets/{facts.namespace}/{facts.name}"
    fit = fit_ladder(ladder, technical, f"{root}/renditions")
    if fit.skipped:
        outcome.verdicts.append(Verdict("LadderFit", "False", "UpscaleRefused",
                                        "rungs above the source are skipped (the ladder does not allowUpscale): "
                                        + ", ".join(fit.skipped)))
    else:
        outcome.verdicts.append(Verdict("LadderFit", "True", "AllRungsFit", "every rung fits the source"))
    results = [j.result for j in facts.jobs if j.step == TRANSCODE and j.state == "Succeeded" and j.result]
    done = completed(fit.targets, facts.status.renditions, results)
    outcome.renditions = [done[t.name] for t in fit.targets if t.name in done]
    missing = [t for t in fit.targets if t.name not in done]
    if not missing:
        outcome.verdicts.append(Verdict("Transcoded", "True", "RenditionsReady",
                                        f"{len(done)} rendition(s) encoded"))
        return outcome

    chunks = chunking(ladder, master_facts(technical)) if any(t.kind == "video" for t in missing) else None
    steps: list[tuple[StepJobRequest, JobObservation | None]] = []
    if chunks is None:
        request = _ladder_request(facts, ladder, TRANSCODE,
                                  transcode_inputs(facts.spec.source.uri, technical, ladder, missing, "single"))
        steps.append((request, _observe(facts, request.name)))
    else:
        video = [t for t in missing if t.kind == "video"]
        chunk_inputs = transcode_inputs(facts.spec.source.uri, technical, ladder, video, "chunk", f"{root}/chunks",
                                        chunks)
        assert ladder.chunking is not None
        chunk_request = _ladder_request(facts, ladder, TRANSCODE_CHUNKS, chunk_inputs, completions=chunks.count,
                                        parallelism=min(ladder.chunking.max_parallel, chunks.count))
        steps.append((chunk_request, _observe(facts, chunk_request.name)))
        if steps[0][1] is not None and steps[0][1].state == "Succeeded":
            stitch_inputs = transcode_inputs(facts.spec.source.uri, technical, ladder, missing, "stitch",
                                             f"{root}/chunks", chunks)
            stitch = _ladder_request(facts, ladder, TRANSCODE, stitch_inputs)
            steps.append((stitch, _observe(facts, stitch.name)))

    for request, observed in steps:
        if observed is None:
            outcome.create_jobs.append(build_step_job(request, config))
        outcome.jobs.append(_step_job(request, observed))
    request, observed = steps[-1]
    names = ", ".join(t.name for t in missing)
    failed = next((o for _, o in steps if o is not None and o.state == "Failed"), None)
    if failed is not None:
        detail = f": {failed.message}" if failed.message else ""
        outcome.verdicts.append(Verdict("Transcoded", "False", "TranscodeFailed", f"Job {failed.name} failed{detail}"))
        outcome.phase = "Failed"
    elif observed is not None and observed.state == "Succeeded":
        # Succeeded, yet its result names none of the missing renditions: the result was lost.
        outcome.verdicts.append(Verdict("Transcoded", "False", "ResultUnreadable",
                                        f"Job {observed.name} succeeded but reported no rendition for {names}"))
        outcome.phase = "Failed"
    else:
        running = next((o for _, o in steps if o is not None and o.state == "Running"), None)
        outcome.running = running
        reason = "TranscodeRunning" if running else "TranscodePending"
        outcome.verdicts.append(Verdict("Transcoded", "Unknown", reason, f"encoding {names}"))
        outcome.phase = "Transcoding"
    return outcome


def plan_packaging(facts: AssetFacts, ladder: TranscodeLadderSpec, renditions: list[RenditionStatus],
                   previews: Previews | None, config: OperatorConfig) -> StepOutcome:
    """One package Job over every rendition; a package already made for the same inputs is kept."""
    outcome = StepOutcome()
    root = f"{config.library_uri.rstrip('/')}/assets/{facts.namespace}/{facts.name}"
    plan = plan_package(facts.name, facts.uid, facts.spec, ladder, renditions, previews, root)
    if plan is None:
        return outcome
    results = [j.result for j in facts.jobs if j.step == PACKAGE and j.state == "Succeeded" and j.result]
    done = packaged(plan, facts.status.packages, results)
    if done is not None:
        outcome.packages = done
        outcome.verdicts.append(Verdict("Packaged", "True", "PackagesReady",
                                        ", ".join(sorted({p.format for p in done})) + " packaged"))
        return outcome
    request = StepJobRequest(
        owner=Owner("MediaAsset", facts.name, facts.uid, facts.namespace), step=PACKAGE, inputs=plan.inputs,
        priority_class_name=ladder.priority_class_name, queue_name=ladder.queue_name,
        secret_mounts=((plan.key_secret, KEYS_MOUNT),) if plan.key_secret else (),
        env=((KEYS_DIR_ENV, KEYS_MOUNT),) if plan.key_secret else (),
        secret_env=((CPIX_TOKEN_ENV, *plan.token_secret),) if plan.token_secret else ())
    if plan.key_secret:
        outcome.key_secret = KeySecret(plan.key_secret, plan.tiers)
    observed = _observe(facts, request.name)
    if observed is None:
        outcome.create_jobs.append(build_step_job(request, config))
    outcome.jobs.append(_step_job(request, observed))
    if observed is not None and observed.state == "Failed":
        detail = f": {observed.message}" if observed.message else ""
        reason = "KeyProviderFailed" if "key provider" in (observed.message or "") else "PackageFailed"
        outcome.verdicts.append(Verdict("Packaged", "False", reason, f"Job {observed.name} failed{detail}"))
        outcome.phase = "Failed"
    elif observed is not None and observed.state == "Succeeded":
        outcome.verdicts.append(Verdict("Packaged", "False", "ResultUnreadable",
                                        f"Job {observed.name} succeeded but reported no package"))
        outcome.phase = "Failed"
    else:
        running = observed is not None and observed.state == "Running"
        outcome.running = observed if running else None
        outcome.verdicts.append(Verdict("Packaged", "Unknown", "PackageRunning" if running else "PackagePending",
                                        f"packaging {', '.join(plan.inputs['formats'])} into {plan.output}"))
        outcome.phase = "Packaging"
    return outcome


def plan_asset(facts: AssetFacts, config: OperatorConfig, now: datetime) -> AssetPlan:
    spec = facts.spec
    status = facts.status
    verdicts: list[Verdict] = []
    create: list[dict[str, Any]] = []
    jobs: list[StepJob] = []

    problem = source_problem(spec)
    problems = [problem] if problem else []
    problems += marker_problems(spec)
    if problems:
        reason = "UnsupportedSource" if problem else "InvalidMarkers"
        verdicts.append(Verdict("Ready", "False", reason, "; ".join(problems)))
        conditions = apply_verdicts(status.conditions, verdicts, facts.generation, now)
        new_status = status.model_copy(
            update={"phase": "Failed", "conditions": conditions, "observed_generation": facts.generation}
        )
        return AssetPlan([], new_status)
    if facts.s3_secret_problem:
        # A Job naming a missing Secret would sit in CreateContainerConfigError: say why, start nothing.
        verdicts.append(Verdict("Ready", "False", "S3SecretMissing", facts.s3_secret_problem))
        conditions = apply_verdicts(status.conditions, verdicts, facts.generation, now)
        return AssetPlan([], status.model_copy(update={"phase": status.phase or "Pending", "conditions": conditions,
                                                       "observed_generation": facts.generation}))

    request = ingest_request(facts, config)
    observed = next((j for j in facts.jobs if j.name == request.name), None)
    if observed is None:
        observed = _finished_before(status, request.name)
    if observed is None:
        create.append(build_step_job(request, config))
    ingested, phase = _ingest_outcome(observed)
    verdicts.append(ingested)
    jobs.append(
        StepJob(
            step=INGEST,
            name=request.name,
            input_hash=request.digest,
            state=observed.state if observed else "Pending",
            message=observed.message if observed else None,
        )
    )
    done = ingested.status == "True"
    mirrored = _mirror_result(status, observed)
    if done and mirrored.qc is not None:
        issues = mirrored.qc.issue_count if mirrored.qc.issue_count is not None else len(mirrored.qc.issues or [])
        qc_passed = mirrored.qc.verdict != "Failed"
        verdicts.append(Verdict("QCPassed", "True" if qc_passed else "False", f"QC{mirrored.qc.verdict}",
                                f"QC verdict {mirrored.qc.verdict} with {issues} issue(s)"))

    running_step, running = INGEST, observed if observed and observed.state == "Running" else None
    renditions = mirrored.renditions
    if done and facts.ladder is not None and mirrored.technical is not None:
        transcode = plan_transcode(facts, facts.ladder, mirrored.technical, config)
        create += transcode.create_jobs
        jobs += transcode.jobs
        verdicts += transcode.verdicts
        renditions = transcode.renditions
        if transcode.phase is not None:
            phase = transcode.phase
            done = False
            running_step, running = TRANSCODE, transcode.running
    packages = mirrored.packages
    key_secret = None
    if done and facts.ladder is not None and renditions and facts.ladder.packaging is not None:
        packaging = plan_packaging(facts, facts.ladder, renditions, mirrored.previews, config)
        create += packaging.create_jobs
        jobs += packaging.jobs
        verdicts += packaging.verdicts
        packages = packaging.packages
        key_secret = packaging.key_secret
        if packaging.phase is not None:
            phase = packaging.phase
            done = False
            running_step, running = PACKAGE, packaging.running
    storage = mirrored.storage
    archive: ArchiveOutcome | None = None
    if ingested.status == "True" and facts.archive_policy is not None and mirrored.technical is not None:
        archive = plan_archive(ArchiveFacts(
            name=facts.name, namespace=facts.namespace, uid=facts.uid, spec=spec,
            status=mirrored.model_copy(update={"renditions": renditions, "packages": packages}),
            policy=facts.archive_policy, annotations=facts.annotations, rights=facts.rights, jobs=facts.jobs,
            finished=status.jobs or []), config, now)
        create += archive.create_jobs
        jobs += archive.jobs
        verdicts += archive.verdicts
        storage = archive.storage
        if archive.failed is not None:
            phase = "Failed"
            done = False
        elif done and archive.holding:
            phase = "Archiving"
            done = False
            running_step, running = ARCHIVE, None
    if done:  # every step finished: the progress names the last one
        running_step = PACKAGE if packages else TRANSCODE if renditions else INGEST
    reported = facts.progress if running is not None else None
    progress = _progress(status.progress, reported, running_step, 100 if done else 0, now)

    blockers: list[Verdict] = []
    if facts.ladder_found is False and spec.ladder_ref:
        blockers.append(Verdict("Ready", "False", "LadderNotFound",
                                f"TranscodeLadder {spec.ladder_ref.name!r} not found in namespace {facts.namespace}"))
    elif facts.ladder_found and facts.ladder is None and spec.ladder_ref:
        blockers.append(Verdict("Ready", "False", "LadderInvalid",
                                f"TranscodeLadder {spec.ladder_ref.name!r} does not validate; see its conditions"))
    if facts.archive_policy_found is False and spec.archive_policy_ref:
        blockers.append(Verdict("Ready", "False", "ArchivePolicyNotFound",
                                f"ArchivePolicy {spec.archive_policy_ref.name!r} not found in namespace "
                                f"{facts.namespace}"))
    elif facts.archive_policy_found and facts.archive_policy is None and spec.archive_policy_ref:
        blockers.append(Verdict("Ready", "False", "ArchivePolicyInvalid",
                                f"ArchivePolicy {spec.archive_policy_ref.name!r} is not valid; see its conditions"))
    transcoded = next((v for v in verdicts if v.type == "Transcoded"), None)
    packaged_verdict = next((v for v in verdicts if v.type == "Packaged"), None)
    archived = next((v for v in verdicts if v.type == "Archived"), None) if phase == "Archiving" else None
    latest = archived or packaged_verdict or transcoded
    if phase == "Failed":
        archive_failure = archive.failed if archive is not None else None
        failure = next((v for v in (packaged_verdict, transcoded, archive_failure)
                        if v is not None and v.status == "False"), ingested)
        verdicts.append(Verdict("Ready", "False", failure.reason, failure.message))
    elif blockers:
        verdicts.append(blockers[0])
        phase = "Pending" if done else phase
    elif done:
        verdicts.append(Verdict("Ready", "True", "AllStepsSucceeded", "every planned step succeeded"))
    elif latest is not None:
        verdicts.append(Verdict("Ready", "False", latest.reason, latest.message))
    else:
        verdicts.append(Verdict("Ready", "False", ingested.reason, ingested.message))

    conditions = apply_verdicts(status.conditions, verdicts, facts.generation, now)
    new_status = mirrored.model_copy(
        update={
            "phase": phase,
            "conditions": conditions,
            "observed_generation": facts.generation,
            "progress": progress,
            "jobs": jobs,
            "renditions": renditions or None,
            "packages": packages or None,
            "storage": storage,
        }
    )
    return AssetPlan(create, new_status, key_secret, archive)
