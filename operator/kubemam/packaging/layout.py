"""What a package holds, as plain data: the tracks, their segments and their keys (pure).

One CMAF segment set serves both the DASH MPD and the HLS playlists; the layout under the
package prefix is fixed so both manifests (and the tests) can name every file:

    manifest.mpd, master.m3u8
    <track>/init.mp4, <track>/seg-00001.m4s …, <track>/media.m3u8, <track>/iframes.m3u8
    subs-<lang>-<kind>/subtitles.vtt, subs-<lang>-<kind>/media.m3u8
    thumbnails/sprite-001.jpg …
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from fractions import Fraction

INIT_NAME = "init.mp4"
SEGMENT_TEMPLATE = "seg-{number:05d}.m4s"
DASH_SEGMENT_TEMPLATE = "seg-$Number%05d$.m4s"
MPD_NAME = "manifest.mpd"
MASTER_NAME = "master.m3u8"
MEDIA_PLAYLIST = "media.m3u8"
IFRAME_PLAYLIST = "iframes.m3u8"


@dataclass(frozen=True)
class SegmentInfo:
    decode_time: int  # in the track's timescale
    duration: int
    size: int  # bytes
    first_sample_end: int  # bytes through the segment's first (key) frame

    def uri(self, number: int) -> str:
        return SEGMENT_TEMPLATE.format(number=number)


@dataclass(frozen=True)
class MediaTrack:
    name: str  # the rendition; also the folder
    kind: str  # video | audio
    codecs: str
    timescale: int
    segments: list[SegmentInfo]
    key_tier: str | None = None
    key_id: uuid.UUID | None = None
    width: int | None = None
    height: int | None = None
    frame_rate: str | None = None  # "25/1"
    language: str | None = None
    channels: int | None = None
    sample_rate: int | None = None

    @property
    def duration_seconds(self) -> float:
        return sum(s.duration for s in self.segments) / self.timescale

    def segment_seconds(self, segment: SegmentInfo) -> float:
        return segment.duration / self.timescale

    @property
    def average_bandwidth(self) -> int:
        seconds = self.duration_seconds
        return int(sum(s.size for s in self.segments) * 8 / seconds) if seconds else 0

    @property
    def peak_bandwidth(self) -> int:
        # HLS BANDWIDTH / DASH @bandwidth: the largest segment bitrate, so a player never underestimates.
        rates = [s.size * 8 * self.timescale / s.duration for s in self.segments if s.duration]
        return int(max(rates)) if rates else 0

    @property
    def iframe_bandwidth(self) -> int:
        rates = [s.first_sample_end * 8 * self.timescale / s.duration for s in self.segments if s.duration]
        return int(max(rates)) if rates else 0

    @property
    def frame_rate_decimal(self) -> str | None:
        return f"{float(Fraction(self.frame_rate)):.3f}" if self.frame_rate else None


@dataclass(frozen=True)
class SubtitleTrack:
    language: str
    kind: str  # subtitles | captions | forced
    label: str | None
    duration_seconds: float

    @property
    def folder(self) -> str:
        return f"subs-{self.language}-{self.kind}"


@dataclass(frozen=True)
class ThumbnailTrack:
    sheets: int
    columns: int
    rows: int
    interval_seconds: int
    sheet_width: int
    sheet_height: int

    @property
    def sheet_seconds(self) -> int:
        return self.interval_seconds * self.columns * self.rows


@dataclass(frozen=True)
class Protection:
    """How the media tracks are encrypted and signalled. Key IDs only: keys never reach a manifest."""

    systems: list[str]
    scheme: str  # cenc | cbcs
    # tier → system → pssh box (as the key provider or our builder made it)
    pssh: dict[str, dict[str, bytes]] = field(default_factory=dict)
    # tier → PlayReady Header Object, for <mspr:pro> and HLS
    playready_pro: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Package:
    tracks: list[MediaTrack]
    segment_seconds: int
    subtitles: list[SubtitleTrack] = field(default_factory=list)
    thumbnails: ThumbnailTrack | None = None
    protection: Protection | None = None
    iframe_playlists: bool = True

    @property
    def video(self) -> list[MediaTrack]:
        return [t for t in self.tracks if t.kind == "video"]

    @property
    def audio(self) -> list[MediaTrack]:
        return [t for t in self.tracks if t.kind == "audio"]

    @property
    def duration_seconds(self) -> float:
        return max((t.duration_seconds for t in self.tracks), default=0.0)
