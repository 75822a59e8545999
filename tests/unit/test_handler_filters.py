"""When Kopf's timers in controllers/main.py run: their `when` filters, on the status the operator writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def test_the_safety_net_timer_leaves_failed_and_just_created_assets_alone() -> None:
    from kubemam.controllers.main import NEVER_RECONCILED_GRACE, _not_ready

    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    created = {"creationTimestamp": "2026-11-30T11:58:00Z"}
    # Never reconciled, 2 minutes old: the creation handler is still queued behind a burst.
    assert not _not_ready({}, created, at=now)
    # Never reconciled past the grace: Kopf lost it (its patches timed out on an overloaded API server).
    assert _not_ready({}, created, at=datetime(2026, 11, 30, 11, 58, tzinfo=UTC) + NEVER_RECONCILED_GRACE)
    assert _not_ready({}, {}, at=now)  # no creation time to judge by: checked
    assert not _not_ready({"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}]}, created, at=now)
    assert _not_ready({"phase": "Ingesting", "conditions": [{"type": "Ready", "status": "False"}]}, created, at=now)
    assert not _not_ready({"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}, created,
                          at=now + timedelta(days=1))
