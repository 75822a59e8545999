"""The archive worker's input: what the planner asks of one `kubemam worker archive` run.

One model on both sides of the Job, so the planner and the worker cannot disagree on a field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ArchiveMode = Literal["place", "vacate", "fixity", "purge"]
# The purge's error starts with this when a legal hold kubemam did not set keeps a version: the operator
# shows it as Deletable=False ForeignLegalHold instead of a failure to retry every minute.
FOREIGN_HOLD = "a legal hold kubemam did not set"


class _Input(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class LocationInput(_Input):
    name: str
    uri: str = Field(description="This asset's prefix at the location: <location uri>/<namespace>/<asset>")
    endpoint: str | None = None  # None: the worker's default endpoint (AWS_ENDPOINT_URL, else AWS)
    credentials: str | None = None  # env prefix: <prefix>_ACCESS_KEY_ID / _SECRET_ACCESS_KEY; None: AWS_*
    site: str | None = None
    offsite: bool = False
    object_lock: bool = False


class ObjectInput(_Input):
    key: str = Field(description="Key below each location's asset prefix")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    source: str | None = Field(default=None, description="Where it can be read when no location holds it")
    content: str | None = Field(default=None, description="Small text written as is (the EBUCore sidecar)")
    content_type: str = "application/octet-stream"
    lock: bool = Field(default=False, description="Under Object Lock retention and legal hold where supported")


class TargetInput(_Input):
    location: str
    storage_class: str
    primary: bool = False


class ArchiveInputs(_Input):
    mode: ArchiveMode
    tier: str | None = None
    since: datetime | None = Field(default=None, description="place: when the asset entered this tier; "
                                   "returning to a tier later is a new run, not the old one's result")
    objects: list[ObjectInput] = Field(default_factory=list)
    locations: list[LocationInput] = Field(description="Every location of the policy: where copies may be")
    targets: list[TargetInput] = Field(default_factory=list, description="place: where copies must be; "
                                       "fixity: the copies to re-hash")
    vacate: list[str] = Field(default_factory=list, description="vacate: locations emptied once every target "
                              "copy reads back intact (a place run never deletes)")
    retain_until: datetime | None = None
    retention_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"
    legal_hold: bool = Field(default=False, description="kubemam's legal hold on locked copies; False releases "
                             "only the holds kubemam set (tagged kubemam-legal-hold), never another's")
    hold_since: datetime | None = Field(default=None, description="place: when the asset's hold was last asked "
                                        "or lifted, so a lifted hold is a new run that releases kubemam's holds")
    report: str | None = Field(default=None, description="fixity: where the run's report is written")
    run: str | None = Field(default=None, description="fixity: the scheduled slot or request it answers; "
                            "place: a poll round while a cold copy is being restored")

    def location(self, name: str) -> LocationInput:
        return next(loc for loc in self.locations if loc.name == name)
