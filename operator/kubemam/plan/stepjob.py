"""The step pattern, written once: a planned step Job is observed (live, or remembered in status after
it was deleted), created when missing, recorded in status.jobs, and judged by its state.

Attempts. A step Job whose inputs are unchanged runs again only as a new *attempt*: the attempt marker
(api.asset.StepAttempt) goes into its input, so its name — the hash of the inputs — is new, while the
workers hash only the work (steps.base.work_inputs) and find what an earlier attempt committed.

- A transient failure (anything but the FailJob rule on exit 2: an outage that outlasted backoffLimit, a
  deadline, pods killed) is followed by the next attempt after a backoff from the failure time:
  `step_retry_seconds` doubling per attempt up to `step_retry_max_seconds`, with no limit on attempts.
- A permanent failure (StepError, exit 2) waits for changed inputs, or for the retry annotation
  (`steps.kubemam.io/retry=<token>`): a token the failed attempt did not carry starts the next one at once.
- A success whose result was not read (pod gone before the operator saw it) is followed by a *recover*
  attempt, which finds the committed manifest and reports it.

The current attempt is found from status: its record carries its attempt marker, and the chain is walked
forward over Jobs the API server holds (a status write lost after a create is found again by name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kubemam.api.asset import StepAttempt, StepJob
from kubemam.api.common import GROUP
from kubemam.config import OperatorConfig
from kubemam.plan.conditions import Verdict
from kubemam.plan.hashing import input_hash
from kubemam.plan.jobs import LABEL_STEP, StepJobRequest, build_step_job
from kubemam.plan.jobstate import JobObservation
from kubemam.plan.staging import StepInputTooLarge
from kubemam.steps.base import ATTEMPT_FIELD

FINISHED = ("Succeeded", "Failed")
RETRY_ANNOTATION = f"steps.{GROUP}/retry"  # not under kubemam.io/: Kopf keeps its state there and ignores it
MAX_WALK = 64  # attempts walked forward over live Jobs in one reconcile; more are found on the next
MAX_TOKEN = 63


def observe(jobs: list[JobObservation], finished: list[StepJob], name: str) -> JobObservation | None:
    """The Job as the API server holds it, else as status remembers it once finished: a Job that finished
    and was then deleted (by hand or a TTL) is not run again."""
    live = next((j for j in jobs if j.name == name), None)
    if live is not None:
        return live
    record = next((r for r in finished if r.name == name and r.state in FINISHED), None)
    if record is None:
        return None
    return JobObservation(record.name, record.step, record.input_hash, record.state, record.message,
                          finished_at=record.finished_at, retryable=bool(record.retryable))


@dataclass(frozen=True)
class Retries:
    """What re-running needs: the clock, the backoff and the asset's retry token."""

    now: datetime
    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(minutes=30)
    token: str | None = None

    @classmethod
    def of(cls, config: OperatorConfig, now: datetime, annotations: dict[str, str]) -> Retries:
        token = annotations.get(RETRY_ANNOTATION) or None
        if token is not None and len(token) > MAX_TOKEN:
            token = f"sha256:{input_hash(token)[:16]}"  # a long value still names one request, and fits the input
        return cls(now, timedelta(seconds=config.step_retry_seconds), timedelta(seconds=config.step_retry_max_seconds),
                   token)

    def delay(self, number: int) -> timedelta:
        """The wait before attempt `number` (2 is the first re-run): base, doubling, capped."""
        return min(self.base * (1 << min(max(number - 2, 0), 30)), self.cap)


def attempt_of(request: StepJobRequest) -> StepAttempt | None:
    marker = request.inputs.get(ATTEMPT_FIELD)
    return StepAttempt.model_validate(marker) if marker else None


def with_attempt(request: StepJobRequest, attempt: StepAttempt | None) -> StepJobRequest:
    inputs = {k: v for k, v in request.inputs.items() if k != ATTEMPT_FIELD}
    if attempt is not None:
        inputs[ATTEMPT_FIELD] = attempt.to_wire()
    return replace(request, inputs=inputs)


def _record(request: StepJobRequest, observed: JobObservation | None) -> StepJob:
    return StepJob(step=request.step, name=request.name, input_hash=request.digest,
                   state=observed.state if observed is not None else "Pending",
                   message=observed.message if observed else None, attempt=attempt_of(request),
                   finished_at=observed.finished_at if observed else None,
                   retryable=True if observed is not None and observed.state == "Failed" and observed.retryable
                   else None)


@dataclass(frozen=True)
class StepRun:
    request: StepJobRequest  # the Job this step runs now, or next
    observed: JobObservation | None
    create: dict[str, Any] | None  # the Job manifest, when it does not exist yet
    # The finished attempt this one follows (a transient failure, a lost result, a retried failure).
    after: StepJobRequest | None = None
    after_observed: JobObservation | None = None
    due: datetime | None = None  # not created before then: the backoff after a transient failure
    # Set: the input is too big even to stage (plan/staging.py); no Job exists, and none is recorded.
    refused: str | None = None

    @property
    def state(self) -> str:
        """Pending, Running, Succeeded, Failed — or Retrying: a transient failure, the next attempt not yet due.
        A refused input is Failed: nothing runs until the spec changes."""
        if self.observed is not None:
            return self.observed.state
        if self.refused is not None:
            return "Failed"
        return "Retrying" if self.waiting else "Pending"

    @property
    def waiting(self) -> bool:
        return self.observed is None and self.create is None and self.due is not None

    @property
    def attempt(self) -> StepAttempt | None:
        return attempt_of(self.request)

    @property
    def record(self) -> StepJob:
        """What status.jobs remembers: while the next attempt waits, the failed one (so it is kept, and its
        failure time and marker survive the Job)."""
        if self.waiting and self.after is not None:
            return _record(self.after, self.after_observed)
        return _record(self.request, self.observed)

    @property
    def result(self) -> dict[str, Any] | None:
        return self.observed.result if self.observed is not None else None

    def failure(self) -> str:
        """`Job NAME failed: <the worker's words>` (a permanent failure: RETRY_ANNOTATION runs it again)."""
        if self.refused is not None and self.observed is None:
            return f"{self.request.step} input refused: {self.refused}"
        message = self.observed.message if self.observed else None
        return f"Job {self.request.name} failed" + (f": {message}" if message else "")

    def note(self) -> str:
        """Which attempt this is, for a condition's message ('' for a first run)."""
        attempt = self.attempt
        if attempt is None:
            return ""
        return f" (attempt {attempt.number}{': recovering the committed result' if attempt.recover else ''})"

    def retry_verdict(self, type_: str) -> Verdict:
        """`<Step>ed=Unknown RetryScheduled "attempt N after <time>: <the worker's words>"`."""
        assert self.due is not None and self.attempt is not None
        after = self.after_observed
        words = (after.message if after else None) or (
            f"Job {after.name} succeeded but its result was not read" if after and after.state == "Succeeded"
            else "the Job failed")
        due = self.due.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return Verdict(type_, "Unknown", "RetryScheduled", f"attempt {self.attempt.number} after {due}: {words}")


def build_or_refuse(request: StepJobRequest, config: OperatorConfig) -> tuple[dict[str, Any] | None, str | None]:
    """The Job manifest, or (no Job) why its input is too big even to stage, naming the field."""
    try:
        return build_step_job(request, config), None
    except StepInputTooLarge as err:
        return None, str(err)


def _successor(attempt: StepAttempt | None, observed: JobObservation, retries: Retries,
               has_result: Callable[[JobObservation], bool]) -> tuple[StepAttempt, datetime] | None:
    """The attempt that must follow a finished one, and when; None when it stands."""
    number = (attempt.number if attempt else 1) + 1
    token = attempt.retry if attempt else None
    finished = observed.finished_at or retries.now
    if observed.state == "Failed":
        if retries.token and retries.token != token:  # asked for: at once, whatever the failure
            return StepAttempt(number=number, retry=retries.token), retries.now
        if observed.retryable:
            return StepAttempt(number=number, retry=token), finished + retries.delay(number)
        return None
    if observed.state == "Succeeded" and not has_result(observed):
        # The first recovery runs at once; a recovery that lost its result too backs off like a failure.
        due = finished + retries.delay(number) if attempt and attempt.recover else retries.now
        return StepAttempt(number=number, retry=token, recover=True), due
    return None


def _newest_recorded(request: StepJobRequest, finished: list[StepJob]) -> StepAttempt | None:
    """The newest attempt of these inputs that status remembers."""
    best: StepAttempt | None = None
    for record in finished:
        if record.step != request.step:
            continue
        if record.name == with_attempt(request, record.attempt).name and \
                (record.attempt.number if record.attempt else 1) > (best.number if best else 1):
            best = record.attempt
    return best


def run_step(request: StepJobRequest, jobs: list[JobObservation], finished: list[StepJob],
             config: OperatorConfig, start: bool = True, retries: Retries | None = None,
             has_result: Callable[[JobObservation], bool] = lambda _: True) -> StepRun:
    """`start=False` observes without creating (a step that must wait for another run to end). Without
    `retries` a finished Job stands (the archive steps keep their own rules); with them, the current
    attempt of the request's inputs is found and the next one planned (module docstring)."""
    if retries is None:
        observed = observe(jobs, finished, request.name)
        job, refused = build_or_refuse(request, config) if observed is None and start else (None, None)
        return StepRun(request, observed, job, refused=refused)
    current = with_attempt(request, _newest_recorded(request, finished))
    observed = observe(jobs, finished, current.name)
    after: StepJobRequest | None = None
    after_observed: JobObservation | None = None
    for _ in range(MAX_WALK):
        if observed is None:
            break
        successor = _successor(attempt_of(current), observed, retries, has_result)
        if successor is None:
            break
        attempt, due = successor
        after, after_observed = current, observed
        current = with_attempt(request, attempt)
        observed = observe(jobs, finished, current.name)
        if observed is None and due > retries.now:
            return StepRun(current, None, None, after, after_observed, due)
    create, refused = build_or_refuse(current, config) if observed is None and start else (None, None)
    return StepRun(current, observed, create, after, after_observed, refused=refused)


def superseded(jobs: list[JobObservation], created: list[dict[str, Any]]) -> list[str]:
    """Unfinished Jobs of a step for which a new Job (new inputs) is being created: at most one Job per
    (owner, step) runs, so the old one is deleted. Outputs are content-addressed: nothing it wrote is
    reused by mistake, and what it did not finish is never committed (manifests are written last)."""
    new = {(job["metadata"]["labels"].get(LABEL_STEP), job["metadata"]["name"]) for job in created}
    steps = {step for step, _ in new}
    names = {name for _, name in new}
    return [j.name for j in jobs if j.step in steps and j.name not in names and j.state not in FINISHED]


@dataclass
class StepOutcome:
    """What one step adds to the owner's plan."""

    create_jobs: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[StepJob] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    phase: str | None = None  # None: this step is done and does not hold the asset back
    running: JobObservation | None = None

    def add(self, run: StepRun) -> StepRun:
        if run.create is not None:
            self.create_jobs.append(run.create)
        if run.refused is None:  # a Job that was never made is not a Job of the asset's
            self.jobs.append(run.record)
        return run
