"""RightsWindow: a licence grant for assets, territories and channels over a time range."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, Field, field_validator

from kubemam.api.common import DNS_SUBDOMAIN, Condition, KubeModel, LabelSelector, cel, conditions_field, validated_by
from kubemam.api.territories import ISO3166_ALPHA2, known_territories

Channel = Literal["svod", "avod", "tvod", "est", "fast", "broadcast", "catchup"]


class AssetSelection(KubeModel):
    model_config = validated_by(
        cel(
            "(has(self.names) && size(self.names) > 0) || has(self.selector)",
            "select assets by names or by selector",
        )
    )

    names: list[str] | None = Field(default=None, max_length=1000, json_schema_extra={
        "items": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN}, "x-kubernetes-list-type": "set"},
        description="MediaAssets licensed by name.")
    selector: LabelSelector | None = Field(default=None, description="MediaAssets licensed by label (a series, "
                                           "a licence tag); with names, either matches.")


class RightsWindowSpec(KubeModel):
    model_config = validated_by(
        cel("self.end > self.start", "end must be after start", ".end"),
    )

    assets: AssetSelection = Field(description="Which MediaAssets of the namespace the licence covers.")
    territories: list[str] = Field(
        min_length=1,
        max_length=len(ISO3166_ALPHA2),
        description="ISO 3166-1 alpha-2 country codes.",
        json_schema_extra={"items": {"type": "string", "enum": list(ISO3166_ALPHA2)}, "x-kubernetes-list-type": "set"},
    )
    channels: list[Channel] = Field(min_length=1, max_length=7, json_schema_extra={
        "x-kubernetes-list-type": "set"}, description="Channels licensed; a distribution target serves one.")
    # A time without a zone is refused: a licence ends at one instant everywhere.
    start: AwareDatetime = Field(description="When the licence opens: RFC 3339 with a zone; published then.")
    end: AwareDatetime = Field(description="When it closes (after start): taken down from every target then.")
    exclusive: bool = Field(default=False, description="No other window may license the same asset, channel "
                            "and territory at the same time; an overlap is a Conflict and neither publishes it.")
    _known_territories = field_validator("territories")(known_territories)

    licensor: str | None = Field(default=None, max_length=256, description="Who grants the licence (for the "
                                 "usage report).")
    contract_id: str | None = Field(default=None, max_length=128, description="The contract the window comes "
                                    "from (for the usage report).")


WindowPhase = Literal["Scheduled", "Open", "Closed"]


class HistoryEntry(KubeModel):
    at: datetime
    action: Literal["Published", "TakenDown"]
    asset: str
    channel: str
    territories: list[str]
    target: str | None = None
    verified: bool = False


class RightsWindowStatus(KubeModel):
    phase: WindowPhase | None = None
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] | None = conditions_field()
    matched_assets: int | None = Field(default=None, ge=0)
    next_transition: datetime | None = None
    history: list[HistoryEntry] | None = Field(
        default=None, max_length=100,
        description="The newest verified publishes and takedowns (at most 100 entries and 64 KiB). The whole "
                    "history is in the usage records of the library (<library>/usage/<namespace>/), which "
                    "`kubemam report usage` reads.")
