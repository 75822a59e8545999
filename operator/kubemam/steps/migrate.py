"""The migrate step's input and result: an FFV1/Matroska preservation master of a master at risk."""

from __future__ import annotations

from typing import Literal

from kubemam.api.asset import PreservationMaster
from kubemam.steps.base import AttemptedInput, StepResult


class MigrateInput(AttemptedInput):
    source: str
    sha256: str | None = None
    target: Literal["ffv1-mkv"] = "ffv1-mkv"
    output: str


class MigrateResult(StepResult):
    preservation_master: PreservationMaster | None = None
    manifest: str | None = None
