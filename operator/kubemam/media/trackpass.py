"""Passes over a master that decode only its picture or only its sound (the ingest's QC, proxy and previews, the
stitch's audio).

ffmpeg's mov demuxer indexes every sample of every visible track when it opens a file (media/isobmff.py): a
pass over a 2-hour programme that needs one track also held the other's index, ~180,000 entries for 25 fps
picture and ~340,000 for AAC sound. Measured, the stitch's audio encode of the bench master: 59.6 → 77.2 MB
from 10 to 120 minutes with the picture visible, 59.7 → 70.6 MB with it hidden. So such passes see their track
alone: the others are renamed `free` in the step's scratch copy for the pass and named `trak` again after it.

Hiding a track moves where ffmpeg starts counting: an input's timestamps begin at the earliest start of its
visible tracks (a timecode track's included). So the starts are read first, each with the other track hidden
(a probe of both would index both), and a pass is given the input option that keeps its timestamps where one
pass over both would have put them (timeline_options), or, for the stitch's audio, where the chunks put the
picture (lead_options).
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kubemam.media.isobmff import HIDDEN_NAME, TRACK_NAME, file_reader, rename, sound_alone, tracks_to_hide
from kubemam.media.probe import as_float

log = logging.getLogger("kubemam.media.trackpass")

PROBE_TIMEOUT_SECONDS = 300  # an ffprobe of a local file; minutes would mean a stuck process

Kind = Literal["picture", "sound"]


class TrackPassError(RuntimeError):
    """ffprobe did not answer in time about the tracks' starts: a RuntimeError, so the step's Job tries again."""


TEXT_LEAD_LIMIT = 1.0  # libavformat (update_stream_timings): a data or subtitle start counts if < 1 s earlier


def origin(media: float | None, text: float | None) -> float | None:
    """Where ffmpeg counts an input from, given the earliest picture or sound start and the earliest data or
    subtitle start (a timecode track is data): the media's, unless the text starts less than a second before
    it (or there is no media)."""
    if text is not None and (media is None or media - TEXT_LEAD_LIMIT < text < media):
        return text
    return media


@dataclass(frozen=True)
class Starts:
    """Where tracks start, in seconds on the master's own timeline: the picture (v:0), the sound (a:0), and what a
    picture pass sees besides the sound hidden from it: the earliest picture start (picture_view) and the earliest
    data or subtitle start (text: the timecode track, which ffmpeg may count too; None without one)."""
    picture: float
    sound: float
    picture_view: float
    text: float | None = None

    @property
    def first(self) -> float:
        """Where one pass over both counts from."""
        return origin(min(self.picture_view, self.sound), self.text) or 0.0

    def view(self, kind: Kind) -> float:
        """Where a pass over `kind` alone counts from."""
        return (origin(self.picture_view, self.text) or 0.0) if kind == "picture" else self.sound


def timeline_options(starts: Starts, kind: Kind) -> dict[str, str]:
    """Input options for a pass over one track that keep its timestamps where one pass over both puts them: that
    pass counts from the earliest start, so a pass whose view starts later is delayed by the difference."""
    late = round(starts.view(kind) - starts.first, 6)  # microseconds: ffmpeg's own resolution
    return {"itsoffset": f"{late:.6f}"} if late > 0 else {}


def lead_options(starts: Starts) -> dict[str, str]:
    """Input options for a sound-only pass that put the picture's first frame at 0 (where the transcode's chunks
    start it): later sound delayed as much, earlier sound cut there."""
    lead = round(starts.sound - starts.picture, 6)
    if lead > 0:
        return {"itsoffset": f"{lead:.6f}"}
    if lead < 0:
        return {"ss": f"{-lead:.6f}"}
    return {}


def _others(master: Path, kind: Kind) -> list[int]:
    """The type offsets of the tracks a pass over `kind` hides: the sound for the picture, all but the sound for
    the sound. Empty when there is nothing to hide (not an unfragmented box tree, or the track is missing)."""
    size = master.stat().st_size
    with file_reader(master) as read:
        return tracks_to_hide(read, size) if kind == "picture" else sound_alone(read, size)


@contextmanager
def alone(master: Path, kind: Kind) -> Iterator[bool]:
    """The (scratch) master with only `kind` visible for the with-block, every track shown again after it; yields
    whether anything was hidden."""
    offsets = _others(master, kind)
    rename(master, offsets, HIDDEN_NAME)
    try:
        yield bool(offsets)
    finally:
        rename(master, offsets, TRACK_NAME)


def _probe_streams(path: Path) -> list[tuple[str, float | None]] | None:
    """(codec type, start) of every stream ffprobe sees; None when it cannot read them (the passes then read the
    master whole: the same bytes would fail the same way on every retry)."""
    try:
        result = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,start_time", "-of",
                                 "json", str(path)], capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as err:
        raise TrackPassError(f"reading where the master's tracks start: ffprobe ran past "
                             f"{PROBE_TIMEOUT_SECONDS} s") from err
    if result.returncode != 0:
        log.warning("ffprobe could not read the tracks' starts; passes read the master whole: %s",
                    result.stderr.strip()[-300:])
        return None
    try:
        streams = json.loads(result.stdout or "{}").get("streams") or []
        return [(str(s.get("codec_type")), as_float(s.get("start_time"))) for s in streams]
    except (ValueError, AttributeError) as err:
        log.warning("ffprobe's answer about the tracks' starts is not JSON; passes read the master whole: %s", err)
        return None


def _earliest(streams: list[tuple[str, float | None]], kinds: set[str]) -> float | None:
    starts = [start for kind, start in streams if kind in kinds and start is not None]
    return min(starts) if starts else None


def track_starts(master: Path) -> Starts | None:
    """Where the tracks start, the picture probed with the sound hidden and the sound with everything else hidden.
    None when the tracks cannot be passed over alone — not an unfragmented QuickTime / MP4 file (MXF, Matroska:
    their demuxers do not index ahead), no picture or no sound, or a start ffprobe cannot give: passes then read
    the master whole."""
    with alone(master, "picture") as hidden:
        seen = _probe_streams(master) if hidden else None
    with alone(master, "sound") as hidden:
        heard = _probe_streams(master) if hidden else None
    if seen is None or heard is None:
        return None
    pictures = [start for kind, start in seen if kind == "video"]
    picture_view = _earliest(seen, {"video", "audio"})
    sound = _earliest(heard, {"audio"})
    if not pictures or pictures[0] is None or picture_view is None or sound is None:
        return None
    return Starts(picture=pictures[0], sound=sound, picture_view=picture_view,
                  text=_earliest(seen, {"data", "subtitle"}))
