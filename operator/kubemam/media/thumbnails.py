"""Thumbnails at a fixed interval, sprite sheets, and the WebVTT index players use for scrubbing.

A sheet holds columns × rows thumbnails; a long programme gets several (sprite-001.jpg, …),
all indexed by one sprite.vtt.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import ffmpeg

from kubemam.api.ladder import Thumbnails


def thumb_size(width: int, height: int, thumb_width: int) -> tuple[int, int]:
    """The thumbnail size at thumb_width, keeping the aspect ratio, height rounded to even."""
    return thumb_width, max(2, round(height * thumb_width / width / 2) * 2)


def sheet_name(sheet: int) -> str:
    return f"sprite-{sheet + 1:03d}.jpg"


def _vtt_time(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    hours, rem = divmod(millis, 3_600_000)
    minutes, rem = divmod(rem, 60_000)
    secs, ms = divmod(rem, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{ms:03d}"


def sprite_vtt(count: int, interval: float, duration: float, columns: int, rows: int, size: tuple[int, int]) -> str:
    """One cue per thumbnail, pointing into its sprite sheet with a media fragment (#xywh)."""
    width, height = size
    per_sheet = columns * rows
    cues = ["WEBVTT", ""]
    for index in range(count):
        start = index * interval
        end = min((index + 1) * interval, duration)
        if end <= start:
            break
        sheet, place = divmod(index, per_sheet)
        x, y = (place % columns) * width, (place // columns) * height
        cues += [f"{_vtt_time(start)} --> {_vtt_time(end)}", f"{sheet_name(sheet)}#xywh={x},{y},{width},{height}", ""]
    return "\n".join(cues)


def _run(stream: ffmpeg.nodes.OutputStream) -> None:
    command: list[str] = stream.global_args("-v", "error").overwrite_output().compile()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg thumbnails failed: {result.stderr.strip()[-500:]}")


def make_thumbnails(source: Path, out_dir: Path, duration: float, width: int, height: int,
                    settings: Thumbnails) -> tuple[int, int]:
    """Write thumbs/NNNN.jpg, sprite-NNN.jpg and sprite.vtt; returns (thumbnails, sheets)."""
    interval = settings.interval_seconds
    count = max(1, math.ceil(duration / interval))
    size = thumb_size(width, height, settings.width)
    thumbs = out_dir / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    # One decode: thumbnails every interval, starting at the first frame.
    _run(ffmpeg.input(str(source))["v:0"].filter("fps", fps=f"1/{interval}", round="down")
         .filter("scale", size[0], size[1]).output(str(thumbs / "%04d.jpg"), vframes=count))
    made = sorted(thumbs.glob("*.jpg"))
    columns = min(settings.sprite_columns, len(made))
    per_sheet = settings.sprite_columns * settings.sprite_rows
    sheets = math.ceil(len(made) / per_sheet)
    for sheet in range(sheets):
        rows = math.ceil(min(per_sheet, len(made) - sheet * per_sheet) / columns)
        # The sheet is tiled from the thumbnails already on disk, not from another decode of the master.
        tiles = ffmpeg.input(str(thumbs / "%04d.jpg"), start_number=sheet * per_sheet + 1)
        _run(tiles.filter("tile", f"{columns}x{rows}").output(str(out_dir / sheet_name(sheet)), vframes=1))
    (out_dir / "sprite.vtt").write_text(sprite_vtt(len(made), interval, duration, columns,
                                                   settings.sprite_rows, size))
    return len(made), sheets
