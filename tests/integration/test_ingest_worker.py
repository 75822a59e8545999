"""`kubemam worker ingest` against real MinIO and real ffmpeg: what lands in storage, what it reports."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from kubemam.storage.s3 import list_objects, make_client, read_manifest
from kubemam.storage.uri import S3Uri

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s, 25 fps, timecode 10:00:00:00: 1 s black, 3 s moving picture, 2 s frozen; quiet tone."""
    path = tmp_path_factory.mktemp("media") / "sample.mov"
    graph = ("color=black:s=320x180:r=25:d=1[b];testsrc2=s=320x180:r=25:d=3[t];"
             "testsrc2=s=320x180:r=25:d=0.04,loop=loop=49:size=1:start=0[f];[b][t][f]concat=n=3:v=1:a=0")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", graph, "-f", "lavfi", "-i",
                    "sine=f=1000:sample_rate=48000:d=6,volume=0.5", "-map", "0:v", "-map", "1:a", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-timecode", "10:00:00:00", str(path)],
                   check=True)
    return path


def _run(minio: Any, tmp_path: Path, inputs: dict[str, Any]) -> tuple[subprocess.CompletedProcess[str], Path]:
    message = tmp_path / "termination-log"
    env = {**os.environ, "AWS_ENDPOINT_URL": minio.endpoint, "AWS_ACCESS_KEY_ID": minio.access_key,
           "AWS_SECRET_ACCESS_KEY": minio.secret_key, "KUBEMAM_STEP_INPUT": json.dumps(inputs),
           "KUBEMAM_TERMINATION_MESSAGE_PATH": str(message), "TMPDIR": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "kubemam", "worker", "ingest"], env=env, capture_output=True,
                            text=True, timeout=300)
    return result, message


def test_ingest_commits_proxy_probe_and_qc_and_reports_them(minio: Any, sample: Path, tmp_path: Path) -> None:
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    key = f"incoming/{uuid.uuid4().hex}.mov"
    s3.upload_file(str(sample), "kubemam-library", key)
    sha = hashlib.sha256(sample.read_bytes()).hexdigest()
    output = f"s3://kubemam-library/assets/{uuid.uuid4().hex}/ingest"
    inputs = {"source": {"uri": f"s3://kubemam-library/{key}", "checksum": {"algorithm": "sha256", "value": sha}},
              "output": output, "timeline": {"frameRate": "25", "startTimecode": "10:00:00:00"}}
    result, message = _run(minio, tmp_path, inputs)
    assert result.returncode == 0, result.stderr
    reported = json.loads(message.read_text())
    assert reported["technical"]["sha256"] == sha
    assert reported["technical"]["video"]["width"] == 320 and reported["technical"]["startTimecode"] == "10:00:00:00"
    issues = {(i["check"], i.get("start")) for i in reported["qc"]["issues"]}
    assert ("black", "10:00:00:00") in issues and ("freeze", "10:00:04:00") in issues
    assert any(check == "loudness" for check, _ in issues)
    assert reported["qc"]["verdict"] == "Warning"

    prefix = S3Uri.parse(reported["manifest"].removesuffix("/manifest.json"))
    stored = dict(list_objects(s3, prefix))
    assert {"manifest.json", "probe.json", "qc.json", "proxy.mp4", "poster.jpg", "sprite.jpg", "sprite.vtt",
            "thumbs/0001.jpg"} <= set(stored)
    assert reported["previews"]["thumbnails"] == 1 and reported["previews"]["spriteUri"].endswith("/sprite.jpg")
    sprite = tmp_path / "sprite.jpg"
    s3.download_file(prefix.bucket, prefix.join("sprite.jpg").key, str(sprite))
    decoded = json.loads(subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams",
                                         str(sprite)], capture_output=True, text=True, check=True).stdout)
    assert (decoded["streams"][0]["width"], decoded["streams"][0]["height"]) == (320, 180)
    vtt = s3.get_object(Bucket=prefix.bucket, Key=prefix.join("sprite.vtt").key)["Body"].read().decode()
    assert vtt.startswith("WEBVTT") and "00:00:00.000 --> 00:00:06.000\nsprite.jpg#xywh=0,0,320,180" in vtt
    proxy = tmp_path / "proxy.mp4"
    s3.download_file(prefix.bucket, prefix.join("proxy.mp4").key, str(proxy))
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams",
                                       str(proxy)], capture_output=True, text=True, check=True).stdout)
    assert probe["streams"][0]["height"] == 360

    # A second run of the same input finds the verified manifest and changes nothing.
    etag = s3.head_object(Bucket=prefix.bucket, Key=prefix.join("manifest.json").key)["ETag"]
    again, message2 = _run(minio, tmp_path, inputs)
    assert again.returncode == 0, again.stderr
    assert s3.head_object(Bucket=prefix.bucket, Key=prefix.join("manifest.json").key)["ETag"] == etag
    assert json.loads(message2.read_text()) == reported


def test_checksum_mismatch_fails_clearly_and_commits_nothing(minio: Any, sample: Path, tmp_path: Path) -> None:
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    key = f"incoming/{uuid.uuid4().hex}.mov"
    s3.upload_file(str(sample), "kubemam-library", key)
    output = f"s3://kubemam-library/assets/{uuid.uuid4().hex}/ingest"
    inputs = {"source": {"uri": f"s3://kubemam-library/{key}", "checksum": {"algorithm": "sha256",
                                                                            "value": "0" * 64}}, "output": output}
    result, message = _run(minio, tmp_path, inputs)
    assert result.returncode == 2
    assert "declares 0000" in json.loads(message.read_text())["error"]
    assert list(list_objects(s3, S3Uri.parse(output))) == []
    assert read_manifest(s3, S3Uri.parse(output)) is None


def test_missing_source_is_a_clear_error(minio: Any, tmp_path: Path) -> None:
    inputs = {"source": {"uri": "s3://kubemam-library/incoming/nothing-here.mov"},
              "output": "s3://kubemam-library/assets/x/ingest"}
    result, message = _run(minio, tmp_path, inputs)
    assert result.returncode == 2 and "does not exist" in json.loads(message.read_text())["error"]
