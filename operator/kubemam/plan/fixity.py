"""The fixity step (pure): a run per slot of the policy's cron schedule and per fixity-check request,
once the asset has verified copies; its result becomes status.storage.fixity, an Event and a metric."""

from __future__ import annotations

from datetime import datetime

from kubemam.api.asset import FixityStatus, StorageCopy, StorageStatus
from kubemam.config import OperatorConfig
from kubemam.plan.archive_facts import (
    FIXITY_ANNOTATION,
    ArchiveFacts,
    ArchiveOutcome,
    archive_request,
    busy_with,
    copy_locations,
    find_job,
    start_job,
)
from kubemam.plan.conditions import Verdict
from kubemam.plan.schedule import latest_slot
from kubemam.steps.archive import ArchiveInputs, TargetInput
from kubemam.steps.registry import FIXITY


def plan_fixity(facts: ArchiveFacts, storage: StorageStatus, copies: list[StorageCopy], place: ArchiveInputs,
                secret_env: tuple[tuple[str, str, str], ...], archived_at: datetime | None,
                config: OperatorConfig, now: datetime, out: ArchiveOutcome) -> FixityStatus | None:
    """A fixity run per schedule slot (and per kubemam.io/fixity-check request) once copies exist. A repaired
    copy gets the place run's retention and legal hold (and keeps a hold someone else set on its key)."""
    current = storage.fixity
    if not copies or archived_at is None:
        return current
    schedule = facts.policy.fixity.schedule if facts.policy.fixity else None
    token = facts.annotations.get(FIXITY_ANNOTATION)
    run: str | None = None
    slot = None
    if token and (current is None or current.last_request != token):
        run = f"request:{token}"
    elif schedule:
        anchor = (current.last_slot if current and current.last_slot else None) or archived_at
        slot = latest_slot(schedule, anchor, now)
        run = f"slot:{slot.isoformat()}" if slot else None
    if run is None:
        return current
    root = f"{config.library_uri.rstrip('/')}/assets/{facts.namespace}/{facts.name}"
    report = f"{root}/fixity/{run.replace(':', '-')}.json"
    # Extra copies at a location the policy no longer names are checked too, reached as status recorded them.
    known = {loc.name for loc in place.locations}
    others, other_env = copy_locations([c for c in copies if c.location not in known], len(place.locations))
    inputs = ArchiveInputs(mode="fixity", objects=place.objects, locations=place.locations + others, run=run,
                           report=report,
                           targets=[TargetInput(location=c.location, storage_class=c.storage_class or "STANDARD")
                                    for c in copies],
                           retain_until=place.retain_until, retention_mode=place.retention_mode,
                           legal_hold=place.legal_hold)
    request = archive_request(facts, FIXITY, inputs.to_wire(), secret_env + other_env)
    observed = find_job(facts, request.name)
    start_job(out, request, observed, busy_with(facts, request.name) is None, config)
    if observed is None or observed.state in ("Pending", "Running"):
        return current
    base = current or FixityStatus()
    answered = {"last_slot": slot or base.last_slot,
                "last_request": token if run.startswith("request:") else base.last_request}
    if observed.state == "Failed":
        # Recorded as answered, so the failure is reported once and the schedule goes on.
        out.verdicts.append(Verdict("FixityVerified", "False", "FixityFailed",
                                    f"Job {observed.name} failed: {observed.message or 'see its log'}"))
        out.events.append(("Warning", "FixityFailed", f"fixity run {run} failed: {observed.message or ''}"[:1024]))
        return base.model_copy(update={"last_run": now, **answered})
    result = (observed.result if observed is not None else None) or {}
    failures = int(result.get("failures") or 0)
    repaired = ", ".join(result.get("repaired") or [])
    out.fixity_failures = failures
    out.fixity_repaired = [str(r) for r in result.get("repaired") or []]
    if failures:
        out.events.append(("Warning", "FixityRepaired", f"{failures} copy(ies) did not match their sha256 and "
                                                        f"were repaired from an intact copy: {repaired}"))
    out.verdicts.append(Verdict("FixityVerified", "True", "Repaired" if failures else "AllCopiesIntact",
                                f"{result.get('checked', 0)} object copies re-hashed at {now.isoformat()}"
                                + (f"; repaired {repaired}" if failures else "")))
    return base.model_copy(update={
        "last_run": now, "copies_checked": int(result.get("checked") or 0),
        "failures": (base.failures or 0) + failures,
        "last_repair": f"{now.isoformat()} {repaired}" if failures else base.last_repair,
        "report_uri": report, **answered})
