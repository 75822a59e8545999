"""Technical QC in one decode: black frames, freezes and EBU R128 loudness from ffmpeg's filters.

`qc_command()` builds the ffmpeg call, `parse_qc_log()` reads its log (pure), and
`verdict()` turns measurements into issues with SMPTE timecodes and a verdict.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from kubemam.api.asset import Loudness, QCIssue, QCResult
from kubemam.media.progress import FfmpegProgress, parse_ffmpeg_progress
from kubemam.media.timecode import Timecode, seconds_to_timecode

_BLACK = re.compile(r"black_start:\s*([\d.]+)\s+black_end:\s*([\d.]+)")
_FREEZE_START = re.compile(r"freeze_start:\s*([\d.]+)")
_FREEZE_END = re.compile(r"freeze_end:\s*([\d.]+)")
_INTEGRATED = re.compile(r"^\s*I:\s*(-?[\d.]+|-inf)\s*LUFS", re.M)
_LRA = re.compile(r"^\s*LRA:\s*(-?[\d.]+)\s*LU\b", re.M)
_PEAK = re.compile(r"^\s*Peak:\s*(-?[\d.]+|-inf)\s*dBFS", re.M)


@dataclass(frozen=True)
class QCThresholds:
    target_lufs: float = -23.0  # EBU R128
    tolerance_lu: float = 1.0
    max_true_peak_dbtp: float = -1.0
    black_min_seconds: float = 0.1
    freeze_min_seconds: float = 0.5


@dataclass
class QCMeasurements:
    black: list[tuple[float, float]] = field(default_factory=list)
    freezes: list[tuple[float, float | None]] = field(default_factory=list)
    integrated_lufs: float | None = None
    loudness_range_lu: float | None = None
    true_peak_dbtp: float | None = None


def qc_command(source: Path, has_audio: bool, thresholds: QCThresholds) -> list[str]:
    video = (f"[0:v:0]blackdetect=d={thresholds.black_min_seconds}:pix_th=0.10,"
             f"freezedetect=n=-60dB:d={thresholds.freeze_min_seconds}[v]")
    graph = video + (";[0:a:0]ebur128=peak=true[a]" if has_audio else "")
    command = ["ffmpeg", "-hide_banner", "-nostats", "-i", str(source), "-filter_complex", graph, "-map", "[v]"]
    if has_audio:
        command += ["-map", "[a]"]
    return command + ["-f", "null", "-"]


def _number(text: str) -> float | None:
    return None if text == "-inf" else float(text)


def parse_qc_log(log: str) -> QCMeasurements:
    found = QCMeasurements()
    found.black = [(float(a), float(b)) for a, b in _BLACK.findall(log)]
    starts = [float(x) for x in _FREEZE_START.findall(log)]
    ends = [float(x) for x in _FREEZE_END.findall(log)]
    found.freezes = [(s, ends[i] if i < len(ends) else None) for i, s in enumerate(starts)]
    summary = log[log.rfind("Summary:"):] if "Summary:" in log else ""
    if summary:
        if m := _INTEGRATED.search(summary):
            found.integrated_lufs = _number(m.group(1))
        if m := _LRA.search(summary):
            found.loudness_range_lu = float(m.group(1))
        if m := _PEAK.search(summary):
            found.true_peak_dbtp = _number(m.group(1))
    return found


def verdict(found: QCMeasurements, thresholds: QCThresholds, frame_rate: str, start: Timecode | None,
            duration: float | None, now: datetime) -> QCResult:
    def tc(seconds: float | None) -> str | None:
        return None if seconds is None else seconds_to_timecode(seconds, frame_rate, start)

    issues = [QCIssue(check="black", severity="warning", start=tc(a), end=tc(b),
                      message=f"black video for {b - a:.2f}s") for a, b in found.black]
    for a, b in found.freezes:
        end = b if b is not None else duration
        if end is not None and any(ba <= a and end <= bb for ba, bb in found.black):
            continue  # a black stretch is also a still picture: report it once, as black
        length = f" for {end - a:.2f}s" if end is not None else ""
        issues.append(QCIssue(check="freeze", severity="warning", start=tc(a), end=tc(end),
                              message=f"frozen picture{length}"))
    if found.integrated_lufs is not None:
        deviation = found.integrated_lufs - thresholds.target_lufs
        if abs(deviation) > thresholds.tolerance_lu:
            issues.append(QCIssue(check="loudness", severity="warning",
                                  message=f"integrated loudness {found.integrated_lufs:.1f} LUFS is "
                                          f"{deviation:+.1f} LU from the {thresholds.target_lufs:.0f} LUFS target"))
    if found.true_peak_dbtp is not None and found.true_peak_dbtp > thresholds.max_true_peak_dbtp:
        issues.append(QCIssue(check="truePeak", severity="warning",
                              message=f"true peak {found.true_peak_dbtp:.1f} dBTP exceeds "
                                      f"{thresholds.max_true_peak_dbtp:.1f} dBTP"))
    worst = "Failed" if any(i.severity == "error" for i in issues) else ("Warning" if issues else "Passed")
    return QCResult(
        verdict=worst,
        checked_at=now,
        loudness=Loudness(integrated_lufs=found.integrated_lufs, true_peak_dbtp=found.true_peak_dbtp,
                          loudness_range_lu=found.loudness_range_lu),
        issues=issues or None,
    )


def run_qc(source: Path, has_audio: bool, thresholds: QCThresholds,
           report: Callable[[FfmpegProgress], None] | None = None) -> QCMeasurements:
    """The QC decode; ffmpeg's -progress stream (stdout) goes to report as it runs."""
    command = qc_command(source, has_audio, thresholds)
    command[-3:-3] = ["-progress", "pipe:1", "-stats_period", "0.5"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        assert proc.stdout is not None
        for update in parse_ffmpeg_progress(proc.stdout):
            if report is not None:
                report(update)
        returncode = proc.wait()
        log.seek(0)
        text = log.read().decode(errors="replace")
    if returncode != 0:
        raise RuntimeError(f"ffmpeg QC pass failed: {text.strip()[-500:]}")
    return parse_qc_log(text)
