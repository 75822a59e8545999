"""Read a batch/v1 Job (and its pod's termination message) into a JobObservation."""

from __future__ import annotations

import json
from typing import Any

from kubemam.plan.asset import JobObservation
from kubemam.plan.jobs import ANNOTATION_INPUT_HASH, LABEL_STEP


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


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


def observe_job(job: dict[str, Any], termination_message: str | None = None) -> JobObservation:
    meta = job.get("metadata") or {}
    state, message = job_state(job)
    if state == "Failed":
        # The worker's own words (a StepError's message) say more than the Job controller's.
        error = (parse_result(termination_message) or {}).get("error")
        if isinstance(error, str) and error:
            message = error
    return JobObservation(
        name=meta.get("name", ""),
        step=(meta.get("labels") or {}).get(LABEL_STEP, ""),
        input_hash=(meta.get("annotations") or {}).get(ANNOTATION_INPUT_HASH, ""),
        state=state,
        message=message,
        result=parse_result(termination_message) if state == "Succeeded" else None,
        expiring=(job.get("spec") or {}).get("ttlSecondsAfterFinished") is not None,
    )
