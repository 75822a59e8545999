"""Thumbnails at a fixed interval, one sprite sheet, and the WebVTT index players use for scrubbing."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path


def thumb_size(width: int, height: int, thumb_width: int) -> tuple[int, int]:
    """The thumbnail size at thumb_width, keeping the aspect ratio, height rounded to even."""
    return thumb_width, max(2, round(height * thumb_width / width / 2) * 2)


def _vtt_time(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    hours, rem = divmod(millis, 3_600_000)
    minutes, rem = divmod(rem, 60_000)
    secs, ms = divmod(rem, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{ms:03d}"


def sprite_vtt(count: int, interval: float, duration: float, columns: int, size: tuple[int, int],
               sprite_name: str = "sprite.jpg") -> str:
    """One cue per thumbnail, pointing into the sprite sheet with a media fragment (#xywh)."""
    width, height = size
    cues = ["WEBVTT", ""]
    for index in range(count):
        start = index * interval
        end = min((index + 1) * interval, duration)
        if end <= start:
            break
        x, y = (index % columns) * width, (index // columns) * height
        cues += [f"{_vtt_time(start)} --> {_vtt_time(end)}", f"{sprite_name}#xywh={x},{y},{width},{height}", ""]
    return "\n".join(cues)


def make_thumbnails(source: Path, out_dir: Path, duration: float, width: int, height: int,
                    interval: float = 10.0, thumb_width: int = 320, columns: int = 10) -> int:
    """Write thumbs/NNNN.jpg, sprite.jpg and sprite.vtt; returns the number of thumbnails."""
    count = max(1, math.ceil(duration / interval))
    rows = math.ceil(count / columns)
    size = thumb_size(width, height, thumb_width)
    scale = f"fps=1/{interval},scale={size[0]}:{size[1]}"
    (out_dir / "thumbs").mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-vf", scale, "-frames:v", str(count),
                    str(out_dir / "thumbs" / "%04d.jpg")], check=True, capture_output=True)
    made = len(list((out_dir / "thumbs").glob("*.jpg")))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-vf",
                    f"{scale},tile={min(columns, made)}x{rows}", "-frames:v", "1", str(out_dir / "sprite.jpg")],
                   check=True, capture_output=True)
    (out_dir / "sprite.vtt").write_text(sprite_vtt(made, interval, duration, min(columns, made), size))
    return made
