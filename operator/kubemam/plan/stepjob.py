"""The step pattern, written once: a planned step Job is observed (live, or remembered in status after
it was deleted), created when missing, recorded in status.jobs, and judged by its state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubemam.api.asset import StepJob
from kubemam.config import OperatorConfig
from kubemam.plan.conditions import Verdict
from kubemam.plan.jobs import LABEL_STEP, StepJobRequest, build_step_job
from kubemam.plan.jobstate import JobObservation

FINISHED = ("Succeeded", "Failed")


def observe(jobs: list[JobObservation], finished: list[StepJob], name: str) -> JobObservation | None:
    """The Job as the API server holds it, else as status remembers it once finished: a Job that finished
    and was then deleted (by hand or a TTL) is not run again."""
    live = next((j for j in jobs if j.name == name), None)
    if live is not None:
        return live
    record = next((r for r in finished if r.name == name and r.state in FINISHED), None)
    if record is None:
        return None
    return JobObservation(record.name, record.step, record.input_hash, record.state, record.message)


@dataclass(frozen=True)
class StepRun:
    request: StepJobRequest
    observed: JobObservation | None
    create: dict[str, Any] | None  # the Job manifest, when it does not exist yet

    @property
    def state(self) -> str:
        return self.observed.state if self.observed is not None else "Pending"

    @property
    def record(self) -> StepJob:
        return StepJob(step=self.request.step, name=self.request.name, input_hash=self.request.digest,
                       state=self.state, message=self.observed.message if self.observed else None)

    @property
    def result(self) -> dict[str, Any] | None:
        return self.observed.result if self.observed is not None else None

    def failure(self) -> str:
        """`Job NAME failed: <the worker's words>`."""
        message = self.observed.message if self.observed else None
        return f"Job {self.request.name} failed" + (f": {message}" if message else "")


def run_step(request: StepJobRequest, jobs: list[JobObservation], finished: list[StepJob],
             config: OperatorConfig, start: bool = True) -> StepRun:
    """`start=False` observes without creating (a step that must wait for another run to end)."""
    observed = observe(jobs, finished, request.name)
    create = build_step_job(request, config) if observed is None and start else None
    return StepRun(request, observed, create)


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
        self.jobs.append(run.record)
        return run
