"""`kubemam worker ingest`: fetch the master, check its checksum, probe, QC, proxy, commit.

Input: source (uri, checksum), output, and optionally timeline, markers, qc (a QCPolicy) and
thumbnails (the ladder's settings). Outputs (probe.json, qc.json, proxy.mp4, poster.jpg,
thumbs/*.jpg, sprite-NNN.jpg, sprite.vtt) are committed under <output>/<hash16>/ with a
manifest; a re-run whose manifest verifies only repeats its result (the input's `attempt` marker is not
part of the hash, so a retry or a recover attempt finds what an earlier attempt committed). A result too big
for the termination message goes in compact form (steps/ingest.compact_result) beside its manifest's.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ffmpeg
from pydantic import ValidationError

from kubemam import __version__
from kubemam.api.asset import Checksum, Marker, QCResult, Timeline
from kubemam.api.ladder import Thumbnails
from kubemam.api.qc import QCPolicy
from kubemam.media.encode import FRAGMENTED_MOVFLAGS
from kubemam.media.isobmff import hide_sound_tracks
from kubemam.media.probe import ProbeError, probe, technical_metadata
from kubemam.media.progress import FfmpegProgress, progress_line
from kubemam.media.qc import QCError, measurement_findings, run_qc, timeline_findings, verdict
from kubemam.media.thumbnails import make_thumbnails, sheet_name
from kubemam.media.timecode import Timecode, TimecodeError
from kubemam.media.trackpass import Kind, Starts, alone, timeline_options, track_starts
from kubemam.redact import redact_url
from kubemam.steps.ingest import compact_result
from kubemam.storage.s3 import commit, make_client, read_committed, wait_until_reachable
from kubemam.storage.uri import S3Uri
from kubemam.worker.contract import StepError, digest, step_input, write_result
from kubemam.worker.source import fetch_master

log = logging.getLogger("kubemam.worker.ingest")

S3_RETRY_ENV = "KUBEMAM_S3_RETRY_SECONDS"
DEFAULT_S3_RETRY_SECONDS = 60.0
MAX_ISSUES_IN_RESULT = 8  # the full list is in qc.json; the termination message stays small


def _ffmpeg(stream: Any, what: str) -> None:
    command = stream.global_args("-v", "error").overwrite_output().compile()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg {what} failed: {result.stderr.strip()[-500:]}")


# The proxy is fragmented (a moof per keyframe, the index in an mfra box at the end): an unfragmented MP4's muxer
# holds every sample's entry in memory until it writes the moov, and +faststart then rewrites the whole file.
# Measured on a 320x180 master: 101 MB peak at 10 minutes, 124 MB at 60 (fragmented: 98 and 103). Browsers play
# and seek a fragmented MP4 as they do any other (tests/integration/test_preview_e2e.py seeks it in Chromium).
PROXY_MOVFLAGS = FRAGMENTED_MOVFLAGS


def make_proxy(source: Path, out_dir: Path, duration: float | None, has_audio: bool,
               starts: Starts | None = None) -> None:
    """A 360p H.264 browse proxy and a poster frame from 10% into the programme. With the tracks' starts, picture
    and sound are encoded in a pass each, alone (media/trackpass.py), and joined by stream copy with the
    timestamps those passes gave them: the same timeline as one pass over both."""
    proxy = out_dir / "proxy.mp4"
    picture_args = {"vcodec": "libx264", "preset": "veryfast", "crf": 28, "pix_fmt": "yuv420p"}
    sound_args = {"acodec": "aac", "audio_bitrate": "96k"}
    if starts is None or not has_audio:
        master = ffmpeg.input(str(source))
        streams = [master["v:0"].filter("scale", -2, 360)] + ([master["a:0"]] if has_audio else [])
        _ffmpeg(ffmpeg.output(*streams, str(proxy), **picture_args, **(sound_args if has_audio else {}),
                              movflags=PROXY_MOVFLAGS), "proxy")
    else:
        scratch = source.parent  # not out_dir: everything there is committed
        picture, sound = scratch / "proxy-picture.mp4", scratch / "proxy-sound.mp4"
        try:
            with alone(source, "picture"):
                master = ffmpeg.input(str(source), **timeline_options(starts, "picture"))
                _ffmpeg(master["v:0"].filter("scale", -2, 360).output(str(picture), **picture_args,
                                                                      movflags=PROXY_MOVFLAGS), "proxy picture")
            with alone(source, "sound"):
                master = ffmpeg.input(str(source), **timeline_options(starts, "sound"))
                # Cut by duration: frag_keyframe cuts only a picture track, so sound alone would be one fragment.
                _ffmpeg(master["a:0"].output(str(sound), **sound_args, movflags=PROXY_MOVFLAGS,
                                             frag_duration=2_000_000), "proxy sound")
            _ffmpeg(ffmpeg.output(ffmpeg.input(str(picture))["v:0"], ffmpeg.input(str(sound))["a:0"], str(proxy),
                                  c="copy", movflags=PROXY_MOVFLAGS, write_tmcd=0).global_args("-copyts"),
                    "proxy join")  # write_tmcd: one pass over both writes no timecode track either
        finally:
            picture.unlink(missing_ok=True)
            sound.unlink(missing_ok=True)
    with alone(source, "picture"):
        poster = ffmpeg.input(str(source), ss=f"{(duration or 0) * 0.1:.3f}")["v:0"].filter("scale", -2, 360)
        _ffmpeg(poster.output(str(out_dir / "poster.jpg"), vframes=1), "poster")


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The result as mirrored to the asset's status: QC issues capped, errors first, to keep it small."""
    small: dict[str, Any] = json.loads(json.dumps(result))
    issues = (small.get("qc") or {}).get("issues") or []
    if len(issues) > MAX_ISSUES_IN_RESULT:
        # Errors first, and one of every check before a second of any: six bad markers must not
        # hide the freeze. Sorting is stable, so issues keep the order they were found in.
        ranked = sorted(issues, key=lambda issue: issue.get("severity") != "error")
        firsts = [i for n, i in enumerate(ranked) if all(j["check"] != i["check"] for j in ranked[:n])]
        kept = (firsts + [i for i in ranked if i not in firsts])[:MAX_ISSUES_IN_RESULT]
        small["qc"]["issues"] = [i for i in ranked if i in kept]
    return small


def run() -> int:
    inputs = step_input()
    source = inputs.get("source") or {}
    if "uri" not in source or "output" not in inputs:
        raise StepError("ingest input needs source.uri and output")
    checksum = Checksum.model_validate(source["checksum"]) if source.get("checksum") else None
    try:
        timeline = Timeline.model_validate(inputs.get("timeline") or {})
        markers = [Marker.model_validate(m) for m in inputs.get("markers") or []]
        policy = QCPolicy.model_validate(inputs.get("qc") or {})
        thumbnail_settings = Thumbnails.model_validate(inputs.get("thumbnails") or {})
    except ValidationError as err:
        raise StepError(f"ingest input is invalid: {err}") from err
    input_digest = digest(inputs)
    prefix = S3Uri.parse(inputs["output"]).join(input_digest[:16])
    s3 = make_client()
    retry_seconds = float(os.environ.get(S3_RETRY_ENV) or DEFAULT_S3_RETRY_SECONDS)
    buckets = {prefix.bucket} | ({S3Uri.parse(source["uri"]).bucket} if source["uri"].startswith("s3://") else set())
    for bucket in sorted(buckets):
        wait_until_reachable(s3, bucket, retry_seconds)

    done = read_committed(s3, prefix, input_digest)
    if done is not None:
        log.info("already ingested: %s verifies; nothing to do", prefix.join("manifest.json"))
        write_result(summary(done.result), shrink=compact_result)
        return 0

    out_dir, master, fetched = fetch_master(source["uri"], s3, checksum)
    log.info("fetched %s: %d bytes, sha256 %s", redact_url(source["uri"]), fetched.size, fetched.sha256)

    try:
        info = probe(master)
    except ProbeError as err:
        raise StepError(f"{redact_url(source['uri'])} is not a usable master: {err}") from err
    # Every pass from here decodes v:0 and a:0 only: the other sound tracks are hidden from ffmpeg's demuxer,
    # which would index every sample of each (tens of MiB a track on a 2-hour master).
    if hidden := hide_sound_tracks(master, keep=1):
        log.info("%d sound track(s) beyond the first hidden from the QC and preview passes", hidden)
    # The ETag of the version hashed: a transcode chunk reads ranges of that version alone (If-Match).
    technical = technical_metadata(info, fetched.sha256).model_copy(update={"etag": fetched.etag})
    start = None
    start_text = technical.start_timecode or timeline.start_timecode
    try:
        start = Timecode.parse(start_text, timeline.frame_rate, timeline.drop_frame)
    except TimecodeError:
        start = None  # a master's timecode tag that does not fit the declared rate is reported, not fatal
    duration = technical.duration_seconds or 0.0

    def report(only: Kind | None, update: FfmpegProgress) -> None:
        # The QC decode is most of the work: it spans 0-80 % (the picture's pass 0-70, the sound's 70-80, when
        # they are decoded apart); proxy and previews the rest.
        low, high = {None: (0, 80), "picture": (0, 70), "sound": (70, 80)}[only]
        share = min(1.0, update.out_seconds / duration) if duration else 0.0
        eta = int((duration - update.out_seconds) / update.speed) if update.speed and duration else None
        print(progress_line("ingest", low + int(share * (high - low)), update.fps, eta), flush=True)

    # Where each track starts, so every pass below can decode its own track alone (media/trackpass.py).
    starts = track_starts(master) if technical.audio else None
    try:
        measurements = run_qc(master, bool(technical.audio), policy, report, starts)
    except QCError as err:
        raise StepError(f"{redact_url(source['uri'])} cannot be decoded: {err}") from err
    video = technical.video
    findings = measurement_findings(measurements, policy, technical.duration_seconds)
    findings += timeline_findings(markers, timeline, start, video.frame_rate if video else None,
                                  technical.duration_seconds)
    qc: QCResult = verdict(findings, measurements, policy, timeline.frame_rate, start, datetime.now(UTC))
    qc = qc.model_copy(update={"issue_count": len(findings), "report_uri": str(prefix.join("qc.json")),
                               "loudness_uri": str(prefix.join("loudness.json")) if measurements.loudness else None})
    log.info("QC verdict %s with %d issue(s)", qc.verdict, len(qc.issues or []))
    make_proxy(master, out_dir, technical.duration_seconds, bool(technical.audio), starts)
    print(progress_line("ingest", 90), flush=True)
    thumbnails = sheets = 0
    if video is not None and video.width and video.height:
        with alone(master, "picture"):  # tiles are taken from the first frame on, whatever is hidden
            thumbnails, sheets = make_thumbnails(master, out_dir, duration, video.width, video.height,
                                                 thumbnail_settings)
    (out_dir / "probe.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    (out_dir / "qc.json").write_text(json.dumps(qc.to_wire(), indent=2, sort_keys=True))
    if measurements.loudness:  # the series a preview plots against the target (a 2-hour master: 7,200 points)
        (out_dir / "loudness.json").write_text(json.dumps({
            "targetLufs": policy.target_lufs, "stepSeconds": 1.0,
            "points": [[p.seconds, p.momentary, p.short_term] for p in measurements.loudness]},
            separators=(",", ":")))

    previews: dict[str, Any] = {"proxyUri": str(prefix.join("proxy.mp4")), "posterUri": str(prefix.join("poster.jpg"))}
    if thumbnails:
        previews |= {"spriteUri": str(prefix.join(sheet_name(0))), "spriteIndexUri": str(prefix.join("sprite.vtt")),
                     "spriteSheets": sheets, "thumbnails": thumbnails}
    result = {"technical": technical.to_wire(), "qc": qc.to_wire(), "previews": previews,
              "manifest": str(prefix.join("manifest.json"))}
    manifest = commit(s3, out_dir, prefix, step="ingest", input_hash=input_digest, worker_version=__version__,
                      now=datetime.now(UTC), result=result)
    log.info("committed %d objects with %s", len(manifest.objects), prefix.join("manifest.json"))
    print(progress_line("ingest", 100), flush=True)
    write_result(summary(manifest.result), shrink=compact_result)
    master.unlink(missing_ok=True)
    return 0
