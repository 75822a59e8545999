"""ArchivePolicy: storage lifecycle as code — tiers, 3-2-1 copies, fixity, retention, restore."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from kubemam.api.common import DNS_LABEL, Condition, KubeModel, SecretKeyReference, cel, validated_by

StorageClass = Literal[
    "STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE",
    "REDUCED_REDUNDANCY",
]


class Location(KubeModel):
    """A place copies live: one S3 bucket and prefix, on one site."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    uri: str = Field(max_length=2048, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
    endpoint: str | None = Field(default=None, max_length=2048, pattern=r"^https?://.+$",
                                 description="S3 endpoint of this site; the operator's default when unset.")
    credentials_secret_ref: SecretKeyReference | None = None
    site: str | None = Field(default=None, max_length=63,
                             description="Failure domain; distinct sites count as distinct kinds.")
    offsite: bool = False
    object_lock: bool = Field(default=False, description="Use S3 Object Lock for retention where supported.")


class Transition(KubeModel):
    # Fractions of a day are allowed (0.5 = 12 h): short-lived content and tests move within hours.
    after_days: float = Field(ge=0, le=36500)
    since: Literal["ingest", "lastUse"] = "ingest"


class Tier(KubeModel):
    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    location: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    storage_class: StorageClass = "STANDARD"
    transition: Transition | None = Field(default=None,
                                          description="When content moves into this tier; none for the first.")


class Copies(KubeModel):
    min_copies: int = Field(default=3, ge=1, le=10)
    require_offsite: bool = True


class Fixity(KubeModel):
    schedule: str = Field(default="@weekly", max_length=128,
                          pattern=r"^(@(hourly|daily|weekly|monthly|yearly)|(\S+\s+){4}\S+)$")
    algorithm: Literal["sha256"] = "sha256"


class Retention(KubeModel):
    days: int = Field(default=0, ge=0, le=36500)
    legal_hold: bool = False
    mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"


class Migration(KubeModel):
    enabled: bool = False
    target: Literal["ffv1-mkv"] = "ffv1-mkv"


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

    locations: list[Location] = Field(min_length=1, max_length=16)
    tiers: list[Tier] = Field(min_length=1, max_length=8)
    copies: Copies | None = None
    fixity: Fixity | None = None
    retention: Retention | None = None
    sidecar: Literal["ebucore", "none"] = "ebucore"
    formats_at_risk: list[str] | None = Field(default=None, max_length=64, json_schema_extra={
        "items": {"type": "string", "maxLength": 64}, "x-kubernetes-list-type": "set"})
    migration: Migration | None = None


class ArchivePolicyStatus(KubeModel):
    phase: Literal["Active", "Invalid"] | None = None
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] | None = None
    assets_covered: int | None = Field(default=None, ge=0)
    under_replicated: int | None = Field(default=None, ge=0)
    last_fixity_run: datetime | None = None
