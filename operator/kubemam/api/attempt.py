"""A step's attempt number: its own module so a worker reads its input without the asset's whole schema."""

from __future__ import annotations

from pydantic import Field

from kubemam.api.common import KubeModel


class StepAttempt(KubeModel):
    """Why a step runs again with the same inputs; part of its input, so each attempt is a Job of its own."""

    number: int = Field(ge=2, description="2 is the first re-run of these inputs")
    retry: str | None = Field(default=None, max_length=253,
                              description="The steps.kubemam.io/retry token that asked for a run after a failure")
    recover: bool | None = Field(default=None, description="The previous run succeeded but its result was not "
                                 "read: report the committed one")
