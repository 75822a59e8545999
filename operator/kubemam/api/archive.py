"""ArchivePolicy: storage lifecycle as code — tiers, 3-2-1 copies, fixity, retention, restore."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from kubemam.api.common import DNS_LABEL, Condition, KubeModel, SecretKeyReference, cel, conditions_field, validated_by

StorageClass = Literal[
    "STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE",
    "REDUCED_REDUNDANCY",
]


class Location(KubeModel):
    """A place copies live: one S3 bucket and prefix, on one site."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="The location's name, used by "
                      "tiers.")
    uri: str = Field(max_length=2048, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
                     description="Bucket and prefix; an asset's copies go under <uri>/<namespace>/<asset>/.")
    endpoint: str | None = Field(default=None, max_length=2048, pattern=r"^https?://.+$",
                                 description="S3 endpoint of this site; the operator's default when unset.")
    credentials_secret_ref: SecretKeyReference | None = Field(default=None, description="A Secret with "
                                                              "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for "
                                                              "this site; the operator's S3 Secret when unset.")
    site: str | None = Field(default=None, max_length=63,
                             description="Failure domain; distinct sites count as distinct kinds.")
    offsite: bool = Field(default=False, description="Away from the primary site (the 1 of 3-2-1).")
    object_lock: bool = Field(default=False, description="Use S3 Object Lock for retention where supported.")


class Transition(KubeModel):
    # Fractions of a day are allowed (0.5 = 12 h): short-lived content and tests move within hours.
    after_days: float = Field(ge=0, le=36500, description="Days (fractions allowed) before content moves into "
                              "the tier.")
    since: Literal["ingest", "lastUse"] = Field(default="ingest", description="Counted from ingest, or from the "
                                                "last use (a publish or a restore).")


class Tier(KubeModel):
    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="The tier's name (hot, warm, "
                      "cold, …).")
    location: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="The location the "
                          "primary copy lives at in this tier.")
    storage_class: StorageClass = Field(default="STANDARD", description="The S3 storage class of the tier's "
                                        "copies.")
    transition: Transition | None = Field(default=None,
                                          description="When content moves into this tier; none for the first.")


class Copies(KubeModel):
    min_copies: int = Field(default=3, ge=1, le=10, description="Verified copies to keep, across locations.")
    require_offsite: bool = Field(default=True, description="One of them at an offsite location.")
    # Fractions allowed (0.01 h = 36 s): tests and short-lived content shrink it.
    vacate_after_hours: float = Field(default=24, ge=0, le=8760, description=(
        "Copies a policy edit no longer needs (a lowered minCopies, a location no tier or replica uses) are "
        "kept this long before they are deleted; the archive.kubemam.io/confirm-vacate annotation deletes "
        "them sooner. Tier moves are not delayed."))


class Fixity(KubeModel):
    schedule: str = Field(default="@weekly", max_length=128,
                          pattern=r"^(@(hourly|daily|weekly|monthly|yearly)|(\S+\s+){4}\S+)$",
                          description="Cron (five fields, UTC) or @hourly…@yearly; only the latest missed run runs.")
    algorithm: Literal["sha256"] = Field(default="sha256", description="The digest every copy is re-hashed with.")


class Retention(KubeModel):
    days: int = Field(default=0, ge=0, le=36500, description="Keep every copy this many days after ingest "
                      "(S3 Object Lock retention where the location has objectLock); deletion waits.")
    legal_hold: bool = Field(default=False, description="Hold every copy until this is lifted (Object Lock "
                             "legal hold); deletion waits.")
    mode: Literal["GOVERNANCE", "COMPLIANCE"] = Field(default="GOVERNANCE", description="Object Lock mode: "
                                                      "COMPLIANCE cannot be shortened by anyone.")


class Migration(KubeModel):
    enabled: bool = Field(default=False, description="Write a preservation master for masters in a format at "
                          "risk.")
    target: Literal["ffv1-mkv"] = Field(default="ffv1-mkv", description="FFV1 version 3 in Matroska, verified "
                                        "frame by frame against the original.")


class ArchivePolicySpec(KubeModel):
    model_config = validated_by(
        cel(
            "self.locations.all(l, self.locations.exists_one(m, m.name == l.name))",
            "location names must be unique",
            ".locations",
        ),
        cel(
            "self.tiers.all(t, self.tiers.exists_one(u, u.name == t.name))",
            "tier names must be unique",
            ".tiers",
        ),
        cel(
            "self.tiers.all(t, self.locations.exists(l, l.name == t.location))",
            "every tier must name one of the policy's locations",
            ".tiers",
        ),
        cel(
            "!has(self.copies) || self.copies.minCopies <= size(self.locations)",
            "copies.minCopies exceeds the number of locations",
            ".copies.minCopies",
        ),
        cel(
            "!has(self.copies) || !self.copies.requireOffsite || self.locations.exists(l, l.offsite)",
            "copies.requireOffsite needs at least one location with offsite: true",
            ".copies.requireOffsite",
        ),
    )

    locations: list[Location] = Field(min_length=1, max_length=16, description="Where copies may live.")
    tiers: list[Tier] = Field(min_length=1, max_length=8, description="The lifecycle, first (hot) tier first; "
                              "each later tier needs a transition later than the one before.")
    copies: Copies | None = Field(default=None, description="How many verified copies, and where.")
    fixity: Fixity | None = Field(default=None, description="When every copy is re-hashed and repaired.")
    retention: Retention | None = Field(default=None, description="Retention and legal hold.")
    sidecar: Literal["ebucore", "none"] = Field(default="ebucore", description="Metadata written beside every "
                                                "copy: an EBUCore XML sidecar, or none.")
    formats_at_risk: list[str] | None = Field(default=None, max_length=64, json_schema_extra={
        "items": {"type": "string", "maxLength": 64}, "x-kubernetes-list-type": "set"},
        description="ffprobe codec names (mpeg2video, dvvideo, …) that make a master MigrationRecommended.")
    migration: Migration | None = Field(default=None, description="Preservation masters for formats at risk.")


class ArchivePolicyStatus(KubeModel):
    phase: Literal["Active", "Invalid"] | None = None
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] | None = conditions_field()
    assets_covered: int | None = Field(default=None, ge=0)
    under_replicated: int | None = Field(default=None, ge=0)
    last_fixity_run: datetime | None = None


class ExtraCopies(KubeModel):
    """Copies the policy no longer needs after an edit, kept for copies.vacateAfterHours."""

    locations: list[str] = Field(max_length=32, json_schema_extra={"items": {"type": "string", "maxLength": 63}})
    since: datetime = Field(description="When the planner first saw them no longer needed")
    vacate_after: datetime = Field(description="They are deleted after this")
    token: str = Field(max_length=16, description="archive.kubemam.io/confirm-vacate=<token> deletes them now")


class LegalHoldStatus(KubeModel):
    """The asset's legal hold as kubemam applies it, and the holds someone else set."""

    held: bool = Field(description="The policy's retention.legalHold or the asset's annotation asks for a hold")
    since: datetime | None = Field(default=None, description="When the hold was last asked or lifted")
    foreign: list[str] | None = Field(default=None, max_length=16, description=(
        "Versions (location:key@version) under a legal hold kubemam did not set: kubemam never lifts them"),
        json_schema_extra={"items": {"type": "string", "maxLength": 1200}})
