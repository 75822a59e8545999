"""`kubemam worker migrate` against real MinIO and real ffmpeg: an MPEG-2 master becomes a verified FFV1 one.

The pure parts (which codecs are at risk, which audio codec keeps which samples, how hashes are compared)
are tested first without ffmpeg or MinIO.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from kubemam.api.asset import AudioStream, TechnicalMetadata, VideoStream
from kubemam.media.preserve import (
    HashedStream,
    PreservationError,
    at_risk,
    audio_codec,
    compare_frame_hashes,
    parse_framemd5,
)
from kubemam.storage.s3 import list_objects, make_client, read_manifest, verify
from kubemam.storage.uri import S3Uri
from tests.helpers import run_step

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


# --- pure ------------------------------------------------------------------------------------------------


def test_at_risk_names_the_masters_codecs_the_policy_watches() -> None:
    technical = TechnicalMetadata(video=VideoStream(codec="mpeg2video", width=1920, height=1080),
                                  audio=[AudioStream(index=1, codec="mp2", channels=2),
                                         AudioStream(index=2, codec="pcm_s24le", channels=2)])
    assert at_risk(technical, ["MPEG2VIDEO", "dvvideo", " mp2 "]) == ["mp2", "mpeg2video"]
    assert at_risk(technical, ["dvvideo", "h264"]) == []
    assert at_risk(technical, []) == []
    assert at_risk(TechnicalMetadata(), ["mpeg2video"]) == []  # not probed yet: nothing to say
    dv = TechnicalMetadata(video=VideoStream(codec="dvvideo", width=720, height=576))
    assert at_risk(dv, ["DVVIDEO"]) == ["dvvideo"]


def test_audio_is_kept_in_flac_only_when_flac_holds_the_decoded_samples_exactly() -> None:
    def codec(raw: str, bits: int | None = None) -> str:
        return audio_codec(HashedStream("a:0", 1, raw, bits))

    assert codec("s16") == "flac" and codec("u8") == "flac"
    assert codec("s32", 24) == "flac"
    assert codec("s32") == "pcm_s32le" and codec("s32", 32) == "pcm_s32le"  # FLAC here tops out at 24 bits
    assert codec("flt") == "pcm_f32le" and codec("dbl") == "pcm_f64le"  # MP2 and AAC decode to float


def test_hash_comparison_names_the_first_frame_that_differs() -> None:
    text = ("#format: frame checksums\n#tb 0: 1/25\n"
            "0,          0,          0,        1,   115200, aaa\n"
            "1,          0,          0,     1024,     4096, x0\n"
            "0,          1,          1,        1,   115200, bbb\n"
            "1,       1024,       1024,     1024,     4096, x1\n")
    original = parse_framemd5(text, ["v:0", "a:0"])
    assert original == {"v:0": ["aaa", "bbb"], "a:0": ["x0", "x1"]}
    assert compare_frame_hashes(original, {"v:0": ["aaa", "bbb"], "a:0": ["x0", "x1"]}) == {"v:0": 2, "a:0": 2}
    with pytest.raises(PreservationError, match="stream v:0 differs at frame 1: .* MD5 bbb, .* to ccc"):
        compare_frame_hashes(original, {"v:0": ["aaa", "ccc"], "a:0": ["x0", "x1"]})
    with pytest.raises(PreservationError, match=r"a:0: the original has 2 audio block \(1024 samples\)s, .* 1"):
        compare_frame_hashes(original, {"v:0": ["aaa", "bbb"], "a:0": ["x0"]})
    with pytest.raises(PreservationError, match="has streams"):
        compare_frame_hashes(original, {"v:0": ["aaa", "bbb"]})


# --- the worker against MinIO ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mpeg2_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of interlaced MPEG-2 4:2:2 long-GOP with two 24-bit PCM tracks in MXF OP1a (XDCAM-like), TC 10:00:00:00."""
    path = tmp_path_factory.mktemp("media") / "master.mxf"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=2",
                    "-f", "lavfi", "-i", "sine=f=440:sample_rate=48000:d=2",
                    "-f", "lavfi", "-i", "sine=f=1000:sample_rate=48000:d=2",
                    "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "mpeg2video", "-pix_fmt", "yuv422p",
                    "-q:v", "4", "-g", "12", "-bf", "2", "-flags", "+ilme+ildct", "-top", "1",
                    "-c:a", "pcm_s24le", "-timecode", "10:00:00:00", "-f", "mxf", str(path)], check=True)
    return path


def _run(minio: Any, tmp_path: Path, inputs: dict[str, Any]) -> tuple[subprocess.CompletedProcess[str], Path]:
    return run_step("migrate", minio, tmp_path, inputs)


def _upload(minio: Any, master: Path) -> tuple[Any, str, str]:
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    key = f"incoming/{uuid.uuid4().hex}.mxf"
    s3.upload_file(str(master), "kubemam-library", key)
    return s3, f"s3://kubemam-library/{key}", f"s3://kubemam-library/assets/{uuid.uuid4().hex}/preservation"


def _ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                          str(path)], capture_output=True, text=True, check=True).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def _video_frame_md5s(path: Path) -> list[str]:
    """Independently of the worker: MD5 of every decoded picture, in 4:2:2 as the master decodes."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
                          "-pix_fmt", "yuv422p", "-f", "framemd5", "-"], capture_output=True, text=True,
                         check=True).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def _audio_md5(path: Path, track: int) -> str:
    """Independently of the worker: one MD5 over all decoded samples of a track, as 32-bit PCM."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", f"0:a:{track}", "-c:a", "pcm_s32le",
                          "-f", "md5", "-"], capture_output=True, text=True, check=True).stdout
    return out.strip()


@pytest.mark.integration
@needs_ffmpeg
def test_an_mpeg2_master_gets_a_verified_ffv1_preservation_master(minio: Any, mpeg2_master: Path,
                                                                   tmp_path: Path) -> None:
    s3, source, output = _upload(minio, mpeg2_master)
    sha = hashlib.sha256(mpeg2_master.read_bytes()).hexdigest()
    inputs = {"source": source, "sha256": sha, "output": output, "target": "ffv1-mkv"}
    result, message = _run(minio, tmp_path, inputs)
    assert result.returncode == 0, result.stderr
    assert 'KUBEMAM_PROGRESS {"percent": 100, "step": "migrate"}' in result.stdout
    reported = json.loads(message.read_text())
    master = reported["preservationMaster"]
    assert master["uri"] == f"{output}/master.mkv"
    assert (master["codec"], master["verified"], master["frames"]) == ("ffv1", True, 50)

    prefix = S3Uri.parse(output)
    assert sorted(k for k, _ in list_objects(s3, prefix)) == ["manifest.json", "master.framemd5", "master.mkv",
                                                             "source.framemd5"]
    local = tmp_path / "master.mkv"
    s3.download_file(prefix.bucket, prefix.join("master.mkv").key, str(local))
    assert hashlib.sha256(local.read_bytes()).hexdigest() == master["sha256"]
    assert local.stat().st_size == master["size"]

    info = _ffprobe(local)
    assert "matroska" in info["format"]["format_name"]
    video = [s for s in info["streams"] if s["codec_type"] == "video"]
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert len(video) == 1 and video[0]["codec_name"] == "ffv1"
    assert (video[0]["pix_fmt"], video[0]["field_order"]) == ("yuv422p", "tt")  # 4:2:2 interlaced, as shot
    assert [(a["codec_name"], a["bits_per_raw_sample"]) for a in audio] == [("flac", "24"), ("flac", "24")]
    assert info["format"]["tags"]["TIMECODE"] == "10:00:00:00"

    # Every decoded picture and every sample is the same as the original's, by hashes made here.
    original_frames = _video_frame_md5s(mpeg2_master)
    assert len(original_frames) == 50
    assert _video_frame_md5s(local) == original_frames
    for track in (0, 1):
        assert _audio_md5(local, track) == _audio_md5(mpeg2_master, track)

    # The record of the check is kept: both framemd5 files, hash for hash the same.
    records = {}
    for key in ("source.framemd5", "master.framemd5"):
        text = s3.get_object(Bucket=prefix.bucket, Key=prefix.join(key).key)["Body"].read().decode()
        records[key] = [line.rsplit(",", 1)[1].strip() for line in text.splitlines() if not line.startswith("#")]
    assert records["source.framemd5"] == records["master.framemd5"] and len(records["master.framemd5"]) > 50

    manifest = read_manifest(s3, prefix)
    assert manifest is not None and manifest.step == "migrate" and verify(s3, prefix, manifest) == []
    entry = manifest.entry("master.mkv")
    assert entry is not None and entry.sha256 == master["sha256"]

    # The same input again: the manifest verifies, nothing is rewritten, the same result is reported.
    again, message2 = _run(minio, tmp_path, inputs)
    assert again.returncode == 0, again.stderr
    assert "already migrated" in again.stderr
    second = read_manifest(s3, prefix)
    assert second is not None and second.created == manifest.created
    assert json.loads(message2.read_text()) == reported


@pytest.mark.integration
@needs_ffmpeg
def test_a_master_that_does_not_match_its_checksum_commits_nothing(minio: Any, mpeg2_master: Path,
                                                                   tmp_path: Path) -> None:
    s3, source, output = _upload(minio, mpeg2_master)
    inputs = {"source": source, "sha256": "0" * 64, "output": output, "target": "ffv1-mkv"}
    result, message = _run(minio, tmp_path, inputs)
    assert result.returncode == 2
    assert "the input expects 0000" in json.loads(message.read_text())["error"]
    assert list(list_objects(s3, S3Uri.parse(output))) == []


@pytest.mark.integration
def test_a_short_download_with_no_declared_length_is_fetched_again_not_failed_for_good(minio: Any,
                                                                                       tmp_path: Path) -> None:
    """An HTTP server that declares no length and closes early: the bytes cannot match the ingested sha256,
    but nothing says they are the whole master, so the run is retried (exit 1), never failed for good."""
    class Short(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the body ends when the connection closes: no length, no chunking

        def do_GET(self) -> None:  # noqa: N802 - the http.server naming
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"\0" * 4096)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Short)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        output = f"s3://kubemam-library/assets/{uuid.uuid4().hex}/migrate"
        inputs = {"source": f"http://127.0.0.1:{server.server_address[1]}/master.mpg", "sha256": "0" * 64,
                  "output": output, "target": "ffv1-mkv"}
        result, message = _run(minio, tmp_path, inputs)
    finally:
        server.shutdown()
    assert result.returncode == 1, result.stderr
    error = json.loads(message.read_text())
    assert error["retryable"] is True and "the download may be short" in error["error"]


@pytest.mark.integration
@needs_ffmpeg
def test_a_copy_that_is_not_lossless_fails_for_good_and_commits_nothing(
        minio: Any, mpeg2_master: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An encoder that quietly drops to 4:2:0 (in process, so the encode can be swapped) is caught frame 0."""
    from kubemam.plan.jobs import PERMANENT_FAILURE_EXIT_CODE
    from kubemam.worker import migrate, steps

    def lossy(source: Path, output: Path, info: Any = None, report: Any = None) -> None:
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-map", "0:v", "-map", "0:a",
                        "-c:v", "ffv1", "-pix_fmt", "yuv420p", "-c:a", "flac", "-f", "matroska", str(output)],
                       check=True)

    s3, source, output = _upload(minio, mpeg2_master)
    message = tmp_path / "termination-log"
    for name, value in {"AWS_ENDPOINT_URL": minio.endpoint, "AWS_ACCESS_KEY_ID": minio.access_key,
                        "AWS_SECRET_ACCESS_KEY": minio.secret_key, "TMPDIR": str(tmp_path),
                        "KUBEMAM_TERMINATION_MESSAGE_PATH": str(message),
                        "KUBEMAM_STEP_INPUT": json.dumps({"source": source, "output": output})}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(migrate, "encode_ffv1", lossy)
    assert steps.main("migrate") == PERMANENT_FAILURE_EXIT_CODE
    error = json.loads(message.read_text())["error"]
    assert "not lossless, nothing was committed" in error and "stream v:0 differs at frame 0" in error
    assert list(list_objects(s3, S3Uri.parse(output))) == []
