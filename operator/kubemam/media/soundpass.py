"""A master made ready for passes that decode only its sound: the stitch's loudness measurement and audio encode.

ffmpeg's mov demuxer indexes every sample of every visible track when it opens a file (media/isobmff.py), so an
audio pass over a whole programme also held the picture's index: ~180,000 entries at 2 hours of 25 fps, a third
of what the pass grew by with the programme. Here the picture and timecode tracks are hidden (renamed `free` in
the step's scratch copy) before those passes.

Hiding the picture moves where ffmpeg starts counting: an input's timestamps begin at the earliest start of its
visible tracks, and the chunks begin at the picture's first frame (encode.py: PTS-STARTPTS). So each track's
start is read first, each with the other track hidden (a probe of both would index both), and the audio passes
are given the input options that put the picture's first frame at 0: sound that starts later is delayed by as
much (-itsoffset), sound that starts earlier is cut there (-ss; before this, the stitch kept it and the sound ran
that much late against the chunks' picture).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from kubemam.media.isobmff import HIDDEN_NAME, TRACK_NAME, file_reader, rename, sound_alone, tracks_to_hide

PROBE_TIMEOUT_SECONDS = 300  # two ffprobes of a local file; minutes would mean a stuck process


class SoundPassError(RuntimeError):
    """ffprobe could not read a track's start: the audio passes would not know where the picture begins."""


def lead_options(picture_start: float, sound_start: float) -> dict[str, str]:
    """ffmpeg input options that put the picture's first frame at 0 for a sound-only input (whose timestamps begin
    at sound_start): delay later sound, cut earlier sound. Microseconds: ffmpeg's own resolution."""
    lead = round(sound_start - picture_start, 6)
    if lead > 0:
        return {"itsoffset": f"{lead:.6f}"}
    if lead < 0:
        return {"ss": f"{-lead:.6f}"}
    return {}


def start_seconds(path: Path, selector: str) -> float | None:
    """The start time ffprobe gives one stream (v:0, a:0), or None when the file has no such stream."""
    try:
        result = subprocess.run(["ffprobe", "-v", "error", "-select_streams", selector, "-show_entries",
                                 "stream=start_time", "-of", "json", str(path)],
                                capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as err:
        raise SoundPassError(f"ffprobe of {selector}'s start ran past {PROBE_TIMEOUT_SECONDS} s") from err
    if result.returncode != 0:
        raise SoundPassError(f"ffprobe of {selector}'s start failed: {result.stderr.strip()[-300:]}")
    streams = json.loads(result.stdout or "{}").get("streams") or []
    if not streams:
        return None
    try:
        return float(streams[0]["start_time"])
    except (KeyError, TypeError, ValueError):
        return None  # "N/A": ffmpeg counts from 0 for it


def leave_sound_alone(master: Path) -> dict[str, str]:
    """Hide every track of the (scratch) master but its sound, in place, and return the input options for the audio
    passes (lead_options). Nothing is hidden, and {} returned, when the master is not an unfragmented QuickTime /
    MP4 file (MXF, Matroska: their demuxers do not index ahead) or has no picture or no sound."""
    size = master.stat().st_size
    with file_reader(master) as read:
        others = sound_alone(read, size)
        sound = tracks_to_hide(read, size)  # the sound kept visible so far (a:0): hidden while the picture is probed
    if not others or not sound:
        return {}
    rename(master, sound, HIDDEN_NAME)
    try:
        picture = start_seconds(master, "v:0")
    finally:
        rename(master, sound, TRACK_NAME)
    rename(master, others, HIDDEN_NAME)
    heard = start_seconds(master, "a:0")
    if picture is None or heard is None:
        return {}
    return lead_options(picture, heard)
