"""The package step's input and result."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubemam.api.asset import Caption, PackageStatus, PackageTrack
from kubemam.steps.base import AttemptedInput, StepInput, StepResult


class TrackInput(StepInput):
    name: str
    kind: Literal["video", "audio"]
    uri: str
    spec_hash: str
    language: str | None = None
    key_tier: str | None = None


class ThumbnailSheets(StepInput):
    sheets: list[str]
    columns: int = Field(gt=0)
    rows: int = Field(gt=0)
    interval_seconds: float = Field(gt=0)


class DrmInput(StepInput):
    systems: list[str]
    scheme: Literal["cenc", "cbcs"]
    tiers: list[str]
    provider: Literal["secret", "cpix"]
    url: str | None = None  # cpix
    kids: dict[str, str] | None = None  # cpix: derived KIDs per tier
    token_env: str | None = None  # cpix: the variable holding the bearer token (by secretKeyRef)


class PackageInput(AttemptedInput):
    content_id: str
    formats: list[Literal["hls", "dash"]]
    iframe_playlist: bool = True
    segment_seconds: int = Field(gt=0)
    tracks: list[TrackInput]
    captions: list[Caption] | None = None
    thumbnails: ThumbnailSheets | None = None
    drm: DrmInput | None = None
    output: str


class PackageResult(StepResult):
    packages: list[PackageStatus] = Field(default_factory=list)
    tracks: list[PackageTrack] = Field(default_factory=list)
