"""The operator SIGKILLed at random points of every step (issue 15's fault suite): ten kills while an asset goes
through ingest, transcode and packaging, each followed by a restart. Kopf re-runs whatever was in flight, so
every handler must be safe to run twice: the asset reaches Ready with one finished Job per step's work, no
failed Job, and what status says landed is what S3 holds.

A local cluster of its own (scheduler, process node, MinIO, the operator). The kill points come from a seeded
random generator, so a failure can be replayed; every kill and restart is printed with its time.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubemam.media.sample import make_sample
from kubemam.storage.uri import S3Uri
from tests.helpers import LocalStack, local_stack, wait_for

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")

NAMESPACE = "kubemam-fault-kill"
KILLS = 10
SEED = 20261130
LADDER = {
    "apiVersion": "kubemam.io/v1alpha1", "kind": "TranscodeLadder", "metadata": {"name": "small"},
    "spec": {"segmentDurationSeconds": 2, "packaging": {"formats": ["dash", "hls"]},
             "renditions": [{"name": "h264-180p", "codec": "h264", "width": 320, "height": 180, "profile": "main",
                             "preset": "veryfast", "rateControl": {"mode": "crf", "crf": 30}},
                            {"name": "h264-144p", "codec": "h264", "width": 256, "height": 144, "profile": "main",
                             "preset": "veryfast", "rateControl": {"mode": "crf", "crf": 32}}],
             "audio": [{"name": "stereo", "bitrateKbps": 64}]},
}
ASSET = {
    "apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "metadata": {"name": "killed"},
    "spec": {"source": {"uri": "s3://kubemam-library/incoming/killed.mov"}, "metadata": {"title": "Killed"},
             "timeline": {"frameRate": "25", "startTimecode": "10:00:00:00"}, "ladderRef": {"name": "small"}},
}


def _kill(stack: LocalStack) -> None:
    """SIGKILL: no cleanup, no finalizer release, no status write — whatever was in flight is cut."""
    if stack.operator is not None:
        stack.operator.send_signal(signal.SIGKILL)
        stack.operator.wait(timeout=30)
        stack.operator = None


def _ready(stack: LocalStack) -> dict[str, Any] | None:
    status = dict(stack.custom.get("mediaassets", "killed").get("status") or {})
    if status.get("phase") == "Failed":
        raise AssertionError(f"the asset failed: {status.get('conditions')}\n{stack.log.read_text()[-3000:]}")
    return status if status.get("phase") == "Ready" else None


def test_ten_kills_across_every_step_leave_one_job_per_step_and_one_result(control_plane: Any,
                                                                          tmp_path: Path) -> None:
    with local_stack(control_plane, tmp_path, NAMESPACE, operator_env={"KUBEMAM_RECHECK_SECONDS": "2"}) as stack:
        master = make_sample(tmp_path / "killed.mov", width=640, height=360, seconds=60)
        stack.store.upload_file(str(master), "kubemam-library", "incoming/killed.mov")
        stack.custom.create("transcodeladders", LADDER)
        stack.custom.create("mediaassets", ASSET)

        rng = random.Random(SEED)
        started = time.monotonic()
        kills: list[tuple[float, str]] = []
        done = threading.Event()

        def killer() -> None:
            while len(kills) < KILLS and not done.is_set():
                if done.wait(rng.uniform(1.0, 3.0)):
                    return
                status = stack.custom.get("mediaassets", "killed").get("status") or {}
                step = (status.get("progress") or {}).get("step") or "-"
                _kill(stack)
                kills.append((round(time.monotonic() - started, 1), f"{status.get('phase')}/{step}"))
                time.sleep(rng.uniform(0.2, 1.5))  # the restart comes at its own random point
                stack.start_operator()

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            status = wait_for(lambda: _ready(stack) if len(kills) >= KILLS or done.is_set() else None,
                              timeout=600, what="Ready after every kill")
        finally:
            done.set()
            thread.join(timeout=60)
            if stack.operator is None:
                stack.start_operator()
        print(f"\n{len(kills)} kills (seconds, phase/step): {kills}; Ready "
              f"{time.monotonic() - started:.0f} s after the asset was created")
        assert len(kills) == KILLS
        working = [phase for _, phase in kills if not phase.startswith("Ready")]
        assert len(working) >= KILLS // 2 and len(set(working)) >= 2, f"the kills missed the steps: {kills}"

        # One finished Job per step's work: nothing was run twice, nothing failed.
        jobs = client.BatchV1Api(stack.api).list_namespaced_job(NAMESPACE, label_selector="kubemam.io/asset=killed")
        by_step: dict[str, list[Any]] = {}
        for job in jobs.items:
            by_step.setdefault(job.metadata.labels["kubemam.io/step"], []).append(job)
        assert {step: len(found) for step, found in by_step.items()} == {"ingest": 1, "transcode": 1, "package": 1}
        assert all((job.status.succeeded or 0) == 1 and not job.status.failed for found in by_step.values()
                   for job in found), [(j.metadata.name, j.status) for found in by_step.values() for j in found]

        # One result: every rendition status names is the object S3 holds, byte for byte.
        assert {r["name"] for r in status["renditions"]} == {"h264-180p", "h264-144p", "stereo"}
        for rendition in status["renditions"]:
            where = S3Uri.parse(rendition["uri"])
            body = stack.store.get_object(Bucket=where.bucket, Key=where.key)["Body"].read()
            assert hashlib.sha256(body).hexdigest() == rendition["sha256"], rendition["name"]
        assert {p["format"] for p in status["packages"]} == {"dash", "hls"}
        for package in status["packages"]:
            where = S3Uri.parse(package["manifestUri"])
            assert stack.store.head_object(Bucket=where.bucket, Key=where.key)["ContentLength"] > 0
        wait_for(lambda: stack.operator is not None and stack.operator.poll() is None, timeout=10,
                 what="the operator running at the end")
