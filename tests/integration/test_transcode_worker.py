"""`kubemam worker transcode` against real MinIO and real ffmpeg: what a decoder sees in every rendition."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from kubemam.api.asset import TechnicalMetadata
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.media.probe import probe, technical_metadata
from kubemam.media.sample import make_sample
from kubemam.plan.transcode import chunking, fit_ladder, master_facts, transcode_inputs
from kubemam.storage.manifest import sha256_file
from kubemam.storage.s3 import list_objects, make_client
from kubemam.storage.uri import S3Uri
from tests.media_checks import loud_onset, stream_start, tracks_moved

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]

LADDER = TranscodeLadderSpec.model_validate({
    "segmentDurationSeconds": 2,
    "renditions": [
        {"name": "h264-540p", "codec": "h264", "width": 960, "height": 540, "profile": "high", "level": "3.1",
         "preset": "veryfast", "rateControl": {"mode": "vbr", "bitrateKbps": 1200, "maxrateKbps": 1800,
                                               "bufsizeKbps": 2400}},
        {"name": "h265-360p", "codec": "h265", "width": 640, "height": 360, "profile": "main", "preset": "ultrafast",
         "rateControl": {"mode": "crf", "crf": 30, "maxrateKbps": 900, "bufsizeKbps": 1800}},
        {"name": "av1-270p", "codec": "av1", "width": 480, "height": 270, "preset": "ultrafast",
         "rateControl": {"mode": "crf", "crf": 45}},
    ],
    "audio": [{"name": "stereo", "bitrateKbps": 96, "loudness": {"targetLufs": -23, "truePeakDbtp": -1}}],
    "chunking": {"chunkSeconds": 4, "maxParallel": 2},
})


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TechnicalMetadata]:
    path = make_sample(tmp_path_factory.mktemp("media") / "master.mov", width=1280, height=720, seconds=10)
    sha, _ = sha256_file(path)
    return path, technical_metadata(probe(path), sha)


def _run(minio: Any, tmp_path: Path, inputs: dict[str, Any], index: int | None = None) -> dict[str, Any]:
    message = tmp_path / f"termination-{uuid.uuid4().hex}"
    env = {**os.environ, "AWS_ENDPOINT_URL": minio.endpoint, "AWS_ACCESS_KEY_ID": minio.access_key,
           "AWS_SECRET_ACCESS_KEY": minio.secret_key, "KUBEMAM_STEP_INPUT": json.dumps(inputs),
           "KUBEMAM_TERMINATION_MESSAGE_PATH": str(message), "TMPDIR": str(tmp_path / "scratch")}
    if index is not None:
        env["JOB_COMPLETION_INDEX"] = str(index)
    (tmp_path / "scratch").mkdir(exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "kubemam", "worker", "transcode"], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(message.read_text()))


def _ffprobe(path: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", *args, str(path)], check=True,
                         capture_output=True, text=True).stdout
    return dict(json.loads(out))


def _keyframes(path: Path) -> list[float]:
    packets = _ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags")["packets"]
    return sorted(float(p["pts_time"]) for p in packets if "K" in p["flags"])


def _frames(path: Path) -> int:
    stream = _ffprobe(path, "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames")
    return int(stream["streams"][0]["nb_read_frames"])


def _download(s3: Any, uri: str, target: Path) -> Path:
    where = S3Uri.parse(uri)
    s3.download_file(where.bucket, where.key, str(target))
    return target


def _upload(minio: Any, path: Path) -> tuple[Any, str, str]:
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    key = f"incoming/{uuid.uuid4().hex}.mov"
    s3.upload_file(str(path), "kubemam-library", key)
    return s3, f"s3://kubemam-library/{key}", f"s3://kubemam-library/assets/{uuid.uuid4().hex}"


def _top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types, in order (ISO/IEC 14496-12 4.2: 32-bit size, type, 64-bit size if 1)."""
    kinds = []
    with path.open("rb") as f:
        while header := f.read(8):
            size, kind = int.from_bytes(header[:4], "big"), header[4:8].decode("latin-1")
            if size == 1:
                size = int.from_bytes(f.read(8), "big") - 8
            kinds.append(kind)
            f.seek(size - 8, 1)
    return kinds


def test_one_decode_makes_every_rendition_as_asked(minio: Any, master: tuple[Path, TechnicalMetadata],
                                                   tmp_path: Path) -> None:
    path, technical = master
    s3, source, root = _upload(minio, path)
    fit = fit_ladder(LADDER, technical, f"{root}/renditions")
    inputs = transcode_inputs(source, technical, LADDER, fit.targets, "single")
    reported = _run(minio, tmp_path, inputs)["renditions"]
    assert {r["name"] for r in reported} == {"h264-540p", "h265-360p", "av1-270p", "stereo"}

    expected = {"h264-540p": ("h264", 960, 540, "High"), "h265-360p": ("hevc", 640, 360, "Main"),
                "av1-270p": ("av1", 480, 270, "Main")}
    source_frames = master_facts(technical)["frames"]
    frame = 1 / Fraction(technical.video.frame_rate)  # type: ignore[union-attr]
    keyframes = {}
    for item in reported:
        local = _download(s3, item["uri"], tmp_path / f"{item['name']}.mp4")
        assert sha256_file(local)[0] == item["sha256"]  # what status will say is what storage holds
        info = _ffprobe(local, "-show_streams", "-show_format")
        # A whole programme is written fragmented: the muxer's memory does not grow with its length.
        boxes = _top_level_boxes(local)
        assert boxes.index("moov") < boxes.index("moof") and boxes.count("moof") >= (2 if item["kind"] == "video"
                                                                                      else 1), boxes
        if item["kind"] == "audio":
            assert abs(float(info["format"]["duration"]) - technical.duration_seconds) < 0.05  # type: ignore[operator]
            continue
        stream = next(s for s in info["streams"] if s["codec_type"] == "video")
        codec, width, height, profile = expected[item["name"]]
        assert (stream["codec_name"], stream["width"], stream["height"], stream["profile"]) == (
            codec, width, height, profile), item["name"]
        assert abs(float(stream["duration"]) - technical.duration_seconds) <= frame  # type: ignore[operator]
        assert _frames(local) == source_frames
        assert stream.get("color_primaries") == "bt709" or technical.video.color_primaries is None  # type: ignore[union-attr]
        keyframes[item["name"]] = _keyframes(local)
        assert item["bitrate"] > 0
    # IDR frames at every 2 s segment boundary and nowhere else, identical in every rendition.
    assert keyframes["h264-540p"] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert keyframes["h264-540p"] == keyframes["h265-360p"] == keyframes["av1-270p"]
    h264 = _ffprobe(tmp_path / "h264-540p.mp4", "-show_streams")["streams"]
    assert next(s for s in h264 if s["codec_type"] == "video")["level"] == 31
    assert any(s.get("tags", {}).get("timecode") == "10:00:00:00" for s in h264)  # timecode carried through

    # The audio rendition was normalised to the ladder's EBU R128 target.
    loud = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(tmp_path / "stereo.mp4"), "-af",
                           "ebur128=peak=true", "-f", "null", "-"], capture_output=True, text=True).stderr
    integrated = float(loud[loud.rfind("Summary:"):].split("I:")[1].split("LUFS")[0])
    assert abs(integrated - (-23.0)) <= 1.0, integrated

    # Each rendition has its own manifest; a second run encodes nothing and reports the same.
    manifests = [k for k, _ in list_objects(s3, S3Uri.parse(f"{root}/renditions")) if k.endswith("manifest.json")]
    assert len(manifests) == 4
    before = {k: s3.head_object(Bucket="kubemam-library", Key=S3Uri.parse(f"{root}/renditions").join(k).key)["ETag"]
              for k in manifests}
    assert _run(minio, tmp_path, inputs)["renditions"] == reported
    # Another attempt (a retry or recover run of the planner) is the same work: it too finds them.
    assert _run(minio, tmp_path, {**inputs, "attempt": {"number": 3}})["renditions"] == reported
    assert {k: s3.head_object(Bucket="kubemam-library", Key=S3Uri.parse(f"{root}/renditions").join(k).key)["ETag"]
            for k in manifests} == before


def test_chunked_encode_matches_single_pass(minio: Any, master: tuple[Path, TechnicalMetadata],
                                            tmp_path: Path) -> None:
    path, technical = master
    s3, source, root = _upload(minio, path)
    fit = fit_ladder(LADDER, technical, f"{root}/renditions")
    video = [t for t in fit.targets if t.name == "h264-540p"]
    plan = chunking(LADDER, master_facts(technical))
    assert plan is not None and (plan.frames, plan.count) == (100, 3)  # 4 s chunks of 2 s GOPs over 250 frames
    chunk_inputs = transcode_inputs(source, technical, LADDER, video, "chunk", f"{root}/chunks", plan)
    for index in range(plan.count):
        assert _run(minio, tmp_path, chunk_inputs, index) == {"chunk": index}
    stitch_inputs = transcode_inputs(source, technical, LADDER, video, "stitch", f"{root}/chunks", plan)
    stitched = _run(minio, tmp_path, stitch_inputs)["renditions"][0]
    assert list(list_objects(s3, S3Uri.parse(f"{root}/chunks"))) == []  # chunks removed once stitched

    single_root = f"s3://kubemam-library/assets/{uuid.uuid4().hex}"
    single_fit = fit_ladder(LADDER, technical, f"{single_root}/renditions")
    single_inputs = transcode_inputs(source, technical, LADDER, [t for t in single_fit.targets
                                                                 if t.name == "h264-540p"], "single")
    single = _run(minio, tmp_path, single_inputs)["renditions"][0]
    a = _download(s3, stitched["uri"], tmp_path / "chunked.mp4")
    b = _download(s3, single["uri"], tmp_path / "single.mp4")
    assert _frames(a) == _frames(b) == 250
    assert _ffprobe(a, "-show_format")["format"]["duration"] == _ffprobe(b, "-show_format")["format"]["duration"]
    assert _keyframes(a) == _keyframes(b)
    assert "moof" in _top_level_boxes(a) and "moof" in _top_level_boxes(b)  # both fragmented (media/encode.py)
    assert any(s.get("tags", {}).get("timecode") == "10:00:00:00" for s in _ffprobe(a, "-show_streams")["streams"])
    # No visible seam: every frame of the chunked encode is close to the single pass (SSIM per frame).
    ssim = subprocess.run(["ffmpeg", "-hide_banner", "-i", str(a), "-i", str(b), "-lavfi",
                           "[0:v][1:v]ssim=stats_file=-", "-f", "null", "-"], capture_output=True, text=True).stdout
    worst = min(float(line.split("All:")[1].split()[0]) for line in ssim.splitlines() if "All:" in line)
    assert worst > 0.97, worst


@pytest.mark.parametrize("late", ["sound", "picture"])
def test_the_stitch_keeps_the_sound_where_the_picture_is_when_their_starts_differ(
        minio: Any, master: tuple[Path, TechnicalMetadata], tmp_path: Path, late: str) -> None:
    """The stitch decodes the sound with the picture hidden (media/trackpass.py), so it must place it itself: its
    loud passage lands as far from the picture's first frame as in the master. Sound starting before the picture
    was kept whole before, and ran that much late against the chunks, which start at the picture's first frame."""
    base, _ = master
    shifted = tmp_path / f"late-{late}.mov"
    tracks_moved(base, *(("0", "0.48") if late == "sound" else ("0.48", "0")), shifted)
    technical = technical_metadata(probe(shifted), sha256_file(shifted)[0])
    s3, source, root = _upload(minio, shifted)
    ladder = TranscodeLadderSpec.model_validate({**LADDER.model_dump(by_alias=True, exclude_none=True),
                                                 "renditions": [LADDER.model_dump(by_alias=True,
                                                                                  exclude_none=True)["renditions"][0]]})
    fit = fit_ladder(ladder, technical, f"{root}/renditions")
    plan = chunking(ladder, master_facts(technical))
    assert plan is not None and plan.count >= 2
    chunk_inputs = transcode_inputs(source, technical, ladder, fit.targets, "chunk", f"{root}/chunks", plan)
    for index in range(plan.count):
        _run(minio, tmp_path, chunk_inputs, index)
    stitched = {r["name"]: _download(s3, r["uri"], tmp_path / f"stitched-{r['name']}.mp4") for r in _run(
        minio, tmp_path, transcode_inputs(source, technical, ladder, fit.targets, "stitch", f"{root}/chunks",
                                          plan))["renditions"]}
    # The master's own sound against its own picture is what the stitch must keep. (A single pass keeps it by
    # repeating the first frame until the sound's start: ffmpeg's constant frame rate for MP4.)
    expected = loud_onset(shifted) - stream_start(shifted, "v:0")
    assert abs(expected - (4 + (0.48 if late == "sound" else -0.48))) < 0.05, expected  # the passage is 4 s in
    stitched_lead = loud_onset(stitched["stereo"]) - stream_start(stitched["h264-540p"], "v:0")
    assert abs(stitched_lead - expected) < 0.03, (stitched_lead, expected)
