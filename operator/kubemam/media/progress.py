"""Step progress: ffmpeg's `-progress` blocks in, one `KUBEMAM_PROGRESS {json}` log line out.

The worker prints the lines on stdout; the operator reads the pod's last log lines (pods/log)
and mirrors the newest into the asset's status. Step pods need no API access for this.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

MARKER = "KUBEMAM_PROGRESS "


@dataclass(frozen=True)
class FfmpegProgress:
    out_seconds: float
    fps: float | None
    speed: float | None
    done: bool


def parse_ffmpeg_progress(lines: Iterable[str]) -> Iterator[FfmpegProgress]:
    """One FfmpegProgress per `progress=continue|end` block of ffmpeg's key=value stream."""
    block: dict[str, str] = {}
    for line in lines:
        key, _, value = line.strip().partition("=")
        if not key:
            continue
        block[key] = value
        if key == "progress":
            micros = block.get("out_time_us") or block.get("out_time_ms") or "0"
            try:
                out_seconds = max(0.0, int(micros) / 1_000_000)
            except ValueError:
                out_seconds = 0.0
            yield FfmpegProgress(out_seconds, _number(block.get("fps")), _number(block.get("speed", "").rstrip("x")),
                                 value == "end")
            block = {}


STDERR_TAIL = 64 * 1024  # what a caller that reads stderr line by line still gets back, for its error message


def run_ffmpeg_with_progress(command: list[str], report: Callable[[FfmpegProgress], None] | None,
                             stats_period: str = "1",
                             stderr_line: Callable[[str], None] | None = None) -> tuple[int, str]:
    """Run ffmpeg with its -progress stream on stdout, each update to report; (exit code, stderr text) — or,
    with `stderr_line`, each stderr line handed to it after the run and only the last 64 KiB returned.

    stderr goes to a file, not a pipe: a master full of decode errors must not fill a pipe nobody
    reads while progress is being read. -progress and -stats_period are global options, so they go
    to the front of the command.
    """
    command = [command[0], "-progress", "pipe:1", "-stats_period", stats_period, *command[1:]]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert proc.stdout is not None
        for update in parse_ffmpeg_progress(proc.stdout):
            if report is not None:
                report(update)
        code = proc.wait()
        errors.seek(0)
        if stderr_line is None:
            return code, errors.read().decode(errors="replace")
        # Line by line: a long programme's log (ebur128: ~110 KB a minute) is never held whole.
        for raw in errors:
            stderr_line(raw.decode(errors="replace"))
        errors.seek(max(0, errors.tell() - STDERR_TAIL))
        return code, errors.read().decode(errors="replace")


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None


def progress_line(step: str, percent: int, fps: float | None = None, eta_seconds: int | None = None) -> str:
    body: dict[str, object] = {"step": step, "percent": max(0, min(100, percent))}
    if fps is not None:
        body["fps"] = round(fps, 1)
    if eta_seconds is not None:
        body["etaSeconds"] = max(0, eta_seconds)
    return MARKER + json.dumps(body, sort_keys=True)


def latest_progress(log_text: str) -> dict[str, object] | None:
    """The newest progress record in a pod's log, or None."""
    for line in reversed(log_text.splitlines()):
        if line.startswith(MARKER):
            try:
                value = json.loads(line[len(MARKER):])
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None
