"""`kubemam worker ingest` against real MinIO and real ffmpeg: what lands in storage, what it reports."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubemam.storage.s3 import list_objects, make_client, read_manifest
from kubemam.storage.uri import S3Uri
from tests.helpers import run_step

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
    return run_step("ingest", minio, tmp_path, inputs)


def test_ingest_commits_proxy_probe_and_qc_and_reports_them(minio: Any, sample: Path, tmp_path: Path) -> None:
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    key = f"incoming/{uuid.uuid4().hex}.mov"
    s3.upload_file(str(sample), "kubemam-library", key)
    sha = hashlib.sha256(sample.read_bytes()).hexdigest()
    output = f"s3://kubemam-library/assets/{uuid.uuid4().hex}/ingest"
    inputs = {"source": {"uri": f"s3://kubemam-library/{key}", "checksum": {"algorithm": "sha256", "value": sha}},
              "output": output, "timeline": {"frameRate": "25", "startTimecode": "10:00:00:00"},
              "markers": [{"name": "open", "kind": "segment", "start": "10:00:00:00", "end": "10:00:06:00"},
                          {"name": "beyond", "kind": "adBreak", "start": "10:00:06:00"}],
              # The ladder's thumbnail settings: one every 2 s, 160 wide, two per sheet.
              "thumbnails": {"intervalSeconds": 2, "width": 160, "spriteColumns": 2, "spriteRows": 1},
              "qc": {"targetLufs": -23, "toleranceLu": 1, "maxTruePeakDbtp": -1, "failOn": ["markers"]}}
    result, message = _run(minio, tmp_path, inputs)
    assert result.returncode == 0, result.stderr
    reported = json.loads(message.read_text())
    assert reported["technical"]["sha256"] == sha
    assert reported["technical"]["video"]["width"] == 320 and reported["technical"]["startTimecode"] == "10:00:00:00"
    issues = {(i["check"], i.get("start")) for i in reported["qc"]["issues"]}
    assert ("black", "10:00:00:00") in issues and ("freeze", "10:00:04:00") in issues
    assert any(check == "loudness" for check, _ in issues)
    # The programme ends at 10:00:06:00: a marker starting there is outside it, and fails QC by policy.
    markers = [i for i in reported["qc"]["issues"] if i["check"] == "markers"]
    assert len(markers) == 1 and "'beyond' start 10:00:06:00" in markers[0]["message"]
    assert markers[0]["severity"] == "error" and reported["qc"]["verdict"] == "Failed"

    prefix = S3Uri.parse(reported["manifest"].removesuffix("/manifest.json"))
    stored = dict(list_objects(s3, prefix))
    assert {"manifest.json", "probe.json", "qc.json", "proxy.mp4", "poster.jpg", "sprite-001.jpg", "sprite-002.jpg",
            "sprite.vtt", "thumbs/0001.jpg", "thumbs/0003.jpg"} <= set(stored)
    # The loudness series beside the report, one point a second: the sample's steady tone reads at its
    # integrated loudness throughout (momentary, 400 ms, from the first second on).
    assert reported["qc"]["loudnessUri"] == str(prefix.join("loudness.json"))
    series = json.loads(s3.get_object(Bucket=prefix.bucket, Key=prefix.join("loudness.json").key)["Body"].read())
    assert series["targetLufs"] == -23 and [p[0] for p in series["points"]] == [float(s) for s in range(6)]
    integrated = reported["qc"]["loudness"]["integratedLufs"]
    assert all(abs(p[1] - integrated) < 1.5 for p in series["points"][1:]), (integrated, series)
    previews = reported["previews"]
    assert (previews["thumbnails"], previews["spriteSheets"]) == (3, 2)
    assert previews["spriteUri"].endswith("/sprite-001.jpg")
    # Sheets keep the 2x1 grid: two 160x90 thumbnails on the first, the third alone on the second.
    for name, size in (("sprite-001.jpg", (320, 90)), ("sprite-002.jpg", (320, 90)), ("thumbs/0003.jpg", (160, 90))):
        local = tmp_path / name.replace("/", "-")
        s3.download_file(prefix.bucket, prefix.join(name).key, str(local))
        decoded = json.loads(subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams",
                                             str(local)], capture_output=True, text=True, check=True).stdout)
        assert (decoded["streams"][0]["width"], decoded["streams"][0]["height"]) == size, name
    vtt = s3.get_object(Bucket=prefix.bucket, Key=prefix.join("sprite.vtt").key)["Body"].read().decode()
    assert vtt.startswith("WEBVTT")
    assert "00:00:02.000 --> 00:00:04.000\nsprite-001.jpg#xywh=160,0,160,90" in vtt
    assert "00:00:04.000 --> 00:00:06.000\nsprite-002.jpg#xywh=0,0,160,90" in vtt
    proxy = tmp_path / "proxy.mp4"
    s3.download_file(prefix.bucket, prefix.join("proxy.mp4").key, str(proxy))
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams",
                                       str(proxy)], capture_output=True, text=True, check=True).stdout)
    assert probe["streams"][0]["height"] == 360
    # Fragmented (bounded muxer memory for long masters), with the random-access index players seek by at its end.
    data = proxy.read_bytes()
    assert b"moof" in data and b"mfra" in data[-4096:]

    # A second run of the same input finds the verified manifest and changes nothing.
    etag = s3.head_object(Bucket=prefix.bucket, Key=prefix.join("manifest.json").key)["ETag"]
    again, message2 = _run(minio, tmp_path, inputs)
    assert again.returncode == 0, again.stderr
    assert s3.head_object(Bucket=prefix.bucket, Key=prefix.join("manifest.json").key)["ETag"] == etag
    assert json.loads(message2.read_text()) == reported
    # So does another attempt (the planner's retry or recover run: a new Job name, the same work).
    recover, message3 = _run(minio, tmp_path, {**inputs, "attempt": {"number": 2, "recover": True}})
    assert recover.returncode == 0, recover.stderr
    assert s3.head_object(Bucket=prefix.bucket, Key=prefix.join("manifest.json").key)["ETag"] == etag
    assert json.loads(message3.read_text()) == reported


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


def test_decode_errors_in_a_damaged_master_fail_qc(minio: Any, tmp_path: Path) -> None:
    """A transport stream with corrupted packets still probes; QC decodes it and reports what broke."""
    clean = tmp_path / "clean.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=6", "-f", "lavfi",
                    "-i", "sine=d=6", "-c:v", "libx264", "-g", "25", "-c:a", "aac", "-f", "mpegts", str(clean)],
                   check=True)
    damaged = bytearray(clean.read_bytes())
    for offset in range(len(damaged) // 3, len(damaged) // 3 + 40_000, 188 * 3):
        damaged[offset + 4: offset + 24] = bytes((offset * 7 + j * 13) % 256 for j in range(20))
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    key = f"incoming/{uuid.uuid4().hex}.ts"
    s3.put_object(Bucket="kubemam-library", Key=key, Body=bytes(damaged))
    inputs = {"source": {"uri": f"s3://kubemam-library/{key}"},
              "output": f"s3://kubemam-library/assets/{uuid.uuid4().hex}/ingest"}
    result, message = _run(minio, tmp_path, inputs)
    assert result.returncode == 0, result.stderr
    reported = json.loads(message.read_text())
    decode = [i for i in reported["qc"]["issues"] if i["check"] == "decode"]
    assert len(decode) == 1 and decode[0]["severity"] == "error" and "decode error(s)" in decode[0]["message"]
    assert reported["qc"]["verdict"] == "Failed"


def test_a_non_media_file_fails_permanently_and_commits_nothing(minio: Any, tmp_path: Path) -> None:
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    key = f"incoming/{uuid.uuid4().hex}.mov"
    s3.put_object(Bucket="kubemam-library", Key=key, Body=b"this is a spreadsheet, not a movie\n" * 100)
    output = f"s3://kubemam-library/assets/{uuid.uuid4().hex}/ingest"
    result, message = _run(minio, tmp_path, {"source": {"uri": f"s3://kubemam-library/{key}"}, "output": output})
    assert result.returncode == 2, result.stderr
    assert "not" in json.loads(message.read_text())["error"]
    assert list(list_objects(s3, S3Uri.parse(output))) == []


def test_s3_briefly_unreachable_is_retried_not_failed(minio: Any, sample: Path, tmp_path: Path) -> None:
    """S3 down when the worker starts and back a few seconds later: the step retries and succeeds.
    Down for good: the step fails with an ordinary exit code (the Job retries), never the permanent one."""
    from kubemam_local.minio import MinioServer

    late = MinioServer(buckets=["kubemam-library"], workdir=tmp_path / "late-minio")
    inputs = {"source": {"uri": "s3://kubemam-library/incoming/late.mov"},
              "output": "s3://kubemam-library/assets/late/ingest"}
    env = {**os.environ, "AWS_ENDPOINT_URL": late.endpoint, "AWS_ACCESS_KEY_ID": late.access_key,
           "AWS_SECRET_ACCESS_KEY": late.secret_key, "KUBEMAM_STEP_INPUT": json.dumps(inputs),
           "KUBEMAM_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"), "TMPDIR": str(tmp_path),
           "KUBEMAM_S3_RETRY_SECONDS": "60"}
    # The source is stored first and the server stopped, so when it comes back (same port, same
    # data directory) the object is already there: the worker cannot race the upload.
    with late:
        make_client(late.endpoint, late.access_key, late.secret_key).upload_file(
            str(sample), "kubemam-library", "incoming/late.mov")
    worker = subprocess.Popen([sys.executable, "-m", "kubemam", "worker", "ingest"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        assert worker.poll() is None, "the worker gave up while S3 was briefly unreachable"
        with late:
            _, stderr = worker.communicate(timeout=240)
            assert worker.returncode == 0, stderr
    finally:
        if worker.poll() is None:
            worker.kill()

    down = {**env, "KUBEMAM_S3_RETRY_SECONDS": "2"}
    gave_up = subprocess.run([sys.executable, "-m", "kubemam", "worker", "ingest"], env=down, capture_output=True,
                             text=True, timeout=120)
    assert gave_up.returncode not in (0, 2), gave_up.stderr


class _Master(http.server.BaseHTTPRequestHandler):
    """Serves `body`; while `cut` is set, declares the whole length but closes after `cut` bytes."""

    body = b""
    cut: int | None = None
    served: list[int] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        self.send_response(200)
        self.send_header("Content-Type", "video/quicktime")
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        sent = self.body if self.cut is None else self.body[:self.cut]
        self.wfile.write(sent)
        self.wfile.flush()
        type(self).served.append(len(sent))
        self.close_connection = True

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture()
def http_master(sample: Path) -> Iterator[tuple[str, type[_Master]]]:
    handler = type("Master", (_Master,), {"body": sample.read_bytes(), "cut": None, "served": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/master.mov", handler
    server.shutdown()


def test_a_truncated_http_master_is_a_transient_failure_then_ingested_whole(
        minio: Any, sample: Path, tmp_path: Path, http_master: tuple[str, type[_Master]]) -> None:
    """A server that closes the connection early (a clean EOF before Content-Length): never a partial master;
    exit 1 (retried), not the permanent exit 2 — even with a declared checksum, which a short body cannot
    match. Served whole, the same input ingests. The URI is presigned: its signature and credential reach
    neither the error (the asset's condition) nor the pod's log."""
    uri, server = http_master
    uri += "?X-Amz-Credential=AKIASECRETCRED%2F20261203&X-Amz-Signature=5ec12e7deadbeef"
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    sha = hashlib.sha256(sample.read_bytes()).hexdigest()
    output = f"s3://kubemam-library/assets/{uuid.uuid4().hex}/ingest"
    server.cut = len(server.body) // 3
    for source in ({"uri": uri}, {"uri": uri, "checksum": {"algorithm": "sha256", "value": sha}}):
        result, message = _run(minio, tmp_path, {"source": source, "output": output})
        assert result.returncode == 1, result.stderr
        error = json.loads(message.read_text())
        assert error["retryable"] is True and f"ended after {server.cut} of {len(server.body)} bytes" in error["error"]
        assert "/master.mov" in error["error"]
        assert _secrets_in(error["error"] + result.stderr + result.stdout) == set()
        assert list(list_objects(s3, S3Uri.parse(output))) == []  # nothing committed from a partial master
    assert server.served == [server.cut, server.cut]

    server.cut = None
    result, message = _run(minio, tmp_path, {"source": {"uri": uri, "checksum": {"algorithm": "sha256", "value": sha}},
                                             "output": output})
    assert result.returncode == 0, result.stderr
    assert "fetched http://127.0.0.1" in result.stderr
    assert _secrets_in(result.stderr + result.stdout) == set()
    reported = json.loads(message.read_text())
    assert reported["technical"]["sha256"] == sha and reported["technical"]["sizeBytes"] == len(server.body)


def _secrets_in(text: str) -> set[str]:
    """The presigned URI's secrets that text shows."""
    return {secret for secret in ("5ec12e7deadbeef", "AKIASECRETCRED") if secret in text}


def test_a_whole_download_with_the_wrong_checksum_is_still_permanent(
        minio: Any, tmp_path: Path, http_master: tuple[str, type[_Master]]) -> None:
    uri, _ = http_master
    result, message = _run(minio, tmp_path, {"source": {"uri": uri, "checksum": {"algorithm": "md5",
                                                                                 "value": "0" * 32}},
                                             "output": f"s3://kubemam-library/assets/{uuid.uuid4().hex}/ingest"})
    assert result.returncode == 2 and "the asset declares 0000" in json.loads(message.read_text())["error"]


def test_a_32_track_master_reports_a_compact_result_that_holds_every_track(minio: Any, tmp_path: Path) -> None:
    """32 mono tracks under a long namespace and asset name (every preview URI is long): the whole result
    (over 4 KiB) is in the manifest, the termination message carries the compact form with resultUri, and the
    planner's reading of it lists every track."""
    from kubemam.steps.ingest import IngestResult

    master = tmp_path / "32-track.mov"
    tracks = 32
    command = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=1"]
    for n in range(tracks):
        command += ["-f", "lavfi", "-i", f"sine=f={200 + 20 * n}:sample_rate=48000:d=1"]
    command += ["-map", "0:v"] + [x for n in range(tracks) for x in ("-map", f"{n + 1}:a")]
    command += [x for n in range(tracks) for x in (f"-metadata:s:a:{n}", f"language={'eng' if n < 16 else 'fra'}",
                                                   f"-metadata:s:a:{n}", f"title=Stem {n:02d} " + "x" * 60)]
    command += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "pcm_s24le", "-shortest", str(master)]
    subprocess.run(command, check=True)
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    key = f"incoming/{uuid.uuid4().hex}.mov"
    s3.upload_file(str(master), "kubemam-library", key)
    namespace, asset = "broadcast-operations-" + "n" * 42, "the-long-running-series-s01e01-" + "a" * 200
    output = f"s3://kubemam-library/assets/{namespace}/{asset}-{uuid.uuid4().hex[:8]}/ingest"
    result, message = _run(minio, tmp_path, {"source": {"uri": f"s3://kubemam-library/{key}"}, "output": output})
    assert result.returncode == 0, result.stderr
    # Probed with every track; the QC and preview passes (v:0, a:0) do not index the other 31.
    assert "31 sound track(s) beyond the first hidden" in result.stderr
    assert len(message.read_bytes()) <= 4096
    reported = json.loads(message.read_text())
    assert reported["audioTracks"] == tracks and reported["resultUri"] == reported["manifest"]
    manifest = read_manifest(s3, S3Uri.parse(reported["resultUri"].removesuffix("/manifest.json")))
    assert manifest is not None and len(manifest.result["technical"]["audio"]) == tracks
    full = manifest.result["technical"]["audio"]
    assert len(json.dumps(manifest.result)) > 4096
    technical = IngestResult.model_validate(reported).full_technical()
    assert technical is not None and technical.audio is not None
    assert [a.to_wire() for a in technical.audio] == full
    # Run again: the manifest is found and the same compact message is repeated.
    again, message2 = _run(minio, tmp_path, {"source": {"uri": f"s3://kubemam-library/{key}"}, "output": output})
    assert again.returncode == 0 and json.loads(message2.read_text()) == reported


def test_a_worker_without_ffprobe_fails_for_good_naming_it(minio: Any, sample: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool the image lacks is not a blip: exit 2 (the Job fails at once) and the message names it."""
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    key = f"incoming/{uuid.uuid4().hex}.mov"
    s3.upload_file(str(sample), "kubemam-library", key)
    bare = tmp_path / "bin"
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))  # no ffmpeg, no ffprobe: only the interpreter, by absolute path
    result, message = _run(minio, tmp_path, {"source": {"uri": f"s3://kubemam-library/{key}"},
                                             "output": f"s3://kubemam-library/assets/{uuid.uuid4().hex}/ingest"})
    assert result.returncode == 2, result.stderr[-2000:]
    reported = json.loads(message.read_text())
    assert reported["error"] == "ingest: ffprobe is not installed in the worker image (not on PATH)"
    assert "retryable" not in reported
