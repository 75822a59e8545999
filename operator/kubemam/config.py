"""Operator settings, read once from the environment (KUBEMAM_*), validated by pydantic."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from kubemam import __version__


class OperatorConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    worker_image: str = Field(default=f"ghcr.io/kubemam/worker:{__version__}", min_length=1)
    image_pull_policy: str = Field(default="IfNotPresent", pattern=r"^(Always|IfNotPresent|Never)$")
    worker_service_account: str | None = Field(default=None, description="ServiceAccount the step pods run as.")
    s3_endpoint: str | None = Field(default=None, description="S3 endpoint for s3:// URIs; AWS when unset.")
    s3_credentials_secret: str | None = Field(
        default=None, description="Secret in the asset's namespace with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."
    )
    library_uri: str = Field(default="s3://kubemam-library", pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
                             description="Where step outputs are committed: <library>/assets/<ns>/<asset>/<step>/")
    job_backoff_limit: int = Field(default=3, ge=0, le=20)
    job_active_deadline_seconds: int | None = Field(
        default=None, ge=60, description="Overrides every step's own deadline (steps/registry.py) when set.")
    recheck_seconds: float = Field(default=60.0, gt=0, description="Safety-net re-reconcile of assets not Ready.")
    archive_check_seconds: float = Field(default=120.0, gt=0, description="How often archived assets are "
                                         "re-planned: tier transitions and fixity slots are met this closely.")


ENV_FIELDS = {
    "worker_image": "KUBEMAM_WORKER_IMAGE",
    "image_pull_policy": "KUBEMAM_IMAGE_PULL_POLICY",
    "worker_service_account": "KUBEMAM_WORKER_SERVICE_ACCOUNT",
    "s3_endpoint": "KUBEMAM_S3_ENDPOINT",
    "s3_credentials_secret": "KUBEMAM_S3_CREDENTIALS_SECRET",
    "library_uri": "KUBEMAM_LIBRARY_URI",
    "job_backoff_limit": "KUBEMAM_JOB_BACKOFF_LIMIT",
    "job_active_deadline_seconds": "KUBEMAM_JOB_ACTIVE_DEADLINE_SECONDS",
    "recheck_seconds": "KUBEMAM_RECHECK_SECONDS",
    "archive_check_seconds": "KUBEMAM_ARCHIVE_CHECK_SECONDS",
}


def load(environ: Mapping[str, str] | None = None) -> OperatorConfig:
    env = os.environ if environ is None else environ
    values = {field: env[var] for field, var in ENV_FIELDS.items() if env.get(var)}
    return OperatorConfig.model_validate(values)
