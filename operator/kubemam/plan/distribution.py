"""The rights planner of one namespace, pure: from the gathered facts (windows, assets, distribute
Jobs, targets) and the clock, everything the controller must do, in the order it must do it.

- What finished distribute Jobs did is carried into asset `status.distribution`, window history,
  Events, metrics and the audit log; then the Jobs are marked applied and given a TTL.
- plan/availability.py decides what must be published and taken down; the next batch (takedowns
  first, at most MAX_BATCH) becomes a distribute Job when none is running, or waits out the backoff
  of a batch that failed.
- Each window gets its whole desired status (plan/rights.py, conditions through plan/conditions.py).

Write order (`DistributionPlan.writes`): asset status, then the Job (at a transition the takedown
comes first), then window status, Events and only then the applied mark. History and Events are
written before the mark, so a crash between the two re-records the Job, and that adds nothing:
history entries already there are skipped and Events have fixed names (create tolerates 409).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, cast

from pydantic import ValidationError

from kubemam.api.asset import DistributionStatus, MediaAssetStatus
from kubemam.api.common import API_VERSION, GROUP
from kubemam.api.distribution import DistributionTarget
from kubemam.api.kinds import RIGHTS_WINDOW
from kubemam.api.rights import HistoryEntry, RightsWindowSpec, RightsWindowStatus
from kubemam.config import OperatorConfig
from kubemam.plan.availability import Action, Asset, Window, plan_rights
from kubemam.plan.conditions import status_patch
from kubemam.plan.hashing import input_hash
from kubemam.plan.jobs import STEP_INPUT_ENV, Owner, StepJobRequest, build_step_job
from kubemam.plan.jobstate import job_state
from kubemam.plan.rights import plan_window, targets_verdict
from kubemam.steps.distribute import DistributeAction, DistributeFeed, DistributeInput
from kubemam.steps.registry import DISTRIBUTE
from kubemam.timestamps import parse_time

APPLIED = f"{GROUP}/applied"
# Linux caps one environment string at 128 KiB; an action is ~260 bytes of step input.
MAX_BATCH = 200
RECORDED_JOB_TTL = 86400
MAX_EVENT_NAME = 253
_EPOCH = datetime.min.replace(tzinfo=UTC)

JobState = Literal["Pending", "Running", "Succeeded", "Failed"]


# --- facts -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WindowFacts:
    name: str
    generation: int
    spec: RightsWindowSpec | None  # None: the spec does not validate; the window is left alone
    status: dict[str, Any] = field(default_factory=dict)  # as stored
    deleting: bool = False


@dataclass(frozen=True)
class AssetFacts:
    name: str
    labels: dict[str, str]
    status: MediaAssetStatus | None  # None: the status does not validate; the asset is left out


@dataclass(frozen=True)
class DistributeJob:
    """A distribute Job as observed."""

    name: str
    state: JobState
    inputs: DistributeInput | None  # None: not read (not needed), or not this version's shape
    finished_at: datetime | None = None  # completionTime, or when it failed
    applied: bool = False  # its outcome is already recorded


@dataclass(frozen=True)
class DistributionFacts:
    namespace: str
    windows: list[WindowFacts]
    assets: list[AssetFacts]
    jobs: list[DistributeJob]
    targets: list[DistributionTarget]
    target_problem: str | None = None  # the targets ConfigMap does not parse: nothing moves


def observe_job(job: dict[str, Any]) -> DistributeJob:
    """A distribute Job (a batch/v1 manifest as listed) as plain facts. Its input is read only when
    the planner needs it (a Job to record, or a failure to count): a namespace keeps a day of Jobs."""
    meta = job.get("metadata") or {}
    state = cast(JobState, job_state(job)[0])
    status = job.get("status") or {}
    applied = (meta.get("annotations") or {}).get(APPLIED) == "true"
    finished = None
    if state == "Succeeded":
        finished = parse_time(status.get("completionTime"))
    elif state == "Failed":
        failed: dict[str, Any] = next((c for c in status.get("conditions") or []
                                       if c.get("type") == "Failed" and c.get("status") == "True"), {})
        finished = parse_time(failed.get("lastTransitionTime"))
    needed = state == "Failed" or (state == "Succeeded" and not applied)
    return DistributeJob(name=str(meta.get("name", "")), state=state, inputs=_inputs(job) if needed else None,
                         finished_at=finished, applied=applied)


def _inputs(job: dict[str, Any]) -> DistributeInput | None:
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    raw = next((e.get("value") for e in containers[0].get("env") or [] if e.get("name") == STEP_INPUT_ENV), None)
    try:
        return DistributeInput.model_validate(json.loads(raw)) if raw else None
    except (ValueError, ValidationError):
        return None


# --- the plan ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PatchAssetStatus:
    asset: str
    patch: dict[str, Any]


@dataclass(frozen=True)
class CreateJob:
    job: dict[str, Any]
    inputs: DistributeInput

    @property
    def name(self) -> str:
        return str(self.job["metadata"]["name"])


@dataclass(frozen=True)
class PatchWindowStatus:
    window: str
    patch: dict[str, Any]


@dataclass(frozen=True)
class CreateEvent:
    event: dict[str, Any]


@dataclass(frozen=True)
class AnnotateJob:
    job: str
    annotations: dict[str, str]
    ttl_seconds: int


Write = PatchAssetStatus | CreateJob | PatchWindowStatus | CreateEvent | AnnotateJob
W = TypeVar("W", PatchAssetStatus, CreateJob, PatchWindowStatus, CreateEvent, AnnotateJob)


@dataclass(frozen=True)
class Observation:
    """One verified action, for the metrics."""

    channel: str
    action: str  # publish | takedown
    takedown_latency: float | None = None  # seconds from the window's end to the verified removal


@dataclass
class DistributionPlan:
    writes: list[Write]  # in order
    windows: dict[str, RightsWindowStatus]  # every live window's whole desired status
    failed_attempts: int | None  # the gauge's value; None: unchanged (a Job is running)
    observations: list[Observation]
    audit: list[dict[str, Any]]  # one structured log line per verified action
    wake: datetime | None  # the next instant this namespace needs a reconcile

    def of(self, kind: type[W]) -> list[W]:
        return [w for w in self.writes if isinstance(w, kind)]

    @property
    def job(self) -> CreateJob | None:
        return next((w for w in self.writes if isinstance(w, CreateJob)), None)


# --- pure helpers ------------------------------------------------------------------------------

def batch_of(actions: list[Action]) -> list[Action]:
    """The next Job's share: takedowns before any publish (they are the ones with a deadline, and a
    broken package must not hold them back), at most MAX_BATCH so the input fits one env variable."""
    takedowns = [a for a in actions if a.action == "takedown"]
    return (takedowns or actions)[:MAX_BATCH]


def retry_delay(failures: int) -> timedelta:
    """2, 4, 8 … seconds after the n-th failure, at most five minutes."""
    return timedelta(seconds=min(300, 2 ** max(1, failures)))


def package_prefix(status: MediaAssetStatus) -> str | None:
    for package in status.packages or []:
        return package.manifest_uri.rsplit("/", 1)[0]
    return None


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def event_name(window: str, job: str, action: DistributeAction) -> str:
    """Fixed per (Job, action): recording the same Job again creates nothing new."""
    digest = input_hash({"job": job, "action": action.action, "asset": action.asset, "target": action.target})[:16]
    return f"{window[:MAX_EVENT_NAME - 17].rstrip('.-')}.{digest}"


def window_event(namespace: str, job: str, action: DistributeAction, verb: str, at: datetime) -> dict[str, Any]:
    where = f"{action.target} ({action.channel}, {', '.join(action.territories)})"
    done = "published to" if verb == "Published" else "taken down from"
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": event_name(action.window, job, action), "namespace": namespace},
        "involvedObject": {"apiVersion": API_VERSION, "kind": RIGHTS_WINDOW.kind, "name": action.window,
                           "namespace": namespace},
        "reason": verb, "type": "Normal", "firstTimestamp": _stamp(at), "lastTimestamp": _stamp(at), "count": 1,
        "message": f"{action.asset} {done} {where}; verified by listing {action.origin}",
        "source": {"component": "kubemam"},
    }


def _distribute_job(namespace: str, inputs: DistributeInput, config: OperatorConfig) -> dict[str, Any]:
    request = StepJobRequest(owner=Owner(RIGHTS_WINDOW.kind, "rights", "", namespace), step=DISTRIBUTE,
                             inputs=inputs.to_wire())
    job = build_step_job(request, config)
    # A batch serves many windows and outlives any one of them (deleting a window takes its content
    # down): no owner. It expires a day after it finished only once its outcome is recorded
    # (AnnotateJob), so an operator down for longer never loses one.
    job["metadata"].pop("ownerReferences", None)
    return job


def _next_inputs(namespace: str, actions: list[DistributeAction], attempt: int,
                 feeds: dict[str, list[dict[str, Any]]], config: OperatorConfig) -> DistributeInput:
    wire = [a.to_wire() for a in actions]
    draft: dict[str, Any] = {
        "namespace": namespace, "actions": wire, "actionsHash": input_hash(wire), "attempt": attempt,
        "feeds": [{"uri": uri, "entries": entries} for uri, entries in sorted(feeds.items())],
        "usage": f"{config.library_uri.rstrip('/')}/usage/{namespace}/"}
    batch = input_hash(draft)[:16]
    return DistributeInput(namespace=namespace, batch=batch, actions=actions, actions_hash=draft["actionsHash"],
                           attempt=attempt, feeds=[DistributeFeed(uri=uri, entries=entries)
                                                   for uri, entries in sorted(feeds.items())],
                           usage=f"{draft['usage']}{batch}.json")


# --- the planner -------------------------------------------------------------------------------

class _Recorder:
    """Finished Jobs carried into asset distribution, window history, Events, metrics and the audit."""

    def __init__(self, facts: DistributionFacts, ends: dict[str, datetime], now: datetime) -> None:
        self.namespace, self.ends, self.now = facts.namespace, ends, now
        self.distribution = {a.name: list(a.status.distribution or []) for a in facts.assets if a.status is not None}
        self.history: dict[str, list[HistoryEntry]] = defaultdict(list)
        self.events: list[CreateEvent] = []
        self.observations: list[Observation] = []
        self.audit: list[dict[str, Any]] = []
        self.annotate: list[AnnotateJob] = []

    def set(self, action: DistributeAction, state: Literal["Published", "TakenDown", "Failed"],
            at: datetime) -> None:
        """The asset's record for the action's target, replaced (an asset that is gone has none)."""
        entries = self.distribution.get(action.asset)
        if entries is None:
            return
        entries[:] = [d for d in entries if d.target != action.target]
        entries.append(DistributionStatus(target=action.target, window=action.window, channel=action.channel,
                                          territories=action.territories, state=state, since=at,
                                          origin=action.origin))

    def succeeded(self, job: DistributeJob, inputs: DistributeInput) -> None:
        at = job.finished_at or self.now
        for action in inputs.actions:
            verb: Literal["Published", "TakenDown"] = "Published" if action.action == "publish" else "TakenDown"
            self.set(action, verb, at)
            self.history[action.window].append(HistoryEntry(
                at=at, action=verb, asset=action.asset, channel=action.channel, territories=action.territories,
                target=action.target, verified=True))
            end = self.ends.get(action.window)
            latency = (at - end).total_seconds() if verb == "TakenDown" and end is not None and end <= at else None
            self.observations.append(Observation(action.channel, action.action, latency))
            self.audit.append({"event": verb.lower(), "namespace": self.namespace, "asset": action.asset,
                               "target": action.target, "channel": action.channel,
                               "territories": action.territories, "window": action.window,
                               "at": at.isoformat(), "verified": True})
            self.events.append(CreateEvent(window_event(self.namespace, job.name, action, verb, at)))

    def failed(self, job: DistributeJob, inputs: DistributeInput) -> None:
        """A failed batch may have published some of its actions: mark them, so that with no window open
        they are taken down (a takedown of an origin that holds nothing verifies at once) and with one
        open they are published again."""
        for action in inputs.actions:
            entries = self.distribution.get(action.asset)
            if action.action != "publish" or entries is None:
                continue
            if any(d.target == action.target and d.state == "Published" for d in entries):
                continue
            self.set(action, "Failed", job.finished_at or self.now)

    def record(self, job: DistributeJob) -> None:
        if job.inputs is not None and job.state == "Succeeded":
            self.succeeded(job, job.inputs)
        elif job.inputs is not None:
            self.failed(job, job.inputs)
        self.annotate.append(AnnotateJob(job.name, {APPLIED: "true"}, RECORDED_JOB_TTL))


def plan_distribution(facts: DistributionFacts, config: OperatorConfig, now: datetime) -> DistributionPlan:
    live = [(w, w.spec) for w in facts.windows if w.spec is not None and not w.deleting]
    windows = [Window(w.name, spec) for w, spec in live]
    recorder = _Recorder(facts, {w.name: w.spec.end for w in windows}, now)

    active: DistributeJob | None = None
    failures: dict[str, int] = defaultdict(int)
    last_failure: dict[str, datetime] = {}
    for seen in sorted(facts.jobs, key=lambda j: j.finished_at or _EPOCH):
        if seen.state in ("Pending", "Running"):
            active = seen
            continue
        if seen.state == "Failed" and seen.inputs is not None and seen.inputs.actions_hash:
            key = seen.inputs.actions_hash
            failures[key] += 1
            last_failure[key] = max(last_failure.get(key, _EPOCH), seen.finished_at or now)
        if not seen.applied:
            recorder.record(seen)

    assets = [Asset(a.name, a.labels, package_prefix(a.status), recorder.distribution[a.name])
              for a in facts.assets if a.status is not None]
    # An unreadable target list is not "every target removed": report it, move nothing.
    targets = [] if facts.target_problem else facts.targets
    rights = plan_rights(facts.namespace, windows, assets, targets, now)
    actions = [] if facts.target_problem else rights.actions

    wake = rights.next_transition
    job: CreateJob | None = None
    failed_attempts: int | None = None if actions else 0
    if actions and active is None:
        batch = [a.to_input() for a in batch_of(actions)]
        actions_hash = input_hash([a.to_wire() for a in batch])
        failed_attempts = failures.get(actions_hash, 0)
        retry_at = last_failure[actions_hash] + retry_delay(failures[actions_hash]) \
            if actions_hash in last_failure else None
        if retry_at is not None and now < retry_at:
            # Retried until it succeeds, but with backoff: a broken origin must not become a Job storm.
            wake = min(retry_at, wake) if wake else retry_at
        else:
            inputs = _next_inputs(facts.namespace, batch, failed_attempts, rights.feeds, config)
            job = CreateJob(_distribute_job(facts.namespace, inputs, config), inputs)

    verdict = targets_verdict(facts.target_problem, len(facts.targets))
    desired: dict[str, RightsWindowStatus] = {}
    window_writes: list[Write] = []
    for window, spec in live:
        status = plan_window(spec, RightsWindowStatus.model_validate(window.status), window.generation, now,
                             rights.matched.get(window.name, 0), rights.conflicts.get(window.name, []),
                             recorder.history.get(window.name), verdict)
        desired[window.name] = status
        patch = status_patch(window.status, status.to_wire())
        if patch:
            window_writes.append(PatchWindowStatus(window.name, patch))

    asset_writes: list[Write] = []
    for asset in facts.assets:
        if asset.status is None:
            continue
        before = [d.to_wire() for d in asset.status.distribution or []]
        after = [d.to_wire() for d in recorder.distribution[asset.name]]
        if after != before:
            asset_writes.append(PatchAssetStatus(asset.name, {"distribution": after}))

    writes: list[Write] = [*asset_writes, *([job] if job else []), *window_writes, *recorder.events,
                           *recorder.annotate]
    return DistributionPlan(writes, desired, failed_attempts, recorder.observations, recorder.audit, wake)
