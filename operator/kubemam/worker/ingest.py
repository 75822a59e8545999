"""`kubemam worker ingest`: fetch the master, check its checksum, probe, QC, proxy, commit.

Outputs (probe.json, qc.json, proxy.mp4, poster.jpg, thumbs/*.jpg, sprite.jpg, sprite.vtt) are
committed under
<output>/<hash16>/ with a manifest; a re-run whose manifest verifies only repeats its result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubemam import __version__
from kubemam.api.asset import Checksum, QCResult, Timeline
from kubemam.media.probe import probe, technical_metadata
from kubemam.media.progress import FfmpegProgress, progress_line
from kubemam.media.qc import QCThresholds, run_qc, verdict
from kubemam.media.thumbnails import make_thumbnails
from kubemam.media.timecode import Timecode, TimecodeError
from kubemam.storage.s3 import commit, make_client, read_manifest, verify
from kubemam.storage.uri import S3Uri
from kubemam.worker.contract import StepError, digest, step_input, work_dir, write_result

log = logging.getLogger("kubemam.worker.ingest")

CHUNK = 8 * 1024 * 1024
MAX_ISSUES_IN_RESULT = 8  # the full list is in qc.json; the termination message stays small


def fetch(uri: str, target: Path, s3: Any) -> str:
    """Download the source to target; returns its sha256."""
    sha = hashlib.sha256()
    if uri.startswith("s3://"):
        source = S3Uri.parse(uri)
        try:
            body = s3.get_object(Bucket=source.bucket, Key=source.key)["Body"]
        except s3.exceptions.NoSuchKey as err:
            raise StepError(f"source {uri} does not exist") from err
        chunks = iter(lambda: body.read(CHUNK), b"")
    elif uri.startswith(("https://", "http://")):
        response = urllib.request.urlopen(uri, timeout=60)  # noqa: S310 - the scheme is checked above
        chunks = iter(lambda: response.read(CHUNK), b"")
    else:
        raise StepError(f"unsupported source scheme in {uri}")
    with open(target, "wb") as out:
        for chunk in chunks:
            sha.update(chunk)
            out.write(chunk)
    return sha.hexdigest()


def check_checksum(expected: Checksum | None, path: Path, sha256: str) -> None:
    if expected is None:
        return
    actual = sha256
    if expected.algorithm == "md5":
        actual = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    if actual != expected.value:
        raise StepError(f"source {expected.algorithm} is {actual}, the asset declares {expected.value}")


def make_proxy(source: Path, out_dir: Path, duration: float | None) -> None:
    """A 360p H.264 browse proxy and a poster frame from 10% into the programme."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-map", "0:v:0", "-map", "0:a:0?",
                    "-vf", "scale=-2:360", "-c:v", "libx264", "-preset", "veryfast", "-crf", "28",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-movflags", "+faststart",
                    str(out_dir / "proxy.mp4")], check=True, capture_output=True)
    at = f"{(duration or 0) * 0.1:.3f}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", at, "-i", str(source), "-frames:v", "1",
                    "-vf", "scale=-2:360", str(out_dir / "poster.jpg")], check=True, capture_output=True)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The result as mirrored to the asset's status: QC issues capped to keep it small."""
    small: dict[str, Any] = json.loads(json.dumps(result))
    issues = (small.get("qc") or {}).get("issues") or []
    if len(issues) > MAX_ISSUES_IN_RESULT:
        small["qc"]["issues"] = issues[:MAX_ISSUES_IN_RESULT]
    return small


def run() -> int:
    inputs = step_input()
    source = inputs.get("source") or {}
    if "uri" not in source or "output" not in inputs:
        raise StepError("ingest input needs source.uri and output")
    checksum = Checksum.model_validate(source["checksum"]) if source.get("checksum") else None
    timeline = Timeline.model_validate(inputs.get("timeline") or {})
    input_digest = digest(inputs)
    prefix = S3Uri.parse(inputs["output"]).join(input_digest[:16])
    s3 = make_client()

    done = read_manifest(s3, prefix)
    if done is not None and done.input_hash == input_digest and not verify(s3, prefix, done):
        log.info("already ingested: %s verifies; nothing to do", prefix.join("manifest.json"))
        write_result(summary(done.result))
        return 0

    scratch = work_dir()
    out_dir = scratch / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    master = scratch / "master"
    sha256 = fetch(source["uri"], master, s3)
    check_checksum(checksum, master, sha256)
    log.info("fetched %s: %d bytes, sha256 %s", source["uri"], master.stat().st_size, sha256)

    info = probe(master)
    technical = technical_metadata(info, sha256)
    start = None
    start_text = technical.start_timecode or timeline.start_timecode
    try:
        start = Timecode.parse(start_text, timeline.frame_rate, timeline.drop_frame)
    except TimecodeError:
        start = None  # a master's timecode tag that does not fit the declared rate is reported, not fatal
    duration = technical.duration_seconds or 0.0

    def report(update: FfmpegProgress) -> None:
        # The QC decode is most of the work: it spans 0-80 %; proxy and previews the rest.
        share = min(1.0, update.out_seconds / duration) if duration else 0.0
        eta = int((duration - update.out_seconds) / update.speed) if update.speed and duration else None
        print(progress_line("ingest", int(share * 80), update.fps, eta), flush=True)

    measurements = run_qc(master, bool(technical.audio), QCThresholds(), report)
    qc: QCResult = verdict(measurements, QCThresholds(), timeline.frame_rate, start, technical.duration_seconds,
                           datetime.now(UTC))
    log.info("QC verdict %s with %d issue(s)", qc.verdict, len(qc.issues or []))
    make_proxy(master, out_dir, technical.duration_seconds)
    print(progress_line("ingest", 90), flush=True)
    video = technical.video
    thumbnails = 0
    if video is not None and video.width and video.height:
        thumbnails = make_thumbnails(master, out_dir, technical.duration_seconds or 0.0, video.width, video.height)
    (out_dir / "probe.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    (out_dir / "qc.json").write_text(json.dumps(qc.to_wire(), indent=2, sort_keys=True))

    previews: dict[str, Any] = {"proxyUri": str(prefix.join("proxy.mp4")), "posterUri": str(prefix.join("poster.jpg"))}
    if thumbnails:
        previews |= {"spriteUri": str(prefix.join("sprite.jpg")), "spriteIndexUri": str(prefix.join("sprite.vtt")),
                     "thumbnails": thumbnails}
    result = {"technical": technical.to_wire(), "qc": qc.to_wire(), "previews": previews,
              "manifest": str(prefix.join("manifest.json"))}
    manifest = commit(s3, out_dir, prefix, step="ingest", input_hash=input_digest, worker_version=__version__,
                      now=datetime.now(UTC), result=result)
    log.info("committed %d objects with %s", len(manifest.objects), prefix.join("manifest.json"))
    print(progress_line("ingest", 100), flush=True)
    write_result(summary(manifest.result))
    master.unlink(missing_ok=True)
    return 0
