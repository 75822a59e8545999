"""Format watch and preservation masters.

`at_risk` says which of a master's codecs an ArchivePolicy lists as endangered (pure). A preservation
master is the master re-encoded losslessly: FFV1 version 3 in Matroska (intra-only, per-slice CRCs), every
audio track in FLAC, or as PCM when FLAC cannot hold its decoded samples exactly (float, or integers wider
than 24 bits). It is trusted only once every decoded video frame and audio block hashes the same as the
original's (`verify_lossless`); the framemd5 files of both are kept as the record of that check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kubemam.api.asset import TechnicalMetadata
from kubemam.media.probe import probe
from kubemam.media.progress import FfmpegProgress, run_ffmpeg_with_progress

AUDIO_BLOCK = 1024  # samples per hashed audio block: decoders cut audio into different frame sizes
FIELD_ORDERS = ("progressive", "tt", "bb", "tb", "bt")
PCM_FOR = {"u8": "pcm_u8", "s16": "pcm_s16le", "s32": "pcm_s32le", "s64": "pcm_s64le", "flt": "pcm_f32le",
           "dbl": "pcm_f64le"}


class PreservationError(RuntimeError):
    """The preservation master is not a lossless copy of the original (or cannot be checked as one)."""


def at_risk(technical: TechnicalMetadata, formats: Sequence[str]) -> list[str]:
    """The master's video and audio codecs (ffprobe names, e.g. mpeg2video, dvvideo) that formats lists."""
    wanted = {f.strip().lower() for f in formats if f.strip()}
    codecs = ([technical.video.codec] if technical.video else []) + [a.codec for a in technical.audio or []]
    return sorted({c.lower() for c in codecs if c.lower() in wanted})


@dataclass(frozen=True)
class HashedStream:
    """One stream as it is hashed: decoded, then laid out in a raw format both files reproduce exactly."""

    label: str  # "v:0", "a:1": the same stream in the original and in the preservation master
    index: int  # the stream's index in its own file
    raw_format: str  # video: the pixel format; audio: the packed sample format (s16, s32, flt, ...)
    bits: int | None = None  # audio: significant bits of integer samples, when the probe says


def hashed_streams(info: dict[str, Any]) -> list[HashedStream]:
    """The programme's video stream (not cover art) and every audio stream, from ffprobe's JSON."""
    streams = info.get("streams") or []
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not (s.get("disposition") or {}).get("attached_pic")), None)
    if video is None or not video.get("pix_fmt"):
        raise PreservationError("the file has no decodable video stream with a known pixel format")
    chosen = [HashedStream("v:0", int(video["index"]), str(video["pix_fmt"]))]
    for n, audio in enumerate(s for s in streams if s.get("codec_type") == "audio"):
        sample_format = str(audio.get("sample_fmt") or "")
        if sample_format.removesuffix("p") not in PCM_FOR:
            raise PreservationError(f"audio stream {audio.get('index')} decodes to sample format "
                                    f"{sample_format or 'unknown'}, which cannot be kept exactly")
        bits = audio.get("bits_per_raw_sample") or audio.get("bits_per_sample")
        chosen.append(HashedStream(f"a:{n}", int(audio["index"]), sample_format.removesuffix("p"),
                                   int(bits) if str(bits or "").isdigit() and int(bits) > 0 else None))
    return chosen


def audio_codec(stream: HashedStream) -> str:
    """FLAC when it holds the decoded samples exactly (integers up to 24 bits), else the matching PCM."""
    if stream.raw_format in ("u8", "s16") or (stream.raw_format == "s32" and stream.bits and stream.bits <= 24):
        return "flac"
    return PCM_FOR[stream.raw_format]


def ffv1_command(source: Path | str, output: Path, info: dict[str, Any]) -> list[str]:
    """ffmpeg arguments for the preservation master: FFV1 v3 intra-only, source pixel format and field order kept."""
    streams = hashed_streams(info)
    video, audio = streams[0], streams[1:]
    source_video = next(s for s in info["streams"] if int(s["index"]) == video.index)
    command = ["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "error", "-y", "-i", str(source)]
    for stream in streams:
        command += ["-map", f"0:{stream.index}"]
    # passthrough: every decoded frame is encoded once, none duplicated or dropped to fit a frame rate.
    command += ["-map_metadata", "0", "-fps_mode", "passthrough",
                "-c:v", "ffv1", "-level", "3", "-g", "1", "-slices", "16", "-slicecrc", "1", "-context", "1",
                "-pix_fmt", video.raw_format]
    if source_video.get("field_order") in FIELD_ORDERS:
        command += ["-field_order", str(source_video["field_order"])]
    for n, stream in enumerate(audio):
        command += [f"-c:a:{n}", audio_codec(stream)]
    # bitexact: no muxer version or random UIDs, so the same master always gives the same bytes.
    return command + ["-fflags", "+bitexact", "-f", "matroska", str(output)]


def _run(command: list[str], what: str, report: Callable[[FfmpegProgress], None] | None) -> None:
    code, errors = run_ffmpeg_with_progress(command, report)
    if code != 0:
        raise RuntimeError(f"ffmpeg {what} failed: {errors.strip()[-800:]}")


def encode_ffv1(source: Path | str, output: Path, info: dict[str, Any] | None = None,
                report: Callable[[FfmpegProgress], None] | None = None) -> None:
    """Write the preservation master of source to output (Matroska); info is source's ffprobe JSON."""
    _run(ffv1_command(source, output, info if info is not None else probe(Path(source))), "FFV1 encode", report)


def framemd5_command(path: Path | str, streams: Sequence[HashedStream], target: Path) -> list[str]:
    """Decode the streams and write an MD5 per video frame and per AUDIO_BLOCK samples (ffmpeg's framemd5)."""
    command = ["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "error", "-y", "-i", str(path)]
    for stream in streams:
        command += ["-map", f"0:{stream.index}"]
    video, audio = streams[0], streams[1:]
    command += ["-fps_mode", "passthrough", "-c:v", "rawvideo", "-pix_fmt", video.raw_format]
    if audio:
        command += ["-filter:a", f"asetnsamples=n={AUDIO_BLOCK}:p=0"]
    for n, stream in enumerate(audio):
        command += [f"-c:a:{n}", PCM_FOR[stream.raw_format]]
    return command + ["-f", "framemd5", str(target)]


def parse_framemd5(text: str, labels: Sequence[str]) -> dict[str, list[str]]:
    """framemd5 lines (stream, dts, pts, duration, size, md5) → the MD5s of each stream, in order."""
    hashes: dict[str, list[str]] = {label: [] for label in labels}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            label = labels[int(fields[0])]
        except (ValueError, IndexError):
            raise PreservationError(f"unexpected framemd5 line: {line!r}") from None
        hashes[label].append(fields[-1])
    return hashes


def frame_hashes(path: Path | str, streams: Sequence[HashedStream], target: Path,
                 report: Callable[[FfmpegProgress], None] | None = None) -> dict[str, list[str]]:
    """The decoded frame hashes of path's streams; the framemd5 file is left at target as a record."""
    _run(framemd5_command(path, streams, target), "frame hashing", report)
    return parse_framemd5(target.read_text(), [s.label for s in streams])


def compare_frame_hashes(original: dict[str, list[str]], preservation: dict[str, list[str]]) -> dict[str, int]:
    """Frames (video) or blocks (audio) per stream when every one matches; else the first that differs."""
    if sorted(original) != sorted(preservation):
        raise PreservationError(f"the preservation master has streams {sorted(preservation)}, "
                                f"the original {sorted(original)}")
    counts: dict[str, int] = {}
    for label, expected in original.items():
        actual = preservation[label]
        unit = "frame" if label.startswith("v") else f"audio block ({AUDIO_BLOCK} samples)"
        for n, (want, got) in enumerate(zip(expected, actual, strict=False)):
            if want != got:
                raise PreservationError(f"stream {label} differs at {unit} {n}: the original decodes to MD5 {want}, "
                                        f"the preservation master to {got}")
        if len(expected) != len(actual):
            raise PreservationError(f"stream {label}: the original has {len(expected)} {unit}s, the preservation "
                                    f"master {len(actual)}; the first {min(len(expected), len(actual))} match")
        counts[label] = len(expected)
    return counts


def verify_lossless(original: Path | str, preservation: Path, original_hashes: Path, preservation_hashes: Path,
                    info: dict[str, Any] | None = None) -> dict[str, int]:
    """Decode both files and compare every frame, stream by stream, in the original's raw formats.

    Returns frames per stream ("v:0", "a:0", ...); raises PreservationError naming the first difference.
    The two framemd5 files are written to original_hashes and preservation_hashes.
    """
    source_streams = hashed_streams(info if info is not None else probe(Path(original)))
    copy_streams = hashed_streams(probe(preservation))
    if [s.label for s in copy_streams] != [s.label for s in source_streams]:
        raise PreservationError(f"the preservation master has streams {[s.label for s in copy_streams]}, "
                                f"the original {[s.label for s in source_streams]}")
    # Both are laid out in the original's raw formats: the bytes compared are the bytes the original decodes to.
    copy_streams = [replace(c, raw_format=s.raw_format) for c, s in zip(copy_streams, source_streams, strict=True)]
    expected = frame_hashes(original, source_streams, original_hashes)
    actual = frame_hashes(preservation, copy_streams, preservation_hashes)
    if not expected["v:0"]:
        raise PreservationError("the original decodes to no video frames")
    return compare_frame_hashes(expected, actual)
