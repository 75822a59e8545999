"""The QC gate, pure: whether a title may be published, from its QC result and a sign-off.

In broadcast a master that fails QC is held until somebody looks at it and signs it off. Which checks
fail QC (and so hold) and which only warn is the QC policy's `failOn` (asset, else ladder, else EBU R128
defaults). A failed QC sets `Publishable=False QCHold`; the rights planner publishes nothing of a held
title (what is already published stays: a hold stops new publishes, a licence end still takes down).

The sign-off is the annotation `qc.kubemam.io/approved: "<why>"`. Who and when come from the object's
managedFields — the field manager that wrote the annotation and the time it wrote it — and an approval
counts only when it was written after the QC it approves: a re-ingest (a new master, or new markers)
runs QC again and needs a new sign-off, while a manifest that carries the annotation from before
cannot approve a QC nobody has seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubemam.api.asset import MediaAssetStatus, QCApproval
from kubemam.plan.conditions import Verdict, find
from kubemam.timestamps import parse_time

APPROVED_ANNOTATION = "qc.kubemam.io/approved"
PUBLISHABLE = "Publishable"
MAX_REASON = 1024
MAX_MANAGER = 256


@dataclass(frozen=True)
class ApprovalRequest:
    """The annotation as the API server holds it: its value and who last wrote it, when."""

    reason: str
    by: str | None  # the field manager; None when managedFields does not name the annotation
    at: datetime | None


@dataclass(frozen=True)
class GateOutcome:
    verdict: Verdict
    approval: QCApproval | None  # the sign-off in force, for status.qcApproval
    newly_approved: bool = False  # not in status before: audited once with an Event


def approval_request(metadata: dict[str, Any]) -> ApprovalRequest | None:
    """The approval annotation of an object's metadata, with its writer from managedFields."""
    reason = (metadata.get("annotations") or {}).get(APPROVED_ANNOTATION)
    if reason is None:
        return None
    by, at = None, None
    for entry in metadata.get("managedFields") or []:
        annotations = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {}
        if f"f:{APPROVED_ANNOTATION}" not in annotations:
            continue
        when = parse_time(entry.get("time"))
        if when is not None and (at is None or when > at):
            by, at = str(entry.get("manager") or "unknown")[:MAX_MANAGER], when
    return ApprovalRequest(reason=str(reason).strip()[:MAX_REASON], by=by, at=at)


def failed_checks(status: MediaAssetStatus) -> list[str]:
    issues = status.qc.issues if status.qc is not None else None
    return sorted({i.check for i in issues or [] if i.severity == "error"})


def _hold_message(name: str, status: MediaAssetStatus, checks: list[str]) -> str:
    qc = status.qc
    named = ", ".join(checks) or "see the QC report"
    loudness = ""
    if qc is not None and qc.loudness is not None and qc.loudness.integrated_lufs is not None and "loudness" in checks:
        loudness = f" (integrated {qc.loudness.integrated_lufs:.1f} LUFS)"
    return (f"QC failed: {named}{loudness}; held from publishing until approved: "
            f"kubectl annotate mediaasset {name} {APPROVED_ANNOTATION}='<why>'")


def qc_gate(name: str, status: MediaAssetStatus, request: ApprovalRequest | None, now: datetime) -> GateOutcome:
    """Publishable for one asset whose ingest succeeded (status carries its QC)."""
    qc = status.qc
    if qc is None:
        return GateOutcome(Verdict(PUBLISHABLE, "False", "QCPending", "QC has not run on this master yet"), None)
    if qc.verdict != "Failed":
        return GateOutcome(Verdict(PUBLISHABLE, "True", f"QC{qc.verdict}", f"QC verdict {qc.verdict}"), None)
    checks = failed_checks(status)
    hold = _hold_message(name, status, checks)
    if request is None:
        return GateOutcome(Verdict(PUBLISHABLE, "False", "QCHold", hold), None)
    if not request.reason:
        return GateOutcome(Verdict(PUBLISHABLE, "False", "QCHold",
                                   f"{APPROVED_ANNOTATION} is empty: give the reason for the sign-off; {hold}"), None)
    recorded = status.qc_approval
    at = request.at
    by = request.by
    if at is None:
        # No managedFields entry names it (a server that strips them): the first sighting stands in.
        same = recorded is not None and recorded.reason == request.reason
        at = recorded.at if same and recorded is not None else now
        by = recorded.by if same and recorded is not None else "unknown"
    # managedFields keep whole seconds: a sign-off in the same second as the QC counts as after it.
    if qc.checked_at is not None and at < qc.checked_at.replace(microsecond=0):
        stale = (f"the approval written at {at.isoformat()} predates this QC ({qc.checked_at.isoformat()}): "
                 f"a re-ingest needs a new sign-off (kubectl annotate --overwrite); {hold}")
        return GateOutcome(Verdict(PUBLISHABLE, "False", "QCHold", stale), None)
    approval = QCApproval(reason=request.reason, by=by or "unknown", at=at, qc_checked_at=qc.checked_at,
                          failed_checks=checks or None)
    newly = recorded is None or (recorded.reason, recorded.at, recorded.qc_checked_at) != (
        approval.reason, approval.at, approval.qc_checked_at)
    message = f"QC failed ({', '.join(checks) or 'see the report'}); approved by {approval.by} at " \
              f"{approval.at.isoformat()}: {approval.reason}"
    return GateOutcome(Verdict(PUBLISHABLE, "True", "QCApproved", message[:4096]), approval, newly)


def publishable(status: MediaAssetStatus) -> bool:
    """What the rights planner reads: the asset controller's Publishable condition when it has written
    one; before that (an older operator's status) a failed QC holds and anything else may publish."""
    condition = find(status.conditions, PUBLISHABLE)
    if condition is not None:
        return condition.status == "True"
    return status.qc is None or status.qc.verdict != "Failed"
