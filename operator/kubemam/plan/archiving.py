"""The archive step of the MediaAsset planner (pure): verified copies at the locations of the tier the
asset's age puts it in, the EBUCore sidecar, restore; it runs the fixity and migrate steps too
(plan/fixity.py, plan/migrate.py). Purge is plan/purge.py; what they share is plan/archive_facts.py.

The asset's facts, its ArchivePolicy and the clock in; Jobs, conditions and status.storage out.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

from kubemam.api.archive import LegalHoldStatus
from kubemam.api.asset import (
    MediaAssetStatus,
    PreservationMaster,
    RestoreStatus,
    StorageCopy,
    StorageStatus,
    Timeline,
)
from kubemam.archive.ebucore import FileChecksum, SidecarDocument, build_sidecar
from kubemam.config import OperatorConfig
from kubemam.plan.archive_facts import (
    CONFIRM_VACATE_ANNOTATION,
    FIXITY_ANNOTATION,
    LEGAL_HOLD_ANNOTATION,
    RESTORE_ANNOTATION,
    RETRY_ANNOTATION,
    ArchiveFacts,
    ArchiveOutcome,
    archive_request,
    busy_with,
    find_job,
    legal_hold,
    location_inputs,
    secret_name,
    start_job,
)
from kubemam.plan.archive_wake import archive_wake
from kubemam.plan.conditions import Verdict
from kubemam.plan.fixity import plan_fixity
from kubemam.plan.migrate import plan_migration
from kubemam.plan.placement import AssetClock, current_tier, placement, tier_since
from kubemam.plan.purge import deletion_blocker, purge_request
from kubemam.plan.vacating import (
    Vacate,
    extra_record,
    grace_hours,
    hold_record,
    plan_vacate,
    replicated,
    still_kept,
    with_foreign,
)
from kubemam.steps.archive import ArchiveInputs, ObjectInput, TargetInput
from kubemam.steps.registry import ARCHIVE

__all__ = ["CONFIRM_VACATE_ANNOTATION", "FIXITY_ANNOTATION", "LEGAL_HOLD_ANNOTATION", "RESTORE_ANNOTATION",
           "RETRY_ANNOTATION", "ArchiveFacts", "ArchiveOutcome", "deletion_blocker", "plan_archive", "purge_request"]

SIDECAR_KEY = "ebucore.xml"
PRESERVATION_KEY = "preservation.mkv"
ONLINE_BYTES_PER_SECOND = 50 * 1024 * 1024  # a conservative estimate of one copy's throughput
COLD_HOURS = {"GLACIER": 5, "DEEP_ARCHIVE": 12}
RESTORE_POLL = timedelta(minutes=15)


def master_key(source_uri: str) -> str:
    suffix = PurePosixPath(urlparse(source_uri).path).suffix.lower()
    return "master" + (suffix if suffix and len(suffix) <= 8 else "")


def sidecar_xml(facts: ArchiveFacts, ingested_at: datetime, preservation: PreservationMaster | None) -> bytes:
    """The EBUCore sidecar: what the asset is, where it may go, and the checksums that prove its files."""
    status = facts.status
    technical = status.technical
    assert technical is not None and technical.sha256
    checksums = [FileChecksum(name=master_key(facts.spec.source.uri), value=technical.sha256)]
    if preservation is not None:
        checksums.append(FileChecksum(name=PRESERVATION_KEY, value=preservation.sha256))
    for rendition in status.renditions or []:
        if rendition.sha256:
            checksums.append(FileChecksum(name=rendition.uri, value=rendition.sha256))
    document = SidecarDocument(
        namespace=facts.namespace, name=facts.name, uid=facts.uid, descriptive=facts.spec.metadata,
        technical=technical, timeline=facts.spec.timeline or Timeline(),
        markers=facts.spec.markers or [], rights=facts.rights, checksums=checksums,
        generated_at=ingested_at)  # not "now": the same facts give the same bytes, so no needless rewrite
    return build_sidecar(document)


def archive_objects(facts: ArchiveFacts, ingested_at: datetime, preservation: PreservationMaster | None,
                    ) -> list[ObjectInput]:
    technical = facts.status.technical
    assert technical is not None and technical.sha256 and technical.size_bytes is not None
    xml = sidecar_xml(facts, ingested_at, preservation)
    objects = [
        ObjectInput(key=master_key(facts.spec.source.uri), sha256=technical.sha256, size=technical.size_bytes,
                    source=facts.spec.source.uri, lock=True),
        ObjectInput(key=SIDECAR_KEY, sha256=hashlib.sha256(xml).hexdigest(), size=len(xml),
                    content=xml.decode(), content_type="application/xml"),
    ]
    if preservation is not None and preservation.verified:
        objects.append(ObjectInput(key=PRESERVATION_KEY, sha256=preservation.sha256, size=preservation.size,
                                   source=preservation.uri, lock=True))
    return objects


def _last_used(status: MediaAssetStatus, storage: StorageStatus) -> datetime | None:
    moments = [d.since for d in status.distribution or [] if d.state == "Published" and d.since]
    if storage.last_used_at:
        moments.append(storage.last_used_at)
    if storage.restore and storage.restore.completed_at:
        moments.append(storage.restore.completed_at)
    return max(moments, default=None)


def _estimate(copies: list[StorageCopy], size: int, now: datetime) -> datetime:
    classes = {c.storage_class for c in copies}
    hours = min((COLD_HOURS[c] for c in classes if c in COLD_HOURS), default=0)
    if hours and any(c not in COLD_HOURS for c in classes):
        hours = 0  # an online copy exists: no thaw needed
    return now + timedelta(hours=hours, seconds=30 + size / ONLINE_BYTES_PER_SECOND)


def _restore(facts: ArchiveFacts, storage: StorageStatus, now: datetime) -> RestoreStatus | None:
    token = facts.annotations.get(RESTORE_ANNOTATION)
    current = storage.restore
    if not token or (current is not None and current.request == token):
        return current
    if not storage.copies:
        return RestoreStatus(request=token, state="Failed", requested_at=now,
                             message="nothing to restore: the asset has no archived copy yet")
    size = facts.status.technical.size_bytes if facts.status.technical else 0
    return RestoreStatus(request=token, state="Restoring", requested_at=now,
                         from_location=storage.copies[0].location,
                         estimated_completion=_estimate(storage.copies, size or 0, now))


def plan_archive(facts: ArchiveFacts, config: OperatorConfig, now: datetime) -> ArchiveOutcome:
    """What the policy asks of this ingested asset now."""
    out = ArchiveOutcome()
    policy, status = facts.policy, facts.status
    storage = status.storage or StorageStatus()
    technical = status.technical
    if technical is None or not technical.sha256 or technical.size_bytes is None:
        out.verdicts.append(Verdict("Archived", "False", "NoChecksum",
                                    "the ingest result has no sha256 and size for the master"))
        out.storage = storage
        return out
    ingested_at = storage.ingested_at or now
    min_copies = policy.copies.min_copies if policy.copies else 1
    if not facts.spec.source.uri.startswith("s3://") and not storage.copies:
        out.failed = Verdict("Archived", "False", "SourceNotInS3",
                             "the archive copies the master from S3; this master's source is "
                             f"{urlparse(facts.spec.source.uri).scheme}://, which the archive worker does not read")
        out.verdicts.append(out.failed)
        out.storage = storage
        return out
    preservation = plan_migration(facts, storage, config, out, now)

    restore = _restore(facts, storage, now)
    restoring = restore is not None and restore.state == "Restoring"
    clock = AssetClock(ingested_at, _last_used(status, storage),
                       restore.requested_at if restore is not None and restore.state != "Failed" else None)
    index = current_tier(policy, clock, now)
    tier = policy.tiers[index]
    targets = placement(policy, index)
    locations, secret_env = location_inputs(policy, facts.namespace, facts.name, config)
    held = legal_hold(policy, facts.annotations)
    hold = hold_record(storage.legal_hold, held, now)
    retention = policy.retention
    retain_until = ingested_at + timedelta(days=retention.days) if retention and retention.days else None
    objects = archive_objects(facts, ingested_at, preservation)
    inputs = ArchiveInputs(
        mode="place", tier=tier.name, since=tier_since(policy, clock, index), objects=objects, locations=locations,
        targets=[TargetInput(location=t.location.name, storage_class=t.storage_class, primary=t.primary)
                 for t in targets],
        retain_until=retain_until, retention_mode=retention.mode if retention else "GOVERNANCE", legal_hold=held,
        hold_since=hold.since if hold else None,
        run=f"retry:{facts.annotations[RETRY_ANNOTATION]}" if facts.annotations.get(RETRY_ANNOTATION) else None)
    request = archive_request(facts, ARCHIVE, inputs.to_wire(), secret_env)
    observed = find_job(facts, request.name)
    result = observed.result if observed is not None else None
    polling = observed is not None and observed.state == "Succeeded" and result is not None and "restoring" in result
    if polling:
        # A cold copy is thawing: ask again every RESTORE_POLL until it can be read.
        poll = int(now.timestamp() // RESTORE_POLL.total_seconds())
        request = archive_request(facts, ARCHIVE, {**inputs.to_wire(), "run": f"poll-{poll}"}, secret_env)
        observed = find_job(facts, request.name)
        result = observed.result if observed is not None else None
    busy = busy_with(facts, request.name)
    # A hold asked while an archive run is under way replaces that run (its Job is deleted as superseded):
    # a vacate must not go on deleting what is now held. A fixity run, which deletes nothing, is waited for.
    start_job(out, request, observed, busy is None or (held and busy.step == ARCHIVE), config)

    # Copies a policy edit no longer needs (the tier is the one reached: not a move) wait for the grace.
    target_names = {t.location.name for t in targets}
    moving = storage.tier != tier.name
    extras = [] if moving else [c for c in storage.copies or [] if c.location not in target_names]
    owner = f"{facts.namespace}/{facts.name}"
    kept = still_kept(extra_record(storage.extra_copies, [c.location for c in extras], grace_hours(policy), owner,
                                   now), facts.annotations, now)
    placed = observed is not None and observed.state == "Succeeded" and bool(result) and "copies" in (result or {})
    vacate = Vacate()
    if placed and not held:
        vacate = plan_vacate(facts, request, policy, targets, extras, kept, locations, secret_env, config, out)

    copies = list(storage.copies or [])
    archived_at = storage.archived_at
    tier_reached = storage.tier
    if placed and result:
        by_name = {loc.name: loc for loc in policy.locations}
        fresh = [StorageCopy(location=c["location"], uri=c["uri"], storage_class=c.get("storageClass"),
                             endpoint=by_name[c["location"]].endpoint or config.s3_endpoint
                             if c["location"] in by_name else None,
                             credentials_secret=secret_name(by_name.get(c["location"])),
                             site=by_name[c["location"]].site if c["location"] in by_name else None,
                             offsite=by_name[c["location"]].offsite if c["location"] in by_name else False,
                             verified_at=c.get("verifiedAt"), verified_by=c.get("verifiedBy"))
                 for c in result["copies"]]
        fresh_names = {c.location for c in fresh}
        placed_copies = fresh + [c for c in extras if c.location not in fresh_names
                                 and c.location not in vacate.emptied]
        if [c.location for c in fresh] != [c.location for c in copies if c.location in fresh_names] \
                or tier_reached != tier.name:  # first seen now
            out.copied = {tier.name: sum(int(v) for v in (result.get("copiedBytes") or {}).values())}
            if tier_reached is not None and tier_reached != tier.name:
                out.events.append(("Normal", "TierChanged", f"archived set moved to tier {tier.name} "
                                   f"({', '.join(c.location for c in fresh)})"))
        copies, tier_reached = placed_copies, tier.name
        archived_at = archived_at or now
        if restoring and restore is not None and any(c.location == tier.location for c in copies):
            restore = restore.model_copy(update={"state": "Restored", "completed_at": now})
            out.events.append(("Normal", "Restored", f"archived set is back in tier {tier.name}"))

    if observed is not None and observed.state == "Failed":
        detail = f": {observed.message}" if observed.message else ""
        out.failed = Verdict("Archived", "False", "ArchiveFailed", f"Job {observed.name} failed{detail}")
    if out.failed is not None:  # the place run, or the vacate run after it
        out.verdicts.append(out.failed)
        if restoring and restore is not None:
            restore = restore.model_copy(update={"state": "Failed",
                                                 "message": f"the restore failed: {out.failed.message}"[:1024]})
    elif observed is not None and observed.state == "Succeeded" and result and "restoring" in result:
        thaw = result["restoring"]
        out.verdicts.append(Verdict("Archived", "Unknown", "RestoringFromColdStorage",
                                    f"waiting for {thaw.get('storageClass')} at {thaw.get('location')} to thaw"))
    elif tier_reached == tier.name and copies:
        places = ", ".join(c.location for c in copies)
        out.verdicts.append(Verdict("Archived", "True", "Archived", f"tier {tier.name}: {len(copies)} verified "
                                    f"cop{'y' if len(copies) == 1 else 'ies'} ({places})"))
    else:
        running = observed is not None and observed.state == "Running"
        out.verdicts.append(Verdict("Archived", "Unknown", "ArchiveRunning" if running else "ArchivePending",
                                    f"placing the archived set in tier {tier.name}: "
                                    f"{', '.join(t.location.name for t in targets)}"))
        out.holding = not copies

    left = [c.location for c in copies if c.location not in target_names] if tier_reached == tier.name else []
    extra = extra_record(storage.extra_copies, left, grace_hours(policy), owner, now)
    if extra is not None and (storage.extra_copies is None or storage.extra_copies.since != extra.since):
        out.events.append(("Normal", "ExtraCopiesKept", f"copies at {', '.join(extra.locations)} are no longer "
                           f"needed by the policy; kept until {extra.vacate_after.isoformat()} "
                           f"({CONFIRM_VACATE_ANNOTATION}={extra.token} deletes them now)"))
    out.verdicts.append(replicated(len(copies) - len(left), min_copies, extra, still_kept(extra, facts.annotations,
                                                                                          now)))
    hold = _foreign_holds(hold, storage, result if placed else None, vacate, out)

    fixity = plan_fixity(facts, storage, copies, inputs, secret_env, archived_at, config, now, out)
    out.storage = storage.model_copy(update={
        "tier": tier_reached, "copies": copies or None, "min_copies": min_copies, "ingested_at": ingested_at,
        "last_used_at": _last_used(status, storage.model_copy(update={"restore": restore})),
        "archived_at": archived_at, "retain_until": retain_until,
        "sidecar_uri": f"{copies[0].uri}/{SIDECAR_KEY}" if copies else None,
        "restore": restore, "fixity": fixity, "preservation_master": preservation,
        "legal_hold": hold, "extra_copies": extra,
    })
    wakes = (out.wake, archive_wake(facts, out.storage, RESTORE_POLL if polling else None, now))
    out.wake = min((w for w in wakes if w is not None), default=None)  # out.wake: a migrate attempt's due time
    return out


def _foreign_holds(hold: LegalHoldStatus | None, storage: StorageStatus, placed: dict[str, Any] | None,
                   vacate: Vacate, out: ArchiveOutcome) -> LegalHoldStatus | None:
    """The versions someone else holds, as the latest place and vacate runs saw them; a Warning for new ones."""
    if placed is None and vacate.foreign is None:
        return hold
    seen = [str(v) for v in (placed or {}).get("foreignHolds") or []] + (vacate.foreign or [])
    before = set(storage.legal_hold.foreign or []) if storage.legal_hold else set()
    new = sorted(set(seen) - before)
    if new:
        out.events.append(("Warning", "ForeignLegalHold", f"a legal hold kubemam did not set keeps {', '.join(new)}; "
                           "kubemam never lifts it (it stays through moves, restores and repairs, and stops a purge)"))
    return with_foreign(hold, seen)
