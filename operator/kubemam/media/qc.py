"""Technical QC in one decode (or one a track, media/trackpass.py): black frames, freezes, EBU R128 loudness and
decode errors.

`qc_command()` builds the ffmpeg call (ffmpeg-python), `parse_qc_log()` reads its log (pure), and
`verdict()` judges measurements against a QCPolicy: issues with SMPTE timecodes and a verdict.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from functools import partial
from pathlib import Path

import ffmpeg

from kubemam.api.asset import Loudness, Marker, QCIssue, QCResult, Timeline
from kubemam.api.qc import QCCheck, QCPolicy
from kubemam.media.progress import FfmpegProgress, run_ffmpeg_with_progress
from kubemam.media.timecode import Timecode, TimecodeError, seconds_to_timecode
from kubemam.media.trackpass import Kind, Starts, alone, timeline_options

_BLACK = re.compile(r"black_start:\s*([\d.]+)\s+black_end:\s*([\d.]+)")
_FREEZE_START = re.compile(r"freeze_start:\s*([\d.]+)")
_FREEZE_END = re.compile(r"freeze_end:\s*([\d.]+)")
_INTEGRATED = re.compile(r"^\s*I:\s*(-?[\d.]+|-inf)\s*LUFS", re.M)
_LRA = re.compile(r"^\s*LRA:\s*(-?[\d.]+)\s*LU\b", re.M)
_PEAK = re.compile(r"^\s*Peak:\s*(-?[\d.]+|-inf)\s*dBFS", re.M)
# With -loglevel level+info every line carries its level; decoder complaints are [error] lines
# from a codec context ("[h264 @ 0x...] [error] ..."), not from our filters.
_DECODE_ERROR = re.compile(r"^\[(?!Parsed_|blackdetect|freezedetect)([\w-]+) @ 0x[0-9a-f]+\] \[(?:error|fatal)\] (.+)$",
                           re.M)
MAX_DECODE_MESSAGES = 5
# ebur128's 100 ms meter lines: time, momentary (400 ms) and short-term (3 s) loudness.
_METER = re.compile(r"\bt:\s*([\d.]+)\s+TARGET:\S+\s+LUFS\s+M:\s*(-?[\d.]+|-inf)\s+S:\s*(-?[\d.]+|-inf)")
# ebur128 reports silence as -120.7 (its floor); a plot clips there.
LOUDNESS_FLOOR = -120.7


class QCError(RuntimeError):
    """The master could not be decoded at all (no decoder, not media): retrying will not help."""


@dataclass(frozen=True)
class LoudnessPoint:
    seconds: float
    momentary: float  # LUFS over the last 400 ms
    short_term: float  # LUFS over the last 3 s


@dataclass
class QCMeasurements:
    black: list[tuple[float, float]] = field(default_factory=list)
    freezes: list[tuple[float, float | None]] = field(default_factory=list)
    integrated_lufs: float | None = None
    loudness_range_lu: float | None = None
    true_peak_dbtp: float | None = None
    decode_errors: int = 0
    decode_messages: list[str] = field(default_factory=list)
    loudness: list[LoudnessPoint] = field(default_factory=list)  # momentary and short-term, one point a second


def qc_command(source: Path, has_audio: bool, policy: QCPolicy, only: Kind | None = None,
               input_options: dict[str, str] | None = None) -> list[str]:
    """The QC decode: picture and sound in one pass, or (only) one of them, the other hidden (media/trackpass.py)."""
    stream = ffmpeg.input(str(source), **(input_options or {}))
    outputs = []
    if only != "sound":
        outputs.append(stream["v:0"]
                       .filter("blackdetect", d=policy.black_min_seconds, pix_th=policy.black_pixel_threshold)
                       .filter("freezedetect", n=f"{policy.freeze_noise_db}dB", d=policy.freeze_min_seconds))
    if has_audio and only != "picture":
        outputs.append(stream["a:0"].filter("ebur128", peak="true"))
    command: list[str] = (ffmpeg.output(*outputs, "-", f="null")
                          .global_args("-hide_banner", "-nostats", "-loglevel", "level+info")
                          .compile())
    return command


def _number(text: str) -> float | None:
    return None if text == "-inf" else float(text)


class _LoudnessBuckets:
    """ebur128's meter readings kept one point per `step` seconds: the loudest momentary and short-term
    reading of each step, so a short peak is not averaged away (a 2-hour master is 7,200 points, not 72,000)."""

    def __init__(self, step: float = 1.0) -> None:
        self.step = step
        self._buckets: dict[int, tuple[float, float]] = {}

    def add(self, t: str, momentary: str, short: str) -> None:
        key = int(float(t) // self.step)
        m, s = _number(momentary) or LOUDNESS_FLOOR, _number(short) or LOUDNESS_FLOOR
        kept = self._buckets.get(key)
        self._buckets[key] = (max(m, kept[0]), max(s, kept[1])) if kept else (m, s)

    def points(self) -> list[LoudnessPoint]:
        return [LoudnessPoint(key * self.step, m, s) for key, (m, s) in sorted(self._buckets.items())]


def loudness_series(log: str, step: float = 1.0) -> list[LoudnessPoint]:
    """Momentary and short-term loudness over time from ebur128's meter lines, one point per `step` seconds."""
    buckets = _LoudnessBuckets(step)
    for t, momentary, short in _METER.findall(log):
        buckets.add(t, momentary, short)
    return buckets.points()


SUMMARY_LINES = 40  # ebur128's closing summary is a dozen lines


class QCLogReader:
    """ffmpeg's QC log read one line at a time, keeping only what QCMeasurements holds: ebur128 writes ten
    meter lines a second (~110 KB of log per programme minute, 13 MB for two hours), so the log is never
    held whole."""

    def __init__(self) -> None:
        self._found = QCMeasurements()
        self._freeze_starts: list[float] = []
        self._freeze_ends: list[float] = []
        self._loudness = _LoudnessBuckets()
        self._summary: list[str] | None = None

    def feed(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if self._summary is not None and len(self._summary) < SUMMARY_LINES:
            self._summary.append(line)
        if "Summary:" in line:
            self._summary = [line[line.rfind("Summary:"):]]  # the last summary counts
        if meter := _METER.search(line):
            self._loudness.add(*meter.groups())
            return
        for a, b in _BLACK.findall(line):
            self._found.black.append((float(a), float(b)))
        self._freeze_starts += [float(x) for x in _FREEZE_START.findall(line)]
        self._freeze_ends += [float(x) for x in _FREEZE_END.findall(line)]
        if decode := _DECODE_ERROR.match(line):
            self._found.decode_errors += 1
            if len(self._found.decode_messages) < MAX_DECODE_MESSAGES:
                self._found.decode_messages.append(f"{decode.group(1)}: {decode.group(2).strip()}")

    def measurements(self) -> QCMeasurements:
        found = self._found
        ends = self._freeze_ends
        found.freezes = [(s, ends[i] if i < len(ends) else None) for i, s in enumerate(self._freeze_starts)]
        found.loudness = self._loudness.points()
        summary = "\n".join(self._summary or [])
        if summary:
            if m := _INTEGRATED.search(summary):
                found.integrated_lufs = _number(m.group(1))
            if m := _LRA.search(summary):
                found.loudness_range_lu = float(m.group(1))
            if m := _PEAK.search(summary):
                found.true_peak_dbtp = _number(m.group(1))
        return found


def parse_qc_log(log: str) -> QCMeasurements:
    reader = QCLogReader()
    for line in log.splitlines():
        reader.feed(line)
    return reader.measurements()


@dataclass(frozen=True)
class Finding:
    """A QC observation before the policy decides whether it is a warning or an error."""

    check: QCCheck
    message: str
    start: float | None = None  # seconds from the first frame
    end: float | None = None


def measurement_findings(found: QCMeasurements, policy: QCPolicy, duration: float | None) -> list[Finding]:
    findings = [Finding("black", f"black video for {b - a:.2f}s", a, b) for a, b in found.black]
    for a, b in found.freezes:
        end = b if b is not None else duration
        if end is not None and any(ba <= a and end <= bb for ba, bb in found.black):
            continue  # a black stretch is also a still picture: report it once, as black
        length = f" for {end - a:.2f}s" if end is not None else ""
        findings.append(Finding("freeze", f"frozen picture{length}", a, end))
    if found.integrated_lufs is not None:
        deviation = found.integrated_lufs - policy.target_lufs
        if abs(deviation) > policy.tolerance_lu:
            findings.append(Finding("loudness", f"integrated loudness {found.integrated_lufs:.1f} LUFS is "
                                                 f"{deviation:+.1f} LU from the {policy.target_lufs:g} LUFS target "
                                                 f"(tolerance ±{policy.tolerance_lu:g} LU)"))
    if found.true_peak_dbtp is not None and found.true_peak_dbtp > policy.max_true_peak_dbtp:
        findings.append(Finding("truePeak", f"true peak {found.true_peak_dbtp:.1f} dBTP exceeds "
                                            f"{policy.max_true_peak_dbtp:.1f} dBTP"))
    if found.decode_errors:
        findings.append(Finding("decode", f"{found.decode_errors} decode error(s), first: "
                                          + "; ".join(found.decode_messages)))
    return findings


def verdict(findings: list[Finding], measured: QCMeasurements, policy: QCPolicy, frame_rate: str,
            start: Timecode | None, now: datetime) -> QCResult:
    def tc(seconds: float | None) -> str | None:
        return None if seconds is None else seconds_to_timecode(seconds, frame_rate, start)

    issues = [QCIssue(check=f.check, severity="error" if f.check in policy.fail_on else "warning",
                      start=tc(f.start), end=tc(f.end), message=f.message[:1024]) for f in findings]
    worst = "Failed" if any(i.severity == "error" for i in issues) else ("Warning" if issues else "Passed")
    return QCResult(
        verdict=worst,
        checked_at=now,
        loudness=Loudness(integrated_lufs=measured.integrated_lufs, true_peak_dbtp=measured.true_peak_dbtp,
                          loudness_range_lu=measured.loudness_range_lu),
        issues=issues or None,
    )


def run_qc(source: Path, has_audio: bool, policy: QCPolicy,
           report: Callable[[Kind | None, FfmpegProgress], None] | None = None,
           starts: Starts | None = None) -> QCMeasurements:
    """The QC decode; ffmpeg's -progress stream (stdout) goes to report as it runs, with the track the pass decodes
    (None: both). With the tracks' starts (media/trackpass.py), the picture and the sound are decoded in two passes,
    each alone and on the timeline one pass over both would give them, so neither holds the other's index."""
    reader = QCLogReader()
    passes: list[Kind | None] = ["picture", "sound"] if starts is not None and has_audio else [None]
    for only in passes:
        options = timeline_options(starts, only) if starts is not None and only is not None else {}
        with alone(source, only) if only is not None else nullcontext(False):
            returncode, tail = run_ffmpeg_with_progress(
                qc_command(source, has_audio, policy, only, options),
                partial(report, only) if report is not None else None,
                stats_period="0.5", stderr_line=reader.feed)
        if returncode != 0:
            raise QCError(f"ffmpeg QC pass failed: {tail.strip()[-500:]}")
    return reader.measurements()


def _rate(text: str | None) -> Fraction | None:
    try:
        return Fraction(text) if text else None
    except (ValueError, ZeroDivisionError):
        return None  # ffprobe says 0/0 when it cannot tell


def timeline_findings(markers: list[Marker], timeline: Timeline, start: Timecode | None, probed_rate: str | None,
                      duration: float | None) -> list[Finding]:
    """The declared timeline against the probed master: its frame rate, and every marker inside the programme."""
    findings = []
    if _rate(probed_rate) not in (None, Fraction(timeline.frame_rate)):
        findings.append(Finding("frameRate", f"the master runs at {probed_rate} fps, the asset's timeline declares "
                                             f"{timeline.frame_rate}"))
        return findings  # marker positions mean nothing at the wrong rate
    if duration is None:
        return findings
    rate = timeline.frame_rate
    first = start.to_frames(rate) if start else 0
    total = int(round(duration * Fraction(rate)))
    for marker in markers:
        for label, text in (("start", marker.start), ("end", marker.end)):
            if text is None:
                continue
            try:
                frame = Timecode.parse(text, rate, timeline.drop_frame).to_frames(rate) - first
            except TimecodeError as err:
                findings.append(Finding("markers", f"marker {marker.name!r}: {err}"))
                continue
            # An end may sit on the frame after the last; a start must be a frame that exists.
            last = total if label == "end" else total - 1
            if frame < 0 or frame > last:
                findings.append(Finding("markers", f"marker {marker.name!r} {label} {text} is outside the programme "
                                                   f"({seconds_to_timecode(0, rate, start)} to "
                                                   f"{seconds_to_timecode(duration, rate, start)})"))
    return findings
