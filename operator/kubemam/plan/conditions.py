"""The one place conditions are set: lastTransitionTime moves only when status flips."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubemam.api.common import Condition, ConditionStatus


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
    """Return conditions with verdict applied; order is kept, new types are appended."""
    updated: list[Condition] = []
    found = False
    for existing in conditions:
        if existing.type != verdict.type:
            updated.append(existing)
            continue
        found = True
        flipped = existing.status != verdict.status
        updated.append(
            Condition(
                type=verdict.type,
                status=verdict.status,
                reason=verdict.reason,
                message=verdict.message,
                last_transition_time=now if flipped else existing.last_transition_time,
                observed_generation=generation,
            )
        )
    if not found:
        updated.append(
            Condition(
                type=verdict.type,
                status=verdict.status,
                reason=verdict.reason,
                message=verdict.message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return updated


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
    current = current or {}
    patch: dict[str, Any] = {k: v for k, v in desired.items() if current.get(k) != v}
    for gone in set(current) - set(desired):
        patch[gone] = None
    return patch or None
