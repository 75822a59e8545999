"""The demo's pure parts: the order it applies examples/ in, what it prints for a change, when it stops."""

from __future__ import annotations

from typing import Any

from kubemam_local.demo import apply_stages, changes, ended, job_state, look
from tests.helpers import EXAMPLES


def _asset(phase: str | None = None, ready: tuple[str, str] | None = None, jobs: list[dict[str, Any]] | None = None,
           progress: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"jobs": jobs or []}
    if phase:
        status["phase"] = phase
    if ready:
        status["conditions"] = [{"type": "Ready", "status": ready[0], "reason": ready[1], "message": "m"}]
    if progress:
        status["progress"] = progress
    return {"metadata": {"name": "ep1", "uid": "u1"}, "status": status}


def _job(name: str, step: str, status: dict[str, Any], owner: str = "u1") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubemam.io/step": step}, "ownerReferences": [{"uid": owner}],
                         "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {}, "status": status}


def test_examples_are_applied_with_what_assets_refer_to_first() -> None:
    stages = apply_stages(EXAMPLES)
    assert [kind for kind, _ in stages] == ["TranscodeLadder", "ArchivePolicy", "ConfigMap", "RightsWindow",
                                            "MediaAsset"]
    assert [d["metadata"]["name"] for d in stages[-1][1]] == ["coastal-s01e01"]


def test_a_missing_ladder_is_a_wait_not_an_end() -> None:
    assert not ended(_asset("Pending", ("False", "LadderNotFound")))
    assert not ended(_asset("Transcoding", ("False", "Transcoding")))
    assert ended(_asset("Ready", ("True", "Ready")))
    assert ended(_asset("Failed", ("False", "IngestFailed")))
    assert not ended({})


def test_live_job_states() -> None:
    assert job_state({"status": {}}) == "Pending"
    assert job_state({"spec": {"suspend": True}, "status": {}}) == "Suspended"
    assert job_state({"status": {"active": 1}}) == "Running"
    assert job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == "Succeeded"
    assert job_state({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}) == "Failed"


def test_one_line_per_change() -> None:
    running = {"step": "ingest", "name": "ep1-ingest-1", "inputHash": "h", "state": "Running"}
    first = look(_asset("Ingesting", ("False", "Ingesting"), [running], {"step": "ingest", "percent": 3}), [])
    assert changes({}, first) == ["phase - → Ingesting", "ingest     Job ep1-ingest-1 Running",
                                  "ingest     [----------]   3%", "Ready=False (Ingesting) — m"]
    assert changes(first, first) == []
    assert changes(first, look(_asset("Ingesting", ("False", "Ingesting"), [running],
                                      {"step": "ingest", "percent": 8, "fps": 50}), [])) == []  # same 10 % band
    # status.jobs no longer lists a finished transcode: the live Job tells it ended.
    later = look(_asset("Transcoding", ("False", "Transcoding"), [{**running, "state": "Succeeded"}],
                        {"step": "transcode", "percent": 40, "fps": 41.6, "etaSeconds": 65}),
                 [_job("ep1-transcode-2", "transcode", {"active": 1}),
                  _job("other-transcode-9", "transcode", {"active": 1}, owner="another asset")])
    assert changes(first, later) == [
        "phase Ingesting → Transcoding", "ingest     Job ep1-ingest-1 Succeeded",
        "transcode  Job ep1-transcode-2 Running", "transcode  [####------]  40% 42 fps ETA 1m 05s",
        "Ready=False (Transcoding) — m"]
    done = look(_asset("Packaging", ("False", "Packaging"), [{**running, "state": "Succeeded"}]),
                [_job("ep1-transcode-2", "transcode", {"conditions": [{"type": "Complete", "status": "True"}]})])
    assert "transcode  Job ep1-transcode-2 Succeeded" in changes(later, done)
    failed = look(_asset("Failed", ("False", "TranscodeFailed"), [{**running, "state": "Succeeded"}, {
        "step": "transcode", "name": "ep1-transcode-2", "inputHash": "h", "state": "Failed",
        "message": "exit 1:\n  no encoder"}]), [])
    assert "transcode  Job ep1-transcode-2 Failed: exit 1: no encoder" in changes(done, failed)
