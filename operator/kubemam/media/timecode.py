"""SMPTE ST 12-1 timecode: parse, validate against a frame rate, convert to frame counts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_TC = re.compile(r"^(\d{2}):(\d{2}):(\d{2})([:;.])(\d{2})$")


class TimecodeError(ValueError):
    pass


def nominal_fps(frame_rate: str) -> int:
    """The integer frame count per timecode second: 30 for 29.97, 25 for 25."""
    rate = Fraction(frame_rate)
    return round(rate)


def is_drop_frame_rate(frame_rate: str) -> bool:
    return Fraction(frame_rate) in (Fraction(30000, 1001), Fraction(60000, 1001))


@dataclass(frozen=True)
class Timecode:
    hours: int
    minutes: int
    seconds: int
    frames: int
    drop_frame: bool

    @classmethod
    def parse(cls, text: str, frame_rate: str, drop_frame: bool = False) -> Timecode:
        match = _TC.match(text)
        if not match:
            raise TimecodeError(f"{text!r} is not HH:MM:SS:FF")
        hh, mm, ss, sep, ff = match.groups()
        tc = cls(int(hh), int(mm), int(ss), int(ff), drop_frame or sep in ";.")
        tc._check(frame_rate)
        return tc

    def _check(self, frame_rate: str) -> None:
        fps = nominal_fps(frame_rate)
        if self.hours > 23 or self.minutes > 59 or self.seconds > 59:
            raise TimecodeError(f"{self} is out of range")
        if self.frames >= fps:
            raise TimecodeError(f"{self}: frame {self.frames} does not exist at {frame_rate} fps (max {fps - 1})")
        if self.drop_frame:
            if not is_drop_frame_rate(frame_rate):
                raise TimecodeError(f"{self}: drop-frame timecode needs 29.97 or 59.94 fps, not {frame_rate}")
            dropped = 2 if fps == 30 else 4
            if self.seconds == 0 and self.minutes % 10 != 0 and self.frames < dropped:
                raise TimecodeError(f"{self}: frames 0-{dropped - 1} are dropped at the start of this minute")

    def to_frames(self, frame_rate: str) -> int:
        """Frame index since 00:00:00:00, counting only frames that exist (drop-frame aware)."""
        fps = nominal_fps(frame_rate)
        total_minutes = 60 * self.hours + self.minutes
        frames = ((total_minutes * 60) + self.seconds) * fps + self.frames
        if self.drop_frame:
            dropped = 2 if fps == 30 else 4
            frames -= dropped * (total_minutes - total_minutes // 10)
        return frames

    def __str__(self) -> str:
        sep = ";" if self.drop_frame else ":"
        return f"{self.hours:02d}:{self.minutes:02d}:{self.seconds:02d}{sep}{self.frames:02d}"


def from_frames(frames: int, frame_rate: str, drop_frame: bool = False) -> Timecode:
    """The timecode of a frame index (inverse of Timecode.to_frames), drop-frame aware."""
    fps = nominal_fps(frame_rate)
    if drop_frame:
        dropped = 2 if fps == 30 else 4
        per_10min = fps * 600 - dropped * 9
        per_min = fps * 60 - dropped
        tens, rest = divmod(frames, per_10min)
        extra = dropped * 9 * tens
        if rest > dropped:
            extra += dropped * ((rest - dropped) // per_min)
        frames += extra
    total_seconds, ff = divmod(frames, fps)
    hours, rem = divmod(total_seconds, 3600)
    minutes, seconds = divmod(rem, 60)
    return Timecode(hours % 24, minutes, seconds, ff, drop_frame)


def seconds_to_timecode(seconds: float, frame_rate: str, start: Timecode | None = None) -> str:
    """A position in seconds from the first frame, as the master's SMPTE timecode."""
    rate = Fraction(frame_rate)
    frame = int(round(seconds * rate))
    drop = start.drop_frame if start else False
    offset = start.to_frames(frame_rate) if start else 0
    return str(from_frames(frame + offset, frame_rate, drop))
