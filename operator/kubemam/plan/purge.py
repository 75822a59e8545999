"""The purge step (pure): what keeps an asset's copies from deletion (legal hold, retention), and the
Job that lifts kubemam's own legal holds and deletes every version at every location once nothing does.
A legal hold kubemam did not set stops the purge before it deletes anything (Deletable=False
ForeignLegalHold): kubemam never lifts it."""

from __future__ import annotations

from datetime import datetime

from kubemam.api.archive import ArchivePolicySpec
from kubemam.api.asset import StorageCopy, StorageStatus
from kubemam.config import OperatorConfig
from kubemam.plan.archive_facts import LEGAL_HOLD_ANNOTATION, copy_locations, legal_hold, location_inputs
from kubemam.plan.conditions import Verdict
from kubemam.plan.jobs import Owner, StepJobRequest
from kubemam.steps.archive import ArchiveInputs
from kubemam.steps.registry import PURGE


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
    """Every policy location and every location the asset's status records copies at."""
    if policy is not None:
        locations, secret_env = location_inputs(policy, namespace, name, config)
        # Copies still kept at a location the policy no longer names (within their grace) go too.
        known = {loc.name for loc in policy.locations}
        others, other_env = copy_locations([c for c in copies if c.location not in known], len(locations))
        locations, secret_env = locations + others, secret_env + other_env
    else:
        locations, secret_env = copy_locations(copies, 0)
    inputs = ArchiveInputs(mode="purge", locations=locations)
    return StepJobRequest(owner=Owner("MediaAsset", name, uid, namespace), step=PURGE, inputs=inputs.to_wire(),
                          secret_env=secret_env)
