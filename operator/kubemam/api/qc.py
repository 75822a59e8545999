"""QCPolicy: the thresholds technical QC judges a master against (broadcast EBU R128 by default)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubemam.api.common import KubeModel

QCCheck = Literal["black", "freeze", "loudness", "truePeak", "decode", "markers", "frameRate"]

# What fails a master for broadcast delivery; black and freeze are often intended (fades, stills).
DEFAULT_FAIL_ON: list[QCCheck] = ["loudness", "truePeak", "decode", "markers", "frameRate"]


class QCPolicy(KubeModel):
    target_lufs: float = Field(default=-23.0, ge=-40, le=-5, description="Integrated loudness target (EBU R128: -23).")
    tolerance_lu: float = Field(default=1.0, ge=0.1, le=10, description="Allowed deviation from targetLufs, LU.")
    max_true_peak_dbtp: float = Field(default=-1.0, ge=-9, le=0, description="Highest allowed true peak, dBTP.")
    black_min_seconds: float = Field(default=0.1, ge=0.04, le=60, description="Shorter black is not reported.")
    black_pixel_threshold: float = Field(default=0.10, ge=0, le=1, description="Luma below which a pixel counts "
                                         "as black (0-1 of the range).")
    freeze_min_seconds: float = Field(default=0.5, ge=0.08, le=600, description="Shorter frozen picture is not "
                                      "reported.")
    freeze_noise_db: float = Field(default=-60.0, ge=-90, le=0, description="Noise tolerance between frames that "
                                   "still counts as frozen, dB.")
    fail_on: list[QCCheck] = Field(
        default_factory=lambda: list(DEFAULT_FAIL_ON), max_length=7,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Checks whose findings fail QC; findings of the other checks are warnings.")
