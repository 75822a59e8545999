"""The four kinds kubemam serves: names, models and the columns kubectl prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from kubemam.api.archive import ArchivePolicySpec, ArchivePolicyStatus
from kubemam.api.asset import MediaAssetSpec, MediaAssetStatus
from kubemam.api.common import GROUP
from kubemam.api.ladder import TranscodeLadderSpec, TranscodeLadderStatus
from kubemam.api.rights import RightsWindowSpec, RightsWindowStatus

CATEGORY = "kubemam"

READY_COLUMN: dict[str, Any] = {
    "name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'}
REASON_COLUMN: dict[str, Any] = {"name": "Reason", "type": "string", "priority": 1,
                 "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'}
PHASE_COLUMN: dict[str, Any] = {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}
AGE_COLUMN: dict[str, Any] = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_name: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


MEDIA_ASSET = Kind(
    "MediaAsset", "mediaassets", "ma", MediaAssetSpec, MediaAssetStatus,
    [
        READY_COLUMN,
        PHASE_COLUMN,
        {"name": "Progress", "type": "integer", "jsonPath": ".status.progress.percent"},
        {"name": "Step", "type": "string", "jsonPath": ".status.progress.step", "priority": 1},
        {"name": "Ladder", "type": "string", "jsonPath": ".spec.ladderRef.name", "priority": 1},
        REASON_COLUMN,
        AGE_COLUMN,
    ],
)
TRANSCODE_LADDER = Kind(
    "TranscodeLadder", "transcodeladders", "tl", TranscodeLadderSpec, TranscodeLadderStatus,
    [
        READY_COLUMN,
        PHASE_COLUMN,
        {"name": "Renditions", "type": "integer", "jsonPath": ".status.renditionCount"},
        {"name": "Segment", "type": "integer", "jsonPath": ".spec.segmentDurationSeconds", "priority": 1},
        REASON_COLUMN,
        AGE_COLUMN,
    ],
)
RIGHTS_WINDOW = Kind(
    "RightsWindow", "rightswindows", "rw", RightsWindowSpec, RightsWindowStatus,
    [
        READY_COLUMN,
        PHASE_COLUMN,
        {"name": "Start", "type": "string", "format": "date-time", "jsonPath": ".spec.start"},
        {"name": "End", "type": "string", "format": "date-time", "jsonPath": ".spec.end"},
        {"name": "Assets", "type": "integer", "jsonPath": ".status.matchedAssets", "priority": 1},
        REASON_COLUMN,
        AGE_COLUMN,
    ],
)
ARCHIVE_POLICY = Kind(
    "ArchivePolicy", "archivepolicies", "ap", ArchivePolicySpec, ArchivePolicyStatus,
    [
        READY_COLUMN,
        PHASE_COLUMN,
        {"name": "MinCopies", "type": "integer", "jsonPath": ".spec.copies.minCopies"},
        {"name": "Assets", "type": "integer", "jsonPath": ".status.assetsCovered", "priority": 1},
        REASON_COLUMN,
        AGE_COLUMN,
    ],
)

ALL_KINDS: tuple[Kind, ...] = (MEDIA_ASSET, TRANSCODE_LADDER, RIGHTS_WINDOW, ARCHIVE_POLICY)
