"""Archive planning, pure: tiers by age, 3-2-1 placement, fixity slots, restore, retention and hold."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from kubemam.api.archive import ArchivePolicySpec
from kubemam.api.asset import MediaAssetSpec, MediaAssetStatus, StorageCopy, StorageStatus, TechnicalMetadata
from kubemam.config import OperatorConfig
from kubemam.plan.archive import policy_problems
from kubemam.plan.archiving import (
    CONFIRM_VACATE_ANNOTATION,
    FIXITY_ANNOTATION,
    LEGAL_HOLD_ANNOTATION,
    RESTORE_ANNOTATION,
    ArchiveFacts,
    deletion_blocker,
    plan_archive,
    purge_request,
)
from kubemam.plan.asset import JobObservation
from kubemam.plan.placement import AssetClock, current_tier, placement
from kubemam.plan.schedule import ScheduleError, latest_slot, next_slot
from kubemam.plan.stepjob import superseded
from tests.helpers import EXAMPLES

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
POLICY_DOC = yaml.safe_load((EXAMPLES / "archivepolicy.yaml").read_text())["spec"]
ASSET_DOC = yaml.safe_load((EXAMPLES / "mediaasset.yaml").read_text())["spec"]
CONFIG = OperatorConfig(s3_endpoint="http://site-a:9000")
TECHNICAL = TechnicalMetadata(container="mxf", duration_seconds=30, size_bytes=1000, sha256="a" * 64,
                              video={"codec": "mpeg2video", "width": 1920, "height": 1080})


def _policy(**changes: Any) -> ArchivePolicySpec:
    doc = copy.deepcopy(POLICY_DOC)
    doc.update(changes)
    return ArchivePolicySpec.model_validate(doc)


def _facts(policy: ArchivePolicySpec | None = None, storage: StorageStatus | None = None,
           jobs: list[JobObservation] | None = None, annotations: dict[str, str] | None = None) -> ArchiveFacts:
    status = MediaAssetStatus(technical=TECHNICAL, storage=storage)
    return ArchiveFacts("ep1", "media", "uid-1", MediaAssetSpec.model_validate(ASSET_DOC), status,
                        policy or _policy(), annotations or {}, [], jobs or [], [])


def _cond(outcome: Any, type_: str) -> tuple[str, str]:
    verdict = next(v for v in outcome.verdicts if v.type == type_)
    return verdict.status, verdict.reason


def _step(outcome: Any, step: str) -> list[dict[str, Any]]:
    return [j for j in outcome.create_jobs if j["metadata"]["labels"]["kubemam.io/step"] == step]


def _inputs(job: dict[str, Any]) -> dict[str, Any]:
    import json

    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return dict(json.loads(next(e["value"] for e in env if e["name"] == "KUBEMAM_STEP_INPUT")))


def test_the_tier_follows_age_since_ingest_or_last_use_and_a_restore_resets_it() -> None:
    policy = _policy()
    ingested = NOW - timedelta(days=200)
    assert current_tier(policy, AssetClock(ingested), NOW) == 2  # 200 days unused: the vault
    assert current_tier(policy, AssetClock(ingested, last_used_at=NOW - timedelta(days=40)), NOW) == 1
    assert current_tier(policy, AssetClock(ingested, restored_at=NOW - timedelta(hours=1)), NOW) == 0
    # Fractions of a day count: a tier 0.5 days on is reached after 12 h.
    tiers = copy.deepcopy(POLICY_DOC["tiers"])
    tiers[1]["transition"] = {"afterDays": 0.5, "since": "ingest"}
    assert current_tier(_policy(tiers=tiers), AssetClock(NOW - timedelta(hours=13)), NOW) == 1


def test_placement_keeps_min_copies_with_one_offsite_and_a_move_vacates_the_old_tier() -> None:
    locations = copy.deepcopy(POLICY_DOC["locations"])
    policy = _policy(locations=locations, copies={"minCopies": 2, "requireOffsite": True})
    hot = placement(policy, 0)
    assert [(t.location.name, t.storage_class, t.primary) for t in hot] == [
        ("library", "STANDARD", True), ("vault", "STANDARD", False)]  # offsite first, class of no reached tier
    warm = placement(policy, 1)
    assert [t.location.name for t in warm] == ["nearline", "vault"]  # library (the tier left) is vacated
    cold = placement(policy, 2)
    assert [(t.location.name, t.storage_class) for t in cold] == [("vault", "REDUCED_REDUNDANCY"),
                                                                  ("library", "STANDARD")]


def test_fixity_schedules_are_cron_and_the_latest_missed_slot_runs_once() -> None:
    monday = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday
    assert latest_slot("@weekly", monday - timedelta(days=10), monday) == datetime(2026, 11, 22, tzinfo=UTC)
    assert latest_slot("@weekly", datetime(2026, 11, 22, tzinfo=UTC), monday) is None  # that one ran
    assert latest_slot("*/15 * * * *", monday - timedelta(minutes=20), monday) == monday
    assert latest_slot("30 2 1 * *", monday - timedelta(days=40), monday) == datetime(2026, 11, 1, 2, 30, tzinfo=UTC)
    assert next_slot("0 3 * * 1-5", monday) == datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    for bad in ("@often", "61 * * * *", "* * *", "a b c d e"):
        with pytest.raises(ScheduleError):
            latest_slot(bad, monday - timedelta(days=1), monday)
    problems = policy_problems(_policy(fixity={"schedule": "99 * * * *", "algorithm": "sha256"}))
    assert problems and problems[0][0] == "InvalidSchedule"


def test_an_ingested_asset_gets_one_place_job_whose_inputs_name_locations_and_credentials_by_reference() -> None:
    locations = copy.deepcopy(POLICY_DOC["locations"])
    locations[2]["endpoint"] = "http://site-b:9000"
    locations[2]["credentialsSecretRef"] = {"name": "site-b-s3"}
    outcome = plan_archive(_facts(_policy(locations=locations)), CONFIG, NOW)
    [job] = _step(outcome, "archive")
    inputs = _inputs(job)
    assert inputs["mode"] == "place" and inputs["tier"] == "hot"
    assert [t["location"] for t in inputs["targets"]] == ["library", "vault", "nearline"]  # offsite first
    vault = next(loc for loc in inputs["locations"] if loc["name"] == "vault")
    assert vault["endpoint"] == "http://site-b:9000" and vault["uri"] == "s3://kubemam-vault/masters/media/ep1"
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if e["name"].startswith("KUBEMAM_LOCATION_")}
    assert refs == {"KUBEMAM_LOCATION_2_ACCESS_KEY_ID": {"name": "site-b-s3", "key": "AWS_ACCESS_KEY_ID"},
                    "KUBEMAM_LOCATION_2_SECRET_ACCESS_KEY": {"name": "site-b-s3", "key": "AWS_SECRET_ACCESS_KEY"}}
    keys = [o["key"] for o in inputs["objects"]]
    assert keys[:2] == ["master.mov", "ebucore.xml"] and inputs["objects"][0]["sha256"] == "a" * 64
    assert b"urn:ebu:metadata-schema:ebucore" in inputs["objects"][1]["content"].encode()
    assert outcome.holding and _cond(outcome, "Replicated") == ("False", "UnderReplicated")
    # MPEG-2 is on the policy's watch list and migration is enabled: a migrate Job too.
    assert _cond(outcome, "MigrationRecommended") == ("True", "FormatAtRisk")
    assert _inputs(_step(outcome, "migrate")[0])["target"] == "ffv1-mkv"
    # Planned again with the same facts: the same Job names (nothing new is created twice).
    again = plan_archive(_facts(_policy(locations=locations)), CONFIG, NOW)
    assert [j["metadata"]["name"] for j in again.create_jobs] == [j["metadata"]["name"] for j in outcome.create_jobs]


def _copy(location: str) -> dict[str, Any]:
    return {"location": location, "uri": f"s3://x/{location}", "storageClass": "STANDARD",
            "verifiedAt": NOW.isoformat(), "verifiedBy": "s3-checksum"}


def _succeeded(outcome: Any, step: str, result: dict[str, Any], mode: str | None = None) -> JobObservation:
    """The outcome's Job of step (of that mode) as it looks once it succeeded with result."""
    job = next(j for j in _step(outcome, step) if mode is None or _inputs(j)["mode"] == mode)
    return JobObservation(job["metadata"]["name"], step, "h", "Succeeded", result=result)


def _archived(policy: ArchivePolicySpec | None = None, **extra: Any) -> tuple[ArchiveFacts, Any]:
    """An asset whose place Job succeeded with three copies."""
    first = plan_archive(_facts(policy), CONFIG, NOW)
    job = _step(first, "archive")[0]["metadata"]["name"]
    copies = [{"location": n, "uri": f"s3://x/{n}", "storageClass": "STANDARD", "verifiedAt": NOW.isoformat(),
               "verifiedBy": "s3-checksum"} for n in ("library", "nearline", "vault")]
    done = JobObservation(job, "archive", "h", "Succeeded",
                          result={"tier": "hot", "copies": copies, "copiedBytes": {"library": 1000}})
    outcome = plan_archive(_facts(policy, storage=first.storage, jobs=[done]), CONFIG, NOW)
    return _facts(policy, storage=outcome.storage, **extra), outcome


def test_a_verified_place_result_becomes_copies_replication_and_a_metric_once() -> None:
    _, outcome = _archived()
    assert outcome.storage.tier == "hot" and len(outcome.storage.copies) == 3
    assert _cond(outcome, "Archived") == ("True", "Archived") and _cond(outcome, "Replicated")[0] == "True"
    assert outcome.copied == {"hot": 1000} and not outcome.holding
    assert outcome.storage.retain_until == outcome.storage.ingested_at + timedelta(days=2555)


def test_fixity_runs_per_slot_and_per_request_and_counts_repairs_once() -> None:
    facts, archived = _archived()
    later = NOW + timedelta(days=8)  # a weekly slot has passed
    due = plan_archive(facts, CONFIG, later)
    [fixity_job] = _step(due, "fixity")
    assert _inputs(fixity_job)["run"].startswith("slot:2026-11-29")
    result = {"run": "x", "checked": 6, "failures": 1, "repaired": ["vault:master.mxf"]}
    seen = plan_archive(ArchiveFacts(**{**facts.__dict__, "jobs": [JobObservation(
        fixity_job["metadata"]["name"], "fixity", "h", "Succeeded", result=result)]}), CONFIG, later)
    assert seen.fixity_failures == 1 and seen.events[0][1] == "FixityRepaired"
    assert seen.storage.fixity.failures == 1 and _cond(seen, "FixityVerified") == ("True", "Repaired")
    settled = plan_archive(ArchiveFacts(**{**facts.__dict__, "status": facts.status.model_copy(
        update={"storage": seen.storage})}), CONFIG, later)
    assert _step(settled, "fixity") == [] and settled.fixity_failures == 0  # not run, not counted again
    asked = plan_archive(ArchiveFacts(**{**facts.__dict__, "annotations": {FIXITY_ANNOTATION: "now"}}), CONFIG, NOW)
    assert _inputs(_step(asked, "fixity")[0])["run"] == "request:now"


def test_a_restore_brings_the_set_back_to_the_hot_tier_with_an_estimate() -> None:
    policy = _policy(copies={"minCopies": 1, "requireOffsite": False})
    facts, _ = _archived(policy)
    cold_storage = facts.status.storage.model_copy(update={"tier": "cold", "copies": [
        StorageCopy(location="vault", uri="s3://x/vault", storage_class="REDUCED_REDUNDANCY")]})
    old = NOW + timedelta(days=400)
    cold = ArchiveFacts(**{**facts.__dict__, "status": facts.status.model_copy(update={"storage": cold_storage})})
    assert _inputs(_step(plan_archive(cold, CONFIG, old), "archive")[0])["tier"] == "cold"
    asked = ArchiveFacts(**{**cold.__dict__, "annotations": {RESTORE_ANNOTATION: "r1"}})
    outcome = plan_archive(asked, CONFIG, old)
    inputs = _inputs(_step(outcome, "archive")[0])
    assert inputs["tier"] == "hot" and [t["location"] for t in inputs["targets"]] == ["library"]
    # Back in the hot tier later is a new placement: the first archive Job's old result is not reused.
    first_hot = _step(plan_archive(_facts(policy), CONFIG, NOW), "archive")[0]["metadata"]["name"]
    assert _step(outcome, "archive")[0]["metadata"]["name"] != first_hot
    # The place run deletes nothing; once it verified, a vacate run of its own empties the vault.
    assert inputs["vacate"] == []
    back = _succeeded(outcome, "archive", {"tier": "hot", "copies": [_copy("library")]})
    vacate = _inputs(_step(plan_archive(ArchiveFacts(**{**asked.__dict__, "jobs": [back]}), CONFIG, old),
                           "archive")[0])
    assert vacate["mode"] == "vacate" and vacate["vacate"] == ["nearline", "vault"]
    restore = outcome.storage.restore
    assert restore.state == "Restoring" and restore.from_location == "vault"
    assert old < restore.estimated_completion < old + timedelta(minutes=5)
    never = plan_archive(ArchiveFacts(**{**_facts(policy).__dict__, "annotations": {RESTORE_ANNOTATION: "r1"}}),
                         CONFIG, NOW)
    assert never.storage.restore.state == "Failed" and "nothing to restore" in never.storage.restore.message


def test_deletion_waits_for_a_legal_hold_and_for_retention() -> None:
    facts, outcome = _archived()
    storage = outcome.storage
    policy = _policy(retention={"days": 0, "legalHold": True})
    assert deletion_blocker(policy, {}, storage, NOW).reason == "LegalHold"
    assert deletion_blocker(_policy(retention={"days": 0}), {LEGAL_HOLD_ANNOTATION: "true"}, storage,
                            NOW).reason == "LegalHold"
    assert deletion_blocker(_policy(), {}, storage, NOW).reason == "RetentionActive"
    expired = storage.model_copy(update={"retain_until": NOW - timedelta(seconds=1)})
    assert deletion_blocker(_policy(), {}, expired, NOW) is None


def test_two_locations_over_the_same_storage_are_refused() -> None:
    locations = copy.deepcopy(POLICY_DOC["locations"])
    locations[1]["uri"] = locations[0]["uri"] + "/"  # nearline is library under another name
    problems = policy_problems(_policy(locations=locations))
    assert [p[0] for p in problems] == ["OverlappingLocations"]
    locations[1]["endpoint"] = "http://other-site:9000"  # the same bucket name on another server is fine
    assert policy_problems(_policy(locations=locations)) == []


def test_one_archive_or_fixity_job_at_a_time_and_a_failed_fixity_is_reported_once() -> None:
    facts, _ = _archived()
    # A move comes due while a fixity run is still running: the move waits for it.
    running = JobObservation("ep1-fixity-0000aaaa", "fixity", "h", "Running")
    moved = plan_archive(ArchiveFacts(**{**facts.__dict__, "jobs": [running]}), CONFIG, NOW + timedelta(days=200))
    assert _step(moved, "archive") == [] and moved.jobs[0].state == "Pending"
    asked = ArchiveFacts(**{**facts.__dict__, "annotations": {FIXITY_ANNOTATION: "x"}})
    job = _step(plan_archive(asked, CONFIG, NOW), "fixity")[0]["metadata"]["name"]
    failed = plan_archive(ArchiveFacts(**{**asked.__dict__, "jobs": [JobObservation(job, "fixity", "h", "Failed",
                                                                                    "no intact copy")]}), CONFIG, NOW)
    assert _cond(failed, "FixityVerified") == ("False", "FixityFailed") and len(failed.events) == 1
    later = plan_archive(ArchiveFacts(**{**asked.__dict__, "status": asked.status.model_copy(
        update={"storage": failed.storage})}), CONFIG, NOW)
    assert later.events == [] and _step(later, "fixity") == []


def test_a_master_not_in_s3_is_refused_with_a_reason() -> None:
    doc = {**ASSET_DOC, "source": {"uri": "https://cdn.example.net/ep1.mov"}}
    facts = ArchiveFacts(**{**_facts().__dict__, "spec": MediaAssetSpec.model_validate(doc)})
    outcome = plan_archive(facts, CONFIG, NOW)
    assert outcome.create_jobs == [] and outcome.failed is not None
    assert _cond(outcome, "Archived") == ("False", "SourceNotInS3")


def test_without_its_policy_the_assets_own_hold_and_recorded_retention_still_block_deletion() -> None:
    _, outcome = _archived()
    storage = outcome.storage
    assert deletion_blocker(None, {LEGAL_HOLD_ANNOTATION: "true"}, storage, NOW).reason == "LegalHold"
    assert deletion_blocker(None, {}, storage, NOW).reason == "RetentionActive"
    assert deletion_blocker(None, {}, storage, storage.retain_until + timedelta(seconds=1)) is None


def _with(facts: ArchiveFacts, **changes: Any) -> ArchiveFacts:
    return ArchiveFacts(**{**facts.__dict__, **changes})


def _settled(facts: ArchiveFacts, outcome: Any) -> ArchiveFacts:
    """The facts once the outcome's status was written (its Jobs kept as the facts had them)."""
    return _with(facts, status=facts.status.model_copy(update={"storage": outcome.storage}))


def test_a_move_copies_first_and_vacates_in_a_run_of_its_own_right_after_it_verified() -> None:
    policy = _policy(copies={"minCopies": 2, "requireOffsite": True})
    facts, _ = _archived(policy)
    aged = NOW + timedelta(days=40)  # unused for 40 days: the warm tier
    moving = plan_archive(facts, CONFIG, aged)
    [place] = _step(moving, "archive")
    assert _inputs(place)["mode"] == "place" and _inputs(place)["vacate"] == []
    done = _succeeded(moving, "archive", {"tier": "warm", "copies": [_copy("nearline"), _copy("vault")]})
    placed = plan_archive(_with(facts, jobs=[done]), CONFIG, aged)
    [vacate] = _step(placed, "archive")
    inputs = _inputs(vacate)
    # The same placement, plus what to empty: no grace for a tier move.
    assert inputs["mode"] == "vacate" and inputs["vacate"] == ["library"]
    assert {k: v for k, v in inputs.items() if k not in ("mode", "vacate")} == \
        {k: v for k, v in _inputs(place).items() if k not in ("mode", "vacate")}
    assert [c.location for c in placed.storage.copies] == ["nearline", "vault"]
    assert _cond(placed, "Archived") == ("True", "Archived") and placed.storage.extra_copies is None
    # Planned again: the same vacate Job, not a second one; once it succeeded nothing more runs.
    again = plan_archive(_with(facts, jobs=[done]), CONFIG, aged)
    assert [j["metadata"]["name"] for j in _step(again, "archive")] == [vacate["metadata"]["name"]]
    emptied = JobObservation(vacate["metadata"]["name"], "archive", "h", "Succeeded",
                             result={"tier": "warm", "vacated": ["library"]})
    assert _step(plan_archive(_with(facts, jobs=[done, emptied]), CONFIG, aged), "archive") == []


def test_no_vacate_runs_while_a_hold_is_asked_and_a_hold_asked_mid_run_replaces_the_run() -> None:
    policy = _policy(copies={"minCopies": 2, "requireOffsite": True})
    facts, _ = _archived(policy)
    aged = NOW + timedelta(days=40)
    held = _with(facts, annotations={LEGAL_HOLD_ANNOTATION: "true"})
    moving = plan_archive(held, CONFIG, aged)
    [place] = _step(moving, "archive")
    assert _inputs(place)["legal_hold"] is True and _inputs(place)["hold_since"]
    done = _succeeded(moving, "archive", {"tier": "warm", "copies": [_copy("nearline"), _copy("vault")]})
    placed = plan_archive(_with(held, jobs=[done]), CONFIG, aged)
    assert _step(placed, "archive") == []  # the held set stays everywhere: no vacate Job
    assert placed.storage.legal_hold is not None and placed.storage.legal_hold.held

    # The hold is asked while the vacate run of an unheld move is running: the held place run starts at
    # once, and the vacate Job is deleted as superseded (before it deletes anything more).
    free_place = _succeeded(plan_archive(facts, CONFIG, aged), "archive",
                            {"tier": "warm", "copies": [_copy("nearline"), _copy("vault")]})
    vacate_job = _step(plan_archive(_with(facts, jobs=[free_place]), CONFIG, aged), "archive")[0]
    running = JobObservation(vacate_job["metadata"]["name"], "archive", "h", "Running")
    cut = plan_archive(_with(held, jobs=[free_place, running]), CONFIG, aged)
    [held_place] = _step(cut, "archive")
    assert _inputs(held_place)["legal_hold"] is True and _inputs(held_place)["mode"] == "place"
    assert superseded([free_place, running], cut.create_jobs) == [running.name]
    # A fixity run deletes nothing: the held place run waits for it instead.
    fixity = JobObservation("ep1-fixity-0000aaaa", "fixity", "h", "Running")
    assert _step(plan_archive(_with(held, jobs=[free_place, fixity]), CONFIG, aged), "archive") == []


def test_a_lifted_hold_is_a_new_place_run_so_kubemams_holds_are_released() -> None:
    facts, outcome = _archived()
    never = _inputs(_step(plan_archive(_with(facts, jobs=[]), CONFIG, NOW), "archive")[0])
    assert "hold_since" not in never  # an asset never held keeps the inputs it had
    held = plan_archive(_with(facts, annotations={LEGAL_HOLD_ANNOTATION: "true"}), CONFIG, NOW)
    held_inputs = _inputs(_step(held, "archive")[0])
    assert held_inputs["legal_hold"] is True
    later = NOW + timedelta(minutes=5)
    lifted = plan_archive(_settled(facts, held), CONFIG, later)
    lifted_inputs = _inputs(_step(lifted, "archive")[0])
    assert lifted_inputs["legal_hold"] is False and lifted_inputs["hold_since"] == later.isoformat().replace(
        "+00:00", "Z")
    assert lifted_inputs != never  # not the first placement's Job, which ran already
    assert lifted.storage.legal_hold.held is False


def test_a_lowered_min_copies_keeps_the_extra_copy_for_the_grace_then_vacates_it() -> None:
    facts, archived = _archived()  # minCopies 3: library, nearline, vault
    assert [c.location for c in archived.storage.copies] == ["library", "nearline", "vault"]
    lowered = _policy(copies={"minCopies": 2, "requireOffsite": True, "vacateAfterHours": 24})
    facts = _with(facts, policy=lowered)
    first = plan_archive(facts, CONFIG, NOW)
    [place] = _step(first, "archive")
    assert [t["location"] for t in _inputs(place)["targets"]] == ["library", "vault"]
    extra = first.storage.extra_copies
    assert extra is not None and extra.locations == ["nearline"] and extra.vacate_after == NOW + timedelta(hours=24)
    assert [e[1] for e in first.events] == ["ExtraCopiesKept"]
    status, reason = _cond(first, "Replicated")
    assert (status, reason) == ("True", "ExtraCopies")
    message = next(v.message for v in first.verdicts if v.type == "Replicated")
    assert "kept until 2026-11-24T12:00:00+00:00" in message and f"confirm-vacate={extra.token}" in message

    facts = _settled(facts, first)
    done = _succeeded(first, "archive", {"tier": "hot", "copies": [_copy("library"), _copy("vault")]})
    placed = plan_archive(_with(facts, jobs=[done]), CONFIG, NOW + timedelta(hours=1))
    assert _step(placed, "archive") == []  # nothing else to vacate, and nearline is within its grace
    assert [c.location for c in placed.storage.copies] == ["library", "vault", "nearline"]
    assert placed.storage.extra_copies == extra and placed.events == []  # the grace did not restart
    facts = _settled(facts, placed)

    # A wrong token changes nothing; the token the condition shows deletes them now.
    wrong = plan_archive(_with(facts, jobs=[done], annotations={CONFIRM_VACATE_ANNOTATION: "nope"}), CONFIG,
                         NOW + timedelta(hours=2))
    assert _step(wrong, "archive") == []
    confirmed = plan_archive(_with(facts, jobs=[done], annotations={CONFIRM_VACATE_ANNOTATION: extra.token}), CONFIG,
                             NOW + timedelta(hours=2))
    assert _inputs(_step(confirmed, "archive")[0])["vacate"] == ["nearline"]

    # Without the annotation: kept until the grace ends, then vacated; once vacated, the record goes.
    assert _step(plan_archive(_with(facts, jobs=[done]), CONFIG, NOW + timedelta(hours=23)), "archive") == []
    after = NOW + timedelta(hours=24, minutes=1)
    due = plan_archive(_with(facts, jobs=[done]), CONFIG, after)
    [vacate] = _step(due, "archive")
    assert _inputs(vacate)["mode"] == "vacate" and _inputs(vacate)["vacate"] == ["nearline"]
    assert "deleting" in next(v.message for v in due.verdicts if v.type == "Replicated")
    emptied = JobObservation(vacate["metadata"]["name"], "archive", "h", "Succeeded",
                             result={"tier": "hot", "vacated": ["nearline"]})
    gone = plan_archive(_with(facts, jobs=[done, emptied]), CONFIG, after)
    assert [c.location for c in gone.storage.copies] == ["library", "vault"] and gone.storage.extra_copies is None
    assert _cond(gone, "Replicated") == ("True", "MinCopiesMet")


def test_the_grace_is_the_policys_and_a_tier_move_does_not_wait_for_it() -> None:
    facts, _ = _archived()
    short = _policy(copies={"minCopies": 2, "requireOffsite": True, "vacateAfterHours": 0.01})  # 36 s
    facts = _with(facts, policy=short)
    first = plan_archive(facts, CONFIG, NOW)
    assert first.storage.extra_copies.vacate_after == NOW + timedelta(seconds=36)
    done = _succeeded(first, "archive", {"tier": "hot", "copies": [_copy("library"), _copy("vault")]})
    facts = _settled(facts, first)
    assert _step(plan_archive(_with(facts, jobs=[done]), CONFIG, NOW + timedelta(seconds=30)), "archive") == []
    assert _inputs(_step(plan_archive(_with(facts, jobs=[done]), CONFIG, NOW + timedelta(seconds=40)),
                         "archive")[0])["vacate"] == ["nearline"]
    # The asset ages into the warm tier during the grace: the move vacates what it leaves at once.
    aged = NOW + timedelta(days=40)
    moving = plan_archive(_with(facts, jobs=[done]), CONFIG, aged)
    moved = _succeeded(moving, "archive", {"tier": "warm", "copies": [_copy("nearline"), _copy("vault")]},
                       mode="place")
    vacate = _inputs(_step(plan_archive(_with(facts, jobs=[done, moved]), CONFIG, aged), "archive")[0])
    assert vacate["mode"] == "vacate" and vacate["vacate"] == ["library"]


def test_a_removed_location_keeps_its_copy_for_the_grace_and_is_reached_as_status_recorded_it() -> None:
    locations = copy.deepcopy(POLICY_DOC["locations"])
    locations[2]["endpoint"] = "http://site-b:9000"
    locations[2]["credentialsSecretRef"] = {"name": "site-b-s3"}
    facts, archived = _archived(_policy(locations=locations))
    assert [c.location for c in archived.storage.copies] == ["library", "nearline", "vault"]
    assert archived.storage.extra_copies is None
    # nearline is gone from the policy, and the vault is now the only other location
    fewer = _policy(locations=[locations[0], locations[2]], tiers=[POLICY_DOC["tiers"][0], POLICY_DOC["tiers"][2]],
                    copies={"minCopies": 2, "requireOffsite": True, "vacateAfterHours": 1})
    facts = _with(facts, policy=fewer)
    first = plan_archive(facts, CONFIG, NOW)
    assert first.storage.extra_copies.locations == ["nearline"]
    done = _succeeded(first, "archive", {"tier": "hot", "copies": [_copy("library"), _copy("vault")]})
    facts = _settled(facts, first)
    later = NOW + timedelta(hours=2)
    [vacate] = _step(plan_archive(_with(facts, jobs=[done]), CONFIG, later), "archive")
    inputs = _inputs(vacate)
    assert inputs["vacate"] == ["nearline"]
    nearline = next(loc for loc in inputs["locations"] if loc["name"] == "nearline")
    assert nearline["uri"] == "s3://x/nearline"  # as the status recorded the copy
    # Purged with the asset while still kept: the purge reaches it too.
    request = purge_request("ep1", "media", "uid-1", fewer, facts.status.storage.copies, CONFIG)
    assert [loc["name"] for loc in request.inputs["locations"]] == ["library", "vault", "nearline"]


def test_holds_someone_else_set_are_recorded_and_reported_once() -> None:
    facts, _ = _archived()
    place = _step(plan_archive(_with(facts, jobs=[]), CONFIG, NOW), "archive")[0]
    seen = {"tier": "hot", "copies": [_copy("library"), _copy("nearline"), _copy("vault")],
            "foreignHolds": ["vault:master.mov@v1"]}
    done = JobObservation(place["metadata"]["name"], "archive", "h", "Succeeded", result=seen)
    first = plan_archive(_with(facts, jobs=[done]), CONFIG, NOW)
    assert first.storage.legal_hold.foreign == ["vault:master.mov@v1"] and first.storage.legal_hold.held is False
    assert [(e[0], e[1]) for e in first.events] == [("Warning", "ForeignLegalHold")]
    again = plan_archive(_settled(_with(facts, jobs=[done]), first), CONFIG, NOW)
    assert again.events == [] and again.storage.legal_hold == first.storage.legal_hold


def test_a_migrate_job_that_failed_for_a_passing_reason_runs_again_after_a_backoff() -> None:
    """An outage longer than the migrate Job's backoff limit fails the Job retryably: the next attempt (a new
    Job name, the same work) is planned after the backoff, and the asset is woken for it; a permanent failure
    (StepError) waits for the retry annotation, which starts the next attempt at once."""
    policy = _policy(migration={"enabled": True}, formatsAtRisk=["mpeg2video"])
    facts, _ = _archived(policy)
    [first] = _step(plan_archive(facts, CONFIG, NOW), "migrate")
    failed_at = NOW + timedelta(minutes=5)
    outage = JobObservation(first["metadata"]["name"], "migrate", "h", "Failed", "S3 did not answer",
                            finished_at=failed_at, retryable=True)
    waiting = plan_archive(_with(facts, jobs=[outage]), CONFIG, failed_at)
    assert _step(waiting, "migrate") == [] and _cond(waiting, "Migrated") == ("Unknown", "RetryScheduled")
    due = failed_at + timedelta(seconds=CONFIG.step_retry_seconds)
    assert waiting.wake is not None and waiting.wake <= due
    recorded = [j for j in waiting.jobs if j.step == "migrate"]
    later = plan_archive(_with(facts, jobs=[outage], finished=recorded), CONFIG, due)
    [second] = _step(later, "migrate")
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert _inputs(second)["attempt"]["number"] == 2
    assert {k: v for k, v in _inputs(second).items() if k != "attempt"} == _inputs(first)  # the same work

    refused = JobObservation(first["metadata"]["name"], "migrate", "h", "Failed", "not lossless",
                             finished_at=failed_at)
    stuck = plan_archive(_with(facts, jobs=[refused]), CONFIG, NOW + timedelta(days=1))
    assert _step(stuck, "migrate") == [] and _cond(stuck, "Migrated") == ("False", "MigrationFailed")
    asked = plan_archive(_with(facts, jobs=[refused], annotations={"steps.kubemam.io/retry": "1"}), CONFIG,
                         NOW + timedelta(days=1))
    assert [_inputs(j)["attempt"]["retry"] for j in _step(asked, "migrate")] == ["1"]
