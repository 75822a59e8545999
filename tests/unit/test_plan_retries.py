"""Attempts (plan/stepjob.py), pure with a fixed clock: a transient failure is re-run after a backoff under a
new Job name, a permanent one waits for changed inputs or the retry annotation, and a success whose result
was never read is followed by a recover attempt — never Ready without the result."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubemam.api.asset import MediaAssetStatus
from kubemam.config import OperatorConfig
from kubemam.plan.asset import AssetFacts, JobObservation, ingest_request, plan_asset
from kubemam.plan.hashing import input_hash
from kubemam.plan.ingest import ingest_prefix
from kubemam.plan.jobstate import observe_job
from kubemam.plan.stepjob import RETRY_ANNOTATION, Retries
from kubemam.steps.base import work_inputs
from tests.unit import test_plan_asset as asset_case
from tests.unit import test_plan_package as package_case
from tests.unit import test_plan_transcode as transcode_case

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig()
WORDS = "ingest failed (the Job retries it): EndpointConnectionError: Could not connect to the endpoint URL"


def _input(job: dict[str, Any]) -> dict[str, Any]:
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return dict(json.loads(next(e["value"] for e in env if e["name"] == "KUBEMAM_STEP_INPUT")))


def _seen(job: dict[str, Any], state: str, at: datetime | None = None, retryable: bool = False,
          message: str | None = None, result: dict[str, Any] | None = None) -> JobObservation:
    """A created Job as the API server later reports it."""
    return JobObservation(job["metadata"]["name"], job["metadata"]["labels"]["kubemam.io/step"],
                          job["metadata"]["annotations"]["kubemam.io/input-hash"], state, message, result,
                          finished_at=at, retryable=retryable)


def _facts(jobs: list[JobObservation] | None = None, status: MediaAssetStatus | None = None,
           annotations: dict[str, str] | None = None) -> AssetFacts:
    return replace(asset_case._ingest_only(jobs, status), annotations=annotations or {})


def _cond(status: MediaAssetStatus, type_: str) -> tuple[str, str, str]:
    cond = next(c for c in status.conditions or [] if c.type == type_)
    return cond.status, cond.reason, cond.message


def _first_failed(at: datetime = NOW, retryable: bool = True) -> tuple[dict[str, Any], JobObservation]:
    first = plan_asset(_facts(), CONFIG, at - timedelta(minutes=5)).create_jobs[0]
    return first, _seen(first, "Failed", at, retryable=retryable, message=WORDS)


def test_a_transient_failure_is_rerun_after_the_backoff_under_a_new_name() -> None:
    first, failed = _first_failed()
    waiting = plan_asset(_facts([failed]), CONFIG, NOW + timedelta(seconds=10))
    assert waiting.create_jobs == [] and waiting.status.phase == "Ingesting"
    assert _cond(waiting.status, "Ingested") == (
        "Unknown", "RetryScheduled", f"attempt 2 after 2026-11-23T12:00:30Z: {WORDS}")
    assert _cond(waiting.status, "Ready")[:2] == ("False", "RetryScheduled")
    # The failed Job stays planned (not let go) and remembered with what re-running needs.
    record = (waiting.status.jobs or [])[0]
    assert (record.name, record.state, record.retryable, record.finished_at) == (
        first["metadata"]["name"], "Failed", True, NOW)
    # Replanning while it waits changes nothing: no status churn.
    again = plan_asset(_facts([failed], status=waiting.status), CONFIG, NOW + timedelta(seconds=20))
    assert again.status == waiting.status and again.create_jobs == []

    due = plan_asset(_facts([failed], status=waiting.status), CONFIG, NOW + timedelta(seconds=30))
    [second] = due.create_jobs
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert _input(second)["attempt"] == {"number": 2}
    assert work_inputs(_input(second)) == _input(first)  # the same work: the worker commits to the same prefix
    prefix = f"{_input(second)['output']}/{input_hash(_input(first))[:16]}"
    assert ingest_prefix(ingest_request(_facts(), CONFIG)) == prefix
    assert _cond(due.status, "Ingested")[:2] == ("Unknown", "IngestPending")
    assert "(attempt 2)" in _cond(due.status, "Ingested")[2]
    assert due.delete_jobs == []  # the failed attempt is finished: nothing to stop
    assert [(j.name, j.state, j.attempt and j.attempt.number) for j in due.status.jobs or []] == [
        (second["metadata"]["name"], "Pending", 2)]


@pytest.mark.parametrize(("number", "seconds"), [(2, 30), (3, 60), (4, 120), (7, 960), (8, 1800), (40, 1800)])
def test_the_backoff_doubles_from_30_s_and_caps_at_30_min(number: int, seconds: int) -> None:
    assert Retries.of(CONFIG, NOW, {}).delay(number) == timedelta(seconds=seconds)


def test_attempts_are_unbounded_and_each_waits_its_backoff_from_its_own_failure() -> None:
    _, failed = _first_failed()
    jobs = [failed]
    status: MediaAssetStatus | None = None
    at = NOW
    for number in range(2, 12):
        plan = plan_asset(_facts(jobs, status), CONFIG, at + Retries.of(CONFIG, NOW, {}).delay(number)
                          - timedelta(seconds=1))
        assert plan.create_jobs == [], f"attempt {number} started before its backoff"
        plan = plan_asset(_facts(jobs, plan.status), CONFIG, at + Retries.of(CONFIG, NOW, {}).delay(number))
        [job] = plan.create_jobs
        assert _input(job)["attempt"]["number"] == number
        at = at + Retries.of(CONFIG, NOW, {}).delay(number) + timedelta(minutes=7)  # it ran 7 minutes, then failed
        jobs = [*jobs, _seen(job, "Failed", at, retryable=True, message=WORDS)]
        status = plan.status
    assert len({j.name for j in jobs}) == len(jobs) == 11  # one Job per attempt, never a name twice


def test_a_status_write_lost_after_a_create_finds_the_attempt_by_name() -> None:
    _, failed = _first_failed()
    waiting = plan_asset(_facts([failed]), CONFIG, NOW + timedelta(seconds=10))
    second = plan_asset(_facts([failed], waiting.status), CONFIG, NOW + timedelta(seconds=31)).create_jobs[0]
    # The operator died before writing status: status still names attempt 1, the API server has attempt 2.
    running = plan_asset(_facts([failed, _seen(second, "Running")], waiting.status), CONFIG,
                         NOW + timedelta(seconds=40))
    assert running.create_jobs == []
    assert _cond(running.status, "Ingested")[:2] == ("Unknown", "IngestRunning")
    assert [j.name for j in running.status.jobs or []] == [second["metadata"]["name"]]


def test_a_failed_job_deleted_while_the_retry_waits_is_retried_from_its_record() -> None:
    first, failed = _first_failed()
    waiting = plan_asset(_facts([failed]), CONFIG, NOW + timedelta(seconds=10))
    gone = plan_asset(_facts([], waiting.status), CONFIG, NOW + timedelta(seconds=15))
    assert gone.create_jobs == [] and _cond(gone.status, "Ingested")[1] == "RetryScheduled"
    [second] = plan_asset(_facts([], gone.status), CONFIG, NOW + timedelta(seconds=30)).create_jobs
    assert _input(second)["attempt"] == {"number": 2}


def test_a_permanent_failure_waits_for_the_retry_annotation() -> None:
    first, failed = _first_failed(retryable=False)
    stands = plan_asset(_facts([failed]), CONFIG, NOW + timedelta(hours=5))
    assert stands.create_jobs == [] and stands.status.phase == "Failed"
    status, reason, message = _cond(stands.status, "Ingested")
    assert (status, reason) == ("False", "IngestFailed") and message.endswith(f"failed: {WORDS}")

    asked = plan_asset(_facts([failed], stands.status, {RETRY_ANNOTATION: "fix-1"}), CONFIG, NOW + timedelta(hours=5))
    [second] = asked.create_jobs  # at once: no backoff for an asked-for run
    assert _input(second)["attempt"] == {"number": 2, "retry": "fix-1"}
    assert asked.status.phase == "Ingesting"
    # It fails permanently again: the same token does not run it a third time; a new token does.
    refused = _seen(second, "Failed", NOW + timedelta(hours=6), message="ingest: source sha256 differs")
    again = plan_asset(_facts([failed, refused], asked.status, {RETRY_ANNOTATION: "fix-1"}), CONFIG,
                       NOW + timedelta(hours=7))
    assert again.create_jobs == [] and again.status.phase == "Failed"
    [third] = plan_asset(_facts([failed, refused], again.status, {RETRY_ANNOTATION: "fix-2"}), CONFIG,
                         NOW + timedelta(hours=7)).create_jobs
    assert _input(third)["attempt"] == {"number": 3, "retry": "fix-2"}


def test_the_retry_annotation_skips_a_pending_backoff() -> None:
    _, failed = _first_failed()
    [second] = plan_asset(_facts([failed], annotations={RETRY_ANNOTATION: "now"}), CONFIG,
                          NOW + timedelta(seconds=1)).create_jobs
    assert _input(second)["attempt"] == {"number": 2, "retry": "now"}
    # Any annotation value is a token: a long one is named by its hash, so the input still validates.
    [third] = plan_asset(_facts([failed], annotations={RETRY_ANNOTATION: "x" * 5000}), CONFIG,
                         NOW + timedelta(seconds=1)).create_jobs
    assert _input(third)["attempt"]["retry"].startswith("sha256:")


def test_a_success_whose_result_was_never_read_is_recovered_never_ready_without_it() -> None:
    first = plan_asset(_facts(), CONFIG, NOW).create_jobs[0]
    lost = _seen(first, "Succeeded", NOW)  # the pod was gone before the operator read its message
    recover = plan_asset(_facts([lost]), CONFIG, NOW + timedelta(seconds=1))
    [second] = recover.create_jobs
    assert _input(second)["attempt"] == {"number": 2, "recover": True}
    assert recover.status.technical is None and recover.status.phase == "Ingesting"
    assert _cond(recover.status, "Ready")[0] == "False"
    assert "recovering the committed result" in _cond(recover.status, "Ingested")[2]

    reported = _seen(second, "Succeeded", NOW + timedelta(seconds=20), result=asset_case._result(_facts()))
    done = plan_asset(_facts([lost, reported], recover.status), CONFIG, NOW + timedelta(seconds=21))
    assert done.create_jobs == [] and done.status.technical is not None
    assert done.status.technical.sha256 == "ab" * 32
    assert _cond(done.status, "Ready")[:2] == ("True", "AllStepsSucceeded")
    # Both Jobs deleted later: status remembers, nothing runs again.
    later = plan_asset(_facts([], done.status), CONFIG, NOW + timedelta(days=1))
    assert later.create_jobs == [] and _cond(later.status, "Ready")[0] == "True"


def test_a_recovery_that_loses_its_result_too_backs_off() -> None:
    first = plan_asset(_facts(), CONFIG, NOW).create_jobs[0]
    lost = _seen(first, "Succeeded", NOW)
    recover = plan_asset(_facts([lost]), CONFIG, NOW)
    [second] = recover.create_jobs
    lost_again = _seen(second, "Succeeded", NOW + timedelta(seconds=10))
    waiting = plan_asset(_facts([lost, lost_again], recover.status), CONFIG, NOW + timedelta(seconds=11))
    assert waiting.create_jobs == []
    status, reason, message = _cond(waiting.status, "Ingested")
    assert (status, reason) == ("Unknown", "RetryScheduled")
    assert message.startswith("attempt 3 after 2026-11-23T12:01:10Z: ") and "result was not read" in message


def test_a_job_failure_is_transient_unless_the_failjob_rule_ended_it() -> None:
    def job(reason: str) -> dict[str, Any]:
        return {"metadata": {"name": "ep1-ingest-1", "labels": {"kubemam.io/step": "ingest"}},
                "status": {"conditions": [{"type": "Failed", "status": "True", "reason": reason,
                                           "lastTransitionTime": "2026-11-23T12:00:00Z"}]}}

    retried = json.dumps({"error": WORDS, "retryable": True})
    assert observe_job(job("BackoffLimitExceeded"), retried).retryable
    assert observe_job(job("BackoffLimitExceeded"), retried).finished_at == NOW
    assert observe_job(job("DeadlineExceeded"), None).retryable
    assert not observe_job(job("PodFailurePolicy"), json.dumps({"error": "ingest: no such source"})).retryable
    complete = {"metadata": {"name": "x"}, "status": {"conditions": [
        {"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-23T12:00:00Z"}]}}
    assert observe_job(complete, None).finished_at == NOW and not observe_job(complete, None).retryable


def test_a_transient_transcode_failure_is_retried_and_a_lost_result_recovered() -> None:
    ladder = transcode_case._ladder()
    facts = transcode_case._facts(ladder)
    first = plan_asset(facts, CONFIG, NOW).create_jobs[0]
    failed = JobObservation(first["metadata"]["name"], "transcode", "h", "Failed", WORDS, finished_at=NOW,
                            retryable=True)
    waiting = plan_asset(replace(facts, jobs=[*facts.jobs, failed]), CONFIG, NOW + timedelta(seconds=5))
    assert waiting.create_jobs == [] and waiting.status.phase == "Transcoding"
    assert _cond(waiting.status, "Transcoded")[:2] == ("Unknown", "RetryScheduled")
    [second] = plan_asset(replace(facts, jobs=[*facts.jobs, failed], status=waiting.status), CONFIG,
                          NOW + timedelta(seconds=30)).create_jobs
    assert _input(second)["attempt"] == {"number": 2} and work_inputs(_input(second)) == _input(first)

    # Succeeded, but the message was lost: not ResultUnreadable any more, a recover attempt.
    lost = JobObservation(second["metadata"]["name"], "transcode", "h", "Succeeded", finished_at=NOW)
    recovering = plan_asset(replace(facts, jobs=[*facts.jobs, failed, lost]), CONFIG, NOW + timedelta(minutes=1))
    [third] = recovering.create_jobs
    assert _input(third)["attempt"] == {"number": 3, "recover": True}
    assert recovering.status.phase == "Transcoding"
    done = plan_asset(replace(facts, jobs=[*facts.jobs, failed, lost, transcode_case._succeed(third)],
                              status=recovering.status), CONFIG, NOW + timedelta(minutes=2))
    assert done.create_jobs == [] and _cond(done.status, "Transcoded")[:2] == ("True", "RenditionsReady")


def test_a_compact_transcode_result_without_uris_still_makes_renditions() -> None:
    facts = transcode_case._facts(transcode_case._ladder())
    job = plan_asset(facts, CONFIG, NOW).create_jobs[0]
    full = transcode_case._succeed(job)
    compact = replace(full, result={"renditions": [{k: v for k, v in r.items() if k not in ("uri", "sha256")}
                                                   for r in (full.result or {})["renditions"]]})
    done = plan_asset(replace(facts, jobs=[*facts.jobs, compact]), CONFIG, NOW)
    assert done.create_jobs == []
    assert [r.uri for r in done.status.renditions or []] == [
        f"{r['output']}/{r['name']}.mp4" for kind in ("video", "audio") for r in _input(job)[kind]]
    assert all(r.manifest_uri and r.manifest_uri.endswith("/manifest.json") for r in done.status.renditions or [])


def test_a_transient_package_failure_is_retried_and_a_lost_result_recovered() -> None:
    ladder = package_case._ladder()
    first_plan = package_case._after_transcode(ladder)
    [first] = [j for j in first_plan.create_jobs if j["metadata"]["labels"]["kubemam.io/step"] == "package"]
    failed = JobObservation(first["metadata"]["name"], "package", "h", "Failed",
                            "package failed (the Job retries it): ReadTimeoutError", finished_at=NOW, retryable=True)
    waiting = package_case._after_transcode(ladder, [failed], at=NOW + timedelta(seconds=5))
    assert not [j for j in waiting.create_jobs if j["metadata"]["labels"]["kubemam.io/step"] == "package"]
    assert _cond(waiting.status, "Packaged")[:2] == ("Unknown", "RetryScheduled")
    assert waiting.status.phase == "Packaging"
    retry = package_case._after_transcode(ladder, [failed], at=NOW + timedelta(seconds=30))
    [second] = [j for j in retry.create_jobs if j["metadata"]["labels"]["kubemam.io/step"] == "package"]
    assert work_inputs(_input(second)) == _input(first)  # same output prefix, same work hash
    lost = JobObservation(second["metadata"]["name"], "package", "h", "Succeeded", finished_at=NOW)
    recover = package_case._after_transcode(ladder, [failed, lost], at=NOW + timedelta(minutes=1))
    [third] = [j for j in recover.create_jobs if j["metadata"]["labels"]["kubemam.io/step"] == "package"]
    assert _input(third)["attempt"] == {"number": 3, "recover": True}
