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
from kubemam.api.territories import ISO3166_ALPHA2
from kubemam.config import OperatorConfig
from kubemam.plan.conditions import find
from kubemam.plan.distribution import (
    APPLIED,
    CANCELLED,
    ISOLATED,
    MAX_CONDITION_WRITES,
    MAX_PUBLISHES,
    MAX_TAKEDOWNS,
    NOT_BEFORE,
    RECORDED_JOB_TTL,
    AnnotateJob,
    AssetFacts,
    CancelJob,
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
    still_distributed,
)
from kubemam.plan.jobs import STEP_INPUT_ENV
from kubemam.plan.staging import INLINE_LIMIT, INPUT_FILE_ENV, INPUT_KEY, STAGE_LIMIT, staged_files, utf8_size
from kubemam.steps.distribute import DistributeFailure, DistributeInput
from kubemam.steps.registry import STEPS

T0 = datetime(2027, 1, 1, tzinfo=UTC)
CONFIG = OperatorConfig()
LEAD = timedelta(seconds=CONFIG.takedown_lead_seconds)
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
    marked = {a.job: a.annotations for a in plan.of(AnnotateJob)}
    jobs = [replace(j, applied=j.applied or j.name in marked, isolated=j.isolated or ISOLATED in marked.get(j.name, {}))
            for j in facts.jobs]
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
    assert plan.job is not None and _kinds(plan) == ["PatchAssetStatus", "CreateJob", "PatchWindowStatus"]
    # Pending before the Job exists, written only onto the asset as it was read (required: if that
    # fails, the Job is not created), so an asset deleted meanwhile waits for the publish to be undone.
    [pending] = plan.of(PatchAssetStatus)
    assert [(d["target"], d["state"], d["since"]) for d in pending.patch["distribution"]] == [
        ("svod-no", "Pending", "2027-01-01T00:00:01Z")]
    assert pending.required and pending.fallback is None
    inputs = plan.job.inputs
    assert [(a.action, a.asset, a.target, a.package, a.origin) for a in inputs.actions] == [
        ("publish", "ep1", "svod-no", "s3://lib/assets/media/ep1/packages/abc", "s3://origin/svod-no/media/ep1")]
    assert inputs.attempt == 0 and inputs.namespace == "media"
    assert inputs.usage == f"s3://kubemam-library/usage/media/{inputs.batch}.json"
    # The feed is the namespace's own: another namespace publishing to the same origin bucket has another.
    # Its entries are staged beside the input (never in it): the Job names the file and its digest.
    assert [(f.uri, [e["asset"] for e in plan.job.feed(f.uri)], f.entries) for f in inputs.feeds] == [
        ("s3://origin/feeds/media/svod.json", ["ep1"], 1)]
    job = plan.job.job
    assert job["metadata"]["name"].startswith("rights-distribute-") and "ownerReferences" not in job["metadata"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kubemam", "worker", "distribute"]
    wire = json.loads(next(e["value"] for e in container["env"] if e["name"] == STEP_INPUT_ENV))
    # The wire shape the worker reads: camelCase, nulls kept, and the model takes it back unchanged.
    assert set(wire) == {"namespace", "batch", "actions", "actionsHash", "attempt", "feeds", "usage", "notBefore"}
    assert wire["notBefore"] is None  # not armed: it runs at once
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
    assert [plan.job.feed(f.uri) for f in plan.job.inputs.feeds] == [[]]


def test_every_due_takedown_goes_in_one_staged_job_before_the_publishes() -> None:
    closed = [_asset(f"old{n:04d}", published="gone") for n in range(1005)]
    fresh = [_asset(f"new{n}") for n in range(3)]
    windows = [_window("gone", 0, 10, names=[a.name for a in closed[:500]]),
               _window("gone-too", 0, 10, names=[a.name for a in closed[500:]]),
               _window("open", 0, 100, names=[a.name for a in fresh])]
    plan = plan_distribution(_facts(windows, closed + fresh), CONFIG, _at(20))
    assert plan.job is not None
    actions = plan.job.inputs.actions
    assert len(actions) == 1005 and {a.action for a in actions} == {"takedown"}
    # Too big for the env: the input travels in the Job's ConfigMap, and the env only names it.
    staged = staged_files(plan.job.job)
    assert utf8_size(staged[INPUT_KEY]) > INLINE_LIMIT
    env = {e["name"]: e.get("value") for e in plan.job.job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert STEP_INPUT_ENV not in env and INPUT_FILE_ENV in env
    # The planner reads the finished Job's input back from that ConfigMap (and nothing without it).
    finished = {**plan.job.job, "status": {"succeeded": 1, "completionTime": "2027-01-01T00:00:21Z",
                                           "conditions": [{"type": "Complete", "status": "True"}]}}
    seen = observe_job(finished, staged_input=staged[INPUT_KEY])
    assert seen.state == "Succeeded" and seen.inputs == plan.job.inputs
    assert observe_job(finished).inputs is None
    assert observe_job(finished, staged_input=staged[INPUT_KEY].replace("old0001", "old0002")).inputs is None
    # Then the publishes, in a Job of their own once the takedowns finished.
    facts = _finish(_after(_facts(windows, closed + fresh), plan), "Succeeded", _at(21))
    second = plan_distribution(facts, CONFIG, _at(22))
    assert second.job is not None and [a.action for a in second.job.inputs.actions] == ["publish"] * 3


def test_a_failed_job_is_counted_from_its_annotation_without_reading_its_input() -> None:
    from kubemam.plan.distribution import ACTIONS_HASH, inputs_needed

    plan = plan_distribution(_facts(), CONFIG, _at(1))
    assert plan.job is not None
    job = json.loads(json.dumps(plan.job.job))
    assert job["metadata"]["annotations"][ACTIONS_HASH] == plan.job.inputs.actions_hash
    job["status"] = {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2027-01-01T00:00:04Z"}]}
    assert inputs_needed(job)  # not recorded yet
    job["metadata"]["annotations"][APPLIED] = "true"
    assert not inputs_needed(job)
    seen = observe_job(job)
    assert seen.inputs is None and seen.actions_hash == plan.job.inputs.actions_hash
    # Counted: the same batch waits out its backoff.
    waiting = plan_distribution(_facts(jobs=[seen]), CONFIG, _at(5))
    assert waiting.job is None and waiting.failed_attempts == 1 and waiting.wake == _at(6)


def test_takedowns_past_the_stage_limit_or_the_cap_follow_in_the_next_job() -> None:
    """A worldwide target's takedown is ~1.3 KB: what does not fit beside the feeds waits for the next Job."""
    world = list(ISO3166_ALPHA2)
    target = DistributionTarget(name="svod-world", channel="svod", origin="s3://origin/world", territories=world)
    spec = RightsWindowSpec.model_validate({"assets": {"selector": {"matchLabels": {"series": "coastal"}}},
                                            "territories": world, "channels": ["svod"], "start": _at(0),
                                            "end": _at(10)})
    closed = [AssetFacts(f"t{n:04d}", {"series": "coastal"}, MediaAssetStatus.model_validate({
        "packages": [{"format": "dash", "manifestUri": f"s3://lib/assets/media/t{n:04d}/packages/abc/manifest.mpd"}],
        "distribution": [{"target": "svod-world", "window": "w1", "channel": "svod", "territories": world,
                          "state": "Published", "since": "2026-12-31T00:00:00Z",
                          "origin": f"s3://origin/world/media/t{n:04d}"}]})) for n in range(1200)]
    facts = DistributionFacts("media", [WindowFacts("w1", 1, spec)], closed, [], [target])
    plan = plan_distribution(facts, CONFIG, _at(20))
    assert plan.job is not None
    first = len(plan.job.inputs.actions)
    assert 300 < first < 1200
    assert sum(utf8_size(k) + utf8_size(v) for k, v in staged_files(plan.job.job).items()) <= STAGE_LIMIT
    second = plan_distribution(_finish(_after(facts, plan), "Succeeded", _at(21)), CONFIG, _at(22))
    assert second.job is not None and first + len(second.job.inputs.actions) == 1200
    assert MAX_TAKEDOWNS >= 1000 and MAX_PUBLISHES <= MAX_TAKEDOWNS


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
    assert not asset.required and asset.resource_version is None  # no conditions, no publish: not guarded
    # The Distributed condition came with the Pending record (the asset's first distribution).
    distributed = _condition(done, "ep1")
    assert distributed is not None and (distributed["status"], distributed["reason"]) == ("True", "NoFailures")
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
    # The next instant is the takedown's arming, the lead before the end.
    assert settled.writes == [] and settled.wake == _at(100) - LEAD


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
        if second == 100:  # the window closed: taken down all the same, from the origin in the record
            assert plan.job is not None and [a.action for a in plan.job.inputs.actions] == ["takedown"]
        else:
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


def test_invalid_targets_refuse_publishes_and_still_take_down() -> None:
    published = _asset(published="w1")
    # Open: the published asset stays, the new one is not published while the targets cannot be read.
    during = plan_distribution(_facts([_window()], [published, _asset("ep2")], problem="bad"), CONFIG, _at(50))
    assert during.job is None and during.failed_attempts == 0
    # Closed: the takedown goes, to the origin the record names (the targets are stand-ins).
    plan = plan_distribution(_facts([_window()], [published, _asset("ep2")], problem="bad"), CONFIG, _at(100))
    assert plan.job is not None
    assert [(a.action, a.asset, a.target, a.origin, a.purge_webhook) for a in plan.job.inputs.actions] == [
        ("takedown", "ep1", "svod-no", "s3://origin/svod-no/media/ep1", None)]
    assert [(f.uri, plan.job.feed(f.uri)) for f in plan.job.inputs.feeds] == [("s3://origin/feeds/media/svod.json", [])]
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


def test_condition_writes_are_spread_over_reconciles_records_never() -> None:
    titles = [_asset(f"ep{n:03d}", published="w1") for n in range(450)]
    plan = plan_distribution(_facts(assets=titles), CONFIG, _at(10))
    writes = plan.of(PatchAssetStatus)
    # Each title needs its Distributed condition; a reconcile writes MAX_CONDITION_WRITES and comes back.
    assert len(writes) == MAX_CONDITION_WRITES and all(set(w.patch) == {"conditions"} for w in writes)
    assert plan.wake == _at(10) + timedelta(seconds=1)
    second = plan_distribution(_after(_facts(assets=titles), plan), CONFIG, _at(11))
    assert len(second.of(PatchAssetStatus)) == MAX_CONDITION_WRITES
    assert not {w.asset for w in writes} & {w.asset for w in second.of(PatchAssetStatus)}

    # A finished takedown's records all go in one reconcile (the Job is marked applied after them).
    closing = [_asset(f"ep{n:03d}", published="w1") for n in range(450)]
    armed = plan_distribution(_facts(assets=closing), CONFIG, _at(100))
    assert armed.job is not None and len(armed.job.inputs.actions) == 450
    done = plan_distribution(_finish(_after(_facts(assets=closing), armed), "Succeeded", _at(101)), CONFIG, _at(102))
    assert sum("distribution" in w.patch for w in done.of(PatchAssetStatus)) == 450 and done.of(AnnotateJob)


# --- takedowns armed ahead of a window's end ----------------------------------------------------

def _armed(facts: DistributionFacts, plan: DistributionPlan, state: JobState = "Running") -> DistributionFacts:
    """The facts once an armed Job exists, observed as the controller observes it (from its manifest)."""
    assert plan.job is not None
    job = json.loads(json.dumps(plan.job.job))
    job["status"] = {"active": 1} if state == "Running" else {}
    seen = observe_job(job)
    assert seen.inputs == plan.job.inputs  # an armed Job's input is read while it waits: cancel or not
    return replace(_after(facts, plan), jobs=[seen])


def test_takedowns_due_at_an_end_are_armed_ahead_of_it_and_recorded_after_it() -> None:
    facts = _facts(assets=[_asset(published="w1"), _asset("ep2", published="w1")])
    early = plan_distribution(facts, CONFIG, _at(80))
    assert early.job is None and early.wake == _at(100) - LEAD

    plan = plan_distribution(facts, CONFIG, _at(86))
    assert plan.job is not None and _kinds(plan)[0] == "CreateJob"
    assert not any(w.required for w in plan.of(PatchAssetStatus))  # nothing needs to land before it
    inputs = plan.job.inputs
    assert [(a.action, a.asset) for a in inputs.actions] == [("takedown", "ep1"), ("takedown", "ep2")]
    assert inputs.not_before == _at(100)
    assert plan.job.job["metadata"]["annotations"][NOT_BEFORE] == "2027-01-01T00:01:40Z"
    # The feeds are as they will be at the end, when the Job writes them: without the titles leaving.
    assert [plan.job.feed(f.uri) for f in inputs.feeds] == [[]]
    assert plan.windows["w1"].phase == "Open" and plan.wake == _at(100)
    # Its records stay Published until the Job has verified the takedowns.
    assert [d.state for a in _after(facts, plan).assets for d in (a.status.distribution if a.status else [])] == [
        "Published", "Published"]

    running = _armed(facts, plan)
    assert plan_distribution(running, CONFIG, _at(90)).writes == []  # nothing changed: it stays armed
    at_end = plan_distribution(running, CONFIG, _at(100))
    assert at_end.job is None and not at_end.of(CancelJob)  # due now, and the armed Job does it

    done = plan_distribution(_finish(running, "Succeeded", _at(100.5)), CONFIG, _at(101))
    assert done.observations == [Observation("svod", "takedown", 0.5)] * 2
    assert [h.action for h in done.windows["w1"].history or []] == ["TakenDown", "TakenDown"]


def test_an_armed_job_is_cancelled_when_a_licence_is_extended_within_the_lead() -> None:
    facts = _facts(assets=[_asset(published="w1"), _asset("ep2", published="w1")])
    plan = plan_distribution(facts, CONFIG, _at(86))
    running = _armed(facts, plan)
    extended = replace(running, windows=[replace(running.windows[0], spec=running.windows[0].spec.model_copy(
        update={"end": _at(500)}))])
    cancel = plan_distribution(extended, CONFIG, _at(95))
    assert _kinds(cancel) == ["PatchAssetStatus", "PatchAssetStatus", "CancelJob", "PatchWindowStatus"]
    [what] = cancel.of(CancelJob)
    assert what.job == plan.job.name if plan.job else False
    assert what.why == "ep1 on svod-no is no longer due to be taken down at 2027-01-01T00:01:40Z (and 1 more)"
    # Its pod may have deleted in a race with the cancel: the records say so before the Job goes, and must
    # land on the assets as they were read (else nothing follows, and the next reconcile plans again).
    for write in cancel.of(PatchAssetStatus):
        assert write.required and [d["state"] for d in write.patch["distribution"]] == ["Failed"]

    # Cancelled and being deleted, the Job holds the namespace until its pod is gone; it is never recorded.
    marked = _after(extended, cancel)
    gone_soon = replace(marked, jobs=[replace(j, cancelled=True, applied=True, deleting=True) for j in marked.jobs])
    waiting = plan_distribution(gone_soon, CONFIG, _at(96))
    assert waiting.job is None and not waiting.of(CancelJob) and not waiting.of(AnnotateJob)
    # Cancelled but not deleted (the operator stopped in between): deleted again.
    again = plan_distribution(replace(gone_soon, jobs=[replace(j, deleting=False) for j in gone_soon.jobs]),
                              CONFIG, _at(96))
    assert [w.job for w in again.of(CancelJob)] == [what.job]
    # Gone: whatever the pod did, both titles are published again while the extended licence runs.
    republish = plan_distribution(replace(gone_soon, jobs=[]), CONFIG, _at(97))
    assert republish.job is not None and republish.job.inputs.not_before is None
    assert [(a.action, a.asset) for a in republish.job.inputs.actions] == [("publish", "ep1"), ("publish", "ep2")]


def test_an_armed_job_is_kept_when_more_takedowns_fall_due_with_it() -> None:
    facts = _facts([_window(names=["ep1"])], [_asset(published="w1"), _asset("ep2")])
    plan = plan_distribution(facts, CONFIG, _at(86))
    assert plan.job is not None and [a.asset for a in plan.job.inputs.actions] == ["ep1"]
    running = _armed(facts, plan)
    # ep2, published under another window, is found to end at the same second: it follows, nothing is cancelled.
    later = replace(running, windows=[*running.windows, _window("w2", names=["ep2"])],
                    assets=[running.assets[0], _asset("ep2", published="w2")])
    kept = plan_distribution(later, CONFIG, _at(90))
    assert kept.job is None and not kept.of(CancelJob)


def test_publishes_due_now_go_before_an_armed_takedown() -> None:
    facts = _facts([_window(names=["ep1"]), _window("w2", 0, 500, names=["ep2"])],
                   [_asset(published="w1"), _asset("ep2")])
    # Within the lead, a publish due now still goes first (never held back by ends that keep coming)...
    first = plan_distribution(facts, CONFIG, _at(90))
    assert first.job is not None and first.job.inputs.not_before is None
    assert [(a.action, a.asset) for a in first.job.inputs.actions] == [("publish", "ep2")]
    # ...and once it is recorded, the takedown is armed for the end.
    done = plan_distribution(_finish(_after(facts, first), "Succeeded", _at(92)), CONFIG, _at(93))
    assert done.job is not None and done.job.inputs.not_before == _at(100)
    assert [(a.action, a.asset) for a in done.job.inputs.actions] == [("takedown", "ep1")]


def test_no_lead_takes_down_at_the_end() -> None:
    config = OperatorConfig(takedown_lead_seconds=0)
    facts = _facts(assets=[_asset(published="w1")])
    early = plan_distribution(facts, config, _at(99))
    assert early.job is None and early.wake == _at(100)
    plan = plan_distribution(facts, config, _at(100))
    assert plan.job is not None and plan.job.inputs.not_before is None
    assert NOT_BEFORE not in plan.job.job["metadata"]["annotations"]


def test_a_cancelled_job_is_observed_as_such() -> None:
    facts = _facts(assets=[_asset(published="w1")])
    plan = plan_distribution(facts, CONFIG, _at(86))
    assert plan.job is not None
    job = json.loads(json.dumps(plan.job.job))
    job["metadata"]["annotations"].update({CANCELLED: "true", APPLIED: "true"})
    job["metadata"]["deletionTimestamp"] = "2027-01-01T00:01:35Z"
    seen = observe_job(job)
    assert (seen.cancelled, seen.deleting, seen.not_before, seen.inputs) == (True, True, _at(100), None)


# --- one bad target: quarantined pairs, the rest flowing -----------------------------------------

BROKEN = DistributionTarget(name="svod-no-b", channel="svod", origin="s3://broken/svod-no", territories=["NO"])


def _on_both(name: str = "ep1", window: str = "w1") -> AssetFacts:
    """Published on the good target and on the one about to break."""
    records = [{"target": t.name, "window": window, "channel": "svod", "territories": ["NO"], "state": "Published",
                "since": "2026-12-31T00:00:00Z", "origin": f"{t.origin}/media/{name}"} for t in (NORWAY, BROKEN)]
    status = {"packages": [{"format": "dash", "manifestUri": f"s3://lib/assets/media/{name}/packages/abc/x.mpd"}],
              "distribution": records}
    return AssetFacts(name, {"series": "coastal"}, MediaAssetStatus.model_validate(status), 3, "rv-1")


def _two_targets(facts: DistributionFacts) -> DistributionFacts:
    return replace(facts, targets=[NORWAY, BROKEN])


def _fail(facts: DistributionFacts, at: datetime, errors: dict[int, str]) -> DistributionFacts:
    """The running Job fails, its worker naming the actions that failed (index → error)."""
    texts = sorted(set(errors.values()))
    failure = DistributeFailure(error=f"{len(errors)} actions failed", errors=texts,
                                failed=[(i, texts.index(e)) for i, e in sorted(errors.items())])
    return replace(facts, jobs=[replace(j, state="Failed", finished_at=at, failure=failure)
                                if j.state in ("Pending", "Running") else j for j in facts.jobs])


def _record(facts: DistributionFacts, asset: str, target: str) -> dict[str, Any]:
    status = next(a.status for a in facts.assets if a.name == asset)
    assert status is not None
    return next(d.to_wire() for d in status.distribution or [] if d.target == target)


def _condition(facts: DistributionFacts, asset: str) -> dict[str, Any] | None:
    status = next(a.status for a in facts.assets if a.name == asset)
    assert status is not None
    found = find(status.conditions, "Distributed")
    return found.to_wire() if found else None


def test_a_failing_target_is_quarantined_and_the_rest_of_the_batch_is_recorded() -> None:
    facts = _two_targets(_facts(assets=[_on_both()]))
    plan = plan_distribution(facts, CONFIG, _at(100))
    assert plan.job is not None
    assert [(a.action, a.target) for a in plan.job.inputs.actions] == [("takedown", "svod-no"),
                                                                       ("takedown", "svod-no-b")]
    error = "listing s3://broken/svod-no/media/ep1: bucket broken does not exist"
    failed = _fail(_after(facts, plan), _at(102), {1: error})

    recorded = plan_distribution(failed, CONFIG, _at(103))
    # The takedown that ran inside the failed batch is recorded like any other: history, Event, metric.
    assert [(h.action, h.target) for h in recorded.windows["w1"].history or []] == [("TakenDown", "svod-no")]
    assert [e.event["reason"] for e in recorded.of(CreateEvent)] == ["TakenDown"]
    assert recorded.observations == [Observation("svod", "takedown", 2.0)]
    # The failing pair is quarantined: still Published (it may be on the origin), held back 2 s.
    facts = _after(failed, recorded)
    assert _record(facts, "ep1", "svod-no")["state"] == "TakenDown"
    held = _record(facts, "ep1", "svod-no-b")
    assert held["state"] == "Published" and held["quarantine"] == {
        "action": "takedown", "attempts": 1, "error": error, "since": "2027-01-01T00:01:42Z",
        "retryAt": "2027-01-01T00:01:44Z"}
    assert recorded.job is None and recorded.wake == _at(104) and recorded.quarantined == 1
    # Marked as a per-action failure: the batch as a whole is not backed off on top of the pair.
    assert recorded.of(AnnotateJob) == [AnnotateJob(failed.jobs[0].name, {APPLIED: "true", ISOLATED: "1"},
                                                    RECORDED_JOB_TTL)]
    # Said on the asset (conditions guarded by the asset's resourceVersion) and on the window.
    [write] = recorded.of(PatchAssetStatus)
    assert write.resource_version == "rv-1" and set(write.fallback or {}) == {"distribution"}
    condition = _condition(facts, "ep1")
    assert condition is not None and (condition["status"], condition["reason"]) == ("False", "Quarantined")
    assert "svod-no-b: takedown failed 1 time" in condition["message"] and error in condition["message"]
    assert condition["observedGeneration"] == 3
    window = find(recorded.windows["w1"].conditions, "Distributed")
    assert window is not None and window.status == "False" and "ep1 on svod-no-b: takedown" in window.message

    # Due again: a Job of its own, under a new name (another attempt of the same actions).
    retry = plan_distribution(facts, CONFIG, _at(104))
    assert retry.job is not None and [a.target for a in retry.job.inputs.actions] == ["svod-no-b"]
    again = plan_distribution(_after(facts, retry), CONFIG, _at(105))
    assert again.job is None  # one at a time
    twice = _fail(_after(facts, retry), _at(106), {0: error})
    second = plan_distribution(twice, CONFIG, _at(106))
    facts = _after(twice, second)
    assert _record(facts, "ep1", "svod-no-b")["quarantine"]["attempts"] == 2
    assert second.wake == _at(110)  # 4 s after the second failure
    third = plan_distribution(facts, CONFIG, _at(110))
    assert third.job is not None and third.job.name not in {j.name for j in facts.jobs}

    # Fixed: the retry verifies (an origin that holds nothing is taken down at once), the pair is clear.
    fixed = _finish(_after(facts, third), "Succeeded", _at(111))
    done = plan_distribution(fixed, CONFIG, _at(112))
    facts = _after(fixed, done)
    record = _record(facts, "ep1", "svod-no-b")
    assert record["state"] == "TakenDown" and "quarantine" not in record
    assert done.quarantined == 0 and (_condition(facts, "ep1") or {}).get("status") == "True"
    assert find(done.windows["w1"].conditions, "Distributed").status == "True"  # type: ignore[union-attr]


def test_a_quarantined_pair_holds_back_only_itself() -> None:
    """While one pair waits out its backoff, another asset's publish on the same targets goes."""
    windows = [_window("w1", 0, 100), _window("w2", 0, 500, names=["ep2"])]
    facts = _two_targets(_facts(windows, [_on_both(), _asset("ep2")]))
    first = plan_distribution(facts, CONFIG, _at(100))
    assert first.job is not None  # the takedowns go first
    facts = _after(facts, first)
    error = "bucket broken: AccessDenied"
    recorded = plan_distribution(_fail(facts, _at(101), {1: error}), CONFIG, _at(101))
    facts = _after(_fail(facts, _at(101), {1: error}), recorded)
    assert recorded.job is not None  # ep2's publishes, at once
    assert [(a.action, a.asset, a.target) for a in recorded.job.inputs.actions] == [
        ("publish", "ep2", "svod-no"), ("publish", "ep2", "svod-no-b")]
    # The feeds advertise what is on the origins and what this batch publishes, nothing held back.
    feeds = {f.uri: [(e["asset"], e["target"]) for e in recorded.job.feed(f.uri)] for f in recorded.job.inputs.feeds}
    assert feeds == {"s3://origin/feeds/media/svod.json": [("ep2", "svod-no")],
                     "s3://broken/feeds/media/svod.json": [("ep2", "svod-no-b")]}
    # ep2 on the broken target fails too; on the good one it is published.
    facts = _fail(facts, _at(104), {1: "bucket broken: AccessDenied"})
    plan = plan_distribution(facts, CONFIG, _at(104))
    facts = _after(facts, plan)
    assert _record(facts, "ep2", "svod-no")["state"] == "Published"
    assert _record(facts, "ep2", "svod-no-b")["state"] == "Failed"  # may have landed in part
    assert _record(facts, "ep2", "svod-no-b")["quarantine"]["action"] == "publish"
    assert plan.quarantined == 2
    # ep1's takedown is due again (2 s after 101): its retry carries the feeds, without the held publish.
    nxt = plan
    assert nxt.job is not None and [(a.asset, a.target) for a in nxt.job.inputs.actions] == [("ep1", "svod-no-b")]
    feeds = {f.uri: [(e["asset"], e["target"]) for e in nxt.job.feed(f.uri)] for f in nxt.job.inputs.feeds}
    assert feeds == {"s3://origin/feeds/media/svod.json": [("ep2", "svod-no")],
                     "s3://broken/feeds/media/svod.json": []}


def test_a_quarantined_publish_whose_licence_ends_is_taken_down_at_once() -> None:
    facts = _two_targets(_facts(assets=[_asset()]))
    plan = plan_distribution(facts, CONFIG, _at(1))
    facts = _fail(_after(facts, plan), _at(2), {1: "copying: AccessDenied"})
    facts = _after(facts, plan_distribution(facts, CONFIG, _at(2)))
    assert _record(facts, "ep1", "svod-no-b")["quarantine"]["retryAt"] == "2027-01-01T00:00:04Z"
    # The window closes: the takedown is another action than the one held back, so it goes now.
    closed = plan_distribution(facts, CONFIG, _at(100))
    assert closed.job is not None
    assert [(a.action, a.target) for a in closed.job.inputs.actions] == [("takedown", "svod-no"),
                                                                         ("takedown", "svod-no-b")]


def test_a_quarantine_is_lifted_when_its_action_is_no_longer_wanted() -> None:
    facts = _two_targets(_facts([_window("w1", 0, 100), _window("w2", 0, 100)], [_on_both()]))
    facts = replace(facts, windows=[_window("w1", 0, 100)])
    plan = plan_distribution(facts, CONFIG, _at(100))
    facts = _fail(_after(facts, plan), _at(101), {1: "AccessDenied"})
    facts = _after(facts, plan_distribution(facts, CONFIG, _at(101)))
    assert _record(facts, "ep1", "svod-no-b")["quarantine"]["action"] == "takedown"
    # A new licence covers the pair again: no takedown is wanted, nothing is held back any more.
    reopened = replace(facts, windows=[*facts.windows, _window("w3", 90, 500)])
    plan = plan_distribution(reopened, CONFIG, _at(102))
    after = _after(reopened, plan)
    assert "quarantine" not in _record(after, "ep1", "svod-no-b") and plan.quarantined == 0


def test_recording_a_failed_job_twice_counts_its_failure_once() -> None:
    facts = _two_targets(_facts(assets=[_on_both()]))
    plan = plan_distribution(facts, CONFIG, _at(100))
    failed = _fail(_after(facts, plan), _at(101), {1: "AccessDenied"})
    first = plan_distribution(failed, CONFIG, _at(101))
    crashed = replace(_after(failed, first), jobs=failed.jobs)  # status written, the mark lost
    again = plan_distribution(crashed, CONFIG, _at(102))
    assert _record(_after(crashed, again), "ep1", "svod-no-b")["quarantine"]["attempts"] == 1


def test_the_backoff_doubles_up_to_the_configured_longest_wait() -> None:
    config = OperatorConfig(distribution_retry_max_seconds=10)
    facts = _two_targets(_facts(assets=[_on_both()]))
    at = 100.0
    waits = []
    for _ in range(5):
        plan = plan_distribution(facts, config, _at(at))
        assert plan.job is not None
        bad = next(i for i, a in enumerate(plan.job.inputs.actions) if a.target == "svod-no-b")
        facts = _fail(_after(facts, plan), _at(at), {bad: "AccessDenied"})
        recorded = plan_distribution(facts, config, _at(at))
        facts = _after(facts, recorded)
        assert recorded.wake is not None
        waits.append((recorded.wake - _at(at)).total_seconds())
        at = recorded.wake.timestamp() - T0.timestamp()
    assert waits == [2, 4, 8, 10, 10]  # never dropped: retried for as long as it fails


def test_an_asset_being_deleted_is_taken_down_and_not_published_anywhere() -> None:
    deleting = replace(_on_both(), deleting=True)
    fresh = replace(_asset("ep2"), deleting=True)
    plan = plan_distribution(_two_targets(_facts(assets=[deleting, fresh])), CONFIG, _at(50))  # the window is open
    assert plan.job is not None
    assert [(a.action, a.asset, a.target) for a in plan.job.inputs.actions] == [
        ("takedown", "ep1", "svod-no"), ("takedown", "ep1", "svod-no-b")]
    assert all(plan.job.feed(f.uri) == [] for f in plan.job.inputs.feeds)
    done = _finish(_after(_two_targets(_facts(assets=[deleting, fresh])), plan), "Succeeded", _at(52))
    settled = _after(done, plan_distribution(done, CONFIG, _at(53)))
    assert plan_distribution(settled, CONFIG, _at(54)).job is None  # ep2 is never published
    status = next(a.status for a in settled.assets if a.name == "ep1")
    assert still_distributed(status.to_wire() if status else None) == []
    assert still_distributed(_on_both().status.to_wire() if _on_both().status else None) == ["svod-no",
                                                                                            "svod-no-b"]


def test_the_same_actions_needed_again_get_a_new_job_name() -> None:
    first = plan_distribution(_facts(), CONFIG, _at(1))
    assert first.job is not None
    # The publish finished and was recorded; the same publish is needed again (its record lost, say).
    done = replace(_after(_facts(), first), jobs=[DistributeJob(first.job.name, "Succeeded", None, _at(2),
                                                                applied=True)])
    again = plan_distribution(done, CONFIG, _at(3))
    assert again.job is not None and again.job.name != first.job.name and again.job.inputs.attempt == 1


def test_a_batch_never_holds_two_overlapping_origins() -> None:
    renamed = AssetFacts("ep1", {"series": "coastal"}, MediaAssetStatus.model_validate({"distribution": [
        {"target": old, "window": "w1", "channel": "svod", "territories": ["NO"], "state": "Published",
         "origin": "s3://origin/svod-no/media/ep1"} for old in ("old-a", "old-b")]}))
    plan = plan_distribution(_facts(assets=[renamed]), CONFIG, _at(10))
    assert plan.job is not None and [a.target for a in plan.job.inputs.actions] == ["old-a"]
    done = _finish(_after(_facts(assets=[renamed]), plan), "Succeeded", _at(11))
    nxt = plan_distribution(done, CONFIG, _at(12))  # the first recorded, the second goes
    assert nxt.job is not None and [a.target for a in nxt.job.inputs.actions] == ["old-b"]


def test_nested_origins_are_held_back_whichever_comes_first() -> None:
    from kubemam.plan.distribution import _Folders

    folders = _Folders()
    for folder in ("origin/svod/ns/a/", "origin/svod/ns/c/", "origin/avod/"):
        assert not folders.overlaps(folder)
        folders.add(folder)
    assert folders.overlaps("origin/svod/ns/a/")  # the same
    assert folders.overlaps("origin/avod/ns/b/")  # inside one taken
    assert folders.overlaps("origin/svod/")  # holds one taken
    assert not folders.overlaps("origin/svod/ns/b/") and not folders.overlaps("origin/svod/ns/a-b/")
    assert not folders.overlaps("origin/av/")


def test_a_failed_jobs_report_is_read_from_its_termination_message() -> None:
    plan = plan_distribution(_facts(), CONFIG, _at(1))
    assert plan.job is not None
    job = json.loads(json.dumps(plan.job.job))
    job["status"] = {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2027-01-01T00:00:04Z"}]}
    message = json.dumps({"error": "distribute: 1 of 1 actions failed", "failed": [[0, 0]], "errors": ["AccessDenied"],
                          "usage": "s3://lib/usage/media/x.json"})
    seen = observe_job(job, message)
    assert seen.failure is not None and seen.failure.errors_by_action() == {0: "AccessDenied"}
    # A crash (no per-action report) is a failure of the whole batch.
    crash = observe_job(job, json.dumps({"error": "distribute failed (the Job retries it): OSError",
                                         "retryable": True}))
    assert crash.failure is None and not crash.isolated
    job["metadata"]["annotations"].update({APPLIED: "true", ISOLATED: "1"})
    assert observe_job(job).isolated is True


def test_an_asset_deleted_while_its_publish_runs_waits_and_is_taken_down_after_it() -> None:
    first = plan_distribution(_facts(), CONFIG, _at(1))
    running = _after(_facts(), first)
    status = running.assets[0].status
    assert status is not None and still_distributed(status.to_wire()) == ["svod-no"]  # Pending: the handler waits
    deleting = replace(running, assets=[replace(a, deleting=True) for a in running.assets])
    assert plan_distribution(deleting, CONFIG, _at(2)).job is None  # one Job at a time: the publish ends first
    done = _finish(deleting, "Succeeded", _at(3))
    plan = plan_distribution(done, CONFIG, _at(4))
    assert [d["state"] for w in plan.of(PatchAssetStatus) for d in w.patch["distribution"]] == ["Published"]
    assert plan.job is not None and [a.action for a in plan.job.inputs.actions] == ["takedown"]
