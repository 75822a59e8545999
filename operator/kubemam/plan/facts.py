"""What the asset controller gathers for the planners: plain facts, no API objects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubemam.api.archive import ArchivePolicySpec
from kubemam.api.asset import MediaAssetSpec, MediaAssetStatus, StepJob
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.archive.ebucore import RightsSummary
from kubemam.config import OperatorConfig
from kubemam.plan.jobs import Owner, StepJobRequest
from kubemam.plan.jobstate import JobObservation
from kubemam.plan.qcgate import ApprovalRequest
from kubemam.plan.stepjob import Retries, StepRun, run_step


@dataclass(frozen=True)
class AssetFacts:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: MediaAssetSpec
    status: MediaAssetStatus
    ladder_found: bool | None  # None: the asset names no ladder
    archive_policy_found: bool | None
    jobs: list[JobObservation] = field(default_factory=list)
    progress: dict[str, Any] | None = None  # the running step's newest progress record
    ladder: TranscodeLadderSpec | None = None  # the named ladder, when it exists and validates
    archive_policy: ArchivePolicySpec | None = None  # the named policy, when it exists and validates
    annotations: dict[str, str] = field(default_factory=dict)
    rights: list[RightsSummary] = field(default_factory=list)  # the windows covering the asset
    s3_secret_problem: str | None = None  # the S3 credentials Secret the Jobs name is missing or incomplete
    key_secret_problem: str | None = None  # a content-key Secret name is held by a Secret not this asset's
    job_refused: str | None = None  # the API server refused a step Job (RBAC, an admission policy): its words
    qc_approval: ApprovalRequest | None = None  # the qc.kubemam.io/approved annotation and who wrote it

    @property
    def owner(self) -> Owner:
        return Owner("MediaAsset", self.name, self.uid, self.namespace)

    @property
    def finished(self) -> list[StepJob]:
        return list(self.status.jobs or [])

    def root(self, config: OperatorConfig) -> str:
        """Where this asset's step outputs live in the library."""
        return f"{config.library_uri.rstrip('/')}/assets/{self.namespace}/{self.name}"

    def run(self, request: StepJobRequest, config: OperatorConfig, retries: Retries, start: bool = True,
            has_result: Callable[[JobObservation], bool] = lambda _: True) -> StepRun:
        """The request's current attempt (plan/stepjob.py): transient failures and lost results re-run."""
        return run_step(request, self.jobs, self.finished, config, start, retries, has_result)
