"""`kubemam worker transcode`: encode a ladder's missing renditions, each committed on its own.

Modes (input `mode`):
- single: one decode of the master feeds every requested video and audio rendition;
- chunk:  one index of an Indexed Job encodes frames [i·N, (i+1)·N) of every video rendition
          and commits them under `chunks.prefix/<i>/`;
- stitch: joins the chunks of each video rendition by stream copy (no re-encode), encodes
          the audio renditions, commits, then removes the chunks.

Every rendition lands under its own content-addressed prefix (`output` = …/<name>/<specHash16>)
with a manifest; a rendition whose manifest verifies is never encoded again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubemam import __version__
from kubemam.api.ladder import AudioRendition, VideoRendition
from kubemam.media.encode import (
    FRAGMENTED_MOVFLAGS,
    AudioOutput,
    EncodePlan,
    LoudnessMeasurement,
    SourceFacts,
    VideoOutput,
    Window,
    concat_list,
    encode_command,
    loudness_measure_command,
)
from kubemam.media.isobmff import hide_sound_tracks
from kubemam.media.probe import probe
from kubemam.media.progress import FfmpegProgress, progress_line, run_ffmpeg_with_progress
from kubemam.media.trackpass import alone, lead_options, track_starts
from kubemam.redact import redact_url
from kubemam.storage.manifest import Manifest
from kubemam.storage.ranged import RangedObject
from kubemam.storage.s3 import (
    commit,
    list_objects,
    make_client,
    read_committed,
    wait_until_reachable,
)
from kubemam.storage.transfer import SHA256_METADATA, b64_sha256, full_object_checksum, head
from kubemam.storage.uri import S3Uri
from kubemam.worker.contract import MAX_MESSAGE, StepError, step_input, work_dir, write_result
from kubemam.worker.source import TruncatedDownload, fetch_checked

log = logging.getLogger("kubemam.worker.transcode")
RANGED_READ_TIMEOUT_US = 120_000_000  # ffmpeg's rw_timeout: a read of the master that stalls this long fails

S3_RETRY_SECONDS = float(os.environ.get("KUBEMAM_S3_RETRY_SECONDS") or 60)


@dataclass(frozen=True)
class Job:
    """One requested rendition: what to encode and where it lands."""

    name: str
    kind: str  # video | audio
    spec_hash: str
    output: S3Uri
    video: VideoRendition | None = None
    audio: AudioRendition | None = None

    @property
    def file_name(self) -> str:
        return f"{self.name}.mp4"


def _parse_jobs(inputs: dict[str, Any]) -> list[Job]:
    jobs = []
    try:
        for item in inputs.get("video") or []:
            jobs.append(Job(item["name"], "video", item["specHash"], S3Uri.parse(item["output"]),
                            video=VideoRendition.model_validate(item["spec"])))
        for item in inputs.get("audio") or []:
            jobs.append(Job(item["name"], "audio", item["specHash"], S3Uri.parse(item["output"]),
                            audio=AudioRendition.model_validate(item["spec"])))
    except (KeyError, ValueError, ValidationError) as err:
        raise StepError(f"transcode input is invalid: {err}") from err
    if not jobs:
        raise StepError("transcode input names no rendition")
    return jobs


def _source_facts(master: dict[str, Any]) -> SourceFacts:
    return SourceFacts(frame_rate=master["frameRate"], start_timecode=master.get("startTimecode"),
                       color_primaries=master.get("colorPrimaries"), color_transfer=master.get("colorTransfer"),
                       color_space=master.get("colorSpace"))


def _done(s3: Any, job: Job) -> dict[str, Any] | None:
    """The recorded result of a rendition already committed and intact, else None."""
    manifest = read_committed(s3, job.output, job.spec_hash)
    return _reported(manifest, job) if manifest is not None else None


def _reported(manifest: Manifest, job: Job) -> dict[str, Any]:
    """A rendition as the step reports it: the measured facts plus what storage holds."""
    entry = manifest.entry(job.file_name)
    return {**manifest.result, "sha256": entry.sha256 if entry else None, "sizeBytes": entry.size if entry else None,
            "manifestUri": str(job.output.join("manifest.json"))}


def _measure_loudness(master: Path, rendition: AudioRendition, input_options: dict[str, str] | None = None
                      ) -> LoudnessMeasurement:
    result = subprocess.run(loudness_measure_command(master, rendition, input_options), capture_output=True,
                            text=True)
    text = result.stderr
    if result.returncode != 0 or "{" not in text:
        raise StepError(f"loudness measurement of the master failed: {text.strip()[-300:]}")
    figures = json.loads(text[text.rindex("{"):])
    try:
        return LoudnessMeasurement(float(figures["input_i"]), float(figures["input_tp"]), float(figures["input_lra"]),
                                   float(figures["input_thresh"]), float(figures["target_offset"]))
    except ValueError as err:  # "-inf": a silent track cannot be normalised linearly
        raise StepError(f"the master's audio cannot be loudness-normalised: {figures}") from err


def _run_ffmpeg(command: list[str], duration: float, start_percent: int, end_percent: int) -> None:
    """Run an encode, printing progress lines (percent within [start, end], fps, ETA) as it goes."""
    def report(update: FfmpegProgress) -> None:
        share = min(1.0, update.out_seconds / duration) if duration else 0.0
        eta = int((duration - update.out_seconds) / update.speed) if update.speed and duration else None
        percent = start_percent + int(share * (end_percent - start_percent))
        print(progress_line("transcode", percent, update.fps, eta), flush=True)

    code, stderr = run_ffmpeg_with_progress(command, report)
    if code != 0:
        raise RuntimeError(f"ffmpeg encode failed: {stderr.strip()[-800:]}")


def _describe(path: Path, kind: str) -> dict[str, Any]:
    """Measured facts of an encoded file: codec, size, duration, bitrate."""
    info = probe(path, require_video=kind == "video")
    stream = next(s for s in info["streams"] if s.get("codec_type") == kind)
    duration = float(stream.get("duration") or info["format"].get("duration") or 0)
    size = path.stat().st_size
    facts: dict[str, Any] = {"codec": stream.get("codec_name"), "durationSeconds": round(duration, 3),
                             "bitrate": int(size * 8 / duration) if duration else None}
    if kind == "video":
        facts |= {"width": stream.get("width"), "height": stream.get("height"), "profile": stream.get("profile")}
    return facts


def _commit_rendition(s3: Any, job: Job, local: Path, scratch: Path) -> dict[str, Any]:
    staging = scratch / "commit" / job.name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.move(str(local), staging / job.file_name)
    described = _describe(staging / job.file_name, job.kind)
    result = {"name": job.name, "kind": job.kind, "specHash": job.spec_hash,
              "uri": str(job.output.join(job.file_name)), **described}
    manifest = commit(s3, staging, job.output, step=f"transcode/{job.name}", input_hash=job.spec_hash,
                      worker_version=__version__, now=datetime.now(UTC), result=result, content_addressed=True)
    shutil.rmtree(staging, ignore_errors=True)
    return _reported(manifest, job)


def _audio_plan(master: Path, jobs: list[Job], out: Path, input_options: dict[str, str] | None = None
                ) -> list[AudioOutput]:
    """The audio renditions, each with its loudness measured over the sound it will encode (input_options: the
    same as the encode's)."""
    plan = []
    for job in jobs:
        assert job.audio is not None
        measured = _measure_loudness(master, job.audio, input_options) if job.audio.loudness else None
        plan.append(AudioOutput(job.audio, out / job.file_name, measured))
    return plan


def _fetch_master(s3: Any, source: dict[str, Any], scratch: Path, keep_sound: int = 1) -> Path:
    master = scratch / "master"
    fetched = fetch_checked(source["uri"], master, s3)
    if source.get("sha256") and fetched.sha256 != source["sha256"]:
        message = (f"the master at {redact_url(source['uri'])} changed since ingest (sha256 {fetched.sha256}, ingested "
                   f"{source['sha256']})")
        if not fetched.complete:  # no declared length: it may be short, not changed
            raise TruncatedDownload(f"{message}; the server declared no length, so the download may be short")
        raise StepError(f"{message}; re-ingest it")
    # Every encode here reads v:0 and a:0 (a chunk v:0 alone): the other sound tracks are hidden from
    # ffmpeg's demuxer, which would index every sample of each.
    if hidden := hide_sound_tracks(master, keep=keep_sound):
        log.info("%d sound track(s) hidden from the encode, %d kept", hidden, keep_sound)
    return master


def master_vouch(uri: str, found: dict[str, Any], sha256: str | None, etag: str | None) -> str | None:
    """What vouches that the S3 object `found` (its HEAD) is the master ingest hashed, so a chunk may read its
    range alone, pinned to that version by If-Match: "sha256" (the store's full-object SHA-256 equals the
    ingested one), "copy" (the x-amz-meta-sha256 of a verified copy does), "etag" (its ETag is the one of the
    GET ingest hashed). None: nothing does, and no ETag was recorded — fetch and hash it whole. A recorded ETag
    that differs, with no checksum to vouch, means the master was overwritten since ingest: StepError, never a
    whole fetch the chunk's scratch was not sized for."""
    if sha256 and full_object_checksum(found) == b64_sha256(sha256):
        return "sha256"
    if sha256 and (found.get("Metadata") or {}).get(SHA256_METADATA) == sha256:
        return "copy"
    if not etag:
        return None
    current = str(found.get("ETag") or "").strip('"')
    if current != etag:
        raise StepError(f"the master at {uri} changed since ingest: its ETag is {current or 'missing'}, ingest "
                        f"hashed the version with ETag {etag}, and the store holds no SHA-256 equal to the "
                        f"ingested {sha256}; re-ingest it")
    return "etag"


def _vouched_master(s3: Any, source: dict[str, Any]) -> tuple[S3Uri, str, int] | None:
    """(where, ETag, size) of an S3 master a chunk may read by ranges (master_vouch); None: fetch it whole."""
    if not str(source.get("uri", "")).startswith("s3://") or not (source.get("sha256") or source.get("etag")):
        return None
    where = S3Uri.parse(source["uri"])
    found = head(s3, where, checksum=True)
    if found is None:
        raise StepError(f"source {source['uri']} does not exist")
    by = master_vouch(source["uri"], found, source.get("sha256"), source.get("etag"))
    if by is None:
        return None
    log.info("reading ranges of %s: vouched for by its %s", source["uri"],
             {"sha256": "full-object SHA-256", "copy": "verified copy's SHA-256", "etag": "ETag at ingest"}[by])
    return where, str(found["ETag"]), int(found["ContentLength"])


def _size(result: dict[str, Any]) -> int:
    return len(json.dumps(result, separators=(",", ":"), sort_keys=True).encode())


def _result(renditions: list[dict[str, Any]]) -> dict[str, Any]:
    """The termination message, made to fit: checksums dropped first (they stay in the manifests), then the
    URIs the planner derives from each rendition's output prefix, then trailing renditions — the planner
    sees those as missing and its next transcode Job finds them committed and reports them."""
    result: dict[str, Any] = {"renditions": renditions}
    if _size(result) <= MAX_MESSAGE:
        return result
    trimmed = [{k: v for k, v in r.items() if k not in ("sha256", "profile")} for r in renditions]
    if _size({"renditions": trimmed}) <= MAX_MESSAGE:
        return {"renditions": trimmed}
    trimmed = [{k: v for k, v in r.items() if k not in ("uri", "manifestUri")} for r in trimmed]
    kept = list(trimmed)
    while kept and _size({"renditions": kept, "more": len(trimmed) - len(kept)}) > MAX_MESSAGE:
        kept.pop()
    return {"renditions": kept, **({"more": len(trimmed) - len(kept)} if len(kept) < len(trimmed) else {})}


def run_single(s3: Any, inputs: dict[str, Any], jobs: list[Job], scratch: Path) -> dict[str, Any]:
    done = {job.name: _done(s3, job) for job in jobs}
    todo = [job for job in jobs if done[job.name] is None]
    results = [r for r in done.values() if r is not None]
    if todo:
        master = _fetch_master(s3, inputs["source"], scratch)
        out = scratch / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        plan = EncodePlan(
            video=[VideoOutput(j.video, out / j.file_name) for j in todo if j.video is not None],
            audio=_audio_plan(master, [j for j in todo if j.kind == "audio"], out),
        )
        facts = _source_facts(inputs["master"])
        log.info("encoding %s in one decode", ", ".join(j.name for j in todo))
        _run_ffmpeg(encode_command(master, facts, plan, inputs["segmentDurationSeconds"]),
                    float(inputs["master"]["durationSeconds"]), 0, 95)
        # Renditions are independent objects: commit them side by side (boto3 clients are thread-safe).
        with ThreadPoolExecutor(max_workers=4) as pool:
            committed = list(pool.map(lambda job: _commit_rendition(s3, job, out / job.file_name, scratch), todo))
        results += committed
        log.info("committed %s", ", ".join(f"{job.name} under {job.output}" for job in todo))
        master.unlink(missing_ok=True)
    print(progress_line("transcode", 100), flush=True)
    return _result(results)


def _chunk_window(inputs: dict[str, Any], index: int) -> Window:
    chunks = inputs["chunks"]
    per_chunk, total = int(chunks["frames"]), int(inputs["master"]["frames"])
    first = index * per_chunk
    if first >= total:
        raise StepError(f"chunk {index} starts at frame {first}, after the master's {total} frames")
    return Window(first, min(per_chunk, total - first))


def run_chunk(s3: Any, inputs: dict[str, Any], jobs: list[Job], scratch: Path) -> dict[str, Any]:
    index = int(os.environ.get("JOB_COMPLETION_INDEX", "-1"))
    if index < 0:
        raise StepError("chunk mode runs as an Indexed Job: JOB_COMPLETION_INDEX is not set")
    prefix = S3Uri.parse(inputs["chunks"]["prefix"]).join(f"{index:05d}")
    chunk_hash = f"{inputs['chunks']['hash']}/{index}"
    if read_committed(s3, prefix, chunk_hash) is not None:
        log.info("chunk %d already encoded at %s", index, prefix)
        return {"chunk": index}
    window = _chunk_window(inputs, index)
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    video = [VideoOutput(j.video, out / j.file_name) for j in jobs if j.video is not None]
    rate = Fraction(inputs["master"]["frameRate"])
    seconds = float(window.frames / rate)
    log.info("encoding chunk %d: frames %d-%d", index, window.first_frame, window.first_frame + window.frames - 1)
    vouched = _vouched_master(s3, inputs["source"])
    if vouched is not None:
        where, etag, size = vouched
        # A chunk encodes only the picture: its demuxer need not index the programme's sound.
        ranged = RangedObject(s3, where, etag, size, hide_sound=True)
        with ranged as url:
            # Input seeking over ranged reads; -t stops the demuxer a frame after the chunk's last.
            options = {"rw_timeout": RANGED_READ_TIMEOUT_US, "t": f"{(window.frames + 1.5) / rate:.6f}"}
            command = encode_command(url, _source_facts(inputs["master"]), EncodePlan(video=video),
                                     inputs["segmentDurationSeconds"], window, input_options=options)
            try:
                _run_ffmpeg(command, seconds, 0, 95)
            except RuntimeError:
                if ranged.refused and ranged.refused.endswith(("PreconditionFailed", "412")):
                    # Overwritten under us (If-Match): the next attempt's HEAD names the change (master_vouch).
                    raise RuntimeError(f"the master changed while chunk {index} read it ({ranged.refused}); the "
                                       "next attempt checks it again") from None
                if ranged.refused:
                    raise RuntimeError(f"S3 refused a ranged read of the master for chunk {index} "
                                       f"({ranged.refused})") from None
                raise
            if ranged.refused:
                # ffmpeg took a read cut short for the end of its input: the chunk may lack frames. Nothing is
                # committed; the Job runs the chunk again.
                raise RuntimeError(f"a ranged read of the master for chunk {index} failed ({ranged.refused}); "
                                   "the chunk is encoded again")
        log.info("chunk %d read %d bytes of the %d-byte master (%.2fx its share)", index, ranged.bytes_read, size,
                 ranged.bytes_read / max(1.0, size * window.frames / int(inputs["master"]["frames"])))
    else:
        # All the sound hidden, as from ranged reads: the input's start (where -ss counts from) is the
        # picture's on both paths, so a chunk holds the same frames however it read the master.
        master = _fetch_master(s3, inputs["source"], scratch, keep_sound=0)
        command = encode_command(master, _source_facts(inputs["master"]), EncodePlan(video=video),
                                 inputs["segmentDurationSeconds"], window)
        _run_ffmpeg(command, seconds, 0, 95)
        master.unlink(missing_ok=True)
    commit(s3, out, prefix, step="transcode-chunk", input_hash=chunk_hash, worker_version=__version__,
           now=datetime.now(UTC), result={"chunk": index, "frames": window.frames})
    print(progress_line("transcode", 100), flush=True)
    return {"chunk": index}


def _stitch(s3: Any, inputs: dict[str, Any], job: Job, scratch: Path) -> Path:
    chunks = inputs["chunks"]
    parts = []
    folder = scratch / "chunks" / job.name
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(int(chunks["count"])):
        prefix = S3Uri.parse(chunks["prefix"]).join(f"{index:05d}")
        if read_committed(s3, prefix, f"{chunks['hash']}/{index}") is None:
            raise RuntimeError(f"chunk {index} is not committed at {prefix}; the chunk Job must finish first")
        part = folder / f"{index:05d}.mp4"
        s3.download_file(prefix.bucket, prefix.join(job.file_name).key, str(part))
        parts.append(part)
    listing = folder / "list.txt"
    listing.write_text(concat_list(parts))
    joined = scratch / "out" / job.file_name
    joined.parent.mkdir(parents=True, exist_ok=True)
    args: dict[str, Any] = {"c": "copy", "movflags": FRAGMENTED_MOVFLAGS}  # media/encode.py: memory bounded
    if inputs["master"].get("startTimecode"):
        args["timecode"] = inputs["master"]["startTimecode"]
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
               "-i", str(listing)] + [x for k, v in args.items() for x in (f"-{k}", str(v))] + [str(joined)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"stitching {job.name} failed: {result.stderr.strip()[-500:]}")
    shutil.rmtree(folder, ignore_errors=True)
    return joined


def run_stitch(s3: Any, inputs: dict[str, Any], jobs: list[Job], scratch: Path) -> dict[str, Any]:
    done = {job.name: _done(s3, job) for job in jobs}
    results = [r for r in done.values() if r is not None]
    todo = [job for job in jobs if done[job.name] is None]
    video = [j for j in todo if j.kind == "video"]
    audio = [j for j in todo if j.kind == "audio"]
    for job in video:
        joined = _stitch(s3, inputs, job, scratch)
        results.append(_commit_rendition(s3, job, joined, scratch))
        log.info("stitched and committed %s", job.name)
    if audio:
        master = _fetch_master(s3, inputs["source"], scratch)
        starts = track_starts(master)
        out = scratch / "out"
        out.mkdir(parents=True, exist_ok=True)
        # The sound passes need not index the picture (media/trackpass.py); the options keep the sound where the
        # chunks put the picture.
        # (A master whose tracks cannot be passed over alone — MXF, Matroska — is still placed from its earliest
        # track's start, not the picture's.)
        placed = lead_options(starts) if starts is not None else None
        with alone(master, "sound") if starts is not None else nullcontext(False):
            plan = EncodePlan(audio=_audio_plan(master, audio, out, placed))
            _run_ffmpeg(encode_command(master, _source_facts(inputs["master"]), plan,
                                       inputs["segmentDurationSeconds"], input_options=placed),
                        float(inputs["master"]["durationSeconds"]), 50, 95)
        for job in audio:
            results.append(_commit_rendition(s3, job, out / job.file_name, scratch))
    # Every rendition is committed: the chunks have served their purpose.
    chunk_root = S3Uri.parse(inputs["chunks"]["prefix"])
    for key, _ in list(list_objects(s3, chunk_root)):
        s3.delete_object(Bucket=chunk_root.bucket, Key=chunk_root.join(key).key)
    print(progress_line("transcode", 100), flush=True)
    return _result(results)


MODES = {"single": run_single, "chunk": run_chunk, "stitch": run_stitch}


def run() -> int:
    inputs = step_input()
    mode = inputs.get("mode", "single")
    if mode not in MODES:
        raise StepError(f"unknown transcode mode {mode!r} (known: {', '.join(MODES)})")
    for key in ("source", "master", "segmentDurationSeconds"):
        if key not in inputs:
            raise StepError(f"transcode input needs {key}")
    if mode != "single" and "chunks" not in inputs:
        raise StepError(f"{mode} mode needs the chunks field")
    jobs = _parse_jobs(inputs)
    s3 = make_client()
    buckets = {job.output.bucket for job in jobs}
    if str(inputs["source"].get("uri", "")).startswith("s3://"):
        buckets.add(S3Uri.parse(inputs["source"]["uri"]).bucket)
    for bucket in sorted(buckets):
        wait_until_reachable(s3, bucket, S3_RETRY_SECONDS)
    scratch = work_dir()
    write_result(MODES[mode](s3, inputs, jobs, scratch))
    return 0
