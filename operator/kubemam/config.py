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
    step_retry_seconds: float = Field(default=30.0, gt=0, description="Backoff before the first re-run of a step "
                                      "Job that failed for a transient reason; it doubles with every attempt.")
    step_retry_max_seconds: float = Field(default=1800.0, gt=0, description="The longest backoff between attempts.")
    s3_retry_seconds: float | None = Field(default=None, ge=0, description="How long a step pod waits for S3 to "
                                           "answer before it fails (the workers' default is 60 s); passed on to "
                                           "every step Job when set.")
    archive_check_seconds: float = Field(default=3600.0, gt=0, description="A safety net: how often every "
                                         "archived asset is re-planned anyway. Tier transitions, fixity slots and "
                                         "the end of a grace are met to the second by the asset clock.")
    api_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Every Kubernetes API call: connecting (and the TLS handshake) must take "
        "no longer; a call that does fails, and its handler or reconcile is retried with backoff.")
    api_read_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Every Kubernetes API call: the longest wait for an answer (a connection "
        "accepted but never answered fails here instead of hanging forever).")
    rights_workers: int = Field(default=4, ge=1, le=64, description="Threads that run namespaces' rights "
                                "reconciles: one namespace's blocked reconcile leaves the others to these.")
    rights_retry_max_seconds: float = Field(
        default=30.0, ge=1, description="A failed rights reconcile is retried after 1 s, doubling up to this "
        "(per namespace, reset by a success); 30 keeps recovery after an outage inside 60 s.")
    distribution_retry_max_seconds: float = Field(
        default=60.0, ge=1, description="Longest wait before a failed distribution action is tried again (a "
        "quarantined (asset, target) pair, or a batch that failed whole): 2, 4, 8 … seconds up to this.")
    takedown_lead_seconds: float = Field(
        default=15.0, ge=0, le=300, description="Takedowns that fall due at a window's end are armed this long "
        "before it: their Job is created and its pod lists the origins ahead, then deletes on the second. "
        "A licence changed within this lead cancels the armed Job. 0: takedowns start at the end.")
    stuck_seconds: float = Field(
        default=300.0, gt=0, description="Liveness: a rights reconcile, a metrics sweep or a Kopf handler "
        "thread busy longer than this (or a clock thread silent as long) fails /healthz, so the pod restarts.")


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
    "step_retry_seconds": "KUBEMAM_STEP_RETRY_SECONDS",
    "step_retry_max_seconds": "KUBEMAM_STEP_RETRY_MAX_SECONDS",
    "s3_retry_seconds": "KUBEMAM_S3_RETRY_SECONDS",
    "archive_check_seconds": "KUBEMAM_ARCHIVE_CHECK_SECONDS",
    "api_connect_timeout_seconds": "KUBEMAM_API_CONNECT_TIMEOUT_SECONDS",
    "api_read_timeout_seconds": "KUBEMAM_API_READ_TIMEOUT_SECONDS",
    "rights_workers": "KUBEMAM_RIGHTS_WORKERS",
    "rights_retry_max_seconds": "KUBEMAM_RIGHTS_RETRY_MAX_SECONDS",
    "stuck_seconds": "KUBEMAM_STUCK_SECONDS",
    "distribution_retry_max_seconds": "KUBEMAM_DISTRIBUTION_RETRY_MAX_SECONDS",
    "takedown_lead_seconds": "KUBEMAM_TAKEDOWN_LEAD_SECONDS",
}


def load(environ: Mapping[str, str] | None = None) -> OperatorConfig:
    env = os.environ if environ is None else environ
    values = {field: env[var] for field, var in ENV_FIELDS.items() if env.get(var)}
    return OperatorConfig.model_validate(values)
