"""Reconcile of the kinds that are policies for assets: ladders, windows, archive policies.

Each validates what the schema cannot and reports it as conditions; the Jobs these policies
drive belong to the assets they cover.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubemam import metrics
from kubemam.api.archive import ArchivePolicySpec, ArchivePolicyStatus
from kubemam.api.kinds import ARCHIVE_POLICY, MEDIA_ASSET, TRANSCODE_LADDER
from kubemam.api.ladder import TranscodeLadderSpec, TranscodeLadderStatus
from kubemam.kubeapi import KubeApi
from kubemam.plan.archive import plan_policy
from kubemam.plan.conditions import status_patch
from kubemam.plan.ladder import plan_ladder


def _write(api: KubeApi, plural: str, body: dict[str, Any], desired: dict[str, Any]) -> None:
    patch = status_patch(body.get("status"), desired)
    if patch:
        api.patch_status(plural, body["metadata"]["namespace"], body["metadata"]["name"], patch)


def reconcile_ladder(api: KubeApi, namespace: str, name: str) -> None:
    body = api.get(TRANSCODE_LADDER.plural, namespace, name)
    if body is None:
        return
    status = plan_ladder(
        TranscodeLadderSpec.model_validate(body["spec"]),
        TranscodeLadderStatus.model_validate(body.get("status") or {}),
        int(body["metadata"].get("generation") or 0),
        datetime.now(UTC),
    )
    _write(api, TRANSCODE_LADDER.plural, body, status.to_wire())


def _missing_copies(asset: dict[str, Any]) -> int:
    """Verified copies an archived asset still lacks (0 before its first archive: that is not rot)."""
    storage = (asset.get("status") or {}).get("storage") or {}
    if not storage.get("archivedAt"):
        return 0
    return max(0, int(storage.get("minCopies") or 0) - len(storage.get("copies") or []))


def reconcile_policy(api: KubeApi, namespace: str, name: str) -> None:
    body = api.get(ARCHIVE_POLICY.plural, namespace, name)
    if body is None:
        return
    assets = api.list_objects(MEDIA_ASSET.plural, namespace)
    covered = [a for a in assets if ((a.get("spec") or {}).get("archivePolicyRef") or {}).get("name") == name]
    status = plan_policy(
        ArchivePolicySpec.model_validate(body["spec"]),
        ArchivePolicyStatus.model_validate(body.get("status") or {}),
        int(body["metadata"].get("generation") or 0),
        datetime.now(UTC),
        len(covered),
        sum(1 for a in covered if _missing_copies(a)),
    )
    _write(api, ARCHIVE_POLICY.plural, body, status.to_wire())
    # The namespace's gauges count every archived asset, whichever policy it follows.
    missing = [_missing_copies(a) for a in assets]
    metrics.ARCHIVE_UNDER_REPLICATED.labels(namespace).set(sum(1 for m in missing if m))
    metrics.ARCHIVE_COPIES_MISSING.labels(namespace).set(sum(missing))
