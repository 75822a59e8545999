"""The ladder encode as one ffmpeg process (built with ffmpeg-python; pure, no I/O).

One decode of the master feeds every video rendition through `split` and `scale`; each
rendition's encoder gets the same frame-numbered keyframe rule, so IDR frames sit at
identical timestamps in every rendition (closed GOPs, no scene-cut keyframes) and ABR
players can switch at any segment boundary. Audio renditions are encoded in the same
process, loudness-normalised (measured, then one linear gain) when the ladder asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg

from kubemam.api.ladder import AudioRendition, VideoRendition
from kubemam.media.gop import gop_frames

ENCODERS = {"h264": "libx264", "h265": "libx265", "av1": "libsvtav1"}
# SVT-AV1 has no x264-style presets; map the ladder's preset names onto its 0 (slow) – 13 scale.
PEAK_MARGIN_DB = 0.5
SVT_PRESETS = {"ultrafast": 12, "superfast": 11, "veryfast": 10, "faster": 9, "fast": 8, "medium": 7,
               "slow": 5, "slower": 4, "veryslow": 2}


@dataclass(frozen=True)
class LoudnessMeasurement:
    """loudnorm's first-pass figures, fed back for a linear (no dynamic compression) second pass."""

    input_i: float
    input_tp: float
    input_lra: float
    input_thresh: float
    target_offset: float


@dataclass(frozen=True)
class SourceFacts:
    """What the encode needs to know about the master (from the ingest probe)."""

    frame_rate: str  # "25/1", "30000/1001"
    start_timecode: str | None = None
    color_primaries: str | None = None
    color_transfer: str | None = None
    color_space: str | None = None


@dataclass(frozen=True)
class VideoOutput:
    rendition: VideoRendition
    path: Path


@dataclass(frozen=True)
class AudioOutput:
    rendition: AudioRendition
    path: Path
    loudness: LoudnessMeasurement | None = None


@dataclass(frozen=True)
class Window:
    """A frame range of the master, for a chunk of a chunked encode; None is the whole programme."""

    first_frame: int
    frames: int


@dataclass
class EncodePlan:
    video: list[VideoOutput] = field(default_factory=list)
    audio: list[AudioOutput] = field(default_factory=list)


def _rate_control(rendition: VideoRendition) -> dict[str, Any]:
    rc = rendition.rate_control
    args: dict[str, Any] = {}
    if rc.mode == "crf":
        args["crf"] = rc.crf
    else:
        args["b:v"] = f"{rc.bitrate_kbps}k"
    if rc.maxrate_kbps:
        args["maxrate"] = f"{rc.maxrate_kbps}k"
        args["bufsize"] = f"{rc.bufsize_kbps}k"
    return args


def video_encoder_args(rendition: VideoRendition, gop: int, source: SourceFacts) -> dict[str, Any]:
    """Encoder options for one rendition: codec, rate control, profile/level, closed aligned GOPs, colour."""
    codec = rendition.codec
    ten_bit = rendition.profile == "main10"
    args: dict[str, Any] = {"c:v": ENCODERS[codec], "pix_fmt": "yuv420p10le" if ten_bit else "yuv420p",
                            **_rate_control(rendition)}
    # The same frame-numbered rule in every rendition: a keyframe on every gop-th frame and nowhere else.
    args["force_key_frames"] = f"expr:eq(mod(n,{gop}),0)"
    if codec == "h264":
        args |= {"preset": rendition.preset, "g": gop, "keyint_min": gop, "sc_threshold": 0,
                 "x264-params": "open-gop=0"}
        if rendition.profile:
            args["profile:v"] = rendition.profile
        if rendition.level:
            args["level:v"] = rendition.level
    elif codec == "h265":
        params = [f"keyint={gop}", f"min-keyint={gop}", "scenecut=0", "open-gop=0", "log-level=error"]
        if rendition.level:
            params.append(f"level-idc={rendition.level}")
        args |= {"preset": rendition.preset, "x265-params": ":".join(params), "tag:v": "hvc1"}
        if rendition.profile:
            args["profile:v"] = rendition.profile
    else:
        params = [f"keyint={gop}", "scd=0"]
        if rendition.rate_control.mode == "crf" and rendition.rate_control.maxrate_kbps:
            params.append(f"mbr={rendition.rate_control.maxrate_kbps}")  # capped CRF
            args.pop("maxrate", None)
            args.pop("bufsize", None)
        args |= {"preset": SVT_PRESETS[rendition.preset], "g": gop, "svtav1-params": ":".join(params)}
    for key, value in (("color_primaries", source.color_primaries), ("color_trc", source.color_transfer),
                       ("colorspace", source.color_space)):
        if value and value != "unknown":
            args[key] = value
    return args


def audio_filters(output: AudioOutput) -> list[tuple[str, dict[str, Any]]]:
    """Linear loudness normalisation: one gain to the target, then a peak limiter only if the gain
    would push peaks past the ceiling. loudnorm's own second pass falls back to dynamic compression
    whenever the programme's loudness range is wide, which misses the target on short or dynamic
    material; a measured gain does not."""
    loudness = output.rendition.loudness
    if loudness is None:
        return []
    measured = output.loudness
    if measured is None:
        return [("loudnorm", {"I": loudness.target_lufs, "TP": loudness.true_peak_dbtp, "LRA": 20})]
    gain = loudness.target_lufs - measured.input_i
    filters: list[tuple[str, dict[str, Any]]] = [("volume", {"volume": f"{gain:.2f}dB"})]
    if measured.input_tp + gain > loudness.true_peak_dbtp - PEAK_MARGIN_DB:
        # Sample-peak limiting with a margin stands in for true-peak limiting (inter-sample peaks).
        ceiling = 10 ** ((loudness.true_peak_dbtp - PEAK_MARGIN_DB) / 20)
        filters.append(("alimiter", {"limit": f"{ceiling:.4f}", "level": "disabled", "attack": 5, "release": 50}))
    return filters


def loudness_measure_command(source: Path, rendition: AudioRendition,
                             input_options: dict[str, str] | None = None) -> list[str]:
    """First loudnorm pass over the first audio track: prints the measurement as JSON on stderr. input_options:
    the encode's, so the sound measured is the sound encoded (media/trackpass.py lead_options)."""
    loudness = rendition.loudness
    assert loudness is not None
    stream = ffmpeg.input(str(source), **(input_options or {}))["a:0"].filter(
        "loudnorm", I=loudness.target_lufs, TP=loudness.true_peak_dbtp, LRA=20, print_format="json")
    command: list[str] = (ffmpeg.output(stream, "-", f="null")
                          .global_args("-hide_banner", "-nostats").compile())
    return command


# A whole programme's renditions are fragmented MP4 (a moof per GOP for video, per segment duration for audio):
# an unfragmented MP4's muxer holds every sample's entry in memory until it writes the moov at the end, and
# +faststart then rewrites the whole file. Measured: AAC of a sine, 55 MB peak at 10 minutes and 64 MB at 60
# (fragmented: 55 and 55); a 320x180 stitch of 120 one-minute chunks 59 → 68 MB (fragmented 57 → 58). A chunk's
# few seconds stay +faststart. The packager remuxes either kind; the timecode track is written in both.
# delay_moov: the moov waits for the first fragment so its edit list can hold the B-frame delay; without it
# every timestamp is shifted by that delay (keyframes at 0.08, 2.08 … instead of 0, 2 …).
FRAGMENTED_MOVFLAGS = "+frag_keyframe+empty_moov+default_base_moof+delay_moov"


def fragmented_audio_args(segment_seconds: int) -> dict[str, Any]:
    """Audio has no keyframes to fragment at (every packet is one): it is cut by duration."""
    return {"movflags": FRAGMENTED_MOVFLAGS, "frag_duration": segment_seconds * 1_000_000}


def encode_command(source: Path | str, facts: SourceFacts, plan: EncodePlan, segment_seconds: int,
                   window: Window | None = None, input_options: dict[str, Any] | None = None) -> list[str]:
    """One ffmpeg call: decode once, every video and audio rendition out. source: a file or a URL
    (input_options: its protocol's, e.g. rw_timeout)."""
    gop = gop_frames(facts.frame_rate, segment_seconds)
    input_args: dict[str, Any] = dict(input_options or {})
    if window is not None and window.first_frame > 0:
        # Half a frame early: input seeking is accurate, and this keeps exactly first_frame onwards.
        input_args["ss"] = f"{(window.first_frame - 0.5) / Fraction(facts.frame_rate):.6f}"
    master = ffmpeg.input(str(source), **input_args)
    outputs = []
    if plan.video:
        video = master["v:0"]
        if window is not None:
            video = video.filter("setpts", "PTS-STARTPTS")  # every chunk starts at t=0
        branches = video.filter_multi_output("split", len(plan.video)) if len(plan.video) > 1 else None
        for index, out in enumerate(plan.video):
            branch = branches.stream(index) if branches is not None else video
            scaled = branch.filter("scale", out.rendition.width, out.rendition.height, flags="lanczos")
            if out.rendition.frame_rate:
                scaled = scaled.filter("fps", out.rendition.frame_rate)
            args = video_encoder_args(out.rendition, gop, facts)
            if window is not None:
                args["frames:v"] = window.frames
                args["fps_mode"] = "passthrough"
            elif facts.start_timecode:
                args["timecode"] = facts.start_timecode
            movflags = "+faststart" if window is not None else FRAGMENTED_MOVFLAGS
            outputs.append(scaled.output(str(out.path), movflags=movflags, **args))
    for audio_out in plan.audio:
        stream = master["a:0"]
        for name, args in audio_filters(audio_out):
            stream = stream.filter(name, **args)
        rendition = audio_out.rendition
        muxing = {"movflags": "+faststart"} if window is not None else fragmented_audio_args(segment_seconds)
        outputs.append(stream.output(str(audio_out.path), acodec=rendition.codec,
                                     audio_bitrate=f"{rendition.bitrate_kbps}k", ac=rendition.channels,
                                     ar=rendition.sample_rate, **muxing))
    if not outputs:
        raise ValueError("nothing to encode")
    command: list[str] = (ffmpeg.merge_outputs(*outputs)
                          .global_args("-hide_banner", "-nostats", "-loglevel", "error")
                          .overwrite_output().compile())
    return command


def concat_list(paths: list[Path]) -> str:
    """The concat demuxer's list: chunks stitched by stream copy, no re-encode."""
    return "".join(f"file '{p.as_posix()}'\n" for p in paths)
