"""The MediaAsset's finalizer, put on by the operator itself when an asset first needs its delete handler.

Deleting an asset needs the operator once the asset may be archived or published (a takedown, a purge of
archived copies): the asset reconcile puts the finalizer on before the first Job that is not an ingest, and
the rights reconcile before it publishes an asset that does not hold it yet (one whose status came some
other way than a package Job of this operator). Not Kopf: its own patch came before any handler ran (a round
trip through the watch before a new asset's first Job), or, left to its patch after the handler, after the
status write had changed the resourceVersion that patch tests, so it failed and was made again.
"""

from __future__ import annotations

import logging
from typing import Any

from kubemam.api.common import FINALIZER
from kubemam.api.kinds import MEDIA_ASSET
from kubemam.kubeapi import KubeApi

log = logging.getLogger(__name__)


def holds(meta: dict[str, Any]) -> bool:
    return FINALIZER in (meta.get("finalizers") or [])


def hold(api: KubeApi, meta: dict[str, Any]) -> str | None:
    """The asset (its metadata as read) carries the finalizer. A merge patch guarded by the resourceVersion read:
    the API server answers 409 (raised) if the asset changed since, so another controller's finalizer added
    meanwhile is never written over. Answers the resourceVersion to guard the next write by (None: it is gone)."""
    current: str | None = meta.get("resourceVersion")
    if holds(meta):
        return current
    version = api.add_finalizer(MEDIA_ASSET.plural, meta["namespace"], meta["name"], list(meta.get("finalizers") or []),
                                FINALIZER, current or "")
    log.debug("added the finalizer to %s/%s", meta["namespace"], meta["name"])
    return version
