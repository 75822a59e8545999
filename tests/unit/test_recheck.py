"""When the asset clock looks at an asset though no event came (plan/recheck.py), on the status the operator
writes: the safety net that replaced a Kopf timer per asset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubemam.plan.recheck import NEVER_RECONCILED_GRACE, WAITING_FACTOR, next_recheck

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CREATED = datetime(2026, 12, 1, 11, 58, tzinfo=UTC)
RECHECK, ARCHIVE_CHECK = timedelta(seconds=60), timedelta(hours=1)
PENDING = {"name": "clip-ingest-1", "step": "ingest", "state": "Pending"}


def _status(phase: str, ready: str, reason: str, jobs: list[dict[str, Any]] | None = None,
            **more: Any) -> dict[str, Any]:
    return {"phase": phase, "conditions": [{"type": "Ready", "status": ready, "reason": reason}],
            "jobs": jobs or [], **more}


def _next(status: dict[str, Any], spec: dict[str, Any] | None = None, created: datetime | None = CREATED,
          jobs: dict[str, str] | None = None, now: datetime = NOW) -> datetime | None:
    return next_recheck(spec or {}, status, created, jobs or {}, now, RECHECK, ARCHIVE_CHECK)


def test_a_never_reconciled_asset_is_looked_at_once_its_grace_is_over() -> None:
    # 2 minutes old: its creation handler is still queued behind a burst; looked at when the grace ends.
    assert _next({}) == CREATED + NEVER_RECONCILED_GRACE
    # Past the grace (seen on a restart): Kopf lost it, look now.
    assert _next({}, now=CREATED + NEVER_RECONCILED_GRACE + timedelta(hours=1)) == \
        CREATED + NEVER_RECONCILED_GRACE + timedelta(hours=1)
    assert _next({}, created=None) == NOW + RECHECK  # no creation time to judge by


def test_failed_and_ready_assets_wait_for_an_event_and_archived_ones_for_the_slow_net() -> None:
    assert _next(_status("Failed", "False", "IngestFailed")) is None
    assert _next(_status("Ready", "True", "Ready")) is None
    archived = _status("Ready", "True", "Ready", storage={"copies": []})
    assert _next(archived, spec={"archivePolicyRef": "keep"}) == NOW + ARCHIVE_CHECK
    assert _next(archived) is None  # storage without a policy: nothing comes due with time
    # Archived but not Ready: the not-Ready net, which is sooner.
    assert _next(_status("Archiving", "False", "S3SecretMissing", storage={"copies": []}),
                 spec={"archivePolicyRef": "keep"}) == NOW + RECHECK


def test_an_asset_that_only_waits_on_its_jobs_is_looked_at_less_often() -> None:
    assert _next(_status("Ingesting", "False", "IngestPending", [PENDING]),
                 jobs={"clip-ingest-1": "Pending"}) == NOW + RECHECK * WAITING_FACTOR
    # A Job the asset's status records but that was not seen as such (deleted, its event missed) ...
    assert _next(_status("Ingesting", "False", "IngestPending", [PENDING])) == NOW + RECHECK
    assert _next(_status("Ingesting", "False", "IngestPending", [PENDING]),
                 jobs={"clip-ingest-1": "Running"}) == NOW + RECHECK
    # ... a failed Job (a retry may come due), or no Job at all: the operator may have work to do.
    assert _next(_status("Ingesting", "False", "IngestPending", [PENDING, {**PENDING, "state": "Failed"}]),
                 jobs={"clip-ingest-1": "Pending"}) == NOW + RECHECK
    assert _next(_status("Ingesting", "False", "IngestPending")) == NOW + RECHECK
    assert _next(_status("Ingesting", "False", "S3SecretMissing", [PENDING]),
                 jobs={"clip-ingest-1": "Pending"}) == NOW + RECHECK
