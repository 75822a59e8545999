"""The archive side of the MediaAsset planner: copies, tiers, fixity, restore and migration.

Pure: the asset's facts, its ArchivePolicy and the clock in; Jobs, conditions and status.storage out.
Annotations carry requests a person makes (the spec stays what the asset *is*):
  archive.kubemam.io/restore=<token>       bring the archived set back to the hot tier (new token, new request)
  archive.kubemam.io/fixity-check=<token>  re-hash every copy now, outside the policy's schedule
  archive.kubemam.io/legal-hold="true"     hold this asset's copies (Object Lock legal hold, deletion blocked)
Not under kubemam.io/: Kopf keeps its own state there and ignores changes to those annotations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

from kubemam.api.archive import ArchivePolicySpec, Location
from kubemam.api.asset import (
    FixityStatus,
    MediaAssetSpec,
    MediaAssetStatus,
    PreservationMaster,
    RestoreStatus,
    StepJob,
    StorageCopy,
    StorageStatus,
    Timeline,
)
from kubemam.api.common import GROUP
from kubemam.archive.ebucore import FileChecksum, RightsSummary, SidecarDocument, build_sidecar
from kubemam.config import OperatorConfig
from kubemam.media.preserve import at_risk
from kubemam.plan.archive_inputs import ArchiveInputs, LocationInput, ObjectInput, TargetInput
from kubemam.plan.conditions import Verdict
from kubemam.plan.jobs import Owner, StepJobRequest, build_step_job
from kubemam.plan.placement import (
    AssetClock,
    current_tier,
    placement,
    tier_since,
    vacated_locations,
)
from kubemam.plan.schedule import latest_slot

ARCHIVE = "archive"
FIXITY = "fixity"
PURGE = "purge"
MIGRATE = "migrate"
RESTORE_ANNOTATION = f"archive.{GROUP}/restore"
FIXITY_ANNOTATION = f"archive.{GROUP}/fixity-check"
LEGAL_HOLD_ANNOTATION = f"archive.{GROUP}/legal-hold"
RETRY_ANNOTATION = f"archive.{GROUP}/retry"
# Archive Jobs ride out site outages: with the Job controller's pod backoff (10 s doubling to 6 min)
# twelve attempts span about an hour before the Job fails.
ARCHIVE_BACKOFF_LIMIT = 12
SIDECAR_KEY = "ebucore.xml"
PRESERVATION_KEY = "preservation.mkv"
ONLINE_BYTES_PER_SECOND = 50 * 1024 * 1024  # a conservative estimate of one copy's throughput
COLD_HOURS = {"GLACIER": 5, "DEEP_ARCHIVE": 12}
RESTORE_POLL = timedelta(minutes=15)


@dataclass(frozen=True)
class ArchiveFacts:
    name: str
    namespace: str
    uid: str
    spec: MediaAssetSpec
    status: MediaAssetStatus  # with the ingest result mirrored in
    policy: ArchivePolicySpec
    annotations: dict[str, str]
    rights: list[RightsSummary]
    jobs: list[Any]  # JobObservation (plan.asset); Any here keeps this module free of that import cycle
    finished: list[StepJob]  # status.jobs: what ran before (a deleted Job is not run again)


@dataclass
class ArchiveOutcome:
    create_jobs: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[StepJob] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    storage: StorageStatus | None = None
    holding: bool = False  # the first archive is not done: the asset is not Ready yet
    failed: Verdict | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    fixity_failures: int = 0  # bad copies found by a fixity run whose result is first seen now
    fixity_repaired: list[str] = field(default_factory=list)  # their "location:key" (the first few)
    copied: dict[str, int] = field(default_factory=dict)  # tier -> bytes, from a place run first seen now


def legal_hold(policy: ArchivePolicySpec | None, annotations: dict[str, str]) -> bool:
    held = policy.retention.legal_hold if policy is not None and policy.retention else False
    return held or annotations.get(LEGAL_HOLD_ANNOTATION, "").lower() == "true"


def asset_prefix(location: Location, namespace: str, name: str) -> str:
    return f"{location.uri.rstrip('/')}/{namespace}/{name}"


def credentials_env(index: int) -> str:
    return f"KUBEMAM_LOCATION_{index}"


def location_inputs(policy: ArchivePolicySpec, namespace: str, name: str,
                    config: OperatorConfig) -> tuple[list[LocationInput], tuple[tuple[str, str, str], ...]]:
    """Every policy location as the worker sees it, and the Secret references its credentials travel by."""
    inputs, secret_env = [], []
    for index, loc in enumerate(policy.locations):
        prefix = None
        if loc.credentials_secret_ref is not None:
            prefix = credentials_env(index)
            for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                secret_env.append((f"{prefix}_{variable.removeprefix('AWS_')}", loc.credentials_secret_ref.name,
                                   variable))
        inputs.append(LocationInput(name=loc.name, uri=asset_prefix(loc, namespace, name),
                                    endpoint=loc.endpoint or config.s3_endpoint, credentials=prefix, site=loc.site,
                                    offsite=loc.offsite, object_lock=loc.object_lock))
    return inputs, tuple(secret_env)


def _secret_name(location: Location | None) -> str | None:
    ref = location.credentials_secret_ref if location is not None else None
    return ref.name if ref is not None else None


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


def _observe(facts: ArchiveFacts, name: str) -> Any:
    found = next((j for j in facts.jobs if j.name == name), None)
    if found is not None:
        return found
    record = next((r for r in facts.finished if r.name == name and r.state in ("Succeeded", "Failed")), None)
    return record


def _record(request: StepJobRequest, observed: Any) -> StepJob:
    return StepJob(step=request.step, name=request.name, input_hash=request.digest,
                   state=observed.state if observed else "Pending", message=observed.message if observed else None)


def _request(facts: ArchiveFacts, step: str, inputs: dict[str, Any],
             secret_env: tuple[tuple[str, str, str], ...] = ()) -> StepJobRequest:
    return StepJobRequest(owner=Owner("MediaAsset", facts.name, facts.uid, facts.namespace), step=step,
                          inputs=inputs, secret_env=secret_env,
                          backoff_limit=ARCHIVE_BACKOFF_LIMIT if step in (ARCHIVE, FIXITY) else None)


def _busy(facts: ArchiveFacts, planned: str) -> Any:
    """Another archive or fixity Job of the asset still pending or running: one at a time, or a move
    could empty a location another run is still copying into."""
    return next((j for j in facts.jobs if j.step in (ARCHIVE, FIXITY) and j.state in ("Pending", "Running")
                 and j.name != planned), None)


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
    preservation = _plan_migration(facts, storage, config, out)

    restore = _restore(facts, storage, now)
    restoring = restore is not None and restore.state == "Restoring"
    clock = AssetClock(ingested_at, _last_used(status, storage),
                       restore.requested_at if restore is not None and restore.state != "Failed" else None)
    index = current_tier(policy, clock, now)
    tier = policy.tiers[index]
    targets = placement(policy, index)
    locations, secret_env = location_inputs(policy, facts.namespace, facts.name, config)
    held = legal_hold(policy, facts.annotations)
    retention = policy.retention
    retain_until = ingested_at + timedelta(days=retention.days) if retention and retention.days else None
    objects = archive_objects(facts, ingested_at, preservation)
    inputs = ArchiveInputs(
        mode="place", tier=tier.name, since=tier_since(policy, clock, index), objects=objects, locations=locations,
        targets=[TargetInput(location=t.location.name, storage_class=t.storage_class, primary=t.primary)
                 for t in targets],
        vacate=[loc.name for loc in vacated_locations(policy, targets)],
        retain_until=retain_until, retention_mode=retention.mode if retention else "GOVERNANCE", legal_hold=held,
        run=f"retry:{facts.annotations[RETRY_ANNOTATION]}" if facts.annotations.get(RETRY_ANNOTATION) else None)
    request = _request(facts, ARCHIVE, inputs.to_wire(), secret_env)
    observed = _observe(facts, request.name)
    result = getattr(observed, "result", None) if observed is not None else None
    if observed is not None and observed.state == "Succeeded" and result and "restoring" in result:
        # A cold copy is thawing: ask again every RESTORE_POLL until it can be read.
        poll = int(now.timestamp() // RESTORE_POLL.total_seconds())
        request = _request(facts, ARCHIVE, {**inputs.to_wire(), "run": f"poll-{poll}"}, secret_env)
        observed = _observe(facts, request.name)
        result = getattr(observed, "result", None) if observed is not None else None
    if observed is None and _busy(facts, request.name) is None:
        out.create_jobs.append(build_step_job(request, config))
    out.jobs.append(_record(request, observed))

    copies = list(storage.copies or [])
    archived_at = storage.archived_at
    tier_reached = storage.tier
    if observed is not None and observed.state == "Succeeded" and result and "copies" in result:
        by_name = {loc.name: loc for loc in policy.locations}
        fresh = [StorageCopy(location=c["location"], uri=c["uri"], storage_class=c.get("storageClass"),
                             endpoint=by_name[c["location"]].endpoint or config.s3_endpoint
                             if c["location"] in by_name else None,
                             credentials_secret=_secret_name(by_name.get(c["location"])),
                             site=by_name[c["location"]].site if c["location"] in by_name else None,
                             offsite=by_name[c["location"]].offsite if c["location"] in by_name else False,
                             verified_at=c.get("verifiedAt"), verified_by=c.get("verifiedBy"))
                 for c in result["copies"]]
        if [c.location for c in fresh] != [c.location for c in copies] or tier_reached != tier.name:
            out.copied = {tier.name: sum(int(v) for v in (result.get("copiedBytes") or {}).values())}
            if tier_reached is not None and tier_reached != tier.name:
                out.events.append(("Normal", "TierChanged", f"archived set moved to tier {tier.name} "
                                   f"({', '.join(c.location for c in fresh)})"))
        copies, tier_reached = fresh, tier.name
        archived_at = archived_at or now
        if restoring and restore is not None and any(c.location == tier.location for c in copies):
            restore = restore.model_copy(update={"state": "Restored", "completed_at": now})
            out.events.append(("Normal", "Restored", f"archived set is back in tier {tier.name}"))

    if observed is not None and observed.state == "Failed":
        detail = f": {observed.message}" if observed.message else ""
        out.failed = Verdict("Archived", "False", "ArchiveFailed", f"Job {observed.name} failed{detail}")
        out.verdicts.append(out.failed)
        if restoring and restore is not None:
            restore = restore.model_copy(update={"state": "Failed",
                                                 "message": f"the restore Job failed{detail}"[:1024]})
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

    verified = len(copies)
    if verified >= min_copies:
        out.verdicts.append(Verdict("Replicated", "True", "MinCopiesMet", f"{verified} of {min_copies} copies"))
    else:
        out.verdicts.append(Verdict("Replicated", "False", "UnderReplicated",
                                    f"{verified} of {min_copies} verified copies"))

    fixity = _plan_fixity(facts, storage, copies, objects, locations, secret_env, archived_at, config, now, out)
    out.storage = storage.model_copy(update={
        "tier": tier_reached, "copies": copies or None, "min_copies": min_copies, "ingested_at": ingested_at,
        "last_used_at": _last_used(status, storage.model_copy(update={"restore": restore})),
        "archived_at": archived_at, "retain_until": retain_until,
        "sidecar_uri": f"{copies[0].uri}/{SIDECAR_KEY}" if copies else None,
        "restore": restore, "fixity": fixity, "preservation_master": preservation,
    })
    return out


def _plan_fixity(facts: ArchiveFacts, storage: StorageStatus, copies: list[StorageCopy],
                 objects: list[ObjectInput], locations: list[LocationInput],
                 secret_env: tuple[tuple[str, str, str], ...], archived_at: datetime | None,
                 config: OperatorConfig, now: datetime, out: ArchiveOutcome) -> FixityStatus | None:
    """A fixity run per schedule slot (and per kubemam.io/fixity-check request) once copies exist."""
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
    inputs = ArchiveInputs(mode="fixity", objects=objects, locations=locations, run=run, report=report,
                           targets=[TargetInput(location=c.location, storage_class=c.storage_class or "STANDARD")
                                    for c in copies],
                           legal_hold=legal_hold(facts.policy, facts.annotations))
    request = _request(facts, FIXITY, inputs.to_wire(), secret_env)
    observed = _observe(facts, request.name)
    if observed is None and _busy(facts, request.name) is None:
        out.create_jobs.append(build_step_job(request, config))
    out.jobs.append(_record(request, observed))
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
    result = getattr(observed, "result", None) or {}
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


def _plan_migration(facts: ArchiveFacts, storage: StorageStatus, config: OperatorConfig,
                    out: ArchiveOutcome) -> PreservationMaster | None:
    """Masters in a format the policy watches get MigrationRecommended, and a preservation master when asked."""
    technical = facts.status.technical
    formats = facts.policy.formats_at_risk or []
    risky = at_risk(technical, formats) if technical is not None and formats else []
    if not risky:
        out.verdicts.append(Verdict("MigrationRecommended", "False", "NoFormatAtRisk",
                                    "the master uses no format the policy lists as at risk"))
        return storage.preservation_master
    migration = facts.policy.migration
    if storage.preservation_master is not None and storage.preservation_master.verified:
        out.verdicts.append(Verdict("MigrationRecommended", "False", "PreservationMasterWritten",
                                    f"{', '.join(risky)} migrated to {storage.preservation_master.uri}"))
        return storage.preservation_master
    out.verdicts.append(Verdict("MigrationRecommended", "True", "FormatAtRisk",
                                f"the master uses {', '.join(risky)}, listed as at risk by the policy"
                                + ("" if migration and migration.enabled else "; set migration.enabled to migrate")))
    if migration is None or not migration.enabled:
        return storage.preservation_master
    assert technical is not None
    output = f"{config.library_uri.rstrip('/')}/assets/{facts.namespace}/{facts.name}/preservation"
    request = _request(facts, MIGRATE, {"source": facts.spec.source.uri, "sha256": technical.sha256,
                                        "output": output, "target": migration.target})
    observed = _observe(facts, request.name)
    if observed is None:
        out.create_jobs.append(build_step_job(request, config))
    out.jobs.append(_record(request, observed))
    result = getattr(observed, "result", None) if observed is not None else None
    if observed is not None and observed.state == "Succeeded" and result and "preservationMaster" in result:
        master = result["preservationMaster"]
        return PreservationMaster(uri=master["uri"], sha256=master["sha256"], size=int(master["size"]),
                                  codec=master.get("codec", "ffv1"), frames=master.get("frames"),
                                  verified=bool(master.get("verified")))
    if observed is not None and observed.state == "Failed":
        out.verdicts.append(Verdict("Migrated", "False", "MigrationFailed",
                                    f"Job {observed.name} failed: {observed.message or 'see its log'}"))
    return storage.preservation_master


def deletion_blocker(policy: ArchivePolicySpec | None, annotations: dict[str, str], storage: StorageStatus | None,
                     now: datetime) -> Verdict | None:
    """Why the asset's copies may not be deleted yet (legal hold, retention), or None. Without its policy
    (deleted first) the asset's own hold and the retention recorded in its status still apply."""
    if legal_hold(policy, annotations):
        return Verdict("Deletable", "False", "LegalHold",
                       "a legal hold keeps every copy; lift it (policy retention.legalHold or the "
                       f"{LEGAL_HOLD_ANNOTATION} annotation) to delete")
    until = storage.retain_until if storage else None
    if until is not None and until > now:
        return Verdict("Deletable", "False", "RetentionActive",
                       f"the policy retains every copy until {until.isoformat()}")
    return None


def purge_request(name: str, namespace: str, uid: str, policy: ArchivePolicySpec | None,
                  copies: list[StorageCopy], config: OperatorConfig) -> StepJobRequest:
    """Every policy location; without the policy, the locations the asset's status records copies at."""
    if policy is not None:
        locations, secret_env = location_inputs(policy, namespace, name, config)
    else:
        locations, env = [], []
        for index, copy in enumerate(copies):
            prefix = credentials_env(index) if copy.credentials_secret else None
            if prefix and copy.credentials_secret:
                env += [(f"{prefix}_ACCESS_KEY_ID", copy.credentials_secret, "AWS_ACCESS_KEY_ID"),
                        (f"{prefix}_SECRET_ACCESS_KEY", copy.credentials_secret, "AWS_SECRET_ACCESS_KEY")]
            locations.append(LocationInput(name=copy.location, uri=copy.uri, endpoint=copy.endpoint,
                                           credentials=prefix))
        secret_env = tuple(env)
    inputs = ArchiveInputs(mode="purge", locations=locations)
    return StepJobRequest(owner=Owner("MediaAsset", name, uid, namespace), step=PURGE, inputs=inputs.to_wire(),
                          secret_env=secret_env, backoff_limit=ARCHIVE_BACKOFF_LIMIT)
