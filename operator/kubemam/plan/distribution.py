"""The rights planner of one namespace, pure: from the gathered facts (windows, assets, distribute
Jobs, targets) and the clock, everything the controller must do, in the order it must do it.

- What finished distribute Jobs did is carried into asset `status.distribution`, window history,
  Events, metrics and the audit log; then the Jobs are marked applied and given a TTL.
- plan/availability.py decides what must be published and taken down; the next batch (every due
  takedown in one Job before any publish, publishes MAX_PUBLISHES at a time, no two origins that
  overlap, staged once it outgrows the env) becomes a distribute Job when none is running, or waits out
  the backoff of a batch that failed whole.
- **Quarantine.** A batch whose worker names the actions that failed (`DistributeFailure`) is recorded
  action by action: what verified is recorded as done (takedowns included), and each failed (asset,
  target) pair is quarantined in the asset's record — attempts, the worker's words, `retryAt` (2, 4,
  8 … s, at most `distribution_retry_max_seconds`). Until then that pair's action is held back; every
  other action keeps flowing. A quarantine is never final: it is retried until it succeeds, and it is
  dropped once the action it holds is no longer wanted. The pair shows in a `Distributed=False
  Quarantined` condition on the asset and on the window, and in the quarantined gauge.
- **Armed takedowns.** Within `takedown_lead_seconds` of the next transition, with nothing due and no Job
  running, the takedowns due at that instant go in a Job made now with `notBefore` set to it: its worker
  lists ahead and deletes from then. Before the instant, an armed Job whose takedowns are no longer all due
  then (a licence extended) is cancelled (CancelJob), its titles' records marked Failed first.
- **Unreadable targets** (an invalid ConfigMap) refuse publishes only: takedowns are planned from what
  the assets' status says is published, to the origin recorded there.
- Each window gets its whole desired status (plan/rights.py, conditions through plan/conditions.py).

Write order (`DistributionPlan.writes`): the Pending records of what the next Job publishes, the Job,
then every other asset status write (a finished batch's records, conditions), window status, Events and
only then the applied mark. History and Events are
written before the mark, so a crash between the two re-records the Job, and that adds nothing:
history entries already there are skipped, Events have fixed names (create tolerates 409) and a
quarantine already counted for that Job is not counted again.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, cast

from pydantic import ValidationError

from kubemam.api.asset import DistributionQuarantine, DistributionStatus, MediaAssetStatus
from kubemam.api.common import API_VERSION, GROUP
from kubemam.api.distribution import DistributionTarget, origin_folder
from kubemam.api.kinds import RIGHTS_WINDOW
from kubemam.api.rights import HistoryEntry, RightsWindowSpec, RightsWindowStatus
from kubemam.config import OperatorConfig
from kubemam.plan.availability import Action, Asset, Window, feeds_for, plan_rights, recorded_targets
from kubemam.plan.conditions import Verdict, apply_verdicts, status_patch
from kubemam.plan.hashing import input_hash
from kubemam.plan.jobs import STEP_INPUT_ENV, Owner, StepJobRequest, build_step_job
from kubemam.plan.jobstate import job_state, parse_result
from kubemam.plan.qcgate import publishable
from kubemam.plan.rights import plan_window, targets_verdict
from kubemam.plan.staging import (
    INLINE_LIMIT,
    INPUT_FILE_ENV,
    INPUT_SHA256_ENV,
    STAGE_LIMIT,
    StepInputTooLarge,
    serialize,
    staged_files,
    utf8_size,
)
from kubemam.plan.staging import sha256 as sha256_text
from kubemam.steps.distribute import (
    DistributeAction,
    DistributeFailure,
    DistributeFeed,
    DistributeInput,
    feed_entries,
    feed_file,
)
from kubemam.steps.registry import DISTRIBUTE
from kubemam.timestamps import parse_time

APPLIED = f"{GROUP}/applied"
ACTIONS_HASH = f"{GROUP}/actions-hash"
# An armed takedown batch: its worker deletes nothing before this instant (the windows' end).
NOT_BEFORE = f"{GROUP}/not-before"
# An armed Job the planner cancelled (a licence changed within the lead): deleted, never recorded.
CANCELLED = f"{GROUP}/cancelled"
# Set with APPLIED on a failed Job whose worker named the actions that failed: those pairs were
# quarantined, so the batch as a whole does not count as failed (no batch backoff on top).
ISOLATED = f"{GROUP}/failed-actions"
# A batch's input is staged (plan/staging.py) once it outgrows the env, so its size is bounded by the
# stage limit less the feeds staged beside it (BATCH_HEADROOM covers the input's other fields and the feed
# references). Takedowns have a deadline: every due one goes in one Job, up to MAX_TAKEDOWNS (an action is
# ~260 bytes, ~1.3 KB on a worldwide target). Publishes copy whole packages and a running Job holds back the
# next takedown, so a publish batch stays short: MAX_PUBLISHES.
MAX_TAKEDOWNS = 5000
MAX_PUBLISHES = 200
BATCH_HEADROOM = 16 * 1024
FEED_REF_BYTES = 400  # one feed's reference in the input ({uri, file, sha256, entries}), generously
RECORDED_JOB_TTL = 86400
MAX_EVENT_NAME = 253
MAX_EVENT_MESSAGE = 1024
MAX_CONDITION_PAIRS = 5  # pairs named in a condition message; the rest are counted
# Condition-only asset writes per reconcile; the rest follow a second later. A reconcile holds its namespace,
# and a thousand conditions to write (a catalogue's first reconcile, a bulk change) must not hold an armed
# takedown past its lead. Records are never deferred: a finished Job is marked applied only after all of them.
MAX_CONDITION_WRITES = 200
DEFERRED_WRITES_SECONDS = 1.0
DISTRIBUTED = "Distributed"
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
    generation: int = 0
    resource_version: str | None = None  # guards the conditions write (the asset controller writes them too)
    deleting: bool = False  # deletionTimestamp set: taken down everywhere, never published


@dataclass(frozen=True)
class DistributeJob:
    """A distribute Job as observed."""

    name: str
    state: JobState
    inputs: DistributeInput | None  # None: not read (not needed), or not this version's shape
    finished_at: datetime | None = None  # completionTime, or when it failed
    applied: bool = False  # its outcome is already recorded
    failure: DistributeFailure | None = None  # a failed Job's worker named the actions that failed
    isolated: bool = False  # recorded as a per-action failure (ISOLATED): not a failure of the whole batch
    actions_hash: str | None = None  # its batch's actions (ACTIONS_HASH), which a retry of them shares
    not_before: datetime | None = None  # armed: its worker deletes nothing before then (NOT_BEFORE)
    cancelled: bool = False  # an armed Job cancelled (CANCELLED): it holds the namespace until it is gone
    deleting: bool = False  # deletionTimestamp set


@dataclass(frozen=True)
class DistributionFacts:
    namespace: str
    windows: list[WindowFacts]
    assets: list[AssetFacts]
    jobs: list[DistributeJob]
    targets: list[DistributionTarget]
    target_problem: str | None = None  # the targets ConfigMap does not parse: takedowns only


def inputs_needed(job: dict[str, Any]) -> bool:
    """The planner reads a Job's input only to record it (finished, not yet applied), or to count a failure
    of a Job made before its actions' hash was an annotation: a namespace keeps a day of Jobs, and a staged
    input is a ConfigMap read."""
    state = job_state(job)[0]
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    applied = annotations.get(APPLIED) == "true"
    # An armed Job that has not finished: whether a licence change since must cancel it.
    armed = NOT_BEFORE in annotations and CANCELLED not in annotations and state in ("Pending", "Running")
    uncounted = state == "Failed" and ACTIONS_HASH not in annotations
    return (state in ("Failed", "Succeeded") and not applied) or uncounted or armed


def staged_input_sha256(job: dict[str, Any]) -> str | None:
    """The sha256 of the Job's input when it was staged (its ConfigMap holds it, under INPUT_KEY), else None."""
    env = _env(job)
    return env.get(INPUT_SHA256_ENV) if INPUT_FILE_ENV in env else None


def observe_job(job: dict[str, Any], termination_message: str | None = None,
                staged_input: str | None = None) -> DistributeJob:
    """A distribute Job (a batch/v1 manifest as listed) as plain facts. Its input is read only when
    the planner needs it (inputs_needed). `termination_message`: a failed Job's, read by the controller
    only before the Job is recorded; `staged_input`: the input a large batch staged in the Job's ConfigMap
    (checked against the sha256 its env carries)."""
    meta = job.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    state = cast(JobState, job_state(job)[0])
    status = job.get("status") or {}
    applied = annotations.get(APPLIED) == "true"
    finished = None
    if state == "Succeeded":
        finished = parse_time(status.get("completionTime"))
    elif state == "Failed":
        failed: dict[str, Any] = next((c for c in status.get("conditions") or []
                                       if c.get("type") == "Failed" and c.get("status") == "True"), {})
        finished = parse_time(failed.get("lastTransitionTime"))
    inputs = _inputs(job, staged_input) if inputs_needed(job) else None
    return DistributeJob(name=str(meta.get("name", "")), state=state, inputs=inputs,
                         actions_hash=annotations.get(ACTIONS_HASH) or (inputs.actions_hash if inputs else None),
                         finished_at=finished, applied=applied,
                         failure=read_failure(termination_message) if state == "Failed" else None,
                         isolated=ISOLATED in annotations, not_before=parse_time(annotations.get(NOT_BEFORE)),
                         cancelled=CANCELLED in annotations, deleting=bool(meta.get("deletionTimestamp")))


def read_failure(termination_message: str | None) -> DistributeFailure | None:
    """The worker's per-action report, when the message is one (a crash leaves only `error`)."""
    result = parse_result(termination_message)
    if result is None or "failed" not in result:
        return None
    try:
        return DistributeFailure.model_validate(result)
    except ValidationError:
        return None


def _env(job: dict[str, Any]) -> dict[str, str]:
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or [{}]
    return {str(e.get("name")): str(e.get("value")) for e in containers[0].get("env") or [] if "value" in e}


def _inputs(job: dict[str, Any], staged: str | None = None) -> DistributeInput | None:
    env = _env(job)
    raw = env.get(STEP_INPUT_ENV)
    if raw is None and staged is not None and sha256_text(staged) == env.get(INPUT_SHA256_ENV):
        raw = staged
    try:
        return DistributeInput.model_validate(json.loads(raw)) if raw else None
    except (ValueError, ValidationError):
        return None


# --- the plan ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PatchAssetStatus:
    asset: str
    patch: dict[str, Any]
    # Set when the patch writes conditions or Pending records: the write must fail (409) if the asset
    # changed since it was read — it could undo the asset controller's conditions, or the asset may be
    # being deleted since. `fallback` is then written alone.
    resource_version: str | None = None
    fallback: dict[str, Any] | None = None
    # The Job that follows publishes this asset: if this write fails (the asset changed or is gone),
    # nothing after it may be written; the namespace is reconciled again at once.
    required: bool = False


@dataclass(frozen=True)
class CreateJob:
    job: dict[str, Any]
    inputs: DistributeInput

    @property
    def name(self) -> str:
        return str(self.job["metadata"]["name"])

    def feed(self, uri: str) -> list[dict[str, Any]]:
        """The entries of the feed the Job writes to `uri`, from the file staged beside its input."""
        feed = next(f for f in self.inputs.feeds if f.uri == uri)
        return feed_entries(staged_files(self.job)[feed.file])


@dataclass(frozen=True)
class CancelJob:
    """An armed Job whose takedowns are no longer all due at its instant: marked (applied, CANCELLED), then
    deleted with its pod (foreground). Its actions' records were marked Failed before, so whatever its pod
    may have done in a race with the deletion is put right (published again, or taken down)."""

    job: str
    why: str


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


Write = PatchAssetStatus | CreateJob | CancelJob | PatchWindowStatus | CreateEvent | AnnotateJob
W = TypeVar("W", PatchAssetStatus, CreateJob, CancelJob, PatchWindowStatus, CreateEvent, AnnotateJob)


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
    quarantined: int = 0  # (asset, target) pairs held back after failing: the gauge's value

    def of(self, kind: type[W]) -> list[W]:
        return [w for w in self.writes if isinstance(w, kind)]

    @property
    def job(self) -> CreateJob | None:
        return next((w for w in self.writes if isinstance(w, CreateJob)), None)


# --- pure helpers ------------------------------------------------------------------------------

class _Folders:
    """Folders taken (each `bucket/prefix/`): does a new one nest with any of them, in O(depth + log n)
    rather than against each (a batch of 5,000 takedowns)."""

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.ordered: list[str] = []

    def overlaps(self, folder: str) -> bool:
        parts = folder.split("/")[:-1]
        if any("/".join(parts[:n]) + "/" in self.taken for n in range(1, len(parts) + 1)):
            return True  # the same folder, or one it lies in
        at = bisect.bisect_left(self.ordered, folder)
        return at < len(self.ordered) and self.ordered[at].startswith(folder)  # one that lies in it

    def add(self, folder: str) -> None:
        self.taken.add(folder)
        bisect.insort(self.ordered, folder)


def batch_budget(feeds: dict[str, list[dict[str, Any]]]) -> int:
    """Bytes left for a batch's actions once the feeds are staged beside its input."""
    staged = sum(utf8_size(f"feed-{i}.json") + utf8_size(feed_file(entries)) + FEED_REF_BYTES
                 for i, entries in enumerate(feeds.values()))
    return STAGE_LIMIT - staged - BATCH_HEADROOM


def batch_of(actions: list[Action], budget: int = STAGE_LIMIT - BATCH_HEADROOM) -> list[Action]:
    """The next Job's share: takedowns before any publish (they are the ones with a deadline, and a
    broken package must not hold them back), at most MAX_TAKEDOWNS or MAX_PUBLISHES actions and `budget`
    bytes of input (UTF-8, as serialized), and no two actions whose origins overlap (a target renamed over
    the same origin): the later one waits for the next batch instead of making the worker refuse it.
    The first action is always chosen: one that cannot be staged is refused with its size named."""
    takedowns = [a for a in actions if a.action == "takedown"]
    most = MAX_TAKEDOWNS if takedowns else MAX_PUBLISHES
    chosen: list[Action] = []
    folders = _Folders()
    size = 0
    for action in takedowns or actions:
        folder = origin_folder(action.origin)
        if folders.overlaps(folder):
            continue
        weight = utf8_size(serialize(action.to_input().to_wire())) + 1
        if chosen and size + weight > budget:
            break
        chosen.append(action)
        folders.add(folder)
        size += weight
        if len(chosen) == most:
            break
    return chosen


def retry_delay(failures: int, longest: float = 300.0) -> timedelta:
    """2, 4, 8 … seconds after the n-th failure, at most `longest`."""
    return timedelta(seconds=min(longest, 2 ** min(max(1, failures), 30)))


def package_prefix(status: MediaAssetStatus) -> str | None:
    for package in status.packages or []:
        return package.manifest_uri.rsplit("/", 1)[0]
    return None


def still_distributed(status: Mapping[str, Any] | None) -> list[str]:
    """The targets an asset (its status as stored) may still be on: Published, a publish under way
    (Pending) or one that failed. Its delete handler waits for this to be empty."""
    return sorted({str(d.get("target")) for d in (status or {}).get("distribution") or []
                   if isinstance(d, Mapping) and d.get("state") in ("Published", "Pending", "Failed")})


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
        # Event messages are kept short (events.k8s.io caps a note at 1 KiB): a worldwide target's
        # 249 territories would not fit.
        "message": f"{action.asset} {done} {where}; verified by listing {action.origin}"[:MAX_EVENT_MESSAGE],
        "source": {"component": "kubemam"},
    }


def quarantine_line(asset: str | None, record: DistributionStatus) -> str:
    """One quarantined pair in a condition message; the asset is left out on the asset's own."""
    q = record.quarantine
    assert q is not None
    who = f"{asset} on {record.target}" if asset else record.target
    plural = "" if q.attempts == 1 else "s"
    return (f"{who}: {q.action} failed {q.attempts} time{plural} since {_stamp(q.since)} ({q.error[:300]}); "
            f"next try at {_stamp(q.retry_at)}")


def distributed_verdict(lines: list[str]) -> Verdict:
    """Distributed: False with the quarantined pairs, or True."""
    if not lines:
        return Verdict(DISTRIBUTED, "True", "NoFailures", "no publish or takedown is failing")
    more = f"; and {len(lines) - MAX_CONDITION_PAIRS} more" if len(lines) > MAX_CONDITION_PAIRS else ""
    return Verdict(DISTRIBUTED, "False", "Quarantined",
                   "held back and retried with backoff: " + "; ".join(lines[:MAX_CONDITION_PAIRS]) + more)


def _distribute_job(namespace: str, inputs: DistributeInput, files: dict[str, str],
                    config: OperatorConfig) -> dict[str, Any]:
    request = StepJobRequest(owner=Owner(RIGHTS_WINDOW.kind, "rights", "", namespace), step=DISTRIBUTE,
                             inputs=inputs.to_wire(), files=tuple(sorted(files.items())))
    job = build_step_job(request, config)
    # A batch serves many windows and outlives any one of them (deleting a window takes its content
    # down): no owner. It expires a day after it finished only once its outcome is recorded
    # (AnnotateJob), so an operator down for longer never loses one.
    job["metadata"].pop("ownerReferences", None)
    # Failures are counted per batch of actions, from the annotation: not by reading each failed Job's input.
    job["metadata"].setdefault("annotations", {})[ACTIONS_HASH] = inputs.actions_hash
    if inputs.not_before is not None:
        job["metadata"]["annotations"][NOT_BEFORE] = _stamp(inputs.not_before)
    return job


def _next_inputs(namespace: str, actions: list[DistributeAction], attempt: int,
                 feeds: dict[str, list[dict[str, Any]]], files: dict[str, str],
                 config: OperatorConfig, not_before: datetime | None = None) -> DistributeInput:
    """The batch's input; each feed by reference to its staged file (`files`, in sorted uri order).
    `not_before`: an armed batch's instant."""
    wire = [a.to_wire() for a in actions]
    refs = [DistributeFeed(uri=uri, file=f"feed-{i}.json", sha256=sha256_text(files[f"feed-{i}.json"]),
                           entries=len(entries))
            for i, (uri, entries) in enumerate(sorted(feeds.items()))]
    draft: dict[str, Any] = {
        "namespace": namespace, "actions": wire, "actionsHash": input_hash(wire), "attempt": attempt,
        "feeds": [f.to_wire() for f in refs],
        "usage": f"{config.library_uri.rstrip('/')}/usage/{namespace}/",
        **({"notBefore": _stamp(not_before)} if not_before is not None else {})}
    batch = input_hash(draft)[:16]
    return DistributeInput(namespace=namespace, batch=batch, actions=actions, actions_hash=draft["actionsHash"],
                           attempt=attempt, feeds=refs, usage=f"{draft['usage']}{batch}.json", not_before=not_before)


# --- the planner -------------------------------------------------------------------------------

Recorded = Literal["Published", "TakenDown", "Pending", "Failed"]


class _Recorder:
    """Finished Jobs carried into asset distribution, window history, Events, metrics and the audit."""

    def __init__(self, facts: DistributionFacts, ends: dict[str, datetime], now: datetime, longest: float) -> None:
        self.namespace, self.ends, self.now, self.longest = facts.namespace, ends, now, longest
        self.distribution = {a.name: list(a.status.distribution or []) for a in facts.assets if a.status is not None}
        self.history: dict[str, list[HistoryEntry]] = defaultdict(list)
        self.events: list[CreateEvent] = []
        self.observations: list[Observation] = []
        self.audit: list[dict[str, Any]] = []
        self.annotate: list[AnnotateJob] = []

    def current(self, asset: str, target: str) -> DistributionStatus | None:
        return next((d for d in self.distribution.get(asset) or [] if d.target == target), None)

    def put(self, action: DistributeAction, state: Recorded, at: datetime,
            quarantine: DistributionQuarantine | None = None) -> None:
        """The asset's record for the action's target, replaced (an asset that is gone has none)."""
        entries = self.distribution.get(action.asset)
        if entries is None:
            return
        entries[:] = [d for d in entries if d.target != action.target]
        entries.append(DistributionStatus(target=action.target, window=action.window, channel=action.channel,
                                          territories=action.territories, state=state, since=at,
                                          origin=action.origin, quarantine=quarantine))

    def pending(self, action: DistributeAction, at: datetime) -> None:
        """A publish about to run: Pending (it may be partly on the origin from now on), its quarantine
        kept so that a failure counts on from it. Written before the Job is created, so an asset deleted
        meanwhile waits for it (its delete handler waits while a record is Pending)."""
        current = self.current(action.asset, action.target)
        self.put(action, "Pending", at, current.quarantine if current is not None else None)

    def done(self, job: DistributeJob, action: DistributeAction, at: datetime) -> None:
        """A verified action: recorded, its quarantine (if any) lifted."""
        verb: Literal["Published", "TakenDown"] = "Published" if action.action == "publish" else "TakenDown"
        self.put(action, verb, at)
        self.history[action.window].append(HistoryEntry(
            at=at, action=verb, asset=action.asset, channel=action.channel, territories=action.territories,
            target=action.target, verified=True))
        end = self.ends.get(action.window)
        latency = (at - end).total_seconds() if verb == "TakenDown" and end is not None and end <= at else None
        self.observations.append(Observation(action.channel, action.action, latency))
        self.audit.append({"event": verb.lower(), "namespace": self.namespace, "asset": action.asset,
                           "target": action.target, "channel": action.channel, "territories": action.territories,
                           "window": action.window, "at": at.isoformat(), "verified": True})
        self.events.append(CreateEvent(window_event(self.namespace, job.name, action, verb, at)))

    def quarantine(self, action: DistributeAction, error: str, at: datetime) -> None:
        """A failed action named by the worker: its pair is held back until retryAt. A publish may have
        landed in part, so it is Failed (taken down if the licence ends first); a takedown leaves the
        pair as it was (it may still be on the origin)."""
        current = self.current(action.asset, action.target)
        prior = current.quarantine if current is not None and current.quarantine is not None \
            and current.quarantine.action == action.action else None
        if prior is not None and prior.retry_at == at + retry_delay(prior.attempts, self.longest):
            return  # this Job was recorded before (a crash before its mark): counted once
        attempts = prior.attempts + 1 if prior is not None else 1
        held = DistributionQuarantine(action=action.action, attempts=attempts, error=error[:1024],
                                      since=prior.since if prior is not None else at,
                                      retry_at=at + retry_delay(attempts, self.longest))
        if action.action == "publish":
            self.put(action, "Failed", at, held)
        elif current is not None:
            self.distribution[action.asset][:] = [d.model_copy(update={"quarantine": held})
                                                  if d.target == action.target else d
                                                  for d in self.distribution[action.asset]]

    def failed_whole(self, job: DistributeJob, inputs: DistributeInput) -> None:
        """A batch that failed without naming its actions (a crash, an outage) may have published some of
        its actions: mark them, so that with no window open they are taken down (a takedown of an origin
        that holds nothing verifies at once) and with one open they are published again."""
        for action in inputs.actions:
            entries = self.distribution.get(action.asset)
            if action.action != "publish" or entries is None:
                continue
            current = self.current(action.asset, action.target)
            if current is not None and current.state == "Published":
                continue
            self.put(action, "Failed", job.finished_at or self.now,
                     current.quarantine if current is not None else None)

    def unsure(self, inputs: DistributeInput) -> None:
        """A cancelled armed batch's pod may have deleted some of its origins in a race with the cancel: its
        pairs are Failed (maybe on the origin), so each is published again while licensed, else taken down."""
        for action in inputs.actions:
            current = self.current(action.asset, action.target)
            if current is not None and current.state == "Published":
                self.put(action, "Failed", self.now, current.quarantine)

    def record(self, job: DistributeJob) -> None:
        at = job.finished_at or self.now
        annotations = {APPLIED: "true"}
        if job.inputs is not None and job.state == "Succeeded":
            for action in job.inputs.actions:
                self.done(job, action, at)
        elif job.inputs is not None and job.failure is not None:
            errors = job.failure.errors_by_action()
            for index, action in enumerate(job.inputs.actions):
                if index in errors:
                    self.quarantine(action, errors[index], at)
                else:
                    self.done(job, action, at)  # takedowns that ran inside a failed batch count
            annotations[ISOLATED] = str(len(errors))
        elif job.inputs is not None:
            self.failed_whole(job, job.inputs)
        self.annotate.append(AnnotateJob(job.name, annotations, RECORDED_JOB_TTL))

    def lift_stale(self, wanted: set[tuple[str, str, str]]) -> None:
        """A quarantine whose action is no longer planned (the window reopened over a failing takedown,
        the publish is no longer licensed) has nothing left to hold back."""
        for asset, entries in self.distribution.items():
            entries[:] = [d.model_copy(update={"quarantine": None})
                          if d.quarantine is not None and (asset, d.target, d.quarantine.action) not in wanted
                          else d for d in entries]


def _held(action: Action, records: dict[str, list[DistributionStatus]], now: datetime) -> datetime | None:
    """When a quarantined pair's action may go again; None: it may go now."""
    record = next((d for d in records.get(action.asset) or [] if d.target == action.target.name), None)
    q = record.quarantine if record is not None else None
    if q is None or q.action != action.action or now >= q.retry_at:
        return None
    return q.retry_at


def plan_distribution(facts: DistributionFacts, config: OperatorConfig, now: datetime) -> DistributionPlan:
    longest = config.distribution_retry_max_seconds
    live = [(w, w.spec) for w in facts.windows if w.spec is not None and not w.deleting]
    windows = [Window(w.name, spec) for w, spec in live]
    recorder = _Recorder(facts, {w.name: w.spec.end for w in windows}, now, longest)

    active: DistributeJob | None = None
    cancels: list[CancelJob] = []
    attempts: dict[str, int] = defaultdict(int)  # Failed Jobs per actions hash: the next attempt's number
    failures: dict[str, int] = defaultdict(int)  # of those, the ones that failed whole
    last_failure: dict[str, datetime] = {}
    for seen in sorted(facts.jobs, key=lambda j: j.finished_at or _EPOCH):
        if seen.cancelled:
            # Never recorded; it holds the namespace until its pod is gone (foreground deletion), so no
            # new batch races whatever that pod is still doing.
            active = seen
            if not seen.deleting:
                cancels.append(CancelJob(seen.name, "cancelled before; deleting it again"))
            continue
        if seen.state in ("Pending", "Running"):
            active = seen
            continue
        key = seen.actions_hash or (seen.inputs.actions_hash if seen.inputs is not None else None)
        if seen.state == "Failed" and key:
            attempts[key] += 1
            if seen.failure is None and not seen.isolated:
                failures[key] += 1
                last_failure[key] = max(last_failure.get(key, _EPOCH), seen.finished_at or now)
        if not seen.applied:
            recorder.record(seen)

    assets = [Asset(a.name, a.labels, package_prefix(a.status), recorder.distribution[a.name], a.deleting,
                    publishable(a.status))
              for a in facts.assets if a.status is not None]
    # An unreadable target list is not "every target removed", and not "nothing to take down" either:
    # the targets the assets are recorded on stand in, and only takedowns are planned.
    targets = recorded_targets(assets) if facts.target_problem else facts.targets
    rights = plan_rights(facts.namespace, windows, assets, targets, now, publish=not facts.target_problem)
    recorder.lift_stale({(a.asset, a.target.name, a.action) for a in rights.actions})

    wake = rights.next_transition
    due: list[Action] = []
    for action in rights.actions:
        retry_at = _held(action, recorder.distribution, now)
        if retry_at is None:
            due.append(action)
        else:
            wake = min(retry_at, wake) if wake else retry_at

    # Takedowns armed ahead of a window's end (config.takedown_lead_seconds): a Job made now whose worker
    # deletes nothing before `arm_at`, so the end meets a pod that has listed its origins and waits.
    lead = timedelta(seconds=config.takedown_lead_seconds)
    armed = active if active is not None and active.not_before is not None and not active.cancelled else None
    if armed is not None and armed.not_before is not None and now < armed.not_before and armed.inputs is not None:
        then = plan_rights(facts.namespace, windows, assets, targets, armed.not_before, publish=False)
        still = {(a.asset, a.target.name) for a in then.actions if a.action == "takedown"}
        gone = [a for a in armed.inputs.actions if (a.asset, a.target) not in still]
        if gone:
            recorder.unsure(armed.inputs)
            cancels.append(CancelJob(armed.name, f"{gone[0].asset} on {gone[0].target} is no longer due to be "
                                     f"taken down at {_stamp(armed.not_before)}" +
                                     (f" (and {len(gone) - 1} more)" if len(gone) > 1 else "")))
    candidates, source, arm_at = due, rights, None
    transition = rights.next_transition
    # Only with nothing due now: what is due goes first, unarmed. (Arming ahead of publishes due now would let
    # a catalogue whose windows end every few seconds hold its publishes back for ever.)
    if active is None and lead and transition is not None and not due:
        if now < transition - lead:
            wake = min(wake, transition - lead) if wake else transition - lead
        else:
            then = plan_rights(facts.namespace, windows, assets, targets, transition, publish=False)
            at_end = [a for a in then.actions
                      if a.action == "takedown" and _held(a, recorder.distribution, transition) is None]
            if at_end:
                candidates, source, arm_at = at_end, then, transition

    job: CreateJob | None = None
    refused: str | None = None  # the feeds are too big even to stage
    failed_attempts: int | None = None if due else 0
    if candidates and active is None:
        # The feeds as they would be if every due publish ran now: an upper bound on what is staged beside
        # the batch, so the batch leaves them room.
        on_origin = {(a.name, d.target) for a in assets for d in a.distribution if d.state == "Published"}
        takedowns_due = any(a.action == "takedown" for a in candidates)  # then the batch publishes nothing
        wanted = set() if takedowns_due else {(a.asset, a.target.name) for a in candidates if a.action == "publish"}
        # An input that stays inline leaves the ConfigMap to the feeds: never less than that.
        upper = feeds_for(facts.namespace, source, windows, on_origin | wanted)
        budget = max(batch_budget(upper), INLINE_LIMIT - BATCH_HEADROOM)
        chosen = batch_of(candidates, budget)
        batch = [a.to_input() for a in chosen]
        actions_hash = input_hash([a.to_wire() for a in batch])
        failed_attempts = failures.get(actions_hash, 0)
        retry_at = last_failure[actions_hash] + retry_delay(failures[actions_hash], longest) \
            if actions_hash in last_failure else None
        if retry_at is not None and now < retry_at:
            # Retried until it succeeds, but with backoff: an outage must not become a Job storm.
            wake = min(retry_at, wake) if wake else retry_at
        else:
            # The feeds advertise what is on the origins and what this batch publishes, nothing held back.
            publishing = {(a.asset, a.target.name) for a in chosen if a.action == "publish"}
            feeds = upper if publishing == wanted else feeds_for(facts.namespace, source, windows,
                                                                 on_origin | publishing)
            try:
                job = _new_job(facts, batch, attempts.get(actions_hash, 0), feeds, config, arm_at)
            except StepInputTooLarge as err:
                refused = str(err)  # no Job: the windows say why; nothing else changes
            else:
                for started in batch:
                    if started.action == "publish":
                        recorder.pending(started, now)

    # Quarantined pairs, by asset and by the window their record names.
    by_asset: dict[str, list[str]] = defaultdict(list)
    by_window: dict[str, list[str]] = defaultdict(list)
    for asset_name, entries in sorted(recorder.distribution.items()):
        for record in sorted(entries, key=lambda d: d.target):
            if record.quarantine is not None:
                by_asset[asset_name].append(quarantine_line(None, record))
                by_window[record.window].append(quarantine_line(asset_name, record))

    verdict = targets_verdict(facts.target_problem, len(facts.targets))
    desired: dict[str, RightsWindowStatus] = {}
    window_writes: list[Write] = []
    for window, spec in live:
        status = plan_window(spec, RightsWindowStatus.model_validate(window.status), window.generation, now,
                             rights.matched.get(window.name, 0), rights.conflicts.get(window.name, []),
                             recorder.history.get(window.name), verdict,
                             distributed_verdict(by_window.get(window.name, [])) if refused is None
                             else Verdict(DISTRIBUTED, "False", "FeedTooLarge", f"no distribute Job: {refused}"))
        desired[window.name] = status
        patch = status_patch(window.status, status.to_wire())
        if patch:
            window_writes.append(PatchWindowStatus(window.name, patch))

    published_by_job = {a.asset for a in job.inputs.actions if a.action == "publish"} if job else set()
    # A cancelled batch's records (Failed) must land before its Job goes, as a publish's Pending before its Job.
    unsure = {a.asset for a in armed.inputs.actions} if armed and armed.inputs and cancels else set()
    asset_writes = [w for a in facts.assets
                    if (w := _asset_write(a, recorder, by_asset, now, a.name in published_by_job | unsure))]
    conditions_only = [w for w in asset_writes if not w.required and "distribution" not in w.patch]
    if len(conditions_only) > MAX_CONDITION_WRITES:
        deferred = {id(w) for w in conditions_only[MAX_CONDITION_WRITES:]}
        asset_writes = [w for w in asset_writes if id(w) not in deferred]
        soon = now + timedelta(seconds=DEFERRED_WRITES_SECONDS)
        wake = min(wake, soon) if wake else soon
    # Only the Pending records of the publishes must land before the Job; every other asset write (a finished
    # batch's records, conditions) follows it, so a thousand records to write never delay a takedown.
    writes: list[Write] = [*[w for w in asset_writes if w.required], *cancels, *([job] if job else []),
                           *[w for w in asset_writes if not w.required], *window_writes, *recorder.events,
                           *recorder.annotate]
    return DistributionPlan(writes, desired, failed_attempts, recorder.observations, recorder.audit, wake,
                            sum(len(lines) for lines in by_asset.values()))


def _new_job(facts: DistributionFacts, batch: list[DistributeAction], attempt: int,
             feeds: dict[str, list[dict[str, Any]]], config: OperatorConfig,
             not_before: datetime | None = None) -> CreateJob:
    """The batch's Job, under a name no Job of the last day has: the same actions needed again (a
    publish after a takedown, a retry) must not meet the finished Job of the same input (409)."""
    taken = {j.name for j in facts.jobs}
    files = {f"feed-{i}.json": feed_file(entries) for i, (_, entries) in enumerate(sorted(feeds.items()))}
    while True:
        inputs = _next_inputs(facts.namespace, batch, attempt, feeds, files, config, not_before)
        job = _distribute_job(facts.namespace, inputs, files, config)
        if job["metadata"]["name"] not in taken:
            return CreateJob(job, inputs)
        attempt += 1


def _asset_write(asset: AssetFacts, recorder: _Recorder, quarantined: dict[str, list[str]], now: datetime,
                 must_land: bool) -> PatchAssetStatus | None:
    """The asset's distribution records, and its Distributed condition once it has any. `must_land`: the
    Job that follows publishes it (its Pending records), or an armed Job that touched it is cancelled (its
    Failed records), so the write must land on the asset as it was read, or nothing after it may go."""
    if asset.status is None:
        return None
    before = [d.to_wire() for d in asset.status.distribution or []]
    after = [d.to_wire() for d in recorder.distribution[asset.name]]
    patch: dict[str, Any] = {"distribution": after} if after != before else {}
    if after:
        verdict = distributed_verdict(quarantined.get(asset.name, []))
        conditions = apply_verdicts(asset.status.conditions, [verdict], asset.generation, now)
        if conditions != (asset.status.conditions or []):
            patch = {**patch, "conditions": [c.to_wire() for c in conditions]}
    if not patch:
        return None
    guarded = must_land or "conditions" in patch
    fallback = None if must_land else {k: v for k, v in patch.items() if k != "conditions"} or None
    return PatchAssetStatus(asset.name, patch, asset.resource_version if guarded else None, fallback,
                            required=must_land)
