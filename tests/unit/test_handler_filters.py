"""When Kopf's timers in controllers/main.py run: their `when` filters, on the status the operator writes."""

from __future__ import annotations


def test_the_safety_net_timer_leaves_never_reconciled_and_failed_assets_alone() -> None:
    from kubemam.controllers.main import _not_ready

    assert not _not_ready({})  # the creation handler is still queued (a burst): Kopf runs and retries it
    assert not _not_ready({"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}]})
    assert _not_ready({"phase": "Ingesting", "conditions": [{"type": "Ready", "status": "False"}]})
    assert not _not_ready({"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]})
