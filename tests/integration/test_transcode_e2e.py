"""An asset transcoded into a 3-rung ladder on the local cluster (real scheduler, Job controller,
process node, MinIO, ffmpeg); then one rung is edited and only that rung is encoded again."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubemam.media.sample import make_sample
from kubemam.storage.uri import S3Uri
from tests.helpers import Custom, local_stack, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]

NAMESPACE = "kubemam-demo"
LADDER = {
    "apiVersion": "kubemam.io/v1alpha1", "kind": "TranscodeLadder", "metadata": {"name": "three-rungs"},
    "spec": {
        "segmentDurationSeconds": 2,
        "renditions": [
            {"name": "h264-360p", "codec": "h264", "width": 640, "height": 360, "profile": "main", "level": "3.0",
             "preset": "veryfast", "rateControl": {"mode": "vbr", "bitrateKbps": 800, "maxrateKbps": 1200,
                                                   "bufsizeKbps": 1600}},
            {"name": "h264-270p", "codec": "h264", "width": 480, "height": 270, "profile": "baseline",
             "preset": "veryfast", "rateControl": {"mode": "crf", "crf": 26, "maxrateKbps": 700,
                                                   "bufsizeKbps": 1400}},
            {"name": "h265-180p", "codec": "h265", "width": 320, "height": 180, "profile": "main",
             "preset": "ultrafast", "rateControl": {"mode": "crf", "crf": 30}},
        ],
        "audio": [{"name": "stereo", "bitrateKbps": 96, "loudness": {"targetLufs": -23, "truePeakDbtp": -1}}],
    },
}
ASSET = {
    "apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "metadata": {"name": "clip"},
    "spec": {"source": {"uri": "s3://kubemam-library/incoming/clip.mov"}, "metadata": {"title": "Clip"},
             "timeline": {"frameRate": "25", "startTimecode": "10:00:00:00"}, "ladderRef": {"name": "three-rungs"}},
}
EXPECTED = {"h264-360p": ("h264", 640, 360, "Main"), "h264-270p": ("h264", 480, 270, "Constrained Baseline"),
            "h265-180p": ("hevc", 320, 180, "Main")}


def _transcode_jobs(api: Any) -> list[Any]:
    jobs = client.BatchV1Api(api).list_namespaced_job(NAMESPACE).items
    return sorted((j for j in jobs if j.metadata.labels.get("kubemam.io/step") == "transcode"),
                  key=lambda j: j.metadata.creation_timestamp)


def _transcoded(custom: Custom, hashes: dict[str, str] | None = None) -> dict[str, Any] | None:
    status = custom.get("mediaassets", "clip").get("status") or {}
    cond = next((c for c in status.get("conditions") or [] if c["type"] == "Transcoded"), None)
    if cond and cond["status"] == "False":
        raise AssertionError(f"transcode failed: {cond}")
    if not cond or cond["status"] != "True":
        return None
    if hashes is not None and {r["name"]: r["specHash"] for r in status["renditions"]} == hashes:
        return None  # still the renditions from before the edit
    return status


def _probe(path: Path, *args: str) -> dict[str, Any]:
    return dict(json.loads(subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", *args, str(path)],
                                          check=True, capture_output=True, text=True).stdout))


def test_transcode_three_rungs_then_reencode_only_the_edited_rung(control_plane: Any, tmp_path: Path) -> None:
    with local_stack(control_plane, tmp_path, NAMESPACE) as stack:
        api, store, custom, log = stack.api, stack.store, stack.custom, stack.log
        master = make_sample(tmp_path / "clip.mov", width=640, height=360, seconds=8)
        store.upload_file(str(master), "kubemam-library", "incoming/clip.mov")
        custom.create("transcodeladders", copy.deepcopy(LADDER))
        custom.create("mediaassets", copy.deepcopy(ASSET))
        try:
            status = wait_for(lambda: _transcoded(custom), timeout=300, what="the asset to be transcoded")
        except AssertionError:
            raise AssertionError(log.read_text()[-4000:]) from None
        assert status["phase"] == "Ready"
        renditions = {r["name"]: r for r in status["renditions"]}
        assert set(renditions) == {"h264-360p", "h264-270p", "h265-180p", "stereo"}

        keyframes = {}
        for name, (codec, width, height, profile) in EXPECTED.items():
            where = S3Uri.parse(renditions[name]["uri"])
            local = tmp_path / f"{name}.mp4"
            store.download_file(where.bucket, where.key, str(local))
            stream = _probe(local, "-show_streams")["streams"][0]
            assert (stream["codec_name"], stream["width"], stream["height"], stream["profile"]) == (
                codec, width, height, profile), name
            assert abs(float(stream["duration"]) - 8.0) <= 0.04  # the source's duration, within one frame
            packets = _probe(local, "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags")["packets"]
            keyframes[name] = sorted(float(p["pts_time"]) for p in packets if "K" in p["flags"])
        assert keyframes["h264-360p"] == [0.0, 2.0, 4.0, 6.0]
        assert keyframes["h264-360p"] == keyframes["h264-270p"] == keyframes["h265-180p"]
        assert len(_transcode_jobs(api)) == 1

        def modified(name: str) -> Any:
            where = S3Uri.parse(renditions[name]["uri"])
            return store.head_object(Bucket=where.bucket, Key=where.key)["LastModified"]

        before = {name: modified(name) for name in renditions}
        hashes = {name: r["specHash"] for name, r in renditions.items()}
        custom.patch("transcodeladders", "three-rungs", {"spec": {"renditions": [
            LADDER["spec"]["renditions"][0],  # type: ignore[index]
            {**LADDER["spec"]["renditions"][1], "rateControl": {"mode": "crf", "crf": 30,  # type: ignore[index]
                                                                "maxrateKbps": 500, "bufsizeKbps": 1000}},
            LADDER["spec"]["renditions"][2],  # type: ignore[index]
        ]}})
        after = wait_for(lambda: _transcoded(custom, hashes), timeout=300, what="the edited rung")
        changed = {r["name"] for r in after["renditions"] if r["specHash"] != hashes[r["name"]]}
        assert changed == {"h264-270p"}
        jobs = _transcode_jobs(api)
        assert len(jobs) == 2
        step_input = next(e.value for e in jobs[1].spec.template.spec.containers[0].env
                          if e.name == "KUBEMAM_STEP_INPUT")
        assert [r["name"] for r in json.loads(step_input)["video"]] == ["h264-270p"]
        assert json.loads(step_input)["audio"] == []
        # The other renditions' objects were not rewritten.
        assert {name: modified(name) for name in renditions if name != "h264-270p"} == {
            name: stamp for name, stamp in before.items() if name != "h264-270p"}
