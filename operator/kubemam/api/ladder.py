"""TranscodeLadder: a reusable ABR ladder and delivery policy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubemam.api.common import (
    BCP47,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    Condition,
    KubeModel,
    ResourceRequirements,
    SecretKeyReference,
    cel,
    conditions_field,
    validated_by,
)
from kubemam.api.qc import QCPolicy

VideoCodec = Literal["h264", "h265", "av1"]


def _per_level(table: dict[str, int], aliases: bool = True) -> str:
    """A CEL map literal of level -> maximum luma samples per picture; "4" and "4.0" both key it."""
    entries = dict(table)
    if aliases:
        entries |= {k.removesuffix(".0"): v for k, v in table.items() if k.endswith(".0")}
    return "{" + ", ".join(f"'{k}': {v}" for k, v in sorted(entries.items())) + "}"


# MaxFS (in luma samples) from H.264 Table A-1, H.265 Table A.8 and AV1 Annex A; levels the
# pattern allows but a codec lacks map to 0, so the rule refuses them.
_H264_LEVELS = {"1.0": 25344, "1.1": 101376, "1.2": 101376, "1.3": 101376, "2.0": 101376, "2.1": 202752,
                "2.2": 414720, "2.3": 0, "3.0": 414720, "3.1": 921600, "3.2": 1310720, "3.3": 0, "4.0": 2097152,
                "4.1": 2097152, "4.2": 2228224, "4.3": 0, "5.0": 5652480, "5.1": 9437184, "5.2": 9437184,
                "5.3": 0, "6.0": 35651584, "6.1": 35651584, "6.2": 35651584, "6.3": 0}
_H265_LEVELS = {"1.0": 36864, "2.0": 122880, "2.1": 245760, "3.0": 552960, "3.1": 983040, "4.0": 2228224,
                "4.1": 2228224, "5.0": 8912896, "5.1": 8912896, "5.2": 8912896, "6.0": 35651584, "6.1": 35651584,
                "6.2": 35651584}
_H265_LEVELS |= {k: 0 for k in _H264_LEVELS if k not in _H265_LEVELS}
_AV1_LEVELS = {"2.0": 147456, "2.1": 278784, "3.0": 665856, "3.1": 1065024, "4.0": 2359296, "4.1": 2359296,
               "5.0": 8912896, "5.1": 8912896, "5.2": 8912896, "5.3": 8912896, "6.0": 35651584, "6.1": 35651584,
               "6.2": 35651584, "6.3": 35651584}
_AV1_ALL = {k: _AV1_LEVELS.get(k, 0) for k in _H264_LEVELS}
_H264_MAX_LUMA = _per_level(_H264_LEVELS)
_H265_MAX_LUMA = _per_level(_H265_LEVELS)
_AV1_MAX_LUMA = _per_level(_AV1_ALL)


class RateControl(KubeModel):
    """CRF (constant quality, optionally capped) or capped VBR with a target bitrate."""

    model_config = validated_by(
        cel("self.mode != 'crf' || has(self.crf)", "crf mode needs crf", ".crf"),
        cel(
            "self.mode != 'vbr' || (has(self.bitrateKbps) && has(self.maxrateKbps))",
            "vbr mode needs bitrateKbps and maxrateKbps",
            ".bitrateKbps",
        ),
        cel(
            "!has(self.maxrateKbps) || !has(self.bitrateKbps) || self.maxrateKbps >= self.bitrateKbps",
            "maxrateKbps must not be below bitrateKbps",
            ".maxrateKbps",
        ),
        cel(
            "!has(self.maxrateKbps) || has(self.bufsizeKbps)",
            "a capped rate (maxrateKbps) needs bufsizeKbps",
            ".bufsizeKbps",
        ),
    )

    mode: Literal["crf", "vbr"] = Field(description="crf: constant quality (optionally capped by maxrateKbps); "
                                        "vbr: a target bitrate capped by maxrateKbps.")
    crf: int | None = Field(default=None, ge=0, le=63, description="Constant rate factor: lower is better quality "
                            "and more bits (x264/x265 0-51, SVT-AV1 0-63).")
    bitrate_kbps: int | None = Field(default=None, ge=50, le=200000, description="vbr: the average bitrate, kb/s.")
    maxrate_kbps: int | None = Field(default=None, ge=50, le=400000, description="The peak bitrate the encoder "
                                     "keeps to over bufsizeKbps, kb/s (a capped CRF or VBR).")
    bufsize_kbps: int | None = Field(default=None, ge=50, le=800000, description="The VBV buffer the peak is "
                                     "measured over, kb/s; typically 1-2x maxrateKbps.")


class VideoRendition(KubeModel):
    model_config = validated_by(
        cel(
            "self.codec != 'h264' || !has(self.profile) || self.profile in ['baseline', 'main', 'high']",
            "h264 profile must be baseline, main or high",
            ".profile",
        ),
        cel(
            "self.codec != 'h265' || !has(self.profile) || self.profile in ['main', 'main10']",
            "h265 profile must be main or main10",
            ".profile",
        ),
        cel(
            "self.codec != 'av1' || !has(self.profile) || self.profile == 'main'",
            "av1 profile must be main",
            ".profile",
        ),
        cel(
            f"!has(self.level) || self.width * self.height <= "
            f"(self.codec == 'h264' ? {_H264_MAX_LUMA} : self.codec == 'h265' ? {_H265_MAX_LUMA} : {_AV1_MAX_LUMA})"
            f"[self.level]",
            "the level is too low for this frame size (its maximum luma picture size is smaller)",
            ".level",
        ),
    )

    name: str = Field(min_length=1, max_length=32, pattern=DNS_LABEL,
                      description="The rung's name: its folder in the library and its track in the packages.")
    codec: VideoCodec = Field(description="h264 (libx264), h265 (libx265) or av1 (SVT-AV1).")
    width: int = Field(ge=64, le=7680, multiple_of=2, description="Output width in pixels (even).")
    height: int = Field(ge=64, le=4320, multiple_of=2, description="Output height in pixels (even). A rung "
                        "larger than the master is skipped unless allowUpscale.")
    rate_control: RateControl = Field(description="How the encoder spends bits.")
    profile: str | None = Field(default=None, max_length=16, description="Codec profile: h264 baseline, main or "
                                "high; h265 main or main10; av1 main.")
    level: str | None = Field(default=None, pattern=r"^[1-6](\.[0-3])?$", description="Codec level, e.g. 4.0; "
                              "refused when too low for the frame size.")
    preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
    ] = Field(default="medium", description="Encoder speed against compression (mapped to SVT-AV1's presets).")
    frame_rate: str | None = Field(default=None, pattern=r"^[0-9]+(/[0-9]+)?$", description="Output frame rate "
                                   "(e.g. 25 or 30000/1001); the master's when unset.")


class Loudness(KubeModel):
    standard: Literal["ebu-r128", "atsc-a85"] = Field(default="ebu-r128", description="The loudness "
                                                      "recommendation the target follows (ATSC A/85: -24 LKFS).")
    target_lufs: float = Field(default=-23.0, ge=-40, le=-5, description="Integrated loudness the rendition is "
                               "normalised to, LUFS.")
    true_peak_dbtp: float = Field(default=-1.0, ge=-9, le=0, description="Maximum true peak after normalisation, "
                                  "dBTP (a limiter holds it).")


class AudioRendition(KubeModel):
    name: str = Field(min_length=1, max_length=32, pattern=DNS_LABEL, description="The audio rendition's name.")
    codec: Literal["aac", "ac3", "eac3", "opus"] = Field(default="aac", description="Audio codec.")
    bitrate_kbps: int = Field(ge=16, le=1536, description="Bitrate, kb/s.")
    channels: int = Field(default=2, ge=1, le=16, description="Output channels (2 = stereo, 6 = 5.1).")
    sample_rate: Literal[44100, 48000] = Field(default=48000, description="Output sample rate, Hz.")
    language: str | None = Field(default=None, max_length=35, pattern=BCP47, description="BCP 47 language of the "
                                 "track, signalled in the DASH and HLS manifests.")
    loudness: Loudness | None = Field(default=None, description="Normalise to this loudness (measured first, then "
                                      "one linear gain); unset: the master's level is kept.")


class Packaging(KubeModel):
    formats: list[Literal["hls", "dash"]] = Field(min_length=1, max_length=2, json_schema_extra={
        "x-kubernetes-list-type": "set"}, description="Manifests to write over one shared set of CMAF segments.")
    container: Literal["cmaf"] = Field(default="cmaf", description="Segment container: fragmented MP4 (CMAF).")
    iframe_playlist: bool = Field(default=True, description="Write I-frame playlists for trick play (HLS).")


DrmSystem = Literal["widevine", "playready", "fairplay", "clearkey"]


class CpixProvider(KubeModel):
    url: str = Field(max_length=2048, pattern=r"^https?://.+$", description="The CPIX 2.3 / SPEKE v2 key "
                     "server endpoint.")
    credentials_secret_ref: SecretKeyReference | None = Field(default=None, description="A Secret key holding the "
                                                              "bearer token (key defaults to token); sent, never "
                                                              "logged.")


class SecretProvider(KubeModel):
    """Keys generated once per asset and key tier, kept in a Secret the asset owns."""

    name_prefix: str | None = Field(default=None, max_length=200, pattern=DNS_SUBDOMAIN,
                                    description="Prefix of the key Secret's name; <asset>-content-keys when unset.")


class KeyProvider(KubeModel):
    model_config = validated_by(
        cel("self.type != 'secret' || !has(self.cpix)", "type secret takes no cpix field", ".cpix"),
        cel("self.type != 'cpix' || has(self.cpix)", "type cpix needs the cpix field", ".cpix"),
    )

    type: Literal["secret", "cpix"] = Field(description="secret: the operator generates keys and keeps them in "
                                            "a Secret; cpix: a key server supplies them.")
    secret: SecretProvider | None = Field(default=None, description="Settings of the secret provider.")
    cpix: CpixProvider | None = Field(default=None, description="The key server (type cpix).")


class KeyTiers(KubeModel):
    separate_audio: bool = Field(default=False, description="A key of its own for audio.")
    separate_video_tiers: bool = Field(default=False, description="Distinct keys for SD, HD and UHD video.")


class Drm(KubeModel):
    model_config = validated_by(
        cel(
            "!('fairplay' in self.systems) || self.scheme == 'cbcs'",
            "fairplay needs the cbcs scheme",
            ".scheme",
        )
    )

    systems: list[DrmSystem] = Field(min_length=1, max_length=4, json_schema_extra={
        "x-kubernetes-list-type": "set"}, description="DRM systems signalled in the packages (pssh, "
                                     "ContentProtection, EXT-X-KEY).")
    scheme: Literal["cenc", "cbcs"] = Field(default="cenc", description="CENC protection scheme: cenc (AES-CTR) "
                                            "or cbcs (AES-CBC pattern; FairPlay needs it).")
    key_provider: KeyProvider = Field(description="Where the content keys come from; DRM without one is refused.")
    key_tiers: KeyTiers | None = Field(default=None, description="Separate keys by track kind and resolution; "
                                       "one key for everything when unset.")


class Thumbnails(KubeModel):
    interval_seconds: int = Field(default=10, ge=1, le=600, description="One thumbnail every this many seconds.")
    width: int = Field(default=320, ge=32, le=1920, description="Thumbnail width in pixels; height keeps the "
                       "aspect ratio.")
    sprite_columns: int = Field(default=10, ge=1, le=50, description="Thumbnails per row of a sprite sheet.")
    sprite_rows: int = Field(default=10, ge=1, le=50, description="Rows per sprite sheet; a long programme gets "
                             "several sheets.")


class Chunking(KubeModel):
    chunk_seconds: int = Field(default=60, ge=2, le=3600, description="Seconds of master per chunk: a multiple "
                               "of segmentDurationSeconds, so every chunk is whole GOPs.")
    max_parallel: int = Field(default=4, ge=1, le=256, description="Chunk pods running at once (the Indexed "
                              "Job's parallelism).")


class TranscodeLadderSpec(KubeModel):
    model_config = validated_by(
        cel(
            "self.renditions.all(r, self.renditions.exists_one(s, s.name == r.name))",
            "rendition names must be unique",
            ".renditions",
        ),
        cel(
            "!has(self.audio) || self.audio.all(a, self.audio.exists_one(b, b.name == a.name))",
            "audio rendition names must be unique",
            ".audio",
        ),
    )

    renditions: list[VideoRendition] = Field(min_length=1, max_length=16, description="The video rungs, "
                                             "encoded from one decode with keyframes aligned across rungs.")
    allow_upscale: bool = Field(default=False, description="Encode rungs larger than the source; else they are "
                                                           "refused for that asset with a condition.")
    audio: list[AudioRendition] | None = Field(default=None, max_length=16, description="Audio renditions.")
    segment_duration_seconds: int = Field(default=6, ge=1, le=30, description="Segment and GOP length, seconds: "
                                          "every rung has a closed GOP at each segment boundary.")
    packaging: Packaging | None = Field(default=None, description="Package the renditions for OTT; unset: "
                                        "renditions only.")
    drm: Drm | None = Field(default=None, description="Encrypt the packages and signal these DRM systems.")
    thumbnails: Thumbnails | None = Field(default=None, description="Thumbnails and sprite sheets cut at ingest.")
    qc: QCPolicy | None = Field(default=None, description="QC thresholds for assets that set none themselves.")
    chunking: Chunking | None = Field(default=None, description="Encode long masters as an Indexed Job of "
                                      "GOP-aligned chunks stitched by stream copy; unset: one pass.")
    resources: ResourceRequirements | None = Field(default=None, description="Pod resources of the transcode "
                                                   "Jobs; the step's defaults when unset.")
    priority_class_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN,
                                            description="PriorityClass of the transcode and package pods.")
    queue_name: str | None = Field(default=None, max_length=63, pattern=DNS_LABEL,
                                   description="Kueue LocalQueue; Jobs are created suspended for Kueue to admit.")


class TranscodeLadderStatus(KubeModel):
    phase: Literal["Valid", "Invalid"] | None = None
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] | None = conditions_field()
    rendition_count: int | None = Field(default=None, ge=0)
