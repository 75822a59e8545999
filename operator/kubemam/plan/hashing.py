"""Deterministic hashes of a step's inputs, and the child names built from them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Kubernetes copies a Job's name into the job-name label of its pods: 63 characters at most.
MAX_JOB_NAME = 63


def input_hash(inputs: Any) -> str:
    """sha256 of the canonical JSON of inputs: same inputs, same hash, on every machine."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def step_job_name(asset: str, step: str, digest: str) -> str:
    """`<asset>-<step>-<hash8>`; a long asset name is cut, and the cut is itself hashed in."""
    suffix = f"-{step}-{digest[:8]}"
    if len(asset) + len(suffix) <= MAX_JOB_NAME:
        return asset + suffix
    # Two long names sharing a prefix must not collide: keep 5 hex of the full asset name.
    keep = MAX_JOB_NAME - len(suffix) - 6
    return f"{asset[:keep].rstrip('-.')}-{hashlib.sha256(asset.encode()).hexdigest()[:5]}{suffix}"
