"""The worker side of the Job contract: the input from the environment, the result to the
termination message (small JSON), failures as a clear message and a non-zero exit."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubemam.plan import staging
from kubemam.plan.hashing import input_hash
from kubemam.plan.jobs import STEP_INPUT_ENV
from kubemam.steps.base import MAX_MESSAGE as MAX_MESSAGE  # what Kubernetes keeps of a termination message
from kubemam.steps.base import work_inputs

TERMINATION_PATH_ENV = "KUBEMAM_TERMINATION_MESSAGE_PATH"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


class StepError(RuntimeError):
    """A failure the step explains itself; retrying the same input will not help."""


def staged_file(path: str, sha256: str | None, what: str) -> str:
    """A file the operator staged (plan/staging.py), checked against the digest the Job carries: a
    ConfigMap edited or swapped behind the Job must not run as the input the Job was named after."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise StepError(f"{what}: cannot read the staged file {path}: {err}") from err
    if sha256 is not None and staging.sha256(text) != sha256:
        raise StepError(f"{what}: the staged file {path} has sha256 {staging.sha256(text)}, the Job expects {sha256}")
    return text


def staged_path(name: str) -> str:
    """Where a file staged beside the input is mounted (KUBEMAM_STAGED_DIR, set by the Job)."""
    folder = os.environ.get(staging.STAGED_DIR_ENV)
    if not folder:
        raise StepError(f"{staging.STAGED_DIR_ENV} is not set: the Job staged no files, yet the input names {name}")
    return f"{folder.rstrip('/')}/{name}"


def step_input() -> dict[str, Any]:
    """The input: inline in KUBEMAM_STEP_INPUT, or staged (KUBEMAM_STEP_INPUT_FILE, its sha256 verified)."""
    raw = os.environ.get(STEP_INPUT_ENV)
    staged = os.environ.get(staging.INPUT_FILE_ENV)
    if not raw and staged:
        digest_ = os.environ.get(staging.INPUT_SHA256_ENV)
        if not digest_:
            raise StepError(f"{staging.INPUT_SHA256_ENV} is not set: a staged input is verified against it")
        raw = staged_file(staged, digest_, "step input")
    if not raw:
        raise StepError(f"{STEP_INPUT_ENV} is not set: a step reads its whole input from it "
                        f"(or from the file {staging.INPUT_FILE_ENV} names)")
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise StepError(f"{STEP_INPUT_ENV} is not JSON: {err}") from err
    if not isinstance(value, dict):
        raise StepError(f"{STEP_INPUT_ENV} must be a JSON object")
    return value


def digest(inputs: dict[str, Any]) -> str:
    """The hash of the work the inputs ask for: a re-run (another attempt) finds what the first one committed."""
    return input_hash(work_inputs(inputs))


def work_dir() -> Path:
    path = Path(os.environ.get("TMPDIR") or "/tmp") / "kubemam-step"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _text(result: dict[str, Any]) -> str:
    return json.dumps(result, separators=(",", ":"), sort_keys=True)


def write_result(result: dict[str, Any],
                 shrink: Callable[[dict[str, Any], int], dict[str, Any]] | None = None) -> None:
    """The result as a termination message; it must stay under Kubernetes' 4 KiB. A step whose result can
    outgrow it passes `shrink`, which returns the compact form (the whole result stays in its manifest)."""
    text = _text(result)
    if len(text.encode()) > MAX_MESSAGE and shrink is not None:
        text = _text(shrink(result, MAX_MESSAGE))
    if len(text.encode()) > MAX_MESSAGE:
        raise ValueError(f"step result is {len(text.encode())} bytes; the termination message keeps {MAX_MESSAGE}")
    path = Path(os.environ.get(TERMINATION_PATH_ENV) or DEFAULT_TERMINATION_PATH)
    path.write_text(text)
