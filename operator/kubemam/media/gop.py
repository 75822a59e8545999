"""GOP arithmetic shared by the transcode planner and the encoder (pure: no ffmpeg here)."""

from __future__ import annotations

from fractions import Fraction


def gop_frames(frame_rate: str, segment_seconds: int) -> int:
    """Frames per GOP: one closed GOP per segment."""
    return max(1, round(Fraction(frame_rate) * segment_seconds))
