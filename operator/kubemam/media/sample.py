"""A realistic test master made with ffmpeg's lavfi sources: timecode, black, a freeze, a loud passage."""

from __future__ import annotations

import subprocess
from pathlib import Path


def sample_command(out: Path, width: int = 1920, height: int = 1080, seconds: int = 30,
                   start_timecode: str = "10:00:00:00", crf: int | None = None) -> list[str]:
    """1 s of black, moving test picture, a 2 s freeze two thirds in, stereo tone with a loud passage.
    crf: x264's quality (0 = lossless: a master of many MiB in a few seconds, for tests of large objects)."""
    if seconds < 8:
        raise ValueError("the sample needs at least 8 seconds for its black, freeze and loud passages")
    size = f"{width}x{height}"
    freeze_at = seconds * 2 // 3
    graph = (
        f"color=black:s={size}:r=25:d=1[b];"
        f"testsrc2=s={size}:r=25:d={freeze_at - 1}[t1];"
        f"testsrc2=s={size}:r=25:d=0.04,loop=loop=49:size=1:start=0[f];"
        f"testsrc2=s={size}:r=25:d={seconds - freeze_at - 2}[t2];"
        "[b][t1][f][t2]concat=n=4:v=1:a=0"
    )
    loud_from, loud_to = seconds - 6, seconds - 3
    audio = (f"sine=f=440:sample_rate=48000:d={seconds},"
             f"volume='if(between(t,{loud_from},{loud_to}),1.0,0.1)':eval=frame,pan=stereo|c0=c0|c1=c0")
    return ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", graph, "-f", "lavfi", "-i", audio,
            "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast",
            *(["-crf", str(crf)] if crf is not None else []), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k",
            "-shortest", "-timecode", start_timecode, str(out)]


def make_sample(out: Path, **kwargs: int | str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(sample_command(out, **kwargs), check=True)  # type: ignore[arg-type]
    return out


def sample_captions(fmt: str, language: str, seconds: int = 30, every: int = 5) -> str:
    """A caption track for the sample: one numbered cue every few seconds, as WebVTT or SRT."""
    def stamp(second: int, separator: str) -> str:
        return f"00:{second // 60:02d}:{second % 60:02d}{separator}000"

    if fmt == "srt":
        cues = [f"{n}\n{stamp(t, ',')} --> {stamp(t + 2, ',')}\n[{language}] cue {n}\n"
                for n, t in enumerate(range(1, seconds - 2, every), start=1)]
        return "\n".join(cues)
    cues = [f"{stamp(t, '.')} --> {stamp(t + 2, '.')}\n[{language}] cue {n}\n"
            for n, t in enumerate(range(1, seconds - 2, every), start=1)]
    return "WEBVTT\n\n" + "\n".join(cues)
