"""ffprobe output → TechnicalMetadata (the parse is pure; `probe()` runs ffprobe)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from kubemam.api.asset import AudioStream, TechnicalMetadata, VideoStream


class ProbeError(RuntimeError):
    pass


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _timecode_tag(tags: dict[str, Any] | None) -> str | None:
    # Matroska spells it TIMECODE; QuickTime and MXF timecode.
    return next((str(v) for k, v in (tags or {}).items() if k.lower() == "timecode" and v), None)


def _start_timecode(info: dict[str, Any]) -> str | None:
    """A tmcd track's or the format's timecode tag, the master's first frame in SMPTE form."""
    for stream in info.get("streams") or []:
        tag = _timecode_tag(stream.get("tags"))
        if tag:
            return tag
    return _timecode_tag((info.get("format") or {}).get("tags"))


def technical_metadata(info: dict[str, Any], sha256: str | None = None) -> TechnicalMetadata:
    fmt = info.get("format") or {}
    streams = info.get("streams") or []
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not (s.get("disposition") or {}).get("attached_pic")), None)
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    return TechnicalMetadata(
        container=fmt.get("format_name"),
        duration_seconds=as_float(fmt.get("duration")),
        size_bytes=_int(fmt.get("size")),
        sha256=sha256,
        bit_rate=_int(fmt.get("bit_rate")),
        start_timecode=_start_timecode(info),
        video=VideoStream(
            codec=video.get("codec_name", "unknown"),
            profile=video.get("profile"),
            width=_int(video.get("width")) or 0,
            height=_int(video.get("height")) or 0,
            frame_rate=video.get("r_frame_rate"),
            pixel_format=video.get("pix_fmt"),
            bit_depth=_int(video.get("bits_per_raw_sample")),
            color_primaries=video.get("color_primaries"),
            color_transfer=video.get("color_transfer"),
            color_space=video.get("color_space"),
            field_order=video.get("field_order"),
        ) if video else None,
        audio=[
            AudioStream(
                index=int(s.get("index", i)),
                codec=s.get("codec_name", "unknown"),
                channels=_int(s.get("channels")) or 0,
                channel_layout=s.get("channel_layout"),
                sample_rate=_int(s.get("sample_rate")),
                language=(s.get("tags") or {}).get("language"),
            )
            for i, s in enumerate(audio)
        ] or None,
    )


def probe(path: Path, require_video: bool = True) -> dict[str, Any]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise ProbeError(f"ffprobe could not read the source: {result.stderr.strip()[-500:]}")
    info: dict[str, Any] = json.loads(result.stdout)
    if require_video and not any(s.get("codec_type") == "video" for s in info.get("streams") or []):
        raise ProbeError("the source has no video stream")
    return info
