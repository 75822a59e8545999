"""MediaAsset: one title or clip, from its source through renditions, packages and copies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from kubemam.api.archive import ExtraCopies, LegalHoldStatus
from kubemam.api.attempt import StepAttempt as StepAttempt
from kubemam.api.common import (
    BCP47,
    DNS_LABEL,
    SMPTE_TIMECODE,
    URI,
    Condition,
    KubeModel,
    LocalObjectReference,
    cel,
    conditions_field,
    validated_by,
)
from kubemam.api.qc import QCPolicy

SUPPORTED_SOURCE_SCHEMES = ("s3", "https", "http")


class Checksum(KubeModel):
    algorithm: Literal["sha256", "md5"] = Field(default="sha256", description="The digest the value is.")
    value: str = Field(pattern=r"^[0-9a-f]{32}([0-9a-f]{32})?$", description="Lowercase hex digest of the whole "
                       "master; ingest refuses a master whose digest differs.")


class Source(KubeModel):
    model_config = validated_by(
        cel(
            "!has(self.checksum) || (self.checksum.algorithm == 'sha256' ? "
            "size(self.checksum.value) == 64 : size(self.checksum.value) == 32)",
            "checksum.value must be 64 hex digits for sha256 and 32 for md5",
            ".checksum.value",
        )
    )

    uri: str = Field(max_length=2048, pattern=URI, description="Where the master is read from: s3:// or https://.")
    checksum: Checksum | None = Field(default=None, description="The master's known digest, checked on ingest.")


class Contributor(KubeModel):
    name: str = Field(min_length=1, max_length=256, description="The person or company.")
    role: str = Field(min_length=1, max_length=64, description="Their role, e.g. director, presenter, producer.")


class DescriptiveMetadata(KubeModel):
    title: str = Field(min_length=1, max_length=512, description="The title as it is presented.")
    original_title: str | None = Field(default=None, max_length=512, description="The title in its original "
                                       "language.")
    synopsis: str | None = Field(default=None, max_length=8192, description="A short description.")
    series: str | None = Field(default=None, max_length=512, description="The series an episode belongs to.")
    season: int | None = Field(default=None, ge=0, le=1000, description="Season number.")
    episode: int | None = Field(default=None, ge=0, le=100000, description="Episode number within the season.")
    genres: list[str] | None = Field(default=None, max_length=16, description="Genres, free text.")
    language: str | None = Field(default=None, max_length=35, pattern=BCP47, description="BCP 47 language of the "
                                 "programme.")
    production_year: int | None = Field(default=None, ge=1880, le=2200, description="Year of production.")
    content_rating: str | None = Field(default=None, max_length=32, description="Age rating, e.g. PG or 12.")
    contributors: list[Contributor] | None = Field(default=None, max_length=128, description="Cast and crew.")
    keywords: list[str] | None = Field(default=None, max_length=64, description="Search keywords.")


MarkerKind = Literal["segment", "adBreak", "chapter", "ratingFlag", "creditsStart", "note"]


class Marker(KubeModel):
    """A frame-accurate point or range on the asset's timeline (SMPTE timecode)."""

    name: str = Field(min_length=1, max_length=128, description="Unique within the asset.")
    kind: MarkerKind = Field(description="segment (part of the programme), adBreak, chapter, ratingFlag "
                             "(content needing a warning), creditsStart, or note.")
    start: str = Field(pattern=SMPTE_TIMECODE, description="SMPTE timecode HH:MM:SS:FF on the asset's timeline "
                       "(';' before FF for drop-frame); must fall inside the programme.")
    end: str | None = Field(default=None, pattern=SMPTE_TIMECODE, description="End timecode of a range; "
                            "unset for a point. Not before start.")
    note: str | None = Field(default=None, max_length=1024, description="Free text for editors and schedulers.")


class Timeline(KubeModel):
    model_config = validated_by(
        cel(
            "!self.dropFrame || self.frameRate in ['30000/1001', '60000/1001']",
            "dropFrame applies only to 29.97 (30000/1001) and 59.94 (60000/1001) fps",
            ".dropFrame",
        )
    )

    frame_rate: Literal["24000/1001", "24", "25", "30000/1001", "30", "50", "60000/1001", "60"] = Field(
        default="25", description="The timecode rate; QC reports a master whose probed rate differs.")
    drop_frame: bool = Field(default=False, description="Drop-frame timecode (29.97 and 59.94 fps only).")
    start_timecode: str = Field(default="00:00:00:00", pattern=SMPTE_TIMECODE, description="Timecode of the "
                                "first frame (the master's own tmcd track wins when it has one).")


class Caption(KubeModel):
    language: str = Field(max_length=35, pattern=BCP47, description="BCP 47 language of the text.")
    # TTML is refused here, not accepted and then failed by the package step: it is not packaged (IMSC1) yet.
    format: Literal["webvtt", "srt"] = Field(description="The file's format, WebVTT or SRT; packaged as WebVTT. "
                                             "TTML is not supported yet: convert it to WebVTT.")
    uri: str = Field(max_length=2048, pattern=URI, description="Where the caption file is read from.")
    kind: Literal["subtitles", "captions", "forced"] = Field(default="subtitles", description="subtitles "
                                                             "(translation), captions (for the deaf and hard of "
                                                             "hearing) or forced (foreign dialogue only).")
    label: str | None = Field(default=None, max_length=128, description="The name players show for the track.")


class MediaAssetSpec(KubeModel):
    source: Source = Field(description="The master: where it is and, optionally, its checksum.")
    metadata: DescriptiveMetadata = Field(description="Descriptive metadata (carried into the EBUCore sidecar).")
    timeline: Timeline | None = Field(default=None, description="How timecodes are read: rate, drop-frame and "
                                      "the first frame's timecode.")
    # List-maps: the API server itself refuses a second marker of the same name, or a second
    # caption track for the same language and kind, at O(n) cost where CEL would be O(n²).
    markers: list[Marker] | None = Field(default=None, max_length=256, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Frame-accurate points and ranges (ad breaks, chapters, credits); checked by QC against the "
                    "programme and carried into the sidecar.")
    captions: list[Caption] | None = Field(default=None, max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["language", "kind"]},
        description="Caption and subtitle files, one per language and kind, packaged beside the video.")
    ladder_ref: LocalObjectReference | None = Field(default=None, description="The TranscodeLadder to encode "
                                                    "and package with; unset: ingest only.")
    archive_policy_ref: LocalObjectReference | None = Field(default=None, description="The ArchivePolicy that "
                                                            "keeps the master's copies; unset: not archived.")
    qc: QCPolicy | None = Field(default=None, description="QC thresholds; when absent, the ladder's, else EBU R128.")
    priority: int = Field(default=50, ge=0, le=100, description="Higher runs first when Jobs queue.")


AssetPhase = Literal["Pending", "Ingesting", "Transcoding", "Packaging", "Archiving", "Ready", "Failed", "Deleting"]


class VideoStream(KubeModel):
    codec: str
    profile: str | None = None
    width: int = Field(ge=0)
    height: int = Field(ge=0)
    frame_rate: str | None = None
    pixel_format: str | None = None
    bit_depth: int | None = Field(default=None, ge=0)
    color_primaries: str | None = None
    color_transfer: str | None = None
    color_space: str | None = None
    field_order: str | None = None


class AudioStream(KubeModel):
    index: int = Field(ge=0)
    codec: str
    channels: int = Field(ge=0)
    channel_layout: str | None = None
    sample_rate: int | None = Field(default=None, ge=0)
    language: str | None = None


class TechnicalMetadata(KubeModel):
    container: str | None = None
    duration_seconds: float | None = Field(default=None, ge=0)
    size_bytes: int | None = Field(default=None, ge=0)
    sha256: str | None = None
    etag: str | None = Field(default=None, max_length=256,
                             description="The S3 ETag of the master version whose bytes ingest hashed (from the "
                             "same GET): transcode chunks read ranges of that version alone")
    bit_rate: int | None = Field(default=None, ge=0)
    start_timecode: str | None = None
    video: VideoStream | None = None
    audio: list[AudioStream] | None = None


class QCIssue(KubeModel):
    check: str
    severity: Literal["info", "warning", "error"]
    start: str | None = None
    end: str | None = None
    message: str = Field(max_length=1024)


class Loudness(KubeModel):
    integrated_lufs: float | None = None
    true_peak_dbtp: float | None = None
    loudness_range_lu: float | None = None


class QCResult(KubeModel):
    verdict: Literal["Passed", "Warning", "Failed"]
    checked_at: datetime | None = None
    loudness: Loudness | None = None
    issues: list[QCIssue] | None = Field(default=None, description="Errors first; at most a few, see issueCount")
    issue_count: int | None = Field(default=None, ge=0, description="Every issue found; all are in reportUri")
    report_uri: str | None = Field(default=None, description="qc.json beside the ingest manifest")
    loudness_uri: str | None = Field(default=None, description="loudness.json beside it: momentary and "
                                     "short-term loudness, one point a second, for plots")


class QCApproval(KubeModel):
    """A sign-off of a failed QC (the qc.kubemam.io/approved annotation), as the operator accepted it."""

    reason: str = Field(max_length=1024, description="Why it was approved: the annotation's value")
    by: str = Field(max_length=256, description="Who: the field manager that wrote the annotation (managedFields); "
                    "`kubectl annotate --field-manager=NAME` sets it")
    at: datetime = Field(description="When the annotation was written (managedFields), after the QC it approves")
    qc_checked_at: datetime | None = Field(default=None, description="The QC run it approves; a new QC (re-ingest) "
                                           "needs a new approval")
    failed_checks: list[str] | None = Field(default=None, max_length=16, description="The checks that failed")


class Previews(KubeModel):
    """Browse copies made at ingest."""

    proxy_uri: str | None = None
    poster_uri: str | None = None
    sprite_uri: str | None = Field(default=None, description="The first sprite sheet; the index names every sheet")
    sprite_index_uri: str | None = Field(default=None, description="WebVTT cues into the sprite sheets")
    sprite_sheets: int | None = Field(default=None, ge=0)
    thumbnails: int | None = Field(default=None, ge=0)


class RenditionStatus(KubeModel):
    """One encoded rendition, content-addressed by specHash (source checksum, rendition spec, worker)."""

    name: str = Field(pattern=DNS_LABEL)
    kind: Literal["video", "audio"] = "video"
    uri: str
    manifest_uri: str | None = None
    sha256: str | None = None
    size_bytes: int | None = Field(default=None, ge=0)
    spec_hash: str
    bitrate: int | None = Field(default=None, ge=0, description="Measured, bits per second")
    codec: str | None = None
    width: int | None = Field(default=None, ge=0)
    height: int | None = Field(default=None, ge=0)
    duration_seconds: float | None = Field(default=None, ge=0)


class PackageTrack(KubeModel):
    name: str
    kind: Literal["video", "audio"]
    key_id: str | None = Field(default=None, description="The KID the track is encrypted with; never the key.")


class PackageStatus(KubeModel):
    format: Literal["hls", "dash"]
    manifest_uri: str
    drm_systems: list[str] | None = None
    scheme: Literal["cenc", "cbcs"] | None = None
    key_ids: list[str] | None = Field(default=None, description="Key IDs only, never keys.")
    tracks: list[PackageTrack] | None = None


class DistributionQuarantine(KubeModel):
    """An action on one target that failed: held back until retryAt (exponential backoff), then tried
    again; the rest of the namespace's actions keep flowing meanwhile."""

    action: Literal["publish", "takedown"]
    attempts: int = Field(ge=1, description="Failed attempts in a row")
    error: str = Field(max_length=1024, description="The worker's words for the last failure")
    since: datetime = Field(description="The first failure of this run of failures")
    retry_at: datetime


class DistributionStatus(KubeModel):
    """Where the asset is (or was last) delivered: one entry per distribution target."""

    target: str
    window: str
    channel: str
    territories: list[str]
    state: Literal["Published", "TakenDown", "Pending", "Failed"]
    since: datetime | None = None
    origin: str | None = None
    quarantine: DistributionQuarantine | None = None


class StorageCopy(KubeModel):
    """One verified copy of the archived set (master, sidecar, preservation master) at one location."""

    location: str
    uri: str
    endpoint: str | None = Field(default=None, description="The location's S3 endpoint (None: the default)")
    credentials_secret: str | None = Field(default=None, description="Name of the Secret with its credentials")
    storage_class: str | None = None
    site: str | None = None
    offsite: bool = False
    verified_at: datetime | None = None
    verified_by: Literal["s3-checksum", "s3-etag", "read-back", "recorded", "fixity"] | None = None


class RestoreStatus(KubeModel):
    request: str = Field(description="The kubemam.io/restore annotation value this answers")
    state: Literal["Restoring", "Restored", "Failed"]
    requested_at: datetime | None = None
    from_location: str | None = None
    estimated_completion: datetime | None = None
    completed_at: datetime | None = None
    message: str | None = Field(default=None, max_length=1024)


class FixityStatus(KubeModel):
    last_run: datetime | None = None
    last_slot: datetime | None = Field(default=None, description="The scheduled time the last run answered")
    last_request: str | None = Field(default=None, description="The kubemam.io/fixity-check value last answered")
    copies_checked: int | None = Field(default=None, ge=0)
    failures: int | None = Field(default=None, ge=0, description="Copies found bad so far (each was repaired)")
    last_repair: str | None = Field(default=None, max_length=1024)
    report_uri: str | None = None


class PreservationMaster(KubeModel):
    uri: str
    sha256: str
    size: int = Field(ge=0)
    codec: str = "ffv1"
    frames: int | None = Field(default=None, ge=0)
    verified: bool = False


class StorageStatus(KubeModel):
    """Where the archived set lives, per the asset's ArchivePolicy."""

    tier: str | None = None
    copies: list[StorageCopy] | None = None
    min_copies: int | None = Field(default=None, ge=0)
    ingested_at: datetime | None = None
    last_used_at: datetime | None = Field(default=None, description="Last publish or restore")
    archived_at: datetime | None = Field(default=None, description="First verified archive")
    retain_until: datetime | None = Field(default=None, description="Ingest time + the policy's retention.days")
    sidecar_uri: str | None = None
    restore: RestoreStatus | None = None
    fixity: FixityStatus | None = None
    preservation_master: PreservationMaster | None = None
    legal_hold: LegalHoldStatus | None = None
    extra_copies: ExtraCopies | None = None


class Progress(KubeModel):
    step: str
    percent: int = Field(ge=0, le=100)
    fps: float | None = Field(default=None, ge=0)
    eta_seconds: int | None = Field(default=None, ge=0)
    updated_at: datetime | None = None


class StepJob(KubeModel):
    """The Job that ran (or runs) one step, and how it ended."""

    step: str
    name: str
    input_hash: str
    state: Literal["Pending", "Running", "Succeeded", "Failed"]
    message: str | None = Field(default=None, max_length=4096)
    attempt: StepAttempt | None = None  # None: the first run of these inputs
    finished_at: datetime | None = None
    retryable: bool | None = Field(default=None, description="Failed for a transient reason: re-run with backoff")


class MediaAssetStatus(KubeModel):
    phase: AssetPhase | None = None
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] | None = conditions_field()
    technical: TechnicalMetadata | None = None
    qc: QCResult | None = None
    qc_approval: QCApproval | None = Field(default=None, description="The sign-off that lets a title whose QC "
                                           "failed be published (Publishable=True QCApproved)")
    previews: Previews | None = None
    renditions: list[RenditionStatus] | None = None
    packages: list[PackageStatus] | None = None
    distribution: list[DistributionStatus] | None = None
    storage: StorageStatus | None = None
    progress: Progress | None = None
    jobs: list[StepJob] | None = None
