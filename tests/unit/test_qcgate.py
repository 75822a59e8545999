"""The QC gate, pure: a failed QC holds publishing until a sign-off written after that QC."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from kubemam.api.asset import DistributionStatus, MediaAssetStatus
from kubemam.api.distribution import DistributionTarget
from kubemam.api.rights import RightsWindowSpec
from kubemam.plan.availability import Asset, Window, plan_rights
from kubemam.plan.conditions import apply_verdicts
from kubemam.plan.qcgate import APPROVED_ANNOTATION, approval_request, publishable, qc_gate

T0 = datetime(2027, 3, 1, 12, tzinfo=UTC)
QC_AT = T0 - timedelta(minutes=5)


def _status(verdict: str | None = "Failed", checked_at: datetime = QC_AT, **extra: Any) -> MediaAssetStatus:
    qc = None if verdict is None else {
        "verdict": verdict, "checkedAt": checked_at.isoformat(), "loudness": {"integratedLufs": -19.3},
        "issues": [{"check": "loudness", "severity": "error", "message": "-19.3 LUFS, target -23 ± 1"},
                   {"check": "truePeak", "severity": "error", "message": "+0.2 dBTP"},
                   {"check": "black", "severity": "warning", "start": "10:00:00:00", "message": "1 s of black"}]}
    return MediaAssetStatus.model_validate({"qc": qc, **extra})


def _metadata(value: str | None, *writers: tuple[str, datetime, bool]) -> dict[str, Any]:
    """An asset's metadata as the API server returns it: writers are (manager, time, owns the annotation)."""
    fields = []
    for manager, when, owns in writers:
        owned = {f"f:{APPROVED_ANNOTATION}": {}} if owns else {"f:other": {}}
        fields.append({"manager": manager, "operation": "Update", "apiVersion": "kubemam.io/v1alpha1",
                       "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "fieldsType": "FieldsV1",
                       "fieldsV1": {"f:metadata": {"f:annotations": owned}}})
    annotations = {} if value is None else {APPROVED_ANNOTATION: value}
    return {"name": "ep1", "annotations": annotations, "managedFields": fields}


def test_a_failed_qc_holds_and_names_the_failed_checks_and_how_to_approve() -> None:
    gate = qc_gate("ep1", _status(), None, T0)
    assert (gate.verdict.status, gate.verdict.reason) == ("False", "QCHold")
    assert "loudness, truePeak" in gate.verdict.message and "-19.3 LUFS" in gate.verdict.message
    assert "black" not in gate.verdict.message  # a warning does not hold
    assert f"kubectl annotate mediaasset ep1 {APPROVED_ANNOTATION}=" in gate.verdict.message
    assert gate.approval is None


def test_passed_warning_and_pending_qc() -> None:
    assert qc_gate("ep1", _status("Passed"), None, T0).verdict.status == "True"
    warned = qc_gate("ep1", _status("Warning"), None, T0).verdict
    assert (warned.status, warned.reason) == ("True", "QCWarning")
    pending = qc_gate("ep1", _status(None), None, T0).verdict
    assert (pending.status, pending.reason) == ("False", "QCPending")


def test_the_writer_and_time_come_from_managed_fields() -> None:
    meta = _metadata("score is intended", ("kubectl-client-side-apply", T0 - timedelta(hours=1), False),
                     ("jane", T0 - timedelta(minutes=1), True), ("kopf", T0, False))
    request = approval_request(meta)
    assert request is not None and (request.reason, request.by, request.at) == (
        "score is intended", "jane", T0 - timedelta(minutes=1))
    assert approval_request(_metadata(None)) is None
    gate = qc_gate("ep1", _status(), request, T0)
    assert (gate.verdict.status, gate.verdict.reason) == ("True", "QCApproved")
    assert gate.approval is not None and gate.newly_approved
    assert (gate.approval.by, gate.approval.reason, gate.approval.qc_checked_at) == ("jane", "score is intended", QC_AT)
    assert gate.approval.failed_checks == ["loudness", "truePeak"]
    assert "approved by jane" in gate.verdict.message
    # Recorded in status: the next reconcile does not audit it again.
    again = qc_gate("ep1", _status(qcApproval=gate.approval.to_wire()), request, T0 + timedelta(seconds=30))
    assert again.approval == gate.approval and not again.newly_approved


def test_an_empty_reason_does_not_approve() -> None:
    request = approval_request(_metadata("  ", ("jane", T0, True)))
    gate = qc_gate("ep1", _status(), request, T0)
    assert (gate.verdict.status, gate.verdict.reason) == ("False", "QCHold")
    assert "is empty" in gate.verdict.message


def test_a_new_qc_needs_a_new_sign_off() -> None:
    request = approval_request(_metadata("ok for the first master", ("jane", QC_AT + timedelta(minutes=1), True)))
    first = qc_gate("ep1", _status(), request, T0)
    assert first.approval is not None
    # Re-ingest: a new QC after the sign-off; the old annotation no longer approves anything.
    reingested = _status(checked_at=T0 + timedelta(minutes=10), qcApproval=first.approval.to_wire())
    held = qc_gate("ep1", reingested, request, T0 + timedelta(minutes=11))
    assert (held.verdict.status, held.verdict.reason) == ("False", "QCHold") and held.approval is None
    assert "predates this QC" in held.verdict.message and "--overwrite" in held.verdict.message
    # Signed again after the new QC: approved again, and audited again.
    renewed = approval_request(_metadata("ok for the second", ("jane", T0 + timedelta(minutes=12), True)))
    gate = qc_gate("ep1", reingested, renewed, T0 + timedelta(minutes=12))
    assert gate.verdict.reason == "QCApproved" and gate.newly_approved


def test_without_managed_fields_the_first_sighting_stands_in() -> None:
    request = approval_request({"annotations": {APPROVED_ANNOTATION: "fine"}})
    assert request is not None and request.at is None
    first = qc_gate("ep1", _status(), request, T0)
    assert first.approval is not None and first.approval.at == T0 and first.approval.by == "unknown"
    later = qc_gate("ep1", _status(qcApproval=first.approval.to_wire()), request, T0 + timedelta(hours=1))
    assert later.approval is not None and later.approval.at == T0 and not later.newly_approved


def test_the_rights_side_reads_the_condition_and_falls_back_on_the_qc_verdict() -> None:
    held = qc_gate("ep1", _status(), None, T0).verdict
    status = _status()
    assert not publishable(status)  # no condition yet (an older operator's status): a failed QC holds
    assert publishable(_status("Passed")) and publishable(_status(None))
    assert not publishable(status.model_copy(update={"conditions": apply_verdicts(None, [held], 1, T0)}))
    approved = dataclasses.replace(held, status="True", reason="QCApproved")
    assert publishable(status.model_copy(update={"conditions": apply_verdicts(None, [approved], 1, T0)}))


def test_a_held_title_is_not_published_but_is_still_taken_down() -> None:
    target = DistributionTarget(name="svod-no", channel="svod", origin="s3://origin/svod-no", territories=["NO"])
    window = Window("w", RightsWindowSpec.model_validate({
        "assets": {"names": ["ep1"]}, "territories": ["NO"], "channels": ["svod"],
        "start": T0, "end": T0 + timedelta(hours=1)}))
    asset = Asset("ep1", {}, "s3://lib/assets/media/ep1/packages/abc", publishable=False)
    assert plan_rights("media", [window], [asset], [target], T0 + timedelta(minutes=1)).actions == []
    released = dataclasses.replace(asset, publishable=True)
    assert [a.action for a in plan_rights("media", [window], [released], [target],
                                          T0 + timedelta(minutes=1)).actions] == ["publish"]
    # Published before the hold (an earlier master): the licence end still takes it down.
    on = DistributionStatus(target="svod-no", window="w", channel="svod", territories=["NO"], state="Published",
                            origin="s3://origin/svod-no/media/ep1")
    after = plan_rights("media", [window], [dataclasses.replace(asset, distribution=[on])], [target],
                        T0 + timedelta(hours=2))
    assert [a.action for a in after.actions] == ["takedown"]
