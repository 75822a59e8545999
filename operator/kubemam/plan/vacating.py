"""Vacating and legal holds on the archive side (pure).

- **Vacate is its own run.** A place run only copies and verifies. Once it has succeeded, and only while no
  legal hold is asked, a second `archive` Job (`mode: vacate`, the place inputs plus the locations to empty)
  reads every target copy back and then empties the locations the placement left. A hold asked while an
  archive run is under way replaces that run (plan/archiving.py): its Job is deleted before it deletes
  anything more, and the run that holds starts.
- **A grace for policy edits.** Copies a policy edit no longer needs — a lowered minCopies, a location no
  tier or replica uses, a location removed from the policy — are kept for `copies.vacateAfterHours`
  (`Replicated=True ExtraCopies`), or until `archive.kubemam.io/confirm-vacate=<token>` names the token the
  condition shows. A tier move (the asset ageing, a restore) vacates at once: that is the lifecycle.
- **The hold record.** `status.storage.legalHold`: whether a hold is asked, since when (a lifted hold is a
  new place run, which releases kubemam's own holds), and the versions someone else holds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kubemam.api.archive import ArchivePolicySpec, ExtraCopies, LegalHoldStatus
from kubemam.api.asset import StorageCopy
from kubemam.config import OperatorConfig
from kubemam.plan.archive_facts import (
    CONFIRM_VACATE_ANNOTATION,
    ArchiveFacts,
    ArchiveOutcome,
    archive_request,
    busy_with,
    copy_locations,
    find_job,
    start_job,
)
from kubemam.plan.conditions import Verdict
from kubemam.plan.jobs import StepJobRequest
from kubemam.plan.placement import Target, vacated_locations
from kubemam.steps.archive import ArchiveInputs, LocationInput
from kubemam.steps.registry import ARCHIVE

DEFAULT_GRACE_HOURS = 24.0
MAX_FOREIGN = 16


def hold_record(previous: LegalHoldStatus | None, held: bool, now: datetime) -> LegalHoldStatus | None:
    """Whether a hold is asked and since when; None for an asset never held (its place inputs stay as they were)."""
    if previous is None:
        return LegalHoldStatus(held=True, since=now) if held else None
    if previous.held == held:
        return previous
    return previous.model_copy(update={"held": held, "since": now})


def with_foreign(record: LegalHoldStatus | None, foreign: list[str] | None) -> LegalHoldStatus | None:
    if foreign is None:
        return record
    listed = sorted(set(foreign))[:MAX_FOREIGN] or None
    if record is None:
        return LegalHoldStatus(held=False, foreign=listed) if listed else None
    return record.model_copy(update={"foreign": listed})


def grace_hours(policy: ArchivePolicySpec) -> float:
    return policy.copies.vacate_after_hours if policy.copies else DEFAULT_GRACE_HOURS


def extra_record(previous: ExtraCopies | None, locations: list[str], hours: float, owner: str,
                 now: datetime) -> ExtraCopies | None:
    """The extra copies and their grace: kept from the record that already covers them, else starting now."""
    if not locations:
        return None
    names = sorted(set(locations))[:32]  # the status schema's bound (policies name at most 16 locations)
    if previous is not None and set(names) <= set(previous.locations):
        return previous.model_copy(update={"locations": names})
    token = hashlib.sha256(f"{owner}|{','.join(names)}|{now.isoformat()}".encode()).hexdigest()[:10]
    return ExtraCopies(locations=names, since=now, vacate_after=now + timedelta(hours=hours), token=token)


def still_kept(extra: ExtraCopies | None, annotations: dict[str, str], now: datetime) -> set[str]:
    """Locations whose extra copies stay for now: within the grace and not confirmed."""
    if extra is None or now >= extra.vacate_after or annotations.get(CONFIRM_VACATE_ANNOTATION) == extra.token:
        return set()
    return set(extra.locations)


def replicated(verified: int, min_copies: int, extra: ExtraCopies | None, kept: set[str]) -> Verdict:
    if verified < min_copies:
        return Verdict("Replicated", "False", "UnderReplicated", f"{verified} of {min_copies} verified copies")
    if extra is None:
        return Verdict("Replicated", "True", "MinCopiesMet", f"{verified} of {min_copies} copies")
    places = ", ".join(extra.locations)
    if kept:
        until = extra.vacate_after.isoformat()
        return Verdict("Replicated", "True", "ExtraCopies",
                       f"{verified} of {min_copies} copies; {len(extra.locations)} more the policy no longer "
                       f"needs ({places}) kept until {until}; annotate {CONFIRM_VACATE_ANNOTATION}={extra.token} "
                       "to delete them now")
    return Verdict("Replicated", "True", "ExtraCopies",
                   f"{verified} of {min_copies} copies; deleting the ones the policy no longer needs ({places})")


@dataclass
class Vacate:
    """What the vacate run did, once it finished."""

    emptied: set[str] = field(default_factory=set)  # locations it was asked to empty and did
    foreign: list[str] | None = None  # versions a hold kubemam did not set kept there (None: no result)


def plan_vacate(facts: ArchiveFacts, place: StepJobRequest, policy: ArchivePolicySpec, targets: list[Target],
                extras: list[StorageCopy], kept: set[str], locations: list[LocationInput],
                secret_env: tuple[tuple[str, str, str], ...], config: OperatorConfig,
                out: ArchiveOutcome) -> Vacate:
    """The vacate Job after a verified place run: every location the placement left, but the extra copies
    still in their grace. Copies at a location the policy no longer names are reached as status recorded it."""
    known = {loc.name for loc in policy.locations}
    removed = [c for c in extras if c.location not in known and c.location not in kept]
    others, other_env = copy_locations(removed, len(locations))
    names = [loc.name for loc in vacated_locations(policy, targets) if loc.name not in kept]
    names += [c.location for c in removed]
    if not names:
        return Vacate()
    inputs = ArchiveInputs.model_validate({**place.inputs, "mode": "vacate", "vacate": names,
                                           "locations": [loc.to_wire() for loc in locations + others]})
    request = archive_request(facts, ARCHIVE, inputs.to_wire(), secret_env + other_env)
    observed = find_job(facts, request.name)
    start_job(out, request, observed, busy_with(facts, request.name) is None, config)
    if observed is not None and observed.state == "Failed":
        detail = f": {observed.message}" if observed.message else ""
        out.failed = Verdict("Archived", "False", "ArchiveFailed", f"Job {observed.name} failed{detail}")
    if observed is None or observed.state != "Succeeded":
        return Vacate()
    result = observed.result or {}
    foreign = [str(v) for v in result.get("foreignHolds") or []] if observed.result is not None else None
    return Vacate(set(names), foreign)
