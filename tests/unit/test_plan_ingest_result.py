"""An ingest result too big for the 4 KiB termination message (a 32-track master, long names, long QC
findings): the worker sends a compact form that still carries what the planner needs, and the planner
mirrors the whole track list from it. The step never fails because its result is large."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubemam.plan.asset import JobObservation, ingest_request, plan_asset
from kubemam.plan.ingest import ingest_prefix
from kubemam.steps.ingest import MAX_MESSAGE, IngestResult, compact_result
from kubemam.worker.contract import write_result
from tests.unit import test_plan_asset as asset_case

NOW = asset_case.NOW
CONFIG = asset_case.CONFIG


def _tracks(count: int, language: Any = "eng") -> list[dict[str, Any]]:
    return [{"index": i + 1, "codec": "pcm_s24le", "channels": 1, "channelLayout": "mono", "sampleRate": 48000,
             "language": language(i) if callable(language) else language} for i in range(count)]


def _big_result(tracks: list[dict[str, Any]], issues: int = 8) -> dict[str, Any]:
    facts = asset_case._ingest_only()
    prefix = ingest_prefix(ingest_request(facts, CONFIG))
    return {
        "technical": {"container": "mov,mp4,m4a,3gp,3g2,mj2", "durationSeconds": 3600.04, "sha256": "ab" * 32,
                      "sizeBytes": 412_000_000_000, "bitRate": 915_000_000, "startTimecode": "10:00:00:00",
                      "video": {"codec": "prores", "profile": "4444 XQ", "width": 3840, "height": 2160,
                                "frameRate": "25/1", "pixelFormat": "yuv444p12le", "bitDepth": 12,
                                "colorPrimaries": "bt2020", "colorTransfer": "smpte2084", "colorSpace": "bt2020nc",
                                "fieldOrder": "progressive"},
                      "audio": tracks},
        "qc": {"verdict": "Failed", "issueCount": 57, "reportUri": f"{prefix}/qc.json",
               "checkedAt": "2026-11-23T12:00:00Z",
               "loudness": {"integratedLufs": -19.2, "truePeakDbtp": 0.3, "loudnessRangeLu": 11.0},
               "issues": [{"check": "decode", "severity": "error", "start": "10:00:00:00",
                           "message": "decoder complaint " + "x" * 400} for _ in range(issues)]},
        "previews": {"proxyUri": f"{prefix}/proxy.mp4", "posterUri": f"{prefix}/poster.jpg",
                     "spriteUri": f"{prefix}/sprite-001.jpg", "spriteIndexUri": f"{prefix}/sprite.vtt",
                     "spriteSheets": 4, "thumbnails": 360},
        "manifest": f"{prefix}/manifest.json",
    }


def _size(result: dict[str, Any]) -> int:
    return len(json.dumps(result, separators=(",", ":"), sort_keys=True).encode())


def _mirrored(message: dict[str, Any]) -> Any:
    facts = asset_case._ingest_only()
    job = JobObservation(ingest_request(facts, CONFIG).name, "ingest", "h", "Succeeded", result=message)
    return plan_asset(asset_case._ingest_only([job]), CONFIG, NOW)


def test_a_32_track_result_fits_the_message_and_the_planner_mirrors_every_track() -> None:
    full = _big_result(_tracks(32))
    assert _size(full) > MAX_MESSAGE  # what used to raise, retry and fail forever
    message = compact_result(full)
    assert _size(message) <= MAX_MESSAGE
    assert message["resultUri"] == full["manifest"] and message["audioTracks"] == 32
    plan = _mirrored(message)
    assert plan.create_jobs == [] and plan.status.phase == "Ready"
    technical = plan.status.technical
    assert technical is not None and technical.audio is not None
    assert [a.to_wire() for a in technical.audio] == full["technical"]["audio"]  # lossless: one run of 32
    assert technical.sha256 == "ab" * 32 and technical.video and technical.video.width == 3840
    assert plan.status.qc and plan.status.qc.verdict == "Failed" and plan.status.qc.issue_count == 57
    assert plan.status.previews == _mirrored(full).status.previews


def test_32_tracks_that_all_differ_keep_their_count_and_the_essentials() -> None:
    tracks = _tracks(32, language=lambda i: f"x-programme-language-variant-{i:02d}")
    tracks[5]["codec"] = "aac"
    message = compact_result(_big_result(tracks))
    assert _size(message) <= MAX_MESSAGE and message["audioTracks"] == 32
    result = IngestResult.model_validate(message)
    technical = result.full_technical()
    assert technical is not None and technical.audio is not None and technical.sha256 == "ab" * 32
    # Layout and language went first; what is listed is true to the master, in order.
    assert [(a.index, a.codec, a.channels) for a in technical.audio] == [
        (t["index"], t["codec"], t["channels"]) for t in tracks][:len(technical.audio)]
    assert len(technical.audio) == 32
    assert _mirrored(message).status.phase == "Ready"


@pytest.mark.parametrize("count", [1, 8, 32, 64, 128])
def test_any_track_count_fits(count: int) -> None:
    tracks = _tracks(count, language=lambda i: "und" if i % 2 else "eng")
    message = compact_result(_big_result(tracks))
    assert _size(message) <= MAX_MESSAGE
    assert IngestResult.model_validate(message).full_technical() is not None


def test_a_small_result_is_sent_whole() -> None:
    small = _big_result(_tracks(2), issues=1)
    assert compact_result(small) == small


def test_the_worker_writes_the_compact_form_instead_of_failing(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "termination-log"
    monkeypatch.setenv("KUBEMAM_TERMINATION_MESSAGE_PATH", str(path))
    full = _big_result(_tracks(32))
    write_result(full, shrink=compact_result)
    written = json.loads(path.read_text())
    assert len(path.read_bytes()) <= MAX_MESSAGE and written["audioTracks"] == 32
    with pytest.raises(ValueError, match="termination message keeps 4096"):
        write_result(full)  # a step that declares no compact form still cannot write a cut-off message
