"""The preview page's model: what one MediaAsset's status, QC report, loudness series and sprite index say,
as plain data the page draws. Pure: documents in, a PageModel out; S3 objects stay s3:// URIs here and are
signed when the page is served (server.py), so a page reload always gets fresh URLs."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubemam.api.asset import MediaAssetSpec, MediaAssetStatus, QCIssue
from kubemam.media.timecode import Timecode, TimecodeError, seconds_to_timecode

SourceKind = Literal["progressive", "dash", "hls"]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=lambda s: re.sub(
        r"_([a-z])", lambda m: m.group(1).upper(), s))


class TimelineEntry(Model):
    """A QC finding or a marker, placed on the programme's timeline (seconds from the first frame)."""

    source: Literal["qc", "marker"]
    check: str  # the QC check (black, freeze, loudness, decode, …) or the marker's kind
    label: str
    severity: Literal["info", "warning", "error"] = "info"
    start: float | None = None  # None: about the whole programme (integrated loudness, frame rate)
    end: float | None = None
    start_timecode: str | None = None
    end_timecode: str | None = None
    message: str = ""


class Source(Model):
    """Something the player can play: the proxy or a rendition (an MP4 file), or a package (DASH, HLS)."""

    id: str
    label: str
    kind: SourceKind
    uri: str  # s3:// for a file; the package's manifest s3:// URI for a package
    media: Literal["video", "audio"] = "video"
    encrypted: bool = False
    width: int | None = None
    height: int | None = None
    bitrate: int | None = None


class LoudnessSeries(Model):
    target_lufs: float
    tolerance_lu: float | None = None
    step_seconds: float = 1.0
    points: list[tuple[float, float, float]] = Field(default_factory=list)  # seconds, momentary, short-term


class Thumbnail(Model):
    start: float
    end: float
    sheet: str  # s3:// URI of its sprite sheet
    x: int
    y: int
    width: int
    height: int


class PageModel(Model):
    namespace: str
    name: str
    title: str
    phase: str | None = None
    duration: float | None = None
    frame_rate: str = "25"
    start_timecode: str = "00:00:00:00"
    qc_verdict: str | None = None
    integrated_lufs: float | None = None
    true_peak_dbtp: float | None = None
    timeline: list[TimelineEntry] = Field(default_factory=list)
    sources: list[Source] = Field(default_factory=list)
    loudness: LoudnessSeries | None = None
    thumbnails: list[Thumbnail] = Field(default_factory=list)
    poster: str | None = None
    # ClearKey KID hex → key hex; only into the page served on 127.0.0.1, never logged (repr=False).
    clear_keys: dict[str, str] | None = Field(default=None, repr=False)
    notes: list[str] = Field(default_factory=list)  # what the page could not show, and why


class PreviewError(ValueError):
    """An asset the preview cannot show (not found, nothing ingested yet); the message says which."""


class Clock:
    """Timecodes ↔ seconds from the first frame, at the asset's rate, from its first frame's timecode."""

    def __init__(self, frame_rate: str, start: str, drop_frame: bool) -> None:
        self.rate, self.drop = frame_rate, drop_frame
        try:
            self.start: Timecode | None = Timecode.parse(start, frame_rate, drop_frame)
        except TimecodeError:
            self.start = None

    def seconds(self, timecode: str | None) -> float | None:
        if timecode is None:
            return None
        try:
            frame = Timecode.parse(timecode, self.rate, self.drop).to_frames(self.rate)
        except TimecodeError:
            return None
        first = self.start.to_frames(self.rate) if self.start else 0
        return float(Fraction(frame - first) / Fraction(self.rate))

    def timecode(self, seconds: float) -> str:
        return seconds_to_timecode(seconds, self.rate, self.start)


def _issues(status: MediaAssetStatus, report: dict[str, Any] | None, notes: list[str]) -> list[QCIssue]:
    """Every issue of the full QC report (qc.json); the capped list in status when the report is unreadable."""
    if report is not None:
        try:
            return [QCIssue.model_validate(i) for i in report.get("issues") or []]
        except ValidationError:
            notes.append("the QC report is not one kubemam wrote; showing the issues in status only")
    qc = status.qc
    if qc and qc.issue_count and qc.issue_count > len(qc.issues or []):
        notes.append(f"showing {len(qc.issues or [])} of {qc.issue_count} QC issues (the report was not readable)")
    return list(qc.issues or []) if qc else []


def timeline_entries(spec: MediaAssetSpec, status: MediaAssetStatus, report: dict[str, Any] | None,
                     series: LoudnessSeries | None, clock: Clock, notes: list[str]) -> list[TimelineEntry]:
    entries = [TimelineEntry(source="qc", check=i.check, label=i.check, severity=i.severity,
                             start=clock.seconds(i.start), end=clock.seconds(i.end), start_timecode=i.start,
                             end_timecode=i.end, message=i.message) for i in _issues(status, report, notes)]
    if series and series.points:
        # Integrated loudness has no timecode; its loudest short-term moment is where to listen first.
        at, _, loudest = max(series.points, key=lambda p: p[2])
        entries.append(TimelineEntry(source="qc", check="loudness", label="loudest", start=at,
                                     start_timecode=clock.timecode(at),
                                     message=f"loudest short-term loudness {loudest:.1f} LUFS "
                                             f"(target {series.target_lufs:g} LUFS)"))
    for marker in spec.markers or []:
        entries.append(TimelineEntry(source="marker", check=marker.kind, label=marker.name,
                                     start=clock.seconds(marker.start), end=clock.seconds(marker.end),
                                     start_timecode=marker.start, end_timecode=marker.end,
                                     message=marker.note or ""))
    return sorted(entries, key=lambda e: (e.start is not None, e.start or 0.0, e.source))


def player_sources(status: MediaAssetStatus) -> list[Source]:
    sources = []
    previews = status.previews
    if previews and previews.proxy_uri:
        sources.append(Source(id="proxy", label="proxy (360p)", kind="progressive", uri=previews.proxy_uri))
    for r in status.renditions or []:
        size = f" {r.width}x{r.height}" if r.width and r.height else ""
        rate = f" {r.bitrate // 1000} kb/s" if r.bitrate else ""
        sources.append(Source(id=f"rendition-{r.name}", label=f"{r.name}{size}{rate}", kind="progressive",
                              uri=r.uri, media=r.kind, width=r.width, height=r.height, bitrate=r.bitrate))
    for p in status.packages or []:
        drm = f" ({p.scheme or 'cenc'}: {', '.join(p.drm_systems or [])})" if p.key_ids else ""
        sources.append(Source(id=f"package-{p.format}", label=f"{p.format.upper()} package{drm}", kind=p.format,
                              uri=p.manifest_uri, encrypted=bool(p.key_ids)))
    return sources


def loudness_series(document: dict[str, Any] | None, target: float, tolerance: float | None,
                    notes: list[str]) -> LoudnessSeries | None:
    """loudness.json as ingest writes it: {targetLufs, stepSeconds, points: [[s, momentary, shortTerm], …]}."""
    if document is None:
        return None
    try:
        points = [(float(s), float(m), float(st)) for s, m, st in document.get("points") or []]
        return LoudnessSeries(target_lufs=float(document.get("targetLufs", target)), tolerance_lu=tolerance,
                              step_seconds=float(document.get("stepSeconds", 1.0)), points=points)
    except (TypeError, ValueError):
        notes.append("the loudness series is not one kubemam wrote; no plot")
        return None


_CUE = re.compile(r"^(\d+):(\d{2}):(\d{2})\.(\d{3}) --> (\d+):(\d{2}):(\d{2})\.(\d{3})\s*\n([^\s#]+)#xywh=(\d+),(\d+),"
                  r"(\d+),(\d+)\s*$", re.M)


def sprite_thumbnails(vtt: str | None, index_uri: str | None) -> list[Thumbnail]:
    """The cues of sprite.vtt (media/thumbnails.py), each a crop of a sheet beside the index."""
    if not vtt or not index_uri:
        return []
    base = index_uri.rsplit("/", 1)[0]
    thumbs = []
    for m in _CUE.finditer(vtt):
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(g) for g in m.groups()[:8])
        sheet = m.group(9)
        if "/" in sheet or sheet.startswith("."):  # sheets sit beside the index; anything else is not ours
            continue
        thumbs.append(Thumbnail(start=h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, end=h2 * 3600 + m2 * 60 + s2 + ms2 / 1000,
                                sheet=f"{base}/{sheet}", x=int(m.group(10)), y=int(m.group(11)),
                                width=int(m.group(12)), height=int(m.group(13))))
    return thumbs


def build_page(body: dict[str, Any], *, target_lufs: float = -23.0, tolerance_lu: float | None = None,
               qc_report: dict[str, Any] | None = None, loudness: dict[str, Any] | None = None,
               sprite_vtt: str | None = None, clear_keys: dict[str, str] | None = None,
               notes: list[str] | None = None) -> PageModel:
    """The page for one asset (its whole API object) and what was read beside it."""
    meta = body.get("metadata") or {}
    try:
        spec = MediaAssetSpec.model_validate(body.get("spec") or {})
        status = MediaAssetStatus.model_validate(body.get("status") or {})
    except ValidationError as err:
        raise PreviewError(f"mediaasset {meta.get('name')!r} is not one this kubemam understands: {err}") from err
    notes = list(notes or [])
    timeline = spec.timeline
    technical = status.technical
    rate = timeline.frame_rate if timeline else "25"
    start = (technical.start_timecode if technical else None) or (timeline.start_timecode if timeline else None)
    clock = Clock(rate, start or "00:00:00:00", timeline.drop_frame if timeline else False)
    series = loudness_series(loudness, target_lufs, tolerance_lu, notes)
    sources = player_sources(status)
    if not sources:
        notes.append("nothing to play yet: the asset has no proxy, rendition or package in its status")
    qc = status.qc
    previews = status.previews
    return PageModel(
        namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""), title=spec.metadata.title,
        phase=status.phase, duration=technical.duration_seconds if technical else None, frame_rate=rate,
        start_timecode=clock.timecode(0.0), qc_verdict=qc.verdict if qc else None,
        integrated_lufs=qc.loudness.integrated_lufs if qc and qc.loudness else None,
        true_peak_dbtp=qc.loudness.true_peak_dbtp if qc and qc.loudness else None,
        timeline=timeline_entries(spec, status, qc_report, series, clock, notes), sources=sources, loudness=series,
        thumbnails=sprite_thumbnails(sprite_vtt, previews.sprite_index_uri if previews else None),
        poster=previews.poster_uri if previews else None, clear_keys=clear_keys, notes=notes)
