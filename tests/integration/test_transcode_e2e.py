"""An asset transcoded into a 3-rung ladder on the local cluster (real scheduler, Job controller,
process node, MinIO, ffmpeg); then one rung is edited and only that rung is encoded again. Along the
way: `kubemam status` and `kubemam describe ma` as people run them, and the operator's /metrics."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubemam.media.sample import make_sample
from kubemam.storage.uri import S3Uri
from tests.helpers import Custom, LocalStack, local_stack, metric_value, wait_for

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


def _kubemam(stack: LocalStack, *args: str) -> str:
    """The CLI as a person runs it: its own process, the cluster from KUBECONFIG."""
    result = subprocess.run([sys.executable, "-m", "kubemam", *args], env={**os.environ, "KUBECONFIG": str(
        stack.kubeconfig)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _progress_series(stack: LocalStack, seen: list[tuple[dict[str, str], float]]) -> None:
    """Keep any running-step progress sample the operator exposes right now (none while it starts)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        exposition = stack.metrics()
    except OSError:  # the operator is not serving /metrics yet
        return
    for family in text_string_to_metric_families(exposition):
        seen.extend((s.labels, s.value) for s in family.samples if s.name == "kubemam_step_progress_ratio")


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
        progress_seen: list[tuple[dict[str, str], float]] = []
        try:
            status = wait_for(lambda: _progress_series(stack, progress_seen) or _transcoded(custom), timeout=300,
                              what="the asset to be transcoded")
        except AssertionError:
            raise AssertionError(log.read_text()[-4000:]) from None
        assert status["phase"] == "Ready"
        renditions = {r["name"]: r for r in status["renditions"]}
        assert set(renditions) == {"h264-360p", "h264-270p", "h265-180p", "stereo"}
        # Whether a 2 s progress tick lands inside these short steps is timing; when one did, it named
        # the asset and its step, as a ratio.
        assert all(labels == {"namespace": NAMESPACE, "asset": "clip", "step": labels["step"]}
                   and labels["step"] in ("ingest", "transcode") and 0 <= value <= 1
                   for labels, value in progress_seen), progress_seen

        # What people read: the asset, its phase and progress; then its lineage down to the renditions.
        overview = _kubemam(stack, "status", "-n", NAMESPACE)
        line = next(row for row in overview.splitlines() if row.split()[:1] == ["clip"])
        assert line.split()[1:3] == ["Ready", "done"], overview
        assert "WINDOWS: none" in overview
        lineage = _kubemam(stack, "describe", "ma", "clip", "-n", NAMESPACE)
        assert lineage.startswith(f"MediaAsset {NAMESPACE}/clip\n"), lineage
        assert "source  s3://kubemam-library/incoming/clip.mov" in lineage
        assert f"sha256 {status['technical']['sha256']}" in lineage
        assert "├─ renditions (4)" in lineage
        for name, rendition in renditions.items():
            row = next(row for row in lineage.splitlines() if f"─ {name} " in row).split("─ ", 1)[1].split()
            size = f"{rendition['width']}x{rendition['height']}" if name in EXPECTED else "audio"
            assert row[:3] == [name, rendition["codec"], size], row
        assert any(row.split()[:2] == ["Transcoded", "True"] for row in lineage.splitlines()), lineage
        jobs_section = lineage.split("\nJobs\n", 1)[1].splitlines()[1:]
        assert sorted((row.split()[0], row.split()[2]) for row in jobs_section) == [
            ("ingest", "Succeeded"), ("transcode", "Succeeded")], lineage
        missing = subprocess.run([sys.executable, "-m", "kubemam", "describe", "ma", "no-such-asset", "-n", NAMESPACE],
                                 env={**os.environ, "KUBECONFIG": str(stack.kubeconfig)}, capture_output=True,
                                 text=True, timeout=60)
        assert missing.returncode == 1 and "not found" in missing.stderr

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

        # The operator's metrics: every Job counted once with its duration, reconciles per kind, the
        # inventory (listed every 15 s), QC, and no progress series left once the steps ended.
        def scraped_ready() -> str | None:
            text = stack.metrics()
            return text if (metric_value(text, "kubemam_assets", namespace=NAMESPACE, phase="Ready") or 0) >= 1 \
                else None

        scraped = wait_for(scraped_ready, timeout=45, what="kubemam_assets{phase=Ready}")
        assert metric_value(scraped, "kubemam_assets", namespace=NAMESPACE, phase="Failed") == 0
        assert metric_value(scraped, "kubemam_jobs_total", step="ingest", outcome="succeeded") == 1
        assert metric_value(scraped, "kubemam_jobs_total", step="transcode", outcome="succeeded") == 2
        assert metric_value(scraped, "kubemam_jobs_total", outcome="failed") is None
        assert metric_value(scraped, "kubemam_job_duration_seconds_count", step="transcode",
                            outcome="succeeded") == 2
        assert (metric_value(scraped, "kubemam_job_duration_seconds_sum", step="ingest") or 0) > 0
        assert metric_value(scraped, "kubemam_jobs_queued", step="transcode") == 0
        for kind in ("MediaAsset", "TranscodeLadder", "Job"):
            assert (metric_value(scraped, "kubemam_reconcile_total", kind=kind, outcome="success") or 0) > 0, kind
            assert (metric_value(scraped, "kubemam_reconcile_duration_seconds_count", kind=kind) or 0) > 0, kind
        qc = after["qc"]
        assert metric_value(scraped, "kubemam_loudness_deviation_lu_count") == 1
        deviation = abs(qc["loudness"]["integratedLufs"] - -23.0)
        assert metric_value(scraped, "kubemam_loudness_deviation_lu_sum") == pytest.approx(deviation, abs=1e-6)
        failed_checks = {i["check"] for i in qc.get("issues") or [] if i["severity"] == "error"}
        for check in failed_checks:
            assert metric_value(scraped, "kubemam_qc_failures_total", namespace=NAMESPACE, check=check) == 1, check
        if qc["verdict"] != "Failed":
            assert metric_value(scraped, "kubemam_qc_failures_total", namespace=NAMESPACE) is None
        assert metric_value(scraped, "kubemam_step_progress_ratio", asset="clip") is None
        assert metric_value(scraped, "kubemam_step_fps", asset="clip") is None
