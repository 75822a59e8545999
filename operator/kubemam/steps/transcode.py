"""The transcode steps' input and result: one model for a single pass, the chunks of an Indexed Job
and the stitch that joins them (`mode`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from kubemam.api.asset import RenditionStatus
from kubemam.steps.base import AttemptedInput, StepInput, StepResult

TranscodeMode = Literal["single", "chunk", "stitch"]


class SourceRef(StepInput):
    uri: str
    sha256: str | None = None
    etag: str | None = None  # the S3 version ingest hashed: chunks read ranges of it (If-Match), or fail


class MasterFacts(StepInput):
    frame_rate: str
    duration_seconds: float = Field(ge=0)
    frames: int = Field(ge=0)
    start_timecode: str | None = None
    color_primaries: str | None = None
    color_transfer: str | None = None
    color_space: str | None = None


class RenditionRequest(StepInput):
    name: str
    spec_hash: str
    output: str  # content-addressed: …/renditions/<name>/<specHash16>
    spec: dict[str, Any]  # the ladder's rung or audio track, validated by the worker's encoder models


class ChunkSet(StepInput):
    prefix: str
    frames: int = Field(gt=0, description="Frames per chunk, a whole number of GOPs")
    count: int = Field(gt=1)
    hash: str


class TranscodeInput(AttemptedInput):
    mode: TranscodeMode = "single"
    source: SourceRef
    master: MasterFacts
    segment_duration_seconds: int = Field(gt=0)
    video: list[RenditionRequest] = Field(default_factory=list)
    audio: list[RenditionRequest] = Field(default_factory=list)
    chunks: ChunkSet | None = None


class TranscodeResult(StepResult):
    renditions: list[RenditionStatus] = Field(default_factory=list)
