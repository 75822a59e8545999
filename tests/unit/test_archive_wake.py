"""The archive wake (plan/archive_wake.py), pure: the instant time alone next changes an archived asset's plan.

For each time-driven change the plan one second before the wake is the plan at now, and at the wake it is
not; and over a few hundred seeded random policies, clocks and states, no instant in [now, wake) plans
differently from now (a missed transition would be a tier move or a fixity run that never happens).
"""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubemam.api.archive import ArchivePolicySpec
from kubemam.plan.archive import policy_problems
from kubemam.plan.archive_wake import SLOT_HORIZON, poll_wake, slot_wake
from kubemam.plan.archiving import (
    CONFIRM_VACATE_ANNOTATION,
    FIXITY_ANNOTATION,
    LEGAL_HOLD_ANNOTATION,
    RESTORE_ANNOTATION,
    RESTORE_POLL,
    ArchiveFacts,
    ArchiveOutcome,
    plan_archive,
)
from kubemam.plan.asset import JobObservation
from tests.unit.test_archive_plan import (
    CONFIG,
    NOW,
    POLICY_DOC,
    _copy,
    _facts,
    _inputs,
    _policy,
    _settled,
    _step,
    _succeeded,
    _with,
)

SECOND = timedelta(seconds=1)


def _seen(outcome: ArchiveOutcome) -> dict[str, Any]:
    """What a reconcile does with the outcome: Jobs created and recorded, conditions, status, Events, metrics."""
    return {
        "create": sorted(j["metadata"]["name"] for j in outcome.create_jobs),
        "jobs": [j.to_wire() for j in outcome.jobs],
        "verdicts": [(v.type, v.status, v.reason, v.message) for v in outcome.verdicts],
        "storage": outcome.storage.to_wire() if outcome.storage is not None else None,
        "events": outcome.events, "holding": outcome.holding,
        "failed": outcome.failed, "fixity": (outcome.fixity_failures, outcome.fixity_repaired),
        "copied": outcome.copied,
    }


def _settle(facts: ArchiveFacts, now: datetime) -> ArchiveFacts:
    """The facts once the reconcile at now wrote its status (and the next one found nothing more to write)."""
    for _ in range(6):
        outcome = plan_archive(facts, CONFIG, now)
        if outcome.storage == facts.status.storage:
            return facts
        facts = _settled(facts, outcome)
    raise AssertionError(f"the status does not settle at {now}: {outcome.storage}")


def _placed(policy: ArchivePolicySpec, at: datetime = NOW, **extra: Any) -> ArchiveFacts:
    """An asset ingested at `at` whose place Job succeeded then, its status written."""
    first = plan_archive(_facts(policy), CONFIG, at)
    [place] = _step(first, "archive")
    done = _succeeded(first, "archive", {"tier": _inputs(place)["tier"], "copiedBytes": {},
                                         "copies": [_copy(t["location"]) for t in _inputs(place)["targets"]]})
    return _settle(_with(_facts(policy, storage=first.storage, jobs=[done]), **extra), at)


def _edges(facts: ArchiveFacts, now: datetime) -> tuple[datetime, ArchiveOutcome, ArchiveOutcome, ArchiveOutcome]:
    """The wake, and the plans at now, one second before the wake and at the wake."""
    outcome = plan_archive(facts, CONFIG, now)
    assert outcome.wake is not None and outcome.wake > now
    return (outcome.wake, outcome, plan_archive(facts, CONFIG, outcome.wake - SECOND),
            plan_archive(facts, CONFIG, outcome.wake))


def _no_fixity(**changes: Any) -> ArchivePolicySpec:
    return _policy(fixity=None, **changes)


def test_a_tier_transition_wakes_the_asset_at_its_instant() -> None:
    facts = _placed(_no_fixity())
    wake, now, before, at = _edges(facts, NOW)
    assert wake == NOW + timedelta(days=30)  # warm: 30 days without use
    assert _seen(before) == _seen(now) and _step(now, "archive") == []
    [move] = _step(at, "archive")
    assert _inputs(move)["tier"] == "warm" and _inputs(move)["mode"] == "place"
    # Used since: the tiers counted from last use wait for it.
    used = _settle(_with(facts, status=facts.status.model_copy(update={"storage": facts.status.storage.model_copy(
        update={"last_used_at": NOW + timedelta(days=10)})})), NOW + timedelta(days=10))
    assert plan_archive(used, CONFIG, NOW + timedelta(days=12)).wake == NOW + timedelta(days=40)
    # Only a tier past the current one counts: once warm, the next is cold at 180 days.
    assert plan_archive(facts, CONFIG, NOW + timedelta(days=31)).wake == NOW + timedelta(days=180)
    assert plan_archive(facts, CONFIG, NOW + timedelta(days=181)).wake is None  # nothing more comes with time


def test_a_restore_restarts_every_tier_clock_from_the_request() -> None:
    facts = _placed(_no_fixity())
    later = NOW + timedelta(days=200)  # in the vault
    asked = _settle(_with(facts, annotations={RESTORE_ANNOTATION: "r1"}), later)
    assert asked.status.storage.restore.requested_at == later
    wake, now, before, at = _edges(asked, later + timedelta(hours=1))
    assert wake == later + timedelta(days=30)
    assert _seen(before) == _seen(now) and _inputs(_step(now, "archive")[0])["tier"] == "hot"
    assert _inputs(_step(at, "archive")[0])["tier"] == "warm"


def test_a_fixity_slot_wakes_the_asset_and_an_answered_slot_aims_at_the_next() -> None:
    facts = _placed(_policy())  # weekly; NOW is a Monday noon
    wake, now, before, at = _edges(facts, NOW)
    assert wake == datetime(2026, 11, 29, tzinfo=UTC)
    assert _seen(before) == _seen(now) and _step(now, "fixity") == []
    [run] = _step(at, "fixity")
    assert _inputs(run)["run"] == "slot:2026-11-29T00:00:00+00:00"
    # While the slot's run is pending, the next slot changes the run: it is the next wake.
    assert plan_archive(facts, CONFIG, wake + timedelta(hours=1)).wake == datetime(2026, 12, 6, tzinfo=UTC)
    done = JobObservation(run["metadata"]["name"], "fixity", "h", "Succeeded", result={"checked": 6})
    answered = _settle(_with(facts, jobs=[*facts.jobs, done]), wake + timedelta(hours=1))
    assert answered.status.storage.fixity.last_slot == wake
    wake2, now2, before2, at2 = _edges(answered, wake + timedelta(hours=2))
    assert wake2 == datetime(2026, 12, 6, tzinfo=UTC)
    assert _seen(before2) == _seen(now2) and _inputs(_step(at2, "fixity")[0])["run"].startswith("slot:2026-12-06")


def test_a_pending_fixity_request_holds_the_schedule_so_no_slot_wakes_the_asset() -> None:
    facts = _settle(_with(_placed(_policy()), annotations={FIXITY_ANNOTATION: "now"}), NOW)
    outcome = plan_archive(facts, CONFIG, NOW)
    assert _inputs(_step(outcome, "fixity")[0])["run"] == "request:now"
    assert outcome.wake == NOW + timedelta(days=30)  # the tier, not the weekly slot
    # and indeed a week later the plan is the same: the request runs first, whatever the slot.
    assert _seen(plan_archive(facts, CONFIG, NOW + timedelta(days=8))) == _seen(outcome)


def test_the_end_of_a_grace_wakes_the_asset_and_a_confirmation_needs_no_wake() -> None:
    facts = _placed(_no_fixity())  # three copies
    lowered = _with(facts, policy=_no_fixity(copies={"minCopies": 2, "requireOffsite": True, "vacateAfterHours": 6}))
    first = plan_archive(lowered, CONFIG, NOW)
    done = _succeeded(first, "archive", {"tier": "hot", "copies": [_copy("library"), _copy("vault")]})
    kept = _settle(_with(lowered, jobs=[done]), NOW)
    assert kept.status.storage.extra_copies.locations == ["nearline"]
    wake, now, before, at = _edges(kept, NOW + timedelta(hours=1))
    assert wake == NOW + timedelta(hours=6)
    assert _seen(before) == _seen(now) and _step(now, "archive") == []
    assert _inputs(_step(at, "archive")[0])["vacate"] == ["nearline"]
    token = kept.status.storage.extra_copies.token
    confirmed = _with(kept, annotations={CONFIRM_VACATE_ANNOTATION: token})
    assert plan_archive(confirmed, CONFIG, NOW + timedelta(hours=1)).wake == NOW + timedelta(days=30)


def test_a_thawing_copy_is_asked_again_at_each_poll_and_not_in_between() -> None:
    policy = _no_fixity()
    first = plan_archive(_facts(policy), CONFIG, NOW)
    thawing = _succeeded(first, "archive", {"restoring": {"location": "vault", "storageClass": "DEEP_ARCHIVE"}})
    facts = _settle(_facts(policy, storage=first.storage, jobs=[thawing]), NOW)
    wake, now, before, at = _edges(facts, NOW + timedelta(minutes=7))
    assert wake == NOW + RESTORE_POLL
    assert _seen(before) == _seen(now)
    assert _step(at, "archive") and _step(at, "archive") != _step(now, "archive")
    assert poll_wake(wake, RESTORE_POLL) == wake + RESTORE_POLL  # on the boundary: the next one


def test_nothing_time_driven_means_no_wake() -> None:
    single = _no_fixity(tiers=[POLICY_DOC["tiers"][0]], copies={"minCopies": 1})
    assert plan_archive(_placed(single), CONFIG, NOW + timedelta(days=3000)).wake is None
    # A refused plan (no checksum) waits for a change, not for time.
    facts = _placed(_policy())
    bare = _with(facts, status=facts.status.model_copy(update={"technical": None}))
    assert plan_archive(bare, CONFIG, NOW).wake is None


def test_a_schedule_with_no_slot_within_the_horizon_is_looked_at_again_at_the_horizon() -> None:
    facts = _placed(_policy(fixity={"schedule": "0 0 29 2 *", "algorithm": "sha256"}))  # 29 February: 2028
    storage = facts.status.storage
    assert slot_wake(facts, storage, NOW) == NOW + SLOT_HORIZON  # early, never late
    assert slot_wake(facts, storage, NOW + timedelta(days=300)) == datetime(2028, 2, 29, tzinfo=UTC)


# --- The safety property over random policies, clocks and states ---------------------------------------------

SCHEDULES = [None, "@daily", "@weekly", "@monthly", "0 3 * * 1-5", "*/15 * * * *", "30 2 1 * *", "0 0 29 2 *"]


def _random_policy(rng: random.Random) -> ArchivePolicySpec:
    tiers = [copy.deepcopy(POLICY_DOC["tiers"][0])]
    days = sorted(rng.sample([0.01, 0.3, 1.0, 2.5, 7.0, 30.0, 90.0], 2))
    later = [t for t in copy.deepcopy(POLICY_DOC["tiers"][1:]) if rng.random() < 0.7]
    for tier, after in zip(later, days, strict=False):
        tier["transition"] = {"afterDays": after, "since": rng.choice(["ingest", "lastUse"])}
        tier["storageClass"] = rng.choice(["STANDARD", "REDUCED_REDUNDANCY"])
        tiers.append(tier)
    schedule = rng.choice(SCHEDULES)
    policy = _policy(tiers=tiers, fixity={"schedule": schedule, "algorithm": "sha256"} if schedule else None,
                     copies={"minCopies": rng.randint(1, 3), "requireOffsite": rng.random() < 0.5,
                             "vacateAfterHours": rng.choice([0.01, 1.0, 24.0, 200.0])})
    assert policy_problems(policy) == []
    return policy


def _random_state(seed: int) -> tuple[ArchiveFacts, datetime]:
    """A settled asset: placed at a random past instant under a random policy, perhaps with a policy edit since,
    a thawing copy, a last use, a restore, a fixity request, a hold or a confirmation, looked at later."""
    rng = random.Random(seed)
    policy = _random_policy(rng)
    ingested = NOW - timedelta(days=rng.uniform(0, 100), seconds=rng.randint(0, 86399))
    first = plan_archive(_facts(policy), CONFIG, ingested)
    place = _step(first, "archive")[0]
    targets = [t["location"] for t in _inputs(place)["targets"]]
    if rng.random() < 0.15:
        result: dict[str, Any] = {"restoring": {"location": targets[0], "storageClass": "DEEP_ARCHIVE"}}
    else:
        result = {"tier": _inputs(place)["tier"], "copies": [_copy(n) for n in targets], "copiedBytes": {}}
    jobs = [_succeeded(first, "archive", result)]
    at = ingested + timedelta(seconds=rng.randint(0, 3 * 86400))
    facts = _settle(_facts(policy, storage=first.storage, jobs=jobs), at)
    if rng.random() < 0.3:  # a policy edit: extra copies and their grace
        facts = _with(facts, policy=_random_policy(rng))
    annotations = {}
    for key, value, chance in ((RESTORE_ANNOTATION, "r1", 0.15), (FIXITY_ANNOTATION, "f1", 0.1),
                               (LEGAL_HOLD_ANNOTATION, "true", 0.1), (CONFIRM_VACATE_ANNOTATION, "nope", 0.1)):
        if rng.random() < chance:
            annotations[key] = value
    facts = _with(facts, annotations=annotations)
    storage = facts.status.storage
    if rng.random() < 0.3 and storage is not None:
        used = at + timedelta(days=rng.uniform(0, 20))
        facts = _with(facts, status=facts.status.model_copy(update={"storage": storage.model_copy(
            update={"last_used_at": used})}))
        at = max(at, used)
    now = at + timedelta(seconds=rng.randint(0, 40 * 86400))
    return _settle(facts, now), now


@pytest.mark.parametrize("batch", range(6))
def test_no_instant_before_the_wake_plans_differently_and_the_wake_itself_does(batch: int) -> None:
    woken = 0
    for seed in range(batch * 50, batch * 50 + 50):
        facts, now = _random_state(seed)
        outcome = plan_archive(facts, CONFIG, now)
        wake = outcome.wake
        assert wake is None or wake > now, seed
        end = wake or now + timedelta(days=800)
        rng = random.Random(seed)
        span = (end - now).total_seconds()
        samples = [now + SECOND, end - SECOND] + [now + timedelta(seconds=rng.uniform(0, span)) for _ in range(4)]
        for instant in samples:
            if now <= instant < end:
                assert _seen(plan_archive(facts, CONFIG, instant)) == _seen(outcome), (seed, now, instant, wake)
        if wake is not None and wake - now < SLOT_HORIZON:
            # Not early either (but for a schedule's horizon): something changes at the wake.
            assert _seen(plan_archive(facts, CONFIG, wake)) != _seen(outcome), (seed, now, wake)
            woken += 1
    assert woken >= 15  # the sample really exercises transitions, slots, graces and polls
