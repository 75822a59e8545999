"""Step inputs that cannot outgrow the environment (pure).

Linux refuses an environment string over 128 KiB (MAX_ARG_STRLEN): a Job whose input env var is larger
never starts its container. So a step's input travels inline in `KUBEMAM_STEP_INPUT` only while it is
small (INLINE_LIMIT); a larger one, and any file a step reads beside its input (a distribution feed),
is *staged*: written to a ConfigMap named after the Job, owned by the Job (collected with it), mounted
read-only at STAGED_DIR, and the env carries only its path and sha256, which the worker verifies.

Sizes are UTF-8 bytes exactly as serialized (`ensure_ascii=False`: a non-ASCII character is its 2–4
UTF-8 bytes, not a 6–12 byte `\\uXXXX` escape). A ConfigMap holds at most 1 MiB and etcd takes a 1.5 MiB
request: what is staged must stay under STAGE_LIMIT, checked before any Job exists; an input over it is
refused with a message naming the field that made it too big (StepInputTooLarge), and no Job is made.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

INLINE_LIMIT = 96 * 1024  # a quarter under Linux's 128 KiB per environment string
STAGE_LIMIT = 900 * 1024  # under the ConfigMap's 1 MiB, with room for its metadata
STAGED_DIR = "/var/run/kubemam/staged"
STAGED_VOLUME = "staged"
INPUT_KEY = "input.json"
INPUT_FILE_ENV = "KUBEMAM_STEP_INPUT_FILE"
INPUT_SHA256_ENV = "KUBEMAM_STEP_INPUT_SHA256"
STAGED_DIR_ENV = "KUBEMAM_STAGED_DIR"
CONFIG_MAP_SUFFIX = "-staged"

# Input fields that grow with user data, and the spec field they come from (for the refusal's words).
SPEC_FIELDS: dict[tuple[str, str], str] = {
    ("ingest", "markers"): "spec.markers",
    ("ingest", "qc"): "spec.qc",
    ("ingest", "source"): "spec.source",
    ("package", "captions"): "spec.captions",
    ("archive", "objects"): "the archived set (spec.descriptive, spec.markers and licence windows in the sidecar)",
}


def serialize(value: Any) -> str:
    """The canonical JSON a step reads: sorted keys, no spaces, non-ASCII as itself."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def utf8_size(text: str) -> int:
    return len(text.encode())


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def human(size: int) -> str:
    """1536 → '1.5 KiB'; 1900000 → '1.8 MiB'."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f}".removesuffix(".0") + " KiB"
    return f"{size / (1024 * 1024):.1f}".removesuffix(".0") + " MiB"


class StepInputTooLarge(ValueError):
    """An input (with its staged files) that even a ConfigMap cannot hold."""

    def __init__(self, step: str, total: int, field: str, field_size: int, count: int | None) -> None:
        self.step, self.total, self.field, self.field_size = step, total, field, field_size
        entries = f" in {count} entries" if count is not None else ""
        super().__init__(f"{field}: {human(field_size)}{entries} makes the {step} input {human(total)}; "
                         f"the step input limit is {human(STAGE_LIMIT)}, so no Job was created")


def _field_name(step: str, field: str) -> str:
    spec = SPEC_FIELDS.get((step, field))
    return f"{spec} (input.{field})" if spec else f"input.{field}"


def largest_part(step: str, inputs: dict[str, Any], files: dict[str, str]) -> tuple[str, int, int | None]:
    """The input field or staged file that weighs most: (its name, UTF-8 bytes, entries if a list)."""
    parts: list[tuple[int, str, int | None]] = []
    for key, value in inputs.items():
        parts.append((utf8_size(serialize(value)), _field_name(step, key), len(value) if isinstance(value, list)
                      else None))
    for key, text in files.items():
        parts.append((utf8_size(text), f"staged file {key}", None))
    size, name, count = max(parts, default=(0, "input", None))
    return name, size, count


def check(step: str, inputs: dict[str, Any], files: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The serialized input and every file to stage (the input among them when it is too big to travel
    inline); StepInputTooLarge when they cannot be staged either."""
    text = serialize(inputs)
    staged = dict(files)
    if utf8_size(text) > INLINE_LIMIT:
        staged[INPUT_KEY] = text
    # A ConfigMap's size is the sum of its keys and values.
    total = sum(utf8_size(key) + utf8_size(value) for key, value in staged.items())
    if total > STAGE_LIMIT:
        name, size, count = largest_part(step, inputs, files)
        raise StepInputTooLarge(step, total, name, size, count)
    return text, staged


def config_map_name(job_name: str) -> str:
    return f"{job_name}{CONFIG_MAP_SUFFIX}"


class StagedJob(dict[str, Any]):
    """A Job manifest (the dict is exactly what the API server receives) that carries the files to stage
    into its ConfigMap (`staged`): created first, then owned by the Job (controllers/stepjobs.py)."""

    staged: dict[str, str]

    def __init__(self, manifest: dict[str, Any], staged: dict[str, str]) -> None:
        super().__init__(manifest)
        self.staged = staged


def staged_files(job: dict[str, Any]) -> dict[str, str]:
    return dict(getattr(job, "staged", None) or {})


def config_map(job: dict[str, Any]) -> dict[str, Any] | None:
    """The ConfigMap holding the Job's staged files, before it has an owner (the Job's uid is known only
    once the Job exists)."""
    files = staged_files(job)
    if not files:
        return None
    meta = job["metadata"]
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": config_map_name(meta["name"]), "namespace": meta["namespace"],
                         "labels": dict(meta.get("labels") or {})},
            "immutable": True, "data": files}


def owner_reference(job_name: str, uid: str) -> dict[str, Any]:
    """The Job owns its staged input: the garbage collector removes both together. Not blockOwnerDeletion
    (that would need update on jobs/finalizers)."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": uid}
