"""The asset planner, pure: facts and the clock in, Jobs and status out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import yaml

from kubemam.api.archive import ArchivePolicySpec
from kubemam.api.asset import MediaAssetSpec, MediaAssetStatus
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.config import OperatorConfig
from kubemam.plan.asset import AssetFacts, JobObservation, ingest_request, plan_asset
from kubemam.plan.ingest import ingest_prefix
from tests.helpers import EXAMPLES

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
POLICY = ArchivePolicySpec.model_validate(yaml.safe_load((EXAMPLES / "archivepolicy.yaml").read_text())["spec"])
LADDER = TranscodeLadderSpec.model_validate(yaml.safe_load((EXAMPLES / "transcodeladder.yaml").read_text())["spec"])
CONFIG = OperatorConfig()


def _facts(jobs: list[JobObservation] | None = None, ladder_found: bool | None = True,
           status: MediaAssetStatus | None = None, progress: dict[str, object] | None = None,
           **spec_changes: object) -> AssetFacts:
    spec = yaml.safe_load((EXAMPLES / "mediaasset.yaml").read_text())["spec"]
    spec.update(spec_changes)
    return AssetFacts("ep1", "media", "uid-1", 4, MediaAssetSpec.model_validate(spec), status or MediaAssetStatus(),
                      ladder_found, True, jobs or [], progress, LADDER if ladder_found else None, POLICY)


def _cond(plan_status: MediaAssetStatus, type_: str) -> tuple[str, str]:
    cond = next(c for c in plan_status.conditions or [] if c.type == type_)
    return cond.status, cond.reason


def test_new_asset_gets_one_ingest_job() -> None:
    plan = plan_asset(_facts(), CONFIG, NOW)
    assert len(plan.create_jobs) == 1
    assert plan.create_jobs[0]["metadata"]["name"] == ingest_request(_facts(), CONFIG).name
    assert plan.status.phase == "Ingesting" and plan.status.observed_generation == 4
    assert _cond(plan.status, "Ingested") == ("Unknown", "IngestPending")


def _result(facts: AssetFacts, verdict: str = "Passed") -> dict[str, object]:
    """What the ingest worker reports: technical metadata, QC and previews under its commit prefix."""
    prefix = ingest_prefix(ingest_request(facts, CONFIG))
    return {"technical": {"container": "mov", "durationSeconds": 30.0, "sha256": "ab" * 32,
                          "video": {"codec": "prores", "width": 1920, "height": 1080, "frameRate": "25/1"}},
            "qc": {"verdict": verdict, "issueCount": 0, "reportUri": f"{prefix}/qc.json"},
            "previews": {"proxyUri": f"{prefix}/proxy.mp4", "posterUri": f"{prefix}/poster.jpg"},
            "manifest": f"{prefix}/manifest.json"}


def _ingest_only(jobs: list[JobObservation] | None = None, status: MediaAssetStatus | None = None) -> AssetFacts:
    """An asset whose only step is ingest: its ladder and archive policy left out of the facts."""
    return replace(_facts(jobs, status=status), ladder_found=None, ladder=None, archive_policy_found=None,
                   archive_policy=None)


def test_existing_job_is_not_created_again_and_its_outcome_is_mirrored() -> None:
    name = ingest_request(_facts(), CONFIG).name
    running = plan_asset(_facts([JobObservation(name, "ingest", "h", "Running")]), CONFIG, NOW)
    assert running.create_jobs == [] and _cond(running.status, "Ingested") == ("Unknown", "IngestRunning")
    alone = ingest_request(_ingest_only(), CONFIG).name  # no ladder: no QC policy or thumbnails from it
    done = plan_asset(_ingest_only([JobObservation(alone, "ingest", "h", "Succeeded",
                                                   result=_result(_ingest_only(), "Warning"))]), CONFIG, NOW)
    assert _cond(done.status, "Ready") == ("True", "AllStepsSucceeded")
    assert done.status.qc and done.status.qc.verdict == "Warning"
    assert _cond(done.status, "QCPassed") == ("True", "QCWarning")
    assert done.status.progress and done.status.progress.percent == 100


def test_a_finished_job_deleted_later_is_not_run_again() -> None:
    name = ingest_request(_ingest_only(), CONFIG).name
    done = plan_asset(_ingest_only([JobObservation(name, "ingest", "h", "Succeeded",
                                                   result=_result(_ingest_only()))]), CONFIG, NOW)
    again = plan_asset(_ingest_only([], status=done.status), CONFIG, NOW)
    assert again.create_jobs == []
    assert _cond(again.status, "Ingested") == ("True", "IngestSucceeded")


def test_missing_ladder_blocks_ready_but_not_ingest() -> None:
    plan = plan_asset(_facts(ladder_found=False), CONFIG, NOW)
    assert len(plan.create_jobs) == 1
    status, reason = _cond(plan.status, "Ready")
    assert (status, reason) == ("False", "LadderNotFound")


def test_unsupported_scheme_and_impossible_markers_create_nothing() -> None:
    ftp = plan_asset(_facts(source={"uri": "ftp://x/y.mxf"}), CONFIG, NOW)
    assert ftp.create_jobs == [] and ftp.status.phase == "Failed"
    assert _cond(ftp.status, "Ready") == ("False", "UnsupportedSource")
    markers = [{"name": "m", "kind": "chapter", "start": "10:00:05:00", "end": "10:00:04:00"},
               {"name": "n", "kind": "chapter", "start": "10:00:05:26"}]
    bad = plan_asset(_facts(markers=markers), CONFIG, NOW)
    ready = next(c for c in bad.status.conditions or [] if c.type == "Ready")
    assert ready.reason == "InvalidMarkers" and "before start" in ready.message and "frame 26" in ready.message


def test_replanning_unchanged_facts_changes_nothing() -> None:
    name = ingest_request(_facts(), CONFIG).name
    facts = _facts([JobObservation(name, "ingest", "h", "Running")])
    first = plan_asset(facts, CONFIG, NOW)
    later = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
    second = plan_asset(_facts([JobObservation(name, "ingest", "h", "Running")], status=first.status), CONFIG, later)
    assert second.status == first.status


def test_running_step_progress_is_mirrored_without_churn() -> None:
    name = ingest_request(_facts(), CONFIG).name
    running = [JobObservation(name, "ingest", "h", "Running")]
    report = {"step": "ingest", "percent": 42, "fps": 210.5, "etaSeconds": 7}
    first = plan_asset(_facts(running, progress=report), CONFIG, NOW)
    assert first.status.progress is not None
    assert (first.status.progress.percent, first.status.progress.fps, first.status.progress.eta_seconds) == (
        42, 210.5, 7)
    later = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
    again = plan_asset(_facts(running, status=first.status, progress=report), CONFIG, later)
    assert again.status.progress == first.status.progress  # same report, same status, no write
    junk = plan_asset(_facts(running, progress={"step": "ingest", "percent": "lots"}), CONFIG, NOW)
    assert junk.status.progress is not None and junk.status.progress.percent == 0


def test_progress_is_written_at_most_every_10_s_or_5_percent() -> None:
    from datetime import timedelta

    name = ingest_request(_facts(), CONFIG).name
    running = [JobObservation(name, "ingest", "h", "Running")]
    first = plan_asset(_facts(running, progress={"step": "ingest", "percent": 40, "fps": 200}), CONFIG, NOW)

    def at(seconds: float, percent: int, fps: float = 201) -> object:
        report = {"step": "ingest", "percent": percent, "fps": fps}
        return plan_asset(_facts(running, status=first.status, progress=report), CONFIG,
                          NOW + timedelta(seconds=seconds)).status.progress

    assert at(2, 42) == first.status.progress  # a small move 2 s later waits
    assert at(2, 45).percent == 45  # 5 % is worth a write at once
    assert at(11, 41).percent == 41  # after 10 s any change is written
    assert at(2, 100).percent == 100  # the end is never held back


def test_ingest_takes_qc_policy_and_thumbnails_from_the_ladder_unless_the_asset_sets_qc() -> None:
    from dataclasses import replace

    from kubemam.api.ladder import TranscodeLadderSpec

    ladder_doc = yaml.safe_load((EXAMPLES / "transcodeladder.yaml").read_text())["spec"]
    ladder_doc["qc"] = {"targetLufs": -24, "failOn": ["decode"]}
    ladder = TranscodeLadderSpec.model_validate(ladder_doc)
    inputs = ingest_request(replace(_facts(), ladder=ladder), CONFIG).inputs
    assert inputs["qc"]["targetLufs"] == -24 and inputs["qc"]["failOn"] == ["decode"]
    assert inputs["thumbnails"] == {"intervalSeconds": 10, "width": 320, "spriteColumns": 10, "spriteRows": 10}
    assert [m["name"] for m in inputs["markers"]][:2] == ["cold-open", "act-1"]
    own = replace(_facts(qc={"targetLufs": -16, "toleranceLu": 2}), ladder=ladder)
    assert ingest_request(own, CONFIG).inputs["qc"]["targetLufs"] == -16
    # Without a ladder or a policy the worker applies EBU R128; the Job's input names no policy.
    assert "qc" not in ingest_request(_facts(), CONFIG).inputs
    # A different policy is a different input, so a different Job.
    assert ingest_request(own, CONFIG).name != ingest_request(replace(_facts(), ladder=ladder), CONFIG).name


def test_a_missing_s3_secret_is_a_condition_and_starts_no_job() -> None:
    from dataclasses import replace

    facts = replace(_facts(), s3_secret_problem="Secret 'kubemam-s3' (S3 credentials for the step Jobs) is not in "
                                                "namespace media")
    plan = plan_asset(facts, CONFIG, NOW)
    assert plan.create_jobs == [] and plan.status.phase == "Pending"
    assert _cond(plan.status, "Ready") == ("False", "S3SecretMissing")


def test_a_job_the_api_server_refused_is_a_condition_and_starts_no_job() -> None:
    from dataclasses import replace

    facts = replace(_facts(), job_refused="the API server refused the step's Job in namespace media (403): no")
    plan = plan_asset(facts, CONFIG, NOW)
    assert plan.create_jobs == [] and plan.status.phase == "Pending"
    assert _cond(plan.status, "Ready") == ("False", "JobRefused")
