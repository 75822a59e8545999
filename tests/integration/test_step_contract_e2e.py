"""The step contract through the operator (issue 14), on a local cluster of its own:

- a chunked ladder runs as an Indexed Job of GOP-aligned chunks (2 at a time) and a stitch, reaches
  Ready, and its rendition has the frame count and keyframe times of a single-pass encode;
- markers edited while ingest runs: the superseded ingest Job is deleted when the new one is created,
  so at most one ingest Job is unfinished at any moment, and the final status comes from the newest input.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubemam.media.sample import make_sample
from kubemam.storage.uri import S3Uri
from tests.helpers import LocalStack, local_stack, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]

NAMESPACE = "kubemam-steps"
RUNG = {"name": "h264-360p", "codec": "h264", "width": 640, "height": 360, "profile": "main", "preset": "veryfast",
        "rateControl": {"mode": "crf", "crf": 26}}
AUDIO = {"name": "stereo", "bitrateKbps": 96, "loudness": {"targetLufs": -23, "truePeakDbtp": -1}}


def _ladder(name: str, chunking: dict[str, int] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"segmentDurationSeconds": 2, "renditions": [RUNG], "audio": [AUDIO]}
    if chunking:
        spec["chunking"] = chunking
    return {"apiVersion": "kubemam.io/v1alpha1", "kind": "TranscodeLadder", "metadata": {"name": name}, "spec": spec}


def _asset(name: str, key: str, ladder: str | None = None, markers: list[dict[str, str]] | None = None
           ) -> dict[str, Any]:
    spec: dict[str, Any] = {"source": {"uri": f"s3://kubemam-library/incoming/{key}"}, "metadata": {"title": name},
                            "timeline": {"frameRate": "25", "startTimecode": "10:00:00:00"}}
    if ladder:
        spec["ladderRef"] = {"name": ladder}
    if markers:
        spec["markers"] = markers
    return {"apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def stack(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    tmp = tmp_path_factory.mktemp("steps")
    with local_stack(control_plane, tmp, NAMESPACE) as running:
        yield running


def _status(stack: LocalStack, name: str) -> dict[str, Any]:
    return dict(stack.custom.get("mediaassets", name).get("status") or {})


def _ready(stack: LocalStack, name: str) -> dict[str, Any] | None:
    status = _status(stack, name)
    if status.get("phase") == "Failed":
        raise AssertionError(f"{name} failed: {status.get('conditions')}\n{stack.log.read_text()[-3000:]}")
    return status if status.get("phase") == "Ready" else None


def _jobs(stack: LocalStack, step: str) -> list[Any]:
    jobs = client.BatchV1Api(stack.api).list_namespaced_job(NAMESPACE, label_selector=f"kubemam.io/step={step}")
    return sorted(jobs.items, key=lambda j: j.metadata.creation_timestamp)


def _finished(job: Any) -> bool:
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions or [])


def _video(stack: LocalStack, status: dict[str, Any], tmp: Path, label: str) -> tuple[int, list[float]]:
    """Frame count and keyframe times of the asset's video rendition, read by ffprobe from S3."""
    rendition = next(r for r in status["renditions"] if r["name"] == RUNG["name"])
    where = S3Uri.parse(rendition["uri"])
    local = tmp / f"{label}.mp4"
    stack.store.download_file(where.bucket, where.key, str(local))
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "packet=pts_time,flags", "-print_format", "json", str(local)],
                           check=True, capture_output=True, text=True)
    packets = json.loads(probe.stdout)["packets"]
    return len(packets), sorted(float(p["pts_time"]) for p in packets if "K" in p["flags"])


def test_a_chunked_ladder_reaches_ready_with_the_frames_and_keyframes_of_a_single_pass(
        stack: LocalStack, tmp_path: Path) -> None:
    master = make_sample(tmp_path / "clip.mov", width=640, height=360, seconds=8)
    stack.store.upload_file(str(master), "kubemam-library", "incoming/clip.mov")
    stack.custom.create("transcodeladders", _ladder("chunked", {"chunkSeconds": 2, "maxParallel": 2}))
    stack.custom.create("transcodeladders", _ladder("single", None))
    stack.custom.create("mediaassets", _asset("chunked-clip", "clip.mov", "chunked"))
    stack.custom.create("mediaassets", _asset("single-clip", "clip.mov", "single"))

    chunked = wait_for(lambda: _ready(stack, "chunked-clip"), timeout=400, what="the chunked asset to be Ready")
    single = wait_for(lambda: _ready(stack, "single-clip"), timeout=300, what="the single-pass asset to be Ready")

    # 8 s at 25 fps in chunks of one 2 s GOP: an Indexed Job of 4 completions, 2 at a time, all succeeded.
    chunk_jobs = _jobs(stack, "transcode-chunks")
    assert len(chunk_jobs) == 1
    spec = chunk_jobs[0].spec
    assert (spec.completion_mode, spec.completions, spec.parallelism) == ("Indexed", 4, 2)
    assert chunk_jobs[0].status.succeeded == 4
    assert chunk_jobs[0].spec.template.spec.containers[0].command == ["kubemam", "worker", "transcode-chunks"]
    stitches = [j for j in _jobs(stack, "transcode") if j.metadata.labels["kubemam.io/asset"] == "chunked-clip"]
    assert len(stitches) == 1 and stitches[0].status.succeeded == 1
    stitch_input = json.loads(next(e.value for e in stitches[0].spec.template.spec.containers[0].env
                                   if e.name == "KUBEMAM_STEP_INPUT"))
    assert stitch_input["mode"] == "stitch" and stitch_input["chunks"]["count"] == 4

    frames, keyframes = _video(stack, chunked, tmp_path, "chunked")
    single_frames, single_keyframes = _video(stack, single, tmp_path, "single")
    assert frames == single_frames == 200
    assert keyframes == single_keyframes == [0.0, 2.0, 4.0, 6.0]
    assert {r["name"] for r in chunked["renditions"]} == {"h264-360p", "stereo"}


def test_markers_edited_mid_ingest_leave_one_ingest_job_and_the_newest_result(
        stack: LocalStack, tmp_path: Path) -> None:
    # Long enough that the edit lands while the first ingest runs.
    master = make_sample(tmp_path / "long.mov", width=640, height=360, seconds=120)
    stack.store.upload_file(str(master), "kubemam-library", "incoming/long.mov")
    seen: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            jobs = [j for j in _jobs(stack, "ingest") if j.metadata.labels.get("kubemam.io/asset") == "marked"]
            seen.append(sum(1 for j in jobs if not _finished(j) and j.metadata.deletion_timestamp is None))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stack.custom.create("mediaassets", _asset("marked", "long.mov", markers=[
            {"name": "intro", "start": "10:00:01:00", "kind": "chapter"}]))

        def first_running() -> Any:
            jobs = [j for j in _jobs(stack, "ingest") if j.metadata.labels.get("kubemam.io/asset") == "marked"]
            return next((j for j in jobs if (j.status.active or 0) > 0), None)

        first = wait_for(first_running, timeout=120, what="the first ingest Job to run")
        # A marker past the end of the programme: only the newest input's QC can report it.
        stack.custom.patch("mediaassets", "marked", {"spec": {"markers": [
            {"name": "intro", "start": "10:00:01:00", "kind": "chapter"},
            {"name": "late", "start": "10:05:00:00", "kind": "chapter"}]}})
        status = wait_for(lambda: _ready(stack, "marked"), timeout=300, what="the edited asset to be Ready")
    finally:
        stop.set()
        sampler.join(timeout=10)

    assert seen and max(seen) == 1, seen
    jobs = [j for j in _jobs(stack, "ingest") if j.metadata.labels.get("kubemam.io/asset") == "marked"]
    assert first.metadata.name not in {j.metadata.name for j in jobs}, "the superseded Job was not deleted"
    assert len(jobs) == 1
    newest = jobs[0]
    step_input = json.loads(next(e.value for e in newest.spec.template.spec.containers[0].env
                                 if e.name == "KUBEMAM_STEP_INPUT"))
    assert [m["name"] for m in step_input["markers"]] == ["intro", "late"]
    assert [(j["name"], j["state"]) for j in status["jobs"]] == [(newest.metadata.name, "Succeeded")]
    marker_issues = [i for i in status["qc"]["issues"] if i["check"] == "markers"]
    assert marker_issues and "late" in marker_issues[0]["message"], status["qc"]
    # The superseded Job's pod went with it (the garbage collector, then the node stopping its process).
    def pods_left() -> list[Any]:
        return list(client.CoreV1Api(stack.api).list_namespaced_pod(
            NAMESPACE, label_selector=f"batch.kubernetes.io/job-name={first.metadata.name}").items)

    try:
        wait_for(lambda: not pods_left() or None, timeout=60, what=f"the pods of {first.metadata.name} to go")
    except AssertionError:
        raise AssertionError([(p.metadata.name, p.metadata.deletion_timestamp, p.metadata.finalizers,
                               p.metadata.owner_references, p.status.phase) for p in pods_left()]) from None
