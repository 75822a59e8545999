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
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kubemam.media.isobmff import HIDDEN_NAME, TRACK_NAME, file_reader, rename, sound_alone, tracks_to_hide

PROBE_TIMEOUT_SECONDS = 300  # an ffprobe of a local file; minutes would mean a stuck process

Kind = Literal["picture", "sound"]


class TrackPassError(RuntimeError):
    """ffprobe could not read a track's start: a pass would not know where its track sits."""


@dataclass(frozen=True)
class Starts:
    """Where tracks start, in seconds on the master's own timeline: the picture (v:0), the sound (a:0), and the
    earliest of everything a picture pass sees (the picture and the timecode track, which ffmpeg counts too)."""
    picture: float
    sound: float
    picture_view: float

    @property
    def first(self) -> float:
        """Where one pass over both counts from."""
        return min(self.picture_view, self.sound)

    def view(self, kind: Kind) -> float:
        """Where a pass over `kind` alone counts from."""
        return self.picture_view if kind == "picture" else self.sound


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


def _probe_starts(path: Path, selector: str) -> tuple[float | None, float | None]:
    """(the stream's start, the file's earliest start) as ffprobe gives them; None for a missing stream or N/A."""
    try:
        result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", selector, "-show_entries",
                                 "stream=start_time:format=start_time", "-of", "json", str(path)],
                                capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as err:
        raise TrackPassError(f"ffprobe of {selector}'s start ran past {PROBE_TIMEOUT_SECONDS} s") from err
    if result.returncode != 0:
        raise TrackPassError(f"ffprobe of {selector}'s start failed: {result.stderr.strip()[-300:]}")
    info = json.loads(result.stdout or "{}")
    streams = info.get("streams") or [{}]
    return _seconds(streams[0].get("start_time")), _seconds((info.get("format") or {}).get("start_time"))


def _seconds(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def track_starts(master: Path) -> Starts | None:
    """Where the tracks start, the picture probed with the sound hidden and the sound with everything else hidden.
    None when the tracks cannot be passed over alone — not an unfragmented QuickTime / MP4 file (MXF, Matroska:
    their demuxers do not index ahead), no picture or no sound, or a start ffprobe cannot give: passes then read
    the master whole."""
    with alone(master, "picture") as hidden:
        picture, picture_view = _probe_starts(master, "v:0") if hidden else (None, None)
    if picture is None or picture_view is None:
        return None
    with alone(master, "sound") as hidden:
        sound = _probe_starts(master, "a:0")[0] if hidden else None
    if sound is None:
        return None
    return Starts(picture=picture, sound=sound, picture_view=picture_view)
