"""The worker image runs ingest, transcode and package under `docker run` with the step pods' security context.

Each step's Job is built by the operator's own Job builder (plan/jobs.py) and its pod run by tests/containers/
dockerpod.py as a kubelet would: uid 65532, read-only root, every capability dropped, no privilege escalation,
Docker's default seccomp profile, emptyDirs on /work and /tmp, the S3 credentials and content keys from
"Secrets". MinIO listens on the docker bridge's gateway, where the containers reach it; what each step commits
there is checked, and a worker image without ffmpeg must fail in words.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from kubemam.api.asset import TechnicalMetadata
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.config import OperatorConfig
from kubemam.media.sample import make_sample
from kubemam.plan.jobs import Owner, StepJobRequest, build_step_job
from kubemam.plan.package import KEYS_DIR_ENV, KEYS_MOUNT
from kubemam.plan.transcode import fit_ladder, transcode_inputs
from kubemam.storage.s3 import list_objects
from kubemam.storage.uri import S3Uri
from tests.containers.conftest import SKIP
from tests.containers.dockerpod import run_pod

pytestmark = [SKIP, pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the master is made with ffmpeg")]

BUCKET = "kubemam-library"
SECRET = "kubemam-s3"
LADDER = TranscodeLadderSpec.model_validate({
    "segmentDurationSeconds": 2,
    "renditions": [
        {"name": "h264-360p", "codec": "h264", "width": 640, "height": 360, "profile": "main", "preset": "veryfast",
         "rateControl": {"mode": "crf", "crf": 28}},
        {"name": "h264-180p", "codec": "h264", "width": 320, "height": 180, "profile": "main", "preset": "veryfast",
         "rateControl": {"mode": "crf", "crf": 30}},
    ],
    "audio": [{"name": "stereo", "bitrateKbps": 96, "loudness": {"targetLufs": -23, "truePeakDbtp": -1}}],
})


@pytest.fixture(scope="module")
def master(bridge_minio: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    path = make_sample(tmp_path_factory.mktemp("media") / "master.mov", width=640, height=360, seconds=10)
    key = f"incoming/{uuid.uuid4().hex}.mov"
    bridge_minio.client().upload_file(str(path), BUCKET, key)
    return {"uri": f"s3://{BUCKET}/{key}", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _config(image: str, minio: Any) -> OperatorConfig:
    return OperatorConfig(worker_image=image, image_pull_policy="Never", s3_endpoint=minio.endpoint,
                          s3_credentials_secret=SECRET, s3_retry_seconds=10)


def _secrets(minio: Any, **more: dict[str, str]) -> dict[str, dict[str, str]]:
    return {SECRET: {"AWS_ACCESS_KEY_ID": minio.access_key, "AWS_SECRET_ACCESS_KEY": minio.secret_key}, **more}


def _job(step: str, inputs: dict[str, Any], config: OperatorConfig, **request: Any) -> dict[str, Any]:
    owner = Owner("MediaAsset", "ep1", str(uuid.uuid4()), "default")
    return build_step_job(StepJobRequest(owner=owner, step=step, inputs=inputs, **request), config)


def _keys(s3: Any, uri: str) -> set[str]:
    return {key for key, _ in list_objects(s3, S3Uri.parse(uri))}


def test_ingest_transcode_and_package_in_the_worker_image(docker: Any, images: dict[str, str], bridge_minio: Any,
                                                          master: dict[str, str], tmp_path: Path) -> None:
    s3 = bridge_minio.client()
    config = _config(images["worker"], bridge_minio)
    root = f"s3://{BUCKET}/assets/default/ep1-{uuid.uuid4().hex[:6]}"

    # Ingest: probe, QC, proxy, poster, thumbnails, committed with a manifest.
    ingest = run_pod(docker, _job("ingest", {
        "source": {"uri": master["uri"], "checksum": {"algorithm": "sha256", "value": master["sha256"]}},
        "output": f"{root}/ingest", "timeline": {"frameRate": "25", "startTimecode": "10:00:00:00"},
        "thumbnails": {"intervalSeconds": 2, "width": 160, "spriteColumns": 2, "spriteRows": 2}}, config),
        _secrets(bridge_minio), tmp_path / "ingest")
    assert ingest.returncode == 0, ingest.logs[-3000:]
    result = ingest.result
    assert result["technical"]["sha256"] == master["sha256"]
    assert result["technical"]["video"]["width"] == 640 and result["qc"]["verdict"] in ("Passed", "Warning", "Failed")
    committed = _keys(s3, result["manifest"].removesuffix("/manifest.json"))
    assert {"manifest.json", "probe.json", "qc.json", "proxy.mp4", "poster.jpg", "sprite-001.jpg",
            "sprite.vtt"} <= committed, committed

    # Transcode: every rung and the audio, each with its own manifest.
    technical = TechnicalMetadata.model_validate(result["technical"])
    fit = fit_ladder(LADDER, technical, f"{root}/renditions")
    transcode = run_pod(docker, _job("transcode", transcode_inputs(master["uri"], technical, LADDER, fit.targets,
                                                                   "single"), config),
                        _secrets(bridge_minio), tmp_path / "transcode")
    assert transcode.returncode == 0, transcode.logs[-3000:]
    renditions = transcode.result["renditions"]
    assert {r["name"] for r in renditions} == {"h264-360p", "h264-180p", "stereo"}
    for rendition in renditions:
        uri = S3Uri.parse(rendition["uri"])
        assert s3.head_object(Bucket=uri.bucket, Key=uri.key)["ContentLength"] == rendition["sizeBytes"]
        assert rendition["bitrate"] > 0

    # Package with CENC: kubemam-encrypt from the image, keys from a mounted Secret (as the package Job has them).
    keys = {"video": (str(uuid.uuid4()), os.urandom(16).hex()), "audio": (str(uuid.uuid4()), os.urandom(16).hex())}
    key_secret = {f"{tier}.{part}": value for tier, (kid, key) in keys.items()
                  for part, value in (("kid", kid), ("key", key))}
    tracks = [{"name": r["name"], "kind": r["kind"], "uri": r["uri"], "specHash": r["specHash"],
               "keyTier": "audio" if r["kind"] == "audio" else "video", **({"language": "en"}
                                                                           if r["kind"] == "audio" else {})}
              for r in renditions]
    package_inputs = {"contentId": str(uuid.uuid4()), "formats": ["dash", "hls"], "iframePlaylist": True,
                      "segmentSeconds": 2, "tracks": tracks, "output": f"{root}/package",
                      "drm": {"systems": ["clearkey", "widevine", "playready"], "scheme": "cenc",
                              "tiers": ["audio", "video"], "provider": "secret"}}
    package = run_pod(docker, _job("package", package_inputs, config, secret_mounts=(("ep1-keys", KEYS_MOUNT),),
                                   env=((KEYS_DIR_ENV, KEYS_MOUNT),)),
                      _secrets(bridge_minio, **{"ep1-keys": key_secret}), tmp_path / "package")
    assert package.returncode == 0, package.logs[-3000:]
    packaged = package.result
    assert packaged["packages"][0]["keyIds"] == sorted(kid for kid, _ in keys.values())
    published = _keys(s3, f"{root}/package")
    assert {"manifest.mpd", "master.m3u8", "h264-360p/init.mp4", "h264-360p/media.m3u8"} <= published, published
    init = s3.get_object(Bucket=BUCKET, Key=S3Uri.parse(f"{root}/package/h264-360p/init.mp4").key)["Body"].read()
    assert b"pssh" in init and b"encv" in init  # encrypted, with its protection boxes
    mpd = s3.get_object(Bucket=BUCKET, Key=S3Uri.parse(f"{root}/package/manifest.mpd").key)["Body"].read().decode()
    assert f'cenc:default_KID="{keys["video"][0]}"' in mpd
    # No key reached the logs, the result or what was published.
    for _, key in keys.values():
        assert key not in package.logs and key not in json.dumps(packaged) and key not in mpd


def test_a_worker_image_without_ffmpeg_fails_in_words(docker: Any, images: dict[str, str], bridge_minio: Any,
                                                      master: dict[str, str], tmp_path: Path) -> None:
    """The same worker with ffmpeg and ffprobe gone: the step ends with a termination message naming them."""
    broken = f"kubemam.local/worker-without-ffmpeg:{uuid.uuid4().hex[:8]}"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {images['worker']}\nUSER 0\nRUN rm -f /usr/bin/ffmpeg /usr/bin/ffprobe\nUSER 65532:65532\n")
    docker.run("build", "-q", "-t", broken, str(context))
    try:
        run = run_pod(docker, _job("ingest", {"source": {"uri": master["uri"]},
                                              "output": f"s3://{BUCKET}/assets/default/broken/ingest"},
                                   _config(broken, bridge_minio)), _secrets(bridge_minio), tmp_path / "run")
    finally:
        docker.run("rmi", "-f", broken, check=False)
    assert run.returncode != 0
    error = run.result["error"]
    assert "ffprobe" in error or "ffmpeg" in error, error
