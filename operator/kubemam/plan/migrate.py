"""The migrate step (pure): a master in a format the policy watches gets MigrationRecommended, and with
migration enabled a Job that writes an FFV1/Matroska preservation master verified frame by frame."""

from __future__ import annotations

from datetime import datetime

from kubemam.api.asset import PreservationMaster, StorageStatus
from kubemam.config import OperatorConfig
from kubemam.media.preserve import at_risk
from kubemam.plan.archive_facts import ArchiveFacts, ArchiveOutcome, archive_request, record_run
from kubemam.plan.conditions import Verdict
from kubemam.plan.stepjob import Retries, run_step
from kubemam.steps.migrate import MigrateInput, MigrateResult
from kubemam.steps.registry import MIGRATE, step


def plan_migration(facts: ArchiveFacts, storage: StorageStatus, config: OperatorConfig,
                   out: ArchiveOutcome, now: datetime) -> PreservationMaster | None:
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
    inputs = MigrateInput(source=facts.spec.source.uri, sha256=technical.sha256, output=f"{facts_root(facts, config)}"
                          "/preservation", target=migration.target)
    request = archive_request(facts, MIGRATE, inputs.to_wire(), scratch_bytes=technical.size_bytes)
    # Attempts (plan/stepjob.py): a transient failure (an outage past the Job's backoff limit) is followed by
    # the next attempt after a backoff, without end; a permanent one (StepError) waits for the retry annotation.
    run = run_step(request, facts.jobs, facts.finished, config, retries=Retries.of(config, now, facts.annotations))
    record_run(out, run)
    observed = run.observed
    if observed is not None and observed.state == "Succeeded":
        result = step(MIGRATE).parse_result(observed.result)
        if isinstance(result, MigrateResult) and result.preservation_master is not None:
            return result.preservation_master
    if run.waiting:
        out.verdicts.append(run.retry_verdict("Migrated"))
        out.wake = run.due  # plan_archive keeps the earliest of this and its own instants
    elif observed is not None and observed.state == "Failed":
        out.verdicts.append(Verdict("Migrated", "False", "MigrationFailed",
                                    f"Job {observed.name} failed: {observed.message or 'see its log'}"))
    return storage.preservation_master


def facts_root(facts: ArchiveFacts, config: OperatorConfig) -> str:
    return f"{config.library_uri.rstrip('/')}/assets/{facts.namespace}/{facts.name}"
