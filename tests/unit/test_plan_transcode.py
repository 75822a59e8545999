"""The transcode planner, pure: which renditions a master still needs, and the Jobs that make them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import yaml

from kubemam.api.asset import MediaAssetSpec, MediaAssetStatus, TechnicalMetadata
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.config import OperatorConfig
from kubemam.plan.asset import AssetFacts, JobObservation, ingest_request, plan_asset
from tests.helpers import EXAMPLES

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig()
TECHNICAL = TechnicalMetadata.model_validate({
    "container": "mov", "durationSeconds": 30.0, "sha256": "ab" * 32, "startTimecode": "10:00:00:00",
    "video": {"codec": "h264", "width": 1920, "height": 1080, "frameRate": "25/1", "colorPrimaries": "bt709"},
    "audio": [{"index": 1, "codec": "aac", "channels": 2}]})


def _ladder(**changes: Any) -> TranscodeLadderSpec:
    doc = yaml.safe_load((EXAMPLES / "transcodeladder.yaml").read_text())["spec"]
    doc.pop("chunking")
    doc.pop("packaging")  # packaging is planned after transcoding: tests/unit/test_plan_package.py
    doc.pop("drm")
    doc.update(changes)
    return TranscodeLadderSpec.model_validate(doc)


def _facts(ladder: TranscodeLadderSpec, jobs: list[JobObservation] | None = None,
           status: MediaAssetStatus | None = None) -> AssetFacts:
    spec = MediaAssetSpec.model_validate(yaml.safe_load((EXAMPLES / "mediaasset.yaml").read_text())["spec"])
    # No archive policy here: these tests are about transcoding and packaging alone.
    facts = AssetFacts("ep1", "media", "uid-1", 2, spec, status or MediaAssetStatus(), True, None, [], None, ladder)
    ingest = JobObservation(ingest_request(facts, CONFIG).name, "ingest", "h", "Succeeded",
                            result={"technical": TECHNICAL.to_wire(), "qc": {"verdict": "Passed"}})
    return replace(facts, jobs=[ingest, *(jobs or [])])


def _cond(status: MediaAssetStatus, type_: str) -> tuple[str, str]:
    cond = next(c for c in status.conditions or [] if c.type == type_)
    return cond.status, cond.reason


def _input(job: dict[str, Any]) -> dict[str, Any]:
    import json

    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return dict(json.loads(next(e["value"] for e in env if e["name"] == "KUBEMAM_STEP_INPUT")))


def _succeed(job: dict[str, Any]) -> JobObservation:
    """The Job as the API server reports it after the worker encoded everything it was asked."""
    inputs = _input(job)
    items = [{"name": r["name"], "kind": kind, "specHash": r["specHash"], "uri": r["output"] + f"/{r['name']}.mp4",
              "sha256": "cd" * 32, "sizeBytes": 1000, "bitrate": 800_000, "codec": "h264"}
             for kind in ("video", "audio") for r in inputs[kind]]
    return JobObservation(job["metadata"]["name"], job["metadata"]["labels"]["kubemam.io/step"], "h", "Succeeded",
                          result={"renditions": items})


def test_ingested_asset_gets_one_transcode_job_for_every_rung_that_fits() -> None:
    plan = plan_asset(_facts(_ladder()), CONFIG, NOW)
    assert len(plan.create_jobs) == 1
    job = plan.create_jobs[0]
    inputs = _input(job)
    # The 2160p rung is above the 1080p master: skipped, and said so.
    assert [r["name"] for r in inputs["video"]] == ["h264-1080p", "h264-720p", "h264-540p", "h264-360p"]
    assert [r["name"] for r in inputs["audio"]] == ["stereo-en"]
    assert _cond(plan.status, "LadderFit") == ("False", "UpscaleRefused")
    assert inputs["mode"] == "single" and inputs["master"]["frames"] == 750 and inputs["segmentDurationSeconds"] == 4
    assert inputs["source"]["sha256"] == "ab" * 32
    assert plan.status.phase == "Transcoding" and _cond(plan.status, "Transcoded") == ("Unknown", "TranscodePending")
    # The ladder's scheduling hooks reach the Job.
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "2"


def test_success_is_mirrored_and_editing_one_rung_reencodes_that_rung_alone() -> None:
    ladder = _ladder()
    first = plan_asset(_facts(ladder), CONFIG, NOW)
    done = plan_asset(_facts(ladder, [_succeed(first.create_jobs[0])]), CONFIG, NOW)
    assert done.create_jobs == [] and _cond(done.status, "Transcoded") == ("True", "RenditionsReady")
    assert _cond(done.status, "Ready") == ("True", "AllStepsSucceeded") and done.status.phase == "Ready"
    assert [r.name for r in done.status.renditions or []] == ["h264-1080p", "h264-720p", "h264-540p", "h264-360p",
                                                              "stereo-en"]
    # Status remembers: with the Job gone (TTL), nothing is planned again.
    assert plan_asset(_facts(ladder, status=done.status), CONFIG, NOW).create_jobs == []

    # No-op edits (thumbnails, chunking of a short master, DRM) re-encode nothing.
    noop = _ladder(thumbnails={"intervalSeconds": 5}, drm=None)
    assert plan_asset(_facts(noop, status=done.status), CONFIG, NOW).create_jobs == []

    renditions = ladder.to_wire()["renditions"]
    renditions[1]["rateControl"]["bitrateKbps"] = 2800
    edited = plan_asset(_facts(_ladder(renditions=renditions), status=done.status), CONFIG, NOW)
    assert len(edited.create_jobs) == 1
    inputs = _input(edited.create_jobs[0])
    assert [r["name"] for r in inputs["video"]] == ["h264-720p"] and inputs["audio"] == []
    assert edited.create_jobs[0]["metadata"]["name"] != first.create_jobs[0]["metadata"]["name"]
    # The other rungs stay in status while the edited one is encoded.
    assert {r.name for r in edited.status.renditions or []} == {"h264-1080p", "h264-540p", "h264-360p", "stereo-en"}


def test_a_new_master_reencodes_everything() -> None:
    ladder = _ladder()
    first = plan_asset(_facts(ladder), CONFIG, NOW)
    done = plan_asset(_facts(ladder, [_succeed(first.create_jobs[0])]), CONFIG, NOW)
    facts = _facts(ladder, status=done.status)
    changed = TECHNICAL.model_copy(update={"sha256": "ef" * 32})
    ingest = replace(facts.jobs[0], result={"technical": changed.to_wire(), "qc": {"verdict": "Passed"}})
    again = plan_asset(replace(facts, jobs=[ingest]), CONFIG, NOW)
    assert len(_input(again.create_jobs[0])["video"]) == 4


def test_chunked_ladder_runs_an_indexed_job_then_a_stitch_job() -> None:
    ladder = _ladder(chunking={"chunkSeconds": 10, "maxParallel": 2})
    plan = plan_asset(_facts(ladder), CONFIG, NOW)
    chunks = plan.create_jobs[0]
    assert chunks["metadata"]["labels"]["kubemam.io/step"] == "transcode-chunks"
    # 30 s at 25 fps in chunks of 10 s rounded to whole 4 s GOPs (8 s = 200 frames): 4 chunks, 2 at a time.
    assert (chunks["spec"]["completionMode"], chunks["spec"]["completions"], chunks["spec"]["parallelism"]) == (
        "Indexed", 4, 2)
    inputs = _input(chunks)
    assert inputs["mode"] == "chunk" and inputs["chunks"]["frames"] == 200 and inputs["audio"] == []
    running = JobObservation(chunks["metadata"]["name"], "transcode-chunks", "h", "Running")
    assert plan_asset(_facts(ladder, [running]), CONFIG, NOW).create_jobs == []
    finished = replace(running, state="Succeeded")
    stitch = plan_asset(_facts(ladder, [finished]), CONFIG, NOW).create_jobs
    assert len(stitch) == 1 and _input(stitch[0])["mode"] == "stitch"
    assert _input(stitch[0])["chunks"] == inputs["chunks"] and len(_input(stitch[0])["audio"]) == 1
    done = plan_asset(_facts(ladder, [finished, _succeed(stitch[0])]), CONFIG, NOW)
    assert done.create_jobs == [] and _cond(done.status, "Transcoded") == ("True", "RenditionsReady")


def test_failed_transcode_fails_the_asset_with_the_jobs_message() -> None:
    ladder = _ladder()
    job = plan_asset(_facts(ladder), CONFIG, NOW).create_jobs[0]
    failed = JobObservation(job["metadata"]["name"], "transcode", "h", "Failed", "PodFailurePolicy: exit code 2")
    plan = plan_asset(_facts(ladder, [failed]), CONFIG, NOW)
    assert plan.create_jobs == [] and plan.status.phase == "Failed"
    assert _cond(plan.status, "Transcoded") == ("False", "TranscodeFailed")
    assert _cond(plan.status, "Ready") == ("False", "TranscodeFailed")


def test_a_queue_named_by_the_ladder_creates_suspended_jobs() -> None:
    job = plan_asset(_facts(_ladder(queueName="transcode", priorityClassName="batch-high")), CONFIG, NOW).create_jobs[0]
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "transcode"
    assert job["spec"]["template"]["spec"]["priorityClassName"] == "batch-high"
