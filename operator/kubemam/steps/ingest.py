"""The ingest step's input and result, and the compact form of a result too big for a termination message."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from kubemam.api.asset import Marker, Previews, QCResult, Source, TechnicalMetadata, Timeline
from kubemam.api.ladder import Thumbnails
from kubemam.api.qc import QCPolicy
from kubemam.steps.base import MAX_MESSAGE, AttemptedInput, StepResult

SHORT_ISSUE = 120  # characters of a QC issue's message kept when the result must shrink
AUDIO_KEYS = ("codec", "channels", "channelLayout", "sampleRate", "language")
LOSSY_AUDIO_KEYS = ("channelLayout", "language")  # dropped last, and only when the tracks do not fit otherwise


class IngestInput(AttemptedInput):
    source: Source
    output: str  # <library>/assets/<ns>/<asset>/ingest; the worker commits under <output>/<inputhash16>/
    timeline: Timeline | None = None
    markers: list[Marker] | None = None
    qc: QCPolicy | None = None  # None: EBU R128 defaults
    thumbnails: Thumbnails | None = None


class AudioRun(StepResult):
    """`count` audio tracks alike, with consecutive stream indexes from `first` (a 32-track master of mono
    PCM is one run)."""

    first: int = Field(ge=0)
    count: int = Field(ge=1)
    codec: str
    channels: int = Field(ge=0)
    channel_layout: str | None = None
    sample_rate: int | None = Field(default=None, ge=0)
    language: str | None = None


class IngestResult(StepResult):
    technical: TechnicalMetadata | None = None
    qc: QCResult | None = None
    previews: Previews | None = None
    manifest: str | None = None
    # Set when the message is the compact form: the whole result is in the manifest there.
    result_uri: str | None = None
    audio_runs: list[AudioRun] | None = None  # technical.audio, run-length encoded
    audio_tracks: int | None = Field(default=None, ge=0)  # every audio track of the master

    def full_technical(self) -> TechnicalMetadata | None:
        """The technical metadata with its audio tracks, whichever form the message took."""
        if self.technical is None or self.audio_runs is None:
            return self.technical
        audio = [{**{k: v for k, v in run.to_wire().items() if k in AUDIO_KEYS}, "index": run.first + i}
                 for run in self.audio_runs for i in range(run.count)]
        return self.technical.model_copy(update={"audio": TechnicalMetadata.model_validate(
            {"audio": audio}).audio or None})


def _size(result: dict[str, Any]) -> int:
    return len(json.dumps(result, separators=(",", ":"), sort_keys=True).encode())


def audio_runs(tracks: list[dict[str, Any]], keys: tuple[str, ...] = AUDIO_KEYS) -> list[dict[str, Any]]:
    """Consecutive tracks that agree on `keys` as one run: lossless over those keys."""
    runs: list[dict[str, Any]] = []
    for track in tracks:
        facts = {k: track[k] for k in keys if track.get(k) is not None}
        last = runs[-1] if runs else None
        if last is not None and last["first"] + last["count"] == track["index"] \
                and {k: v for k, v in last.items() if k not in ("first", "count")} == facts:
            last["count"] += 1
        else:
            runs.append({"first": track["index"], "count": 1, **facts})
    return runs


def compact_result(result: dict[str, Any], limit: int = MAX_MESSAGE) -> dict[str, Any]:
    """The result as it fits a termination message. What the planner needs is kept, in this order of
    sacrifice: audio tracks as runs (lossless), QC issue messages shortened, QC issues dropped (issueCount
    and the qc.json report keep them all), track layout and language dropped, trailing runs dropped. The
    whole result is in the manifest at `resultUri` either way."""
    if _size(result) <= limit:
        return result
    small: dict[str, Any] = json.loads(json.dumps(result))
    small["resultUri"] = result.get("manifest")
    technical = small.get("technical") or {}
    tracks: list[dict[str, Any]] = technical.pop("audio", None) or []
    small["audioRuns"] = audio_runs(tracks)
    small["audioTracks"] = len(tracks)
    issues: list[dict[str, Any]] = (small.get("qc") or {}).get("issues") or []
    for issue in issues:
        if _size(small) <= limit:
            return small
        issue["message"] = str(issue.get("message", ""))[:SHORT_ISSUE]
    while issues and _size(small) > limit:
        issues.pop()  # errors come first: the last is the least telling
    if _size(small) > limit:
        small["audioRuns"] = audio_runs(tracks, tuple(k for k in AUDIO_KEYS if k not in LOSSY_AUDIO_KEYS))
    while small["audioRuns"] and _size(small) > limit:
        small["audioRuns"].pop()  # audioTracks still says how many there are
    if _size(small) > limit:  # pathological probe strings: the essentials alone
        qc = small.get("qc") or {}
        small = {k: v for k, v in small.items() if k in ("technical", "manifest", "resultUri", "audioTracks")}
        small["qc"] = {k: qc[k] for k in ("verdict", "issueCount", "reportUri") if k in qc}
        kept = ("sha256", "etag", "sizeBytes", "durationSeconds", "video")  # what transcode plans from
        small["technical"] = {k: v for k, v in technical.items() if k in kept}
    return small
