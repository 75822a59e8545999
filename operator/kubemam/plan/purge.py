"""The purge step (pure): what keeps an asset's copies from deletion (legal hold, retention), and the
Job that lifts holds and deletes every version at every location once nothing does."""

from __future__ import annotations

from datetime import datetime

from kubemam.api.archive import ArchivePolicySpec
from kubemam.api.asset import StorageCopy, StorageStatus
from kubemam.config import OperatorConfig
from kubemam.plan.archive_facts import LEGAL_HOLD_ANNOTATION, credentials_env, legal_hold, location_inputs
from kubemam.plan.conditions import Verdict
from kubemam.plan.jobs import Owner, StepJobRequest
from kubemam.steps.archive import ArchiveInputs, LocationInput
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
                          secret_env=secret_env)
