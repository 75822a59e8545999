"""The distribute step's input and result: one batch of publishes and takedowns, as the rights planner
(plan/distribution.py) writes it and `kubemam worker distribute` reads it. One model on both sides of
the Job, so the planner and the worker cannot disagree on a field.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, AwareDatetime, Field, ValidationInfo, field_validator, model_validator

from kubemam.api.rights import Channel
from kubemam.api.territories import known_territories
from kubemam.steps.base import StepInput, StepResult, input_problem

__all__ = ["DistributeAction", "DistributeFailure", "DistributeFeed", "DistributeInput", "DistributeResult",
           "feed_entries", "feed_file", "input_problem"]

ActionKind = Literal["publish", "takedown"]
ACTIONS: tuple[str, ...] = get_args(ActionKind)

# storage/uri.py's bucket rule, repeated: the step contract stays free of storage code.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BATCH = re.compile(r"^[0-9a-f]{8,128}$")


# Validator messages read after the field's name: "actions[0].origin 's3://x' names a whole bucket".
def _text(value: str) -> str:
    if not value.strip():
        raise ValueError(f"must be a non-empty string, not {value!r}")
    return value


def _s3_location(value: str) -> str:
    """An s3:// URI with a key or prefix inside the bucket: a takedown deletes everything below it."""
    if not value.startswith("s3://"):
        raise ValueError(f"{value!r} is not an s3:// URI")
    bucket, _, key = value.removeprefix("s3://").partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"{value!r}: {bucket!r} is not a valid bucket name")
    if ".." in key.split("/"):
        raise ValueError(f"{value!r}: '..' is not allowed in a key")
    if not key.strip("/"):
        raise ValueError(f"{value!r} names a whole bucket; give a key or prefix inside it")
    return value


def _territories(value: list[str]) -> list[str]:
    try:
        if value:
            return known_territories(value)
    except ValueError:
        pass
    raise ValueError(f"must be a non-empty list of ISO 3166-1 alpha-2 codes, not {value!r}"[:300])


def _webhook(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL or null, not {value!r}"[:300])
    return value


Text = Annotated[str, AfterValidator(_text)]
S3Location = Annotated[str, AfterValidator(_text), AfterValidator(_s3_location)]


class _Wire(StepInput):
    def to_wire(self) -> dict[str, Any]:
        """The planner's wire shape: camelCase, and nulls kept (`package: null` on a takedown)."""
        return self.model_dump(by_alias=True, mode="json")


class DistributeAction(_Wire):
    action: ActionKind
    asset: Text
    target: Text
    channel: Channel
    territories: Annotated[list[str], AfterValidator(_territories)]
    window: Text
    package: S3Location | None = Field(default=None, validate_default=True,
                                       description="publish: the committed package prefix it copies")
    origin: S3Location = Field(description="<target origin>/<namespace>/<asset>: what a takedown empties")
    purge_webhook: Annotated[str | None, AfterValidator(_webhook)] = None

    @field_validator("package")
    @classmethod
    def _publish_needs_package(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("action") == "publish":
            raise ValueError("must be a non-empty string, not None")
        return value


class DistributeFeed(_Wire):
    """A feed to write whole. Its entries are not in the input (a namespace's feed grows with its catalogue,
    the input must not): they are a file staged beside it (plan/staging.py), in the compact form of
    `feed_file`, which the worker reads from the staged directory and checks against `sha256`."""

    uri: S3Location
    file: str = Field(pattern=r"^feed-[0-9]+\.json$", description="The staged file holding the entries")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Of the staged file, checked by the worker")
    entries: int = Field(ge=0, description="How many entries the file holds")


FEED_ENTRY_KEYS = ("asset", "target", "channel", "territories", "window", "start", "end")


def feed_file(entries: list[dict[str, Any]]) -> str:
    """A feed's entries, compact: each target's channel and territories and each window's start and end
    once, then one (asset, target, window) triple per entry. A worldwide target's 249 territories would
    otherwise repeat in every entry (~1.3 KB each); a triple is ~50 bytes, so 2,000 titles are ~100 KB."""
    targets = {e["target"]: {"channel": e["channel"], "territories": e["territories"]} for e in entries}
    windows = {e["window"]: {"start": e["start"], "end": e["end"]} for e in entries}
    triples = [[e["asset"], e["target"], e["window"]] for e in entries]
    return json.dumps({"targets": targets, "windows": windows, "entries": triples}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)


def feed_entries(text: str) -> list[dict[str, Any]]:
    """`feed_file` read back: the entries as the feed document lists them. ValueError if malformed."""
    try:
        data = json.loads(text)
        targets, windows = data["targets"], data["windows"]
        return [{"asset": asset, "target": target, "channel": targets[target]["channel"],
                 "territories": targets[target]["territories"], "window": window,
                 "start": windows[window]["start"], "end": windows[window]["end"]}
                for asset, target, window in data["entries"]]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"a staged feed file is malformed: {type(err).__name__}: {err}") from err


class DistributeInput(_Wire):
    namespace: Text
    batch: str = Field(description="The batch's id: names its usage object and its pending-purge ledger")
    actions: list[DistributeAction]
    actions_hash: str | None = Field(default=None, description="What a retry of the same actions shares")
    attempt: int = Field(default=0, ge=0, description="Jobs before this one for the same actions (failed, or "
                         "done and the same actions needed again): a new attempt is a new Job name")
    feeds: list[DistributeFeed] = Field(default_factory=list)
    usage: S3Location
    not_before: AwareDatetime | None = Field(
        default=None, description="An armed batch (takedowns only): the worker checks the buckets and lists the "
        "origins ahead, then deletes nothing before this instant, the end of the windows that license them")

    @model_validator(mode="after")
    def _armed_takedowns_only(self) -> DistributeInput:
        if self.not_before is not None and any(a.action != "takedown" for a in self.actions):
            raise ValueError("notBefore arms takedowns only; a batch with a publish cannot carry it")
        return self

    @field_validator("batch")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _BATCH.match(value):
            raise ValueError(f"must be a lowercase hex digest, not {value!r}"[:300])
        return value

    @field_validator("feeds")
    @classmethod
    def _distinct_feeds(cls, value: list[DistributeFeed]) -> list[DistributeFeed]:
        if len({f.uri for f in value}) != len(value):
            raise ValueError("names the same feed twice")
        if len({f.file for f in value}) != len(value):
            raise ValueError("names the same staged file twice")
        return value


class DistributeResult(StepResult):
    published: int = Field(ge=0)
    taken_down: int = Field(ge=0)
    usage: str


class DistributeFailure(StepResult):
    """A batch in which some actions failed: the worker did every action it could and names the ones
    that failed (the Job fails, exit 2, so the Job controller does not run the batch again; the rights
    planner records the rest as done and quarantines the failed (asset, target) pairs).

    This is the termination message, so it stays under 4 KiB: `failed` pairs each failed action's
    index with an index into `errors` (errors shortened, and past a budget the rest point at the last
    entry, which says where the whole list is: the usage object, under `failures`)."""

    error: str
    failed: list[tuple[int, int]] = Field(description="(action index, index into errors) of every failed action")
    errors: list[str]
    usage: str | None = None

    def errors_by_action(self) -> dict[int, str]:
        return {index: self.errors[which] if 0 <= which < len(self.errors) else self.error
                for index, which in self.failed}
