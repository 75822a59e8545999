"""Every step a Job can run, declared once: its name, input and result models, the worker entry point,
and the pod defaults. The planners, the Job builder, `kubemam worker <step>`, the status view and the
metrics read this table; nothing else spells a step's name.

Pure: the entry point is a dotted name, so planning never imports ffmpeg, boto3 or a worker; the models are
dotted names too, imported on first use, so a worker imports its own step's models and not every other's
(the asset's schema and the other steps' cost a third of a second of every Job's start).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from kubemam.steps.base import StepResult

INGEST = "ingest"
TRANSCODE = "transcode"
TRANSCODE_CHUNKS = "transcode-chunks"
PACKAGE = "package"
DISTRIBUTE = "distribute"
ARCHIVE = "archive"
FIXITY = "fixity"
PURGE = "purge"
MIGRATE = "migrate"

HOUR = 3600


@dataclass(frozen=True)
class Resources:
    """Pod defaults when the owner (a ladder) names none: requests that let the scheduler place the pod,
    and a memory limit so one bad master cannot take the node. No CPU limit: encoders use what is idle."""

    cpu: str
    memory: str
    memory_limit: str

    def to_wire(self) -> dict[str, Any]:
        return {"requests": {"cpu": self.cpu, "memory": self.memory}, "limits": {"memory": self.memory_limit}}


MiB = 1024 * 1024
GiB = 1024 * MiB
# A master whose size the plan does not know yet (ingest fetches it): the scratch ceiling allows this much.
UNKNOWN_MASTER_CEILING = 2 * 1024 * GiB


@dataclass(frozen=True)
class Scratch:
    """Local disk a step needs (its /tmp emptyDir, where the worker keeps the master and its outputs), from
    the bytes it brings to disk (`StepJobRequest.scratch_bytes`: the master, or the renditions it packages).

    The request (ephemeral-storage) places the pod where the disk is; the emptyDir's sizeLimit, twice the
    request, is the ceiling past which the kubelet evicts the pod, and a pod is never evicted for an estimate
    a little short."""

    per_byte: float  # scratch bytes per byte of input: the input itself and what the step writes beside it
    base: int  # bytes: outputs that do not scale with the input, ffmpeg's logs, headroom

    def request(self, scratch_bytes: int | None) -> int:
        return self.base + int(self.per_byte * (scratch_bytes or 0))

    def size_limit(self, scratch_bytes: int | None) -> int:
        if scratch_bytes is None and self.per_byte:
            return -(-(self.base + int(self.per_byte * UNKNOWN_MASTER_CEILING)) // GiB) * GiB
        return 2 * self.request(scratch_bytes)


def quantity(size: int) -> str:
    """Bytes as a Kubernetes quantity, rounded up to whole MiB (whole GiB shown as Gi)."""
    mib = -(-size // MiB)
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


@dataclass(frozen=True)
class Step:
    name: str
    summary: str
    entry: str  # "module:function" returning the exit code; reads KUBEMAM_STEP_INPUT itself
    input_name: str  # "module:Model": the planner's input must validate against it, before the Job exists
    result_name: str | None  # "module:Model" of the worker's result
    resources: Resources
    deadline_seconds: int  # activeDeadlineSeconds: a step past it is stuck, not slow
    backoff_limit: int | None = None  # None: the operator's default
    scratch: Scratch = Scratch(per_byte=0, base=1 * GiB)  # copies stream between servers: nothing whole on disk

    @cached_property
    def input_model(self) -> type[BaseModel]:
        model: type[BaseModel] = _load(self.input_name)
        return model

    @cached_property
    def result_model(self) -> type[StepResult] | None:
        if self.result_name is None:
            return None
        model: type[StepResult] = _load(self.result_name)
        return model

    def validate_input(self, inputs: dict[str, Any]) -> Any:
        """The input as the model reads it; a ValidationError names the field."""
        return self.input_model.model_validate(inputs)

    def parse_result(self, result: dict[str, Any] | None) -> StepResult | None:
        """The worker's result as its model, or None when there is none or it does not validate."""
        if result is None or self.result_model is None:
            return None
        try:
            return self.result_model.model_validate(result)
        except ValidationError:
            return None

    def load_entry(self) -> Callable[[], int]:
        entry: Callable[[], int] = _load(self.entry)
        return entry


def _load(dotted: str) -> Any:
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


# Archive Jobs ride out site outages: with the Job controller's pod backoff (10 s doubling to 6 min)
# twelve attempts span about an hour before the Job fails.
ARCHIVE_BACKOFF_LIMIT = 12

_SMALL = Resources(cpu="100m", memory="256Mi", memory_limit="1Gi")
_MEDIA = Resources(cpu="500m", memory="512Mi", memory_limit="4Gi")
_ENCODE = Resources(cpu="1", memory="1Gi", memory_limit="8Gi")
_FETCHES = Scratch(per_byte=1.1, base=2 * GiB)  # the master, plus proxy, previews, reports
_ENCODES = Scratch(per_byte=1.5, base=4 * GiB)  # the master, plus the renditions of one decode
_PACKAGES = Scratch(per_byte=3, base=2 * GiB)  # the renditions, their clear and encrypted segments
_PRESERVES = Scratch(per_byte=4, base=2 * GiB)  # the master and its FFV1 copy (larger than ProRes), framemd5

_STEP_MODELS = "kubemam.steps."  # + "module:Model"
STEPS: dict[str, Step] = {step.name: step for step in (
    Step(INGEST, "fetch and verify the master, probe, QC, proxy and thumbnails", "kubemam.worker.ingest:run",
         _STEP_MODELS + "ingest:IngestInput", _STEP_MODELS + "ingest:IngestResult", _MEDIA, 6 * HOUR,
         scratch=_FETCHES),
    Step(TRANSCODE, "encode the ladder's missing renditions in one decode, or stitch encoded chunks",
         "kubemam.worker.transcode:run", _STEP_MODELS + "transcode:TranscodeInput",
         _STEP_MODELS + "transcode:TranscodeResult", _ENCODE, 24 * HOUR, scratch=_ENCODES),
    Step(TRANSCODE_CHUNKS, "one index of an Indexed Job: encode one GOP-aligned chunk of every video rendition",
         "kubemam.worker.transcode:run", _STEP_MODELS + "transcode:TranscodeInput", None, _ENCODE, 6 * HOUR,
         scratch=_ENCODES),
    Step(PACKAGE, "CMAF segments, DASH and HLS manifests, CENC encryption", "kubemam.worker.package:run",
         _STEP_MODELS + "package:PackageInput", _STEP_MODELS + "package:PackageResult", _MEDIA, 6 * HOUR,
         scratch=_PACKAGES),
    Step(DISTRIBUTE, "publish to and take down from distribution origins", "kubemam.worker.distribute:run",
         _STEP_MODELS + "distribute:DistributeInput", _STEP_MODELS + "distribute:DistributeResult", _SMALL,
         1 * HOUR),
    Step(ARCHIVE, "verified copies at the tier's locations, then vacate the others", "kubemam.worker.archive:run",
         _STEP_MODELS + "archive:ArchiveInputs", None, _MEDIA, 24 * HOUR, ARCHIVE_BACKOFF_LIMIT),
    Step(FIXITY, "re-hash every archived copy and repair from an intact one", "kubemam.worker.archive:run",
         _STEP_MODELS + "archive:ArchiveInputs", None, _MEDIA, 24 * HOUR, ARCHIVE_BACKOFF_LIMIT),
    Step(PURGE, "lift kubemam's legal holds and delete every version at every location", "kubemam.worker.archive:run",
         _STEP_MODELS + "archive:ArchiveInputs", None, _SMALL, 1 * HOUR, ARCHIVE_BACKOFF_LIMIT),
    Step(MIGRATE, "an FFV1/Matroska preservation master, verified frame by frame", "kubemam.worker.migrate:run",
         _STEP_MODELS + "migrate:MigrateInput", _STEP_MODELS + "migrate:MigrateResult", _ENCODE, 48 * HOUR,
         scratch=_PRESERVES),
)}


class UnknownStep(KeyError):
    def __str__(self) -> str:
        return f"unknown step {self.args[0]!r} (known: {', '.join(STEPS)})"


def step(name: str) -> Step:
    try:
        return STEPS[name]
    except KeyError:
        raise UnknownStep(name) from None
