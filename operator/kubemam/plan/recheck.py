"""When an asset is next looked at with no event to say so (pure): the safety net under the watches.

Events drive an asset: its own, its Jobs', its ladder's and policy's. A watch can still miss one, a Job can
be refused by a quota that later makes room, a Secret can appear. So an asset that is not Ready is planned
again after `recheck` seconds; one that only waits for Jobs the index holds as its status records them
(their events will come) after WAITING_FACTOR times that; an archived one after `archive_check` seconds
(its time-driven changes are met to the second by plan/archive_wake.py). A Failed asset waits for a change
of its spec or a retry request (both are updates), not for a clock that would look at it for ever.

One aimed clock (controllers/clock.py) keeps these instants for every asset, instead of a Kopf timer per
asset: a timer is a task per object, each holding the object's latest body, and its turns cost CPU while
a catalogue sits idle.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

# The Ready reasons of an asset that waits for one of its Jobs to start or to finish.
WAITING_REASONS = frozenset(f"{step}{state}" for step in ("Ingest", "Transcode", "Package", "Archive")
                            for state in ("Pending", "Running"))
WAITING_FACTOR = 10
# An asset with no conditions has never been reconciled: its creation handler is still queued behind a burst,
# or Kopf lost its patches to an overloaded API server and will not come back to it (seen at 10,000 assets
# created at once). It is looked at once this much time has passed since its creation.
NEVER_RECONCILED_GRACE = timedelta(minutes=5)


def _ready(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)


def waits_on_jobs(status: Mapping[str, Any], job_states: Mapping[str, str]) -> bool:
    """The asset waits for Jobs that exist as its status records them (`job_states`: the asset's Jobs as
    seen, by name), and for nothing else. Not so with a failed Job (a retry may be due) or a recorded Job
    not seen (deleted, or an event missed)."""
    ready = _ready(status)
    if ready is None or ready.get("status") == "True" or ready.get("reason") not in WAITING_REASONS:
        return False
    waiting = False
    for job in status.get("jobs") or []:
        state = job.get("state")
        if state == "Succeeded":
            continue
        if state not in ("Pending", "Running") or job_states.get(str(job.get("name"))) != state:
            return False
        waiting = True
    return waiting


def next_recheck(spec: Mapping[str, Any], status: Mapping[str, Any], created: datetime | None,
                 job_states: Mapping[str, str], now: datetime, recheck: timedelta,
                 archive_check: timedelta) -> datetime | None:
    """The next instant the asset is planned again though nothing was seen to change (None: not until an
    event). `status` as written (wire form), `created` its creationTimestamp."""
    if status.get("phase") == "Failed":
        return None
    ready = _ready(status)
    if not status.get("conditions"):
        return max(now, created + NEVER_RECONCILED_GRACE) if created is not None else now + recheck
    if ready is not None and ready.get("status") == "True":
        archived = bool(spec.get("archivePolicyRef")) and bool(status.get("storage"))
        return now + archive_check if archived else None
    if waits_on_jobs(status, job_states):
        return now + recheck * WAITING_FACTOR
    return now + recheck
