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
from kubemam.media.encode import gop_frames
from kubemam.plan.hashing import input_hash

TRANSCODE = "transcode"
TRANSCODE_CHUNKS = "transcode-chunks"


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
    """Targets already encoded: from status, or from the result of a transcode Job that just succeeded."""
    wanted = {(t.name, t.spec_hash) for t in targets}
    found: dict[str, RenditionStatus] = {}
    for record in status or []:
        if (record.name, record.spec_hash) in wanted:
            found[record.name] = record
    for result in results:
        for item in result.get("renditions") or []:
            if (item.get("name"), item.get("specHash")) in wanted and item["name"] not in found:
                fields = {k: item.get(k) for k in ("name", "kind", "uri", "manifestUri", "sha256", "sizeBytes",
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
    inputs: dict[str, Any] = {
        "mode": mode,
        "source": {"uri": source_uri, "sha256": technical.sha256},
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
