"""When an archived asset's plan next changes with time alone (pure): the instant the asset clock
(controllers/clock.py) wakes the asset at, instead of a timer re-planning every archived asset.

plan/archiving.py reads the clock in these places, and nowhere else once its status is written:
- the tier (plan/placement.py): a transition `afterDays` after ingest, last use or a restore;
- a fixity slot (plan/fixity.py, plan/schedule.py): the schedule's first minute after the last answered slot;
- the grace of extra copies (plan/vacating.py): kept until `vacateAfter`, then vacated;
- a thawing cold copy: the place run is asked again every RESTORE_POLL.
Everything else stamped with `now` (ingestedAt, archivedAt, a hold's or a restore's since, a fixity run's
lastRun) is written once and read back from the status, so it holds still.

The wake is computed from the status the reconcile writes (the outcome's storage): the plan at any instant
in [now, wake) is the plan at now; at wake it may differ (early is harmless: the run re-aims).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubemam.api.archive import ArchivePolicySpec, ExtraCopies
from kubemam.api.asset import StorageStatus
from kubemam.plan.archive_facts import FIXITY_ANNOTATION, ArchiveFacts
from kubemam.plan.placement import AssetClock, current_tier, transition_time
from kubemam.plan.schedule import next_slot
from kubemam.plan.vacating import still_kept

SLOT_HORIZON = timedelta(days=400)  # next_slot's look-ahead: a schedule with no slot in it is looked at again then


def clock_of(storage: StorageStatus) -> AssetClock | None:
    """The moments tiers count from, as plan_archive reads them back from the written status."""
    if storage.ingested_at is None:
        return None
    restore = storage.restore
    return AssetClock(storage.ingested_at, storage.last_used_at,
                      restore.requested_at if restore is not None and restore.state != "Failed" else None)


def tier_wake(policy: ArchivePolicySpec, clock: AssetClock, now: datetime) -> datetime | None:
    """The next tier transition that changes the tier: a tier past the current one coming due."""
    index = current_tier(policy, clock, now)
    moments = [m for tier in policy.tiers[index + 1:] if (m := transition_time(tier, clock)) is not None and m > now]
    return min(moments, default=None)


def slot_wake(facts: ArchiveFacts, storage: StorageStatus, now: datetime) -> datetime | None:
    """The schedule's next slot after the last answered one, while the schedule (not a request) drives fixity."""
    schedule = facts.policy.fixity.schedule if facts.policy.fixity else None
    if not schedule or not storage.copies or storage.archived_at is None:
        return None
    current = storage.fixity
    token = facts.annotations.get(FIXITY_ANNOTATION)
    if token and (current is None or current.last_request != token):
        return None  # a request runs first; its Job's end (an event) brings the schedule back
    anchor = (current.last_slot if current and current.last_slot else None) or storage.archived_at
    after = max(anchor, now)
    return next_slot(schedule, after) or after + SLOT_HORIZON


def grace_wake(extra: ExtraCopies | None, annotations: dict[str, str], now: datetime) -> datetime | None:
    """The end of the extra copies' grace, while they are kept."""
    if extra is None or not still_kept(extra, annotations, now) or extra.vacate_after <= now:
        return None
    return extra.vacate_after


def poll_wake(now: datetime, period: timedelta) -> datetime:
    """The next poll of a thawing copy: the place run's `poll-<n>` counts periods since the epoch."""
    seconds = period.total_seconds()
    return datetime.fromtimestamp((now.timestamp() // seconds + 1) * seconds, UTC)


def archive_wake(facts: ArchiveFacts, storage: StorageStatus, polling: timedelta | None,
                 now: datetime) -> datetime | None:
    """The earliest instant after now at which plan_archive's outcome changes with time alone, or None.

    storage: the status.storage plan_archive wrote at now; polling: the poll period while a cold copy thaws."""
    clock = clock_of(storage)
    moments = [tier_wake(facts.policy, clock, now) if clock is not None else None,
               slot_wake(facts, storage, now),
               grace_wake(storage.extra_copies, facts.annotations, now),
               poll_wake(now, polling) if polling is not None else None]
    return min((m for m in moments if m is not None), default=None)
