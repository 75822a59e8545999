"""Read a batch/v1 Job (and its pod's termination message) into a JobObservation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubemam.plan.jobs import ANNOTATION_INPUT_HASH, LABEL_STEP

MAX_CRASH_LINE = 500
# The Job controller's reason when a podFailurePolicy FailJob rule matched: our exit code 2, a StepError.
PERMANENT_REASON = "PodFailurePolicy"


@dataclass(frozen=True)
class JobObservation:
    """What the API server says about one of an owner's Jobs."""

    name: str
    step: str
    input_hash: str
    state: str  # Pending | Running | Succeeded | Failed
    message: str | None = None
    result: dict[str, Any] | None = None  # the worker's termination message, parsed
    expiring: bool = False  # the Job already has a ttlSecondsAfterFinished: it is being let go
    finished_at: datetime | None = None  # when it succeeded or failed (the condition's transition)
    # A failure worth another attempt by itself (pods that exited 1 or were killed, a deadline): anything
    # but the FailJob rule on exit 2. False when not known, so a Job known only by name is never re-run.
    retryable: bool = False


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def finished_at(job: dict[str, Any]) -> datetime | None:
    cond = _condition(job, "Complete") or _condition(job, "Failed")
    if cond is None:
        return None
    return _time(cond.get("lastTransitionTime")) or _time((job.get("status") or {}).get("completionTime"))


def failure_retryable(job: dict[str, Any]) -> bool:
    """Transient unless the Job failed by its FailJob rule (exit 2: the worker's StepError): backoffLimit
    spent on crashes or outages (`retryable` messages), a deadline, pods killed or evicted."""
    failed = _condition(job, "Failed")
    return failed is not None and failed.get("reason") != PERMANENT_REASON


def job_state(job: dict[str, Any]) -> tuple[str, str | None]:
    """Pending, Running, Succeeded or Failed, with the controller's message for a failure."""
    if _condition(job, "Complete"):
        return "Succeeded", None
    failed = _condition(job, "Failed")
    if failed:
        return "Failed", f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".rstrip(": ")
    status = job.get("status") or {}
    if (status.get("active") or 0) > 0 or (status.get("ready") or 0) > 0:
        return "Running", None
    return "Pending", None


def parse_result(termination_message: str | None) -> dict[str, Any] | None:
    """The worker writes a small JSON object as its termination message; anything else is ignored."""
    if not termination_message:
        return None
    try:
        result = json.loads(termination_message)
    except ValueError:
        return None
    return result if isinstance(result, dict) else None


def worker_error(termination_message: str | None) -> str | None:
    """The worker's own words for a failure: the `error` of its JSON result, else (a process that died
    before it could write one; the kubelet kept its log tail) the last line of that tail."""
    error = (parse_result(termination_message) or {}).get("error")
    if isinstance(error, str) and error:
        return error
    if termination_message and parse_result(termination_message) is None:
        lines = [line.strip() for line in termination_message.strip().splitlines() if line.strip()]
        if lines:
            return lines[-1][:MAX_CRASH_LINE]
    return None


def observe_job(job: dict[str, Any], termination_message: str | None = None) -> JobObservation:
    meta = job.get("metadata") or {}
    state, message = job_state(job)
    if state == "Failed":
        # The worker's own words (a StepError's message, a crash's exception) say more than the Job controller's.
        message = worker_error(termination_message) or message
    return JobObservation(
        name=meta.get("name", ""),
        step=(meta.get("labels") or {}).get(LABEL_STEP, ""),
        input_hash=(meta.get("annotations") or {}).get(ANNOTATION_INPUT_HASH, ""),
        state=state,
        message=message,
        result=parse_result(termination_message) if state == "Succeeded" else None,
        expiring=(job.get("spec") or {}).get("ttlSecondsAfterFinished") is not None,
        finished_at=finished_at(job) if state in ("Succeeded", "Failed") else None,
        retryable=state == "Failed" and failure_retryable(job),
    )
