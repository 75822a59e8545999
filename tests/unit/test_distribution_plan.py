"""The rights planner (plan/distribution.py) with a fixed clock: what it writes, in which order.

`_after` plays the API server: it applies a plan's writes to the facts, so a test can reconcile
again and see what the next pass does. Every assertion is on the plan's data.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kubemam.api.asset import MediaAssetStatus
from kubemam.api.distribution import DistributionTarget
from kubemam.api.rights import RightsWindowSpec
from kubemam.config import OperatorConfig
from kubemam.plan.conditions import find
from kubemam.plan.distribution import (
    APPLIED,
    MAX_BATCH,
    RECORDED_JOB_TTL,
    AnnotateJob,
    AssetFacts,
    CreateEvent,
    CreateJob,
    DistributeJob,
    DistributionFacts,
    DistributionPlan,
    JobState,
    Observation,
    PatchAssetStatus,
    PatchWindowStatus,
    WindowFacts,
    observe_job,
    plan_distribution,
)
from kubemam.plan.jobs import STEP_INPUT_ENV
from kubemam.steps.distribute import DistributeInput
from kubemam.steps.registry import STEPS

T0 = datetime(2027, 1, 1, tzinfo=UTC)
CONFIG = OperatorConfig()
NORWAY = DistributionTarget(name="svod-no", channel="svod", origin="s3://origin/svod-no", territories=["NO"])


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _window(name: str = "w1", start: int = 0, end: int = 100, **assets: Any) -> WindowFacts:
    spec = RightsWindowSpec.model_validate({
        "assets": assets or {"selector": {"matchLabels": {"series": "coastal"}}}, "territories": ["NO"],
        "channels": ["svod"], "start": _at(start), "end": _at(end)})
    return WindowFacts(name, 1, spec)


def _asset(name: str = "ep1", published: str | None = None) -> AssetFacts:
    status: dict[str, Any] = {"packages": [{"format": "dash",
                                            "manifestUri": f"s3://lib/assets/media/{name}/packages/abc/manifest.mpd"}]}
    if published:
        status["distribution"] = [{"target": "svod-no", "window": published, "channel": "svod", "territories": ["NO"],
                                   "state": "Published", "since": "2026-12-31T00:00:00Z",
                                   "origin": f"s3://origin/svod-no/media/{name}"}]
    return AssetFacts(name, {"series": "coastal"}, MediaAssetStatus.model_validate(status))


def _facts(windows: list[WindowFacts] | None = None, assets: list[AssetFacts] | None = None,
           jobs: list[DistributeJob] | None = None, problem: str | None = None) -> DistributionFacts:
    return DistributionFacts("media", windows if windows is not None else [_window()],
                             assets if assets is not None else [_asset()], jobs or [], [NORWAY], problem)


def _after(facts: DistributionFacts, plan: DistributionPlan) -> DistributionFacts:
    """The facts once the plan's writes landed: what the next reconcile gathers."""
    assets = []
    for asset in facts.assets:
        patches = [w.patch for w in plan.of(PatchAssetStatus) if w.asset == asset.name]
        status = asset.status
        for patch in patches:
            assert status is not None
            status = MediaAssetStatus.model_validate({**status.to_wire(), **patch})
        assets.append(replace(asset, status=status))
    windows = [replace(w, status=plan.windows[w.name].to_wire()) if w.name in plan.windows else w
               for w in facts.windows]
    marked = {a.job for a in plan.of(AnnotateJob)}
    jobs = [replace(j, applied=j.applied or j.name in marked) for j in facts.jobs]
    jobs += [DistributeJob(c.name, "Pending", c.inputs) for c in plan.of(CreateJob)]
    return replace(facts, windows=windows, assets=assets, jobs=jobs)


def _finish(facts: DistributionFacts, state: JobState, at: datetime) -> DistributionFacts:
    """The running distribute Job ends."""
    return replace(facts, jobs=[replace(j, state=state, finished_at=at) if j.state in ("Pending", "Running") else j
                                for j in facts.jobs])


def _kinds(plan: DistributionPlan) -> list[str]:
    return [type(w).__name__ for w in plan.writes]


def test_an_open_window_publishes_and_the_job_carries_the_steps_input() -> None:
    before = plan_distribution(_facts(), CONFIG, _at(-5))
    assert before.job is None and before.wake == _at(0) and before.failed_attempts == 0
    assert before.windows["w1"].phase == "Scheduled"

    plan = plan_distribution(_facts(), CONFIG, _at(1))
    assert plan.job is not None and _kinds(plan) == ["CreateJob", "PatchWindowStatus"]
    inputs = plan.job.inputs
    assert [(a.action, a.asset, a.target, a.package, a.origin) for a in inputs.actions] == [
        ("publish", "ep1", "svod-no", "s3://lib/assets/media/ep1/packages/abc", "s3://origin/svod-no/media/ep1")]
    assert inputs.attempt == 0 and inputs.namespace == "media"
    assert inputs.usage == f"s3://kubemam-library/usage/media/{inputs.batch}.json"
    assert [(f.uri, [e["asset"] for e in f.entries]) for f in inputs.feeds] == [("s3://origin/feeds/svod.json",
                                                                                 ["ep1"])]
    job = plan.job.job
    assert job["metadata"]["name"].startswith("rights-distribute-") and "ownerReferences" not in job["metadata"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kubemam", "worker", "distribute"]
    wire = json.loads(next(e["value"] for e in container["env"] if e["name"] == STEP_INPUT_ENV))
    # The wire shape the worker reads: camelCase, nulls kept, and the model takes it back unchanged.
    assert set(wire) == {"namespace", "batch", "actions", "actionsHash", "attempt", "feeds", "usage"}
    assert wire["actions"][0]["purgeWebhook"] is None and DistributeInput.model_validate(wire) == inputs
    STEPS["distribute"].validate_input(wire)
    assert plan.wake == _at(100) and plan.failed_attempts == 0
    assert plan.windows["w1"].phase == "Open"
    # The same facts plan the same Job: its name is the hash of its input.
    assert plan_distribution(_facts(), CONFIG, _at(2)).job == plan.job


def test_a_closed_window_takes_down_what_it_published() -> None:
    plan = plan_distribution(_facts(assets=[_asset(published="w1")]), CONFIG, _at(100))
    assert plan.job is not None
    assert [(a.action, a.asset, a.package, a.origin, a.window) for a in plan.job.inputs.actions] == [
        ("takedown", "ep1", None, "s3://origin/svod-no/media/ep1", "w1")]
    assert plan.wake is None and plan.windows["w1"].phase == "Closed"
    assert [f.entries for f in plan.job.inputs.feeds] == [[]]


def test_takedowns_go_first_in_batches_of_at_most_max_batch() -> None:
    closed = [_asset(f"old{n:03d}", published="gone") for n in range(MAX_BATCH + 5)]
    fresh = [_asset(f"new{n}") for n in range(3)]
    windows = [_window("gone", 0, 10, names=[a.name for a in closed]), _window("open", 0, 100, names=[
        a.name for a in fresh])]
    plan = plan_distribution(_facts(windows, closed + fresh), CONFIG, _at(20))
    assert plan.job is not None
    actions = plan.job.inputs.actions
    assert len(actions) == MAX_BATCH and {a.action for a in actions} == {"takedown"}
    # The last takedowns, then the publishes, each in a Job of its own once the one before finished.
    facts = _finish(_after(_facts(windows, closed + fresh), plan), "Succeeded", _at(21))
    second = plan_distribution(facts, CONFIG, _at(22))
    assert second.job is not None and [a.action for a in second.job.inputs.actions] == ["takedown"] * 5
    third = plan_distribution(_finish(_after(facts, second), "Succeeded", _at(23)), CONFIG, _at(24))
    assert third.job is not None and [a.action for a in third.job.inputs.actions] == ["publish"] * 3


def test_one_job_at_a_time() -> None:
    first = plan_distribution(_facts(), CONFIG, _at(1))
    running = _after(_facts(), first)
    again = plan_distribution(running, CONFIG, _at(2))
    assert again.job is None and again.failed_attempts is None  # the gauge is left as it is
    assert again.writes == []  # nothing changed since
    # The window closes while the publish runs: the takedown waits for it, then follows.
    at_end = plan_distribution(running, CONFIG, _at(100))
    assert at_end.job is None
    done = plan_distribution(_after(_finish(running, "Succeeded", _at(100)), at_end), CONFIG, _at(101))
    assert done.job is not None and [a.action for a in done.job.inputs.actions] == ["takedown"]


def test_a_failed_batch_is_retried_with_backoff_and_a_new_attempt() -> None:
    first = plan_distribution(_facts(), CONFIG, _at(1))
    assert first.job is not None
    failed = _finish(_after(_facts(), first), "Failed", _at(10))

    waiting = plan_distribution(failed, CONFIG, _at(11))
    assert waiting.job is None and waiting.failed_attempts == 1 and waiting.wake == _at(12)
    # The publish may have landed in part: Failed, so it is taken down if the licence ends first.
    [patch] = waiting.of(PatchAssetStatus)
    assert [(d["target"], d["state"]) for d in patch.patch["distribution"]] == [("svod-no", "Failed")]
    assert waiting.of(AnnotateJob) == [AnnotateJob(first.job.name, {APPLIED: "true"}, RECORDED_JOB_TTL)]
    assert waiting.of(CreateEvent) == [] and waiting.windows["w1"].history is None

    retried = plan_distribution(_after(failed, waiting), CONFIG, _at(12))
    assert retried.job is not None and retried.job.inputs.attempt == 1 and retried.failed_attempts == 1
    assert retried.job.name != first.job.name
    assert retried.job.inputs.actions_hash == first.job.inputs.actions_hash

    # Failing again doubles the wait.
    twice = _finish(_after(_after(failed, waiting), retried), "Failed", _at(20))
    assert plan_distribution(twice, CONFIG, _at(21)).wake == _at(24)


def test_a_succeeded_job_is_recorded_history_first_then_marked() -> None:
    first = plan_distribution(_facts(), CONFIG, _at(1))
    assert first.job is not None
    done = _finish(_after(_facts(), first), "Succeeded", _at(3))
    plan = plan_distribution(done, CONFIG, _at(4))
    assert _kinds(plan) == ["PatchAssetStatus", "PatchWindowStatus", "CreateEvent", "AnnotateJob"]
    [asset] = plan.of(PatchAssetStatus)
    assert asset.patch == {"distribution": [{"target": "svod-no", "window": "w1", "channel": "svod",
                                             "territories": ["NO"], "state": "Published",
                                             "since": "2027-01-01T00:00:03Z",
                                             "origin": "s3://origin/svod-no/media/ep1"}]}
    [window] = plan.of(PatchWindowStatus)
    assert window.patch["history"] == [{"at": "2027-01-01T00:00:03Z", "action": "Published", "asset": "ep1",
                                        "channel": "svod", "territories": ["NO"], "target": "svod-no",
                                        "verified": True}]
    # History (and the Event) are written before the Job is marked: a crash in between loses nothing.
    assert plan.writes.index(window) < plan.writes.index(plan.of(AnnotateJob)[0])
    [event] = plan.of(CreateEvent)
    assert event.event["reason"] == "Published" and event.event["involvedObject"]["name"] == "w1"
    assert event.event["metadata"]["name"].startswith("w1.") and "generateName" not in event.event["metadata"]
    assert event.event["message"] == ("ep1 published to svod-no (svod, NO); verified by listing "
                                      "s3://origin/svod-no/media/ep1")
    assert plan.of(AnnotateJob) == [AnnotateJob(first.job.name, {APPLIED: "true"}, RECORDED_JOB_TTL)]
    assert plan.observations == [Observation("svod", "publish", None)]
    assert [(line["event"], line["asset"], line["verified"]) for line in plan.audit] == [("published", "ep1", True)]
    assert plan.job is None and plan.failed_attempts == 0

    # The operator died after the history and before the mark: recording again adds nothing.
    crashed = replace(_after(done, plan), jobs=done.jobs)
    again = plan_distribution(crashed, CONFIG, _at(5))
    assert _kinds(again) == ["CreateEvent", "AnnotateJob"]  # the Event by its fixed name: a 409, nothing new
    assert again.of(CreateEvent)[0].event["metadata"]["name"] == event.event["metadata"]["name"]
    assert len(again.windows["w1"].history or []) == 1

    # Marked: nothing left to do until the window closes.
    settled = plan_distribution(_after(crashed, again), CONFIG, _at(6))
    assert settled.writes == [] and settled.wake == _at(100)


def test_a_takedown_after_the_end_observes_its_latency() -> None:
    facts = _facts(assets=[_asset(published="w1")])
    plan = plan_distribution(facts, CONFIG, _at(100))
    done = plan_distribution(_finish(_after(facts, plan), "Succeeded", _at(103)), CONFIG, _at(104))
    assert done.observations == [Observation("svod", "takedown", 3.0)]
    assert [h.action for h in done.windows["w1"].history or []] == ["TakenDown"]
    assert [e.event["reason"] for e in done.of(CreateEvent)] == ["TakenDown"]


def _targets_valid(facts: DistributionFacts) -> list[dict[str, Any]]:
    [window] = facts.windows
    return [c for c in window.status.get("conditions") or [] if c["type"] == "TargetsValid"]


def test_targets_valid_is_one_condition_per_window_that_flips_once_fixed() -> None:
    problem = "ConfigMap kubemam-distribution key targets.yaml is invalid: duplicate target names: svod-no"
    facts = _facts(assets=[_asset(published="w1")], problem=problem)
    for second in (100, 101, 102):
        plan = plan_distribution(facts, CONFIG, _at(second))
        if second > 100:
            assert plan.writes == []  # nothing changed: no status write, no second condition
        facts = _after(facts, plan)
        [condition] = _targets_valid(facts)
        assert (condition["status"], condition["reason"], condition["message"]) == ("False", "InvalidTargets",
                                                                                     problem)
        assert condition["lastTransitionTime"] == "2027-01-01T00:01:40Z"

    fixed = plan_distribution(replace(facts, target_problem=None), CONFIG, _at(110))
    facts = _after(replace(facts, target_problem=None), fixed)
    [condition] = _targets_valid(facts)
    assert (condition["status"], condition["reason"]) == ("True", "Valid")
    assert condition["lastTransitionTime"] == "2027-01-01T00:01:50Z"
    assert find(fixed.windows["w1"].conditions, "TargetsValid") is not None
    assert fixed.job is not None  # and the takedown held back meanwhile goes now


def test_invalid_targets_move_nothing() -> None:
    published = _asset(published="w1")
    plan = plan_distribution(_facts([_window()], [published, _asset("ep2")], problem="bad"), CONFIG, _at(100))
    assert plan.job is None and plan.of(PatchAssetStatus) == [] and plan.failed_attempts == 0
    assert _kinds(plan) == ["PatchWindowStatus"]
    # A Job that finished meanwhile is still recorded.
    first = plan_distribution(_facts(), CONFIG, _at(1))
    done = replace(_finish(_after(_facts(), first), "Succeeded", _at(3)), target_problem="bad")
    recorded = plan_distribution(done, CONFIG, _at(4))
    assert _kinds(recorded) == ["PatchAssetStatus", "PatchWindowStatus", "CreateEvent", "AnnotateJob"]


def test_windows_being_deleted_or_invalid_are_left_alone() -> None:
    deleting = replace(_window("w1"), deleting=True)
    broken = WindowFacts("w2", 1, None)
    plan = plan_distribution(_facts([deleting, broken], [_asset(published="w1")]), CONFIG, _at(10))
    assert plan.windows == {} and plan.job is not None  # what the deleted window alone licensed goes
    assert [a.action for a in plan.job.inputs.actions] == ["takedown"]


def test_a_distribute_job_as_listed_is_observed() -> None:
    plan = plan_distribution(_facts(), CONFIG, _at(1))
    assert plan.job is not None
    job = json.loads(json.dumps(plan.job.job))
    pending = observe_job(job)
    assert (pending.name, pending.state, pending.applied) == (plan.job.name, "Pending", False)
    job["status"] = {"completionTime": "2027-01-01T00:00:03Z",
                     "conditions": [{"type": "Complete", "status": "True"}]}
    done = observe_job(job)
    assert (done.state, done.finished_at, done.applied, done.inputs) == ("Succeeded", _at(3), False, plan.job.inputs)
    job["metadata"]["annotations"][APPLIED] = "true"
    assert observe_job(job).applied is True
    job["status"] = {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2027-01-01T00:00:04Z"}]}
    assert (observe_job(job).state, observe_job(job).finished_at) == ("Failed", _at(4))
