"""The ingest step's input and result."""

from __future__ import annotations

from kubemam.api.asset import Marker, Previews, QCResult, Source, TechnicalMetadata, Timeline
from kubemam.api.ladder import Thumbnails
from kubemam.api.qc import QCPolicy
from kubemam.steps.base import StepInput, StepResult


class IngestInput(StepInput):
    source: Source
    output: str  # <library>/assets/<ns>/<asset>/ingest; the worker commits under <output>/<inputhash16>/
    timeline: Timeline | None = None
    markers: list[Marker] | None = None
    qc: QCPolicy | None = None  # None: EBU R128 defaults
    thumbnails: Thumbnails | None = None


class IngestResult(StepResult):
    technical: TechnicalMetadata | None = None
    qc: QCResult | None = None
    previews: Previews | None = None
    manifest: str | None = None
