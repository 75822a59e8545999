"""The MediaAsset planner: gathered facts and the clock in, desired Jobs and status out.

Steps run in order — ingest (plan/ingest.py), transcode (plan/transcode.py), package (plan/package.py)
— and the archive side (plan/archiving.py) once the master is ingested; each step is planned by its
own module with the one step pattern (plan/stepjob.py), which re-runs transient failures with backoff,
recovers lost results and honours the steps.kubemam.io/retry annotation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from kubemam.api.asset import MediaAssetStatus, Progress
from kubemam.config import OperatorConfig
from kubemam.plan.archiving import ArchiveFacts, ArchiveOutcome, plan_archive
from kubemam.plan.conditions import Verdict, apply_verdicts
from kubemam.plan.facts import AssetFacts
from kubemam.plan.ingest import (
    ingest_outcome,
    ingest_request,
    marker_problems,
    mirror_result,
    qc_verdict,
    run_ingest,
    source_problem,
)
from kubemam.plan.jobstate import JobObservation
from kubemam.plan.package import KeySecret, plan_packaging
from kubemam.plan.qcgate import GateOutcome, qc_gate
from kubemam.plan.stepjob import Retries, StepOutcome, superseded
from kubemam.plan.transcode import plan_transcode
from kubemam.steps.registry import ARCHIVE, INGEST, PACKAGE, TRANSCODE

PROGRESS_MIN_INTERVAL = timedelta(seconds=10)
PROGRESS_MIN_PERCENT = 5

__all__ = ["AssetFacts", "AssetPlan", "JobObservation", "KeySecret", "ingest_request", "plan_asset"]


@dataclass(frozen=True)
class AssetPlan:
    create_jobs: list[dict[str, Any]]
    status: MediaAssetStatus
    key_secret: KeySecret | None = None
    archive: ArchiveOutcome | None = None  # events, metrics and the next wake-up of the archive side
    # Unfinished Jobs whose step gets a new Job (its inputs changed): deleted first, so at most one runs.
    delete_jobs: list[str] = field(default_factory=list)
    qc_gate: GateOutcome | None = None  # a sign-off seen for the first time is audited with an Event


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
    if (current is not None and current.step == desired.step and desired.percent not in (0, 100)
            and abs(desired.percent - current.percent) < PROGRESS_MIN_PERCENT and current.updated_at is not None
            and now - current.updated_at < PROGRESS_MIN_INTERVAL):
        # A small move soon after the last write waits: GitOps tools (Argo CD) and watchers see at most one
        # progress write per asset every 10 s, or one per 5 %, not one per 2 s tick.
        return current
    return desired.model_copy(update={"updated_at": now})


def _refused(facts: AssetFacts, verdict: Verdict, phase: str | None, now: datetime) -> AssetPlan:
    """Nothing runs: the asset says why."""
    conditions = apply_verdicts(facts.status.conditions, [verdict], facts.generation, now)
    return AssetPlan([], facts.status.model_copy(update={"phase": phase, "conditions": conditions,
                                                         "observed_generation": facts.generation}))


def _blockers(facts: AssetFacts) -> list[Verdict]:
    """References that do not resolve: the asset is not Ready while they do not."""
    spec, namespace = facts.spec, facts.namespace
    blockers: list[Verdict] = []
    if facts.ladder_found is False and spec.ladder_ref:
        blockers.append(Verdict("Ready", "False", "LadderNotFound",
                                f"TranscodeLadder {spec.ladder_ref.name!r} not found in namespace {namespace}"))
    elif facts.ladder_found and facts.ladder is None and spec.ladder_ref:
        blockers.append(Verdict("Ready", "False", "LadderInvalid",
                                f"TranscodeLadder {spec.ladder_ref.name!r} does not validate; see its conditions"))
    if facts.archive_policy_found is False and spec.archive_policy_ref:
        blockers.append(Verdict("Ready", "False", "ArchivePolicyNotFound",
                                f"ArchivePolicy {spec.archive_policy_ref.name!r} not found in namespace {namespace}"))
    elif facts.archive_policy_found and facts.archive_policy is None and spec.archive_policy_ref:
        blockers.append(Verdict("Ready", "False", "ArchivePolicyInvalid",
                                f"ArchivePolicy {spec.archive_policy_ref.name!r} is not valid; see its conditions"))
    return blockers


def plan_asset(facts: AssetFacts, config: OperatorConfig, now: datetime) -> AssetPlan:
    spec = facts.spec
    status = facts.status

    problem = source_problem(spec)
    problems = ([problem] if problem else []) + marker_problems(spec)
    if problems:
        reason = "UnsupportedSource" if problem else "InvalidMarkers"
        return _refused(facts, Verdict("Ready", "False", reason, "; ".join(problems)), "Failed", now)
    if facts.s3_secret_problem:
        # A Job naming a missing Secret would sit in CreateContainerConfigError: say why, start nothing.
        return _refused(facts, Verdict("Ready", "False", "S3SecretMissing", facts.s3_secret_problem),
                        status.phase or "Pending", now)
    if facts.job_refused:
        # Not retried every reconcile: the safety-net timer asks again (a policy or Role may change).
        return _refused(facts, Verdict("Ready", "False", "JobRefused", facts.job_refused), status.phase or "Pending",
                        now)

    steps = StepOutcome()
    retries = Retries.of(config, now, facts.annotations)
    ingest = steps.add(run_ingest(facts, config, retries))
    ingested, phase = ingest_outcome(ingest)
    verdicts = [*steps.verdicts, ingested]
    done = ingested.status == "True"
    mirrored = mirror_result(status, ingest)
    qc = qc_verdict(mirrored) if done else None
    if qc is not None:
        verdicts.append(qc)
    # Judged once the master's QC is in: while a new master ingests, the last verdict stands.
    gate = qc_gate(facts.name, mirrored, facts.qc_approval, now) if done else None
    if gate is not None:
        verdicts.append(gate.verdict)

    running_step, running = INGEST, ingest.observed if ingest.state == "Running" else None
    renditions = mirrored.renditions
    transcode = None
    if done and facts.ladder is not None and mirrored.technical is not None:
        transcode = plan_transcode(facts, facts.ladder, mirrored.technical, config, retries)
        renditions = transcode.renditions
        if transcode.phase is not None:
            phase, done = transcode.phase, False
            running_step, running = TRANSCODE, transcode.running
    packages = mirrored.packages
    packaging = None
    if done and facts.ladder is not None and renditions and facts.ladder.packaging is not None:
        packaging = plan_packaging(facts, facts.ladder, renditions, mirrored.previews, config, retries)
        packages = packaging.packages
        if packaging.phase is not None:
            phase, done = packaging.phase, False
            running_step, running = PACKAGE, packaging.running
    for outcome in (transcode, packaging):
        if outcome is not None:
            steps.create_jobs += outcome.create_jobs
            steps.jobs += outcome.jobs
            verdicts += outcome.verdicts
    storage = mirrored.storage
    archive: ArchiveOutcome | None = None
    if ingested.status == "True" and facts.archive_policy is not None and mirrored.technical is not None:
        archive = plan_archive(ArchiveFacts(
            name=facts.name, namespace=facts.namespace, uid=facts.uid, spec=spec,
            status=mirrored.model_copy(update={"renditions": renditions, "packages": packages}),
            policy=facts.archive_policy, annotations=facts.annotations, rights=facts.rights, jobs=facts.jobs,
            finished=facts.finished), config, now)
        steps.create_jobs += archive.create_jobs
        steps.jobs += archive.jobs
        verdicts += archive.verdicts
        storage = archive.storage
        if archive.failed is not None:
            phase, done = "Failed", False
        elif done and archive.holding:
            phase, done = "Archiving", False
            running_step, running = ARCHIVE, None
    if done:  # every step finished: the progress names the last one
        running_step = PACKAGE if packages else TRANSCODE if renditions else INGEST
    reported = facts.progress if running is not None else None
    progress = _progress(status.progress, reported, running_step, 100 if done else 0, now)

    blockers = _blockers(facts)
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
            "jobs": steps.jobs,
            "renditions": renditions or None,
            "packages": packages or None,
            "storage": storage,
            "qc_approval": gate.approval if gate is not None else mirrored.qc_approval,
        }
    )
    return AssetPlan(steps.create_jobs, new_status, packaging.key_secret if packaging else None, archive,
                     superseded(facts.jobs, steps.create_jobs), gate)
