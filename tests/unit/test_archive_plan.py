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
    FIXITY_ANNOTATION,
    LEGAL_HOLD_ANNOTATION,
    RESTORE_ANNOTATION,
    ArchiveFacts,
    deletion_blocker,
    plan_archive,
)
from kubemam.plan.asset import JobObservation
from kubemam.plan.placement import AssetClock, current_tier, placement
from kubemam.plan.schedule import ScheduleError, latest_slot, next_slot
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
    assert "vault" in inputs["vacate"]
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
