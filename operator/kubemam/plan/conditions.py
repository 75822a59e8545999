"""The one place conditions are set: lastTransitionTime moves only when status flips."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubemam.api.common import Condition, ConditionStatus

# A message that grows with user data (names, conflicts, problems) is cut: status stays bounded, and the
# schema's 32768 is never reached.
MAX_CONDITION_MESSAGE = 8192


@dataclass(frozen=True)
class Verdict:
    """What a planner concluded about one condition type."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def set_condition(
    conditions: list[Condition], verdict: Verdict, generation: int | None, now: datetime
) -> list[Condition]:
    """Return conditions with verdict applied; order is kept, a new type is appended."""
    existing = find(conditions, verdict.type)
    condition = Condition(
        type=verdict.type,
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message if len(verdict.message) <= MAX_CONDITION_MESSAGE
        else verdict.message[:MAX_CONDITION_MESSAGE - 1] + "…",
        last_transition_time=(
            now if existing is None or existing.status != verdict.status else existing.last_transition_time
        ),
        observed_generation=generation,
    )
    if existing is None:
        return [*conditions, condition]
    return [condition if c.type == verdict.type else c for c in conditions]


def ready_verdict(problems: list[tuple[str, str]], ok_message: str) -> Verdict:
    """Ready from a validator's (reason, message) problems: the first reason, every message."""
    if problems:
        return Verdict("Ready", "False", problems[0][0], "; ".join(message for _, message in problems))
    return Verdict("Ready", "True", "Valid", ok_message)


def apply_verdicts(
    conditions: list[Condition] | None, verdicts: list[Verdict], generation: int | None, now: datetime
) -> list[Condition]:
    result = list(conditions or [])
    for verdict in verdicts:
        result = set_condition(result, verdict, generation, now)
    return result


def find(conditions: list[Condition] | None, type_: str) -> Condition | None:
    return next((c for c in conditions or [] if c.type == type_), None)


def status_patch(current: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any] | None:
    """The merge patch that turns current status into desired, or None when nothing changed.

    Keys the desired status no longer has are set to null so a merge patch removes them.
    """
    return _merge_patch(current or {}, desired) or None


def _merge_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    # RFC 7386 merges nested objects: a key gone from a nested object (progress.fps once the
    # next step reports none) must be nulled there too, or the old value lingers.
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = current.get(key)
        if old == value:
            continue
        if isinstance(old, dict) and isinstance(value, dict):
            patch[key] = _merge_patch(old, value)
        else:
            patch[key] = value
    for gone in set(current) - set(desired):
        patch[gone] = None
    return patch
