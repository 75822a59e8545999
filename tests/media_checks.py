"""What a decoder sees in a media file, for tests that compare timelines: stream starts, frame counts, when the
sample master's loud passage begins (media/sample.py), and the sample with its tracks moved apart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any


def ffprobe_json(path: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)], check=True,
                         capture_output=True, text=True).stdout
    return dict(json.loads(out))


def stream_start(path: Path, selector: str) -> float:
    return float(ffprobe_json(path, "-select_streams", selector, "-show_entries", "stream=start_time")
                 ["streams"][0]["start_time"])


def video_frames(path: Path) -> int:
    return int(ffprobe_json(path, "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_frames")["streams"][0]["nb_read_frames"])


def loud_onset(path: Path) -> float:
    """When the sample's loud passage (20 dB over the rest) begins, on the file's own timeline: the first sample
    at over half the track's peak, after the track's start."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", "48000",
                          "-f", "s16le", "-"], check=True, capture_output=True).stdout
    samples = [abs(int.from_bytes(raw[i:i + 2], "little", signed=True)) for i in range(0, len(raw), 2)]
    ceiling = max(samples)
    return stream_start(path, "a:0") + next(i for i, level in enumerate(samples) if level > ceiling // 2) / 48000


def tracks_moved(master: Path, picture_delay: str, sound_delay: str, target: Path) -> Path:
    """The master's picture and sound, each delayed by as many seconds (stream copy), with a timecode track at 0."""
    inputs = ["-itsoffset", picture_delay, "-i", str(master), "-itsoffset", sound_delay, "-i", str(master)]
    subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-map", "0:v", "-map", "1:a", "-c", "copy",
                    "-timecode", "10:00:00:00", str(target)], check=True)
    return target
