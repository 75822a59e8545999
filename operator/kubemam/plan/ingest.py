"""The ingest step of the MediaAsset planner (pure): what the schema cannot judge about the spec, the
ingest Job's input, and the Ingested condition and mirrored result that follow from its Job."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlparse

from kubemam.api.asset import SUPPORTED_SOURCE_SCHEMES, MediaAssetSpec, MediaAssetStatus
from kubemam.config import OperatorConfig
from kubemam.media.timecode import Timecode, TimecodeError
from kubemam.plan.conditions import Verdict
from kubemam.plan.facts import AssetFacts
from kubemam.plan.hashing import input_hash
from kubemam.plan.jobs import StepJobRequest
from kubemam.plan.jobstate import JobObservation
from kubemam.plan.stepjob import Retries, StepRun
from kubemam.steps.base import work_inputs
from kubemam.steps.ingest import IngestInput, IngestResult
from kubemam.steps.registry import INGEST, step


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


def ingest_request(facts: AssetFacts, config: OperatorConfig) -> StepJobRequest:
    spec = facts.spec
    inputs = IngestInput(
        source=spec.source,
        output=f"{facts.root(config)}/{INGEST}",
        timeline=spec.timeline,
        markers=spec.markers or None,
        # The asset's QC policy wins over its ladder's; without either the worker applies EBU R128.
        qc=spec.qc or (facts.ladder.qc if facts.ladder else None),
        thumbnails=facts.ladder.thumbnails if facts.ladder else None,
    )
    return StepJobRequest(owner=facts.owner, step=INGEST, inputs=inputs.to_wire())


def ingest_prefix(request: StepJobRequest) -> str:
    """Where the worker commits these inputs' outputs: <output>/<hash16 of the work>/ (worker/ingest.py)."""
    return f"{str(request.inputs['output']).rstrip('/')}/{input_hash(work_inputs(request.inputs))[:16]}"


def _parsed(observed: JobObservation | None) -> IngestResult | None:
    result = step(INGEST).parse_result(observed.result if observed is not None else None)
    return result if isinstance(result, IngestResult) and result.technical is not None else None


def recorded(status: MediaAssetStatus, prefix: str) -> bool:
    """Status already holds the result of the ingest committed at prefix (its QC report and previews are there)."""
    under = prefix.rstrip("/") + "/"
    uris = [status.qc.report_uri if status.qc else None, status.previews.proxy_uri if status.previews else None]
    return status.technical is not None and any(uri and uri.startswith(under) for uri in uris)


def ingest_has_result(status: MediaAssetStatus, request: StepJobRequest) -> Callable[[JobObservation], bool]:
    """A succeeded ingest counts only with its result: in its message, or already in status. Otherwise (the pod
    was gone before the operator read it) a recover attempt reports it from the committed manifest."""
    prefix = ingest_prefix(request)
    return lambda observed: _parsed(observed) is not None or recorded(status, prefix)


def run_ingest(facts: AssetFacts, config: OperatorConfig, retries: Retries) -> StepRun:
    request = ingest_request(facts, config)
    return facts.run(request, config, retries, has_result=ingest_has_result(facts.status, request))


def ingest_outcome(run: StepRun) -> tuple[Verdict, str]:
    """The Ingested condition and the phase that follows from the ingest Job."""
    if run.state == "Pending":
        return Verdict("Ingested", "Unknown", "IngestPending",
                       f"the ingest Job is waiting to run{run.note()}"), "Ingesting"
    if run.state == "Running":
        return Verdict("Ingested", "Unknown", "IngestRunning",
                       f"Job {run.request.name} is running{run.note()}"), "Ingesting"
    if run.state == "Retrying":
        return run.retry_verdict("Ingested"), "Ingesting"
    if run.state == "Failed":
        return Verdict("Ingested", "False", "IngestFailed", run.failure()), "Failed"
    return Verdict("Ingested", "True", "IngestSucceeded", f"Job {run.request.name} succeeded{run.note()}"), "Ready"


def mirror_result(status: MediaAssetStatus, run: StepRun) -> MediaAssetStatus:
    """Copy what the worker reported (technical metadata, QC, previews) into status, if it validates; a compact
    result (too big for the termination message) has its audio tracks expanded."""
    if run.state != "Succeeded":
        return status
    result = _parsed(run.observed)
    if result is None:
        return status  # remembered (the Job is gone) or unreadable: status keeps what it has
    update = {k: v for k, v in (("technical", result.full_technical()), ("qc", result.qc),
                                ("previews", result.previews)) if v is not None}
    return status.model_copy(update=update)


def qc_verdict(status: MediaAssetStatus) -> Verdict | None:
    if status.qc is None:
        return None
    issues = status.qc.issue_count if status.qc.issue_count is not None else len(status.qc.issues or [])
    passed = status.qc.verdict != "Failed"
    return Verdict("QCPassed", "True" if passed else "False", f"QC{status.qc.verdict}",
                   f"QC verdict {status.qc.verdict} with {issues} issue(s)")
