"""The transcode planner (pure): from the ingested master and the ladder, the renditions to make.

Each rendition is content-addressed by a spec hash over the source checksum, the rendition's
own spec, the GOP-shaping ladder settings and the worker version. A rendition whose hash is
already in status is done; only the missing ones are encoded, all in one Job (one decode), or
chunked across an Indexed Job and stitched when the ladder asks and the master is long enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from kubemam import __version__
from kubemam.api.asset import RenditionStatus, TechnicalMetadata
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.config import OperatorConfig
from kubemam.media.gop import gop_frames
from kubemam.plan.conditions import Verdict
from kubemam.plan.facts import AssetFacts
from kubemam.plan.hashing import input_hash
from kubemam.plan.jobs import StepJobRequest
from kubemam.plan.stepjob import Retries, StepOutcome, StepRun
from kubemam.steps.registry import TRANSCODE, TRANSCODE_CHUNKS


@dataclass(frozen=True)
class RenditionTarget:
    name: str
    kind: str  # video | audio
    spec_hash: str
    output: str
    spec: dict[str, Any]

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "specHash": self.spec_hash, "output": self.output, "spec": self.spec}


@dataclass(frozen=True)
class LadderFit:
    targets: list[RenditionTarget]
    skipped: list[str]  # rungs above the source that the ladder does not allow to upscale


def _frame_rate(technical: TechnicalMetadata) -> str:
    rate = technical.video.frame_rate if technical.video else None
    try:
        if rate and Fraction(rate) > 0:
            return rate
    except (ValueError, ZeroDivisionError):
        pass
    return "25/1"


def fit_ladder(ladder: TranscodeLadderSpec, technical: TechnicalMetadata, output_root: str) -> LadderFit:
    """The renditions this master gets from this ladder, each with its spec hash and output prefix."""
    source = technical.sha256 or ""
    targets, skipped = [], []
    video = technical.video
    for rung in ladder.renditions:
        if video and not ladder.allow_upscale and (rung.width > video.width or rung.height > video.height):
            skipped.append(f"{rung.name} ({rung.width}x{rung.height} > source {video.width}x{video.height})")
            continue
        spec = rung.to_wire()
        digest = input_hash({"kind": "video", "source": source, "rendition": spec,
                             "segmentDurationSeconds": ladder.segment_duration_seconds, "worker": __version__})
        targets.append(RenditionTarget(rung.name, "video", digest, f"{output_root}/{rung.name}/{digest[:16]}", spec))
    if technical.audio:
        for track in ladder.audio or []:
            spec = track.to_wire()
            digest = input_hash({"kind": "audio", "source": source, "rendition": spec, "worker": __version__})
            targets.append(RenditionTarget(track.name, "audio", digest, f"{output_root}/{track.name}/{digest[:16]}",
                                           spec))
    return LadderFit(targets, skipped)


def completed(targets: list[RenditionTarget], status: list[RenditionStatus] | None,
              results: list[dict[str, Any]]) -> dict[str, RenditionStatus]:
    """Targets already encoded: from status, or from the result of a transcode Job that just succeeded. A
    compact result (too big for the termination message) leaves out the URIs, which follow from the target's
    output prefix."""
    wanted = {(t.name, t.spec_hash): t for t in targets}
    found: dict[str, RenditionStatus] = {}
    for record in status or []:
        if (record.name, record.spec_hash) in wanted:
            found[record.name] = record
    for result in results:
        for item in result.get("renditions") or []:
            target = wanted.get((item.get("name"), item.get("specHash")))
            if target is not None and item["name"] not in found:
                full = {"uri": f"{target.output}/{target.name}.mp4", "manifestUri": f"{target.output}/manifest.json",
                        **item}
                fields = {k: full.get(k) for k in ("name", "kind", "uri", "manifestUri", "sha256", "sizeBytes",
                                                     "specHash", "bitrate", "codec", "width", "height",
                                                     "durationSeconds")}
                found[item["name"]] = RenditionStatus.model_validate({k: v for k, v in fields.items() if v is not None})
    return found


def master_facts(technical: TechnicalMetadata) -> dict[str, Any]:
    rate = _frame_rate(technical)
    duration = technical.duration_seconds or 0.0
    facts: dict[str, Any] = {"frameRate": rate, "durationSeconds": duration,
                             "frames": int(round(duration * Fraction(rate)))}
    video = technical.video
    for key, value in (("startTimecode", technical.start_timecode),
                       ("colorPrimaries", video.color_primaries if video else None),
                       ("colorTransfer", video.color_transfer if video else None),
                       ("colorSpace", video.color_space if video else None)):
        if value:
            facts[key] = value
    return facts


@dataclass(frozen=True)
class Chunking:
    frames: int  # per chunk, a whole number of GOPs
    count: int


def chunking(ladder: TranscodeLadderSpec, master: dict[str, Any]) -> Chunking | None:
    """Chunks when the ladder asks and the master spans more than one; None for a single pass."""
    if ladder.chunking is None:
        return None
    segment = ladder.segment_duration_seconds
    gop = gop_frames(master["frameRate"], segment)
    per_chunk = gop * max(1, ladder.chunking.chunk_seconds // segment)
    count = math.ceil(master["frames"] / per_chunk) if master["frames"] else 0
    return Chunking(per_chunk, count) if count > 1 else None


def transcode_inputs(source_uri: str, technical: TechnicalMetadata, ladder: TranscodeLadderSpec,
                     missing: list[RenditionTarget], mode: str, chunks_root: str | None = None,
                     plan: Chunking | None = None) -> dict[str, Any]:
    master = master_facts(technical)
    source: dict[str, Any] = {"uri": source_uri, "sha256": technical.sha256}
    if technical.etag:  # only when recorded: the inputs (and the Job names) of older assets stay as they were
        source["etag"] = technical.etag
    inputs: dict[str, Any] = {
        "mode": mode,
        "source": source,
        "master": master,
        "segmentDurationSeconds": ladder.segment_duration_seconds,
        "video": [t.wire() for t in missing if t.kind == "video"],
        "audio": [t.wire() for t in missing if t.kind == "audio"],
    }
    if plan is not None and chunks_root is not None:
        # The chunk set is named by what it encodes, so an edited ladder never stitches stale chunks.
        digest = input_hash({"video": [t.spec_hash for t in missing if t.kind == "video"], "frames": plan.frames})
        inputs["chunks"] = {"prefix": f"{chunks_root}/{digest[:16]}", "frames": plan.frames, "count": plan.count,
                            "hash": digest}
    return inputs


RANGE_OVERLAP = 1.25  # a chunk's outputs beside its share of the master: GOP overlap at both ends, headroom


def chunk_scratch_bytes(source_uri: str, technical: TechnicalMetadata, count: int) -> int | None:
    """The bytes a chunk pod brings to disk. A chunk reads ranges of an S3 master whose ETag ingest recorded
    (the worker reads that version or fails, never fetches it whole): its share, for its outputs. Any other
    master may be fetched whole by every chunk pod."""
    size = technical.size_bytes
    if size is None or not (source_uri.startswith("s3://") and technical.etag):
        return size
    return math.ceil(size / max(1, count) * RANGE_OVERLAP)


@dataclass
class TranscodeOutcome(StepOutcome):
    renditions: list[RenditionStatus] | None = None


def _ladder_request(facts: AssetFacts, ladder: TranscodeLadderSpec, step: str, inputs: dict[str, Any],
                    completions: int | None = None, parallelism: int | None = None,
                    scratch_bytes: int | None = None) -> StepJobRequest:
    return StepJobRequest(owner=facts.owner, step=step, inputs=inputs,
                          resources=ladder.resources.to_wire() if ladder.resources else None,
                          priority_class_name=ladder.priority_class_name, queue_name=ladder.queue_name,
                          completions=completions, parallelism=parallelism,
                          scratch_bytes=scratch_bytes)


def _reported_nothing(_: object) -> bool:
    """A succeeded transcode of the missing set whose result named any of them would have made them done:
    if it is still the current attempt, its result was lost, and a recover attempt reports the manifests."""
    return False


def plan_transcode(facts: AssetFacts, ladder: TranscodeLadderSpec, technical: TechnicalMetadata,
                   config: OperatorConfig, retries: Retries) -> TranscodeOutcome:
    """The renditions the ladder asks of this master: done ones kept, missing ones encoded by one Job
    (one decode), or by an Indexed Job of chunks and a stitch Job when the ladder chunks."""
    outcome = TranscodeOutcome()
    root = facts.root(config)
    fit = fit_ladder(ladder, technical, f"{root}/renditions")
    if fit.skipped:
        outcome.verdicts.append(Verdict("LadderFit", "False", "UpscaleRefused",
                                        "rungs above the source are skipped (the ladder does not allowUpscale): "
                                        + ", ".join(fit.skipped)))
    else:
        outcome.verdicts.append(Verdict("LadderFit", "True", "AllRungsFit", "every rung fits the source"))
    results = [j.result for j in facts.jobs if j.step == TRANSCODE and j.state == "Succeeded" and j.result]
    done = completed(fit.targets, facts.status.renditions, results)
    outcome.renditions = [done[t.name] for t in fit.targets if t.name in done]
    missing = [t for t in fit.targets if t.name not in done]
    if not missing:
        outcome.verdicts.append(Verdict("Transcoded", "True", "RenditionsReady", f"{len(done)} rendition(s) encoded"))
        return outcome

    chunks = chunking(ladder, master_facts(technical)) if any(t.kind == "video" for t in missing) else None
    source = facts.spec.source.uri
    runs: list[StepRun] = []
    if chunks is None:
        request = _ladder_request(facts, ladder, TRANSCODE, transcode_inputs(source, technical, ladder, missing,
                                                                              "single"),
                                  scratch_bytes=technical.size_bytes)
        runs.append(outcome.add(facts.run(request, config, retries, has_result=_reported_nothing)))
    else:
        assert ladder.chunking is not None
        video = [t for t in missing if t.kind == "video"]
        chunk_inputs = transcode_inputs(source, technical, ladder, video, "chunk", f"{root}/chunks", chunks)
        chunk_request = _ladder_request(facts, ladder, TRANSCODE_CHUNKS, chunk_inputs, completions=chunks.count,
                                        parallelism=min(ladder.chunking.max_parallel, chunks.count),
                                        scratch_bytes=chunk_scratch_bytes(source, technical, chunks.count))
        # Chunks report nothing: each index's commit is checked by the stitch.
        runs.append(outcome.add(facts.run(chunk_request, config, retries)))
        if runs[0].state == "Succeeded":
            stitch_inputs = transcode_inputs(source, technical, ladder, missing, "stitch", f"{root}/chunks", chunks)
            stitch = _ladder_request(facts, ladder, TRANSCODE, stitch_inputs, scratch_bytes=technical.size_bytes)
            runs.append(outcome.add(facts.run(stitch, config, retries, has_result=_reported_nothing)))

    names = ", ".join(t.name for t in missing)
    failed = next((r for r in runs if r.state == "Failed"), None)
    retrying = next((r for r in runs if r.state == "Retrying"), None)
    outcome.phase = "Transcoding"
    if failed is not None:
        outcome.verdicts.append(Verdict("Transcoded", "False", "TranscodeFailed", failed.failure()))
        outcome.phase = "Failed"
    elif retrying is not None:
        outcome.verdicts.append(retrying.retry_verdict("Transcoded"))
    else:
        current = next((r for r in runs if r.state == "Running"), runs[-1])
        outcome.running = current.observed if current.state == "Running" else None
        reason = "TranscodeRunning" if outcome.running else "TranscodePending"
        outcome.verdicts.append(Verdict("Transcoded", "Unknown", reason, f"encoding {names}{current.note()}"))
    return outcome
