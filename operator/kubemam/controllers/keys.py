"""The Secret key provider's operator side: content keys generated once per asset and key tier,
kept in a Secret the asset owns (deleted with it), and never read back by the operator.

Creating tolerates 409 and only ever adds the tiers that are missing, so a re-run, a second
operator or a ladder that gains a tier never replaces a key content was already encrypted with.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from kubemam.api.common import API_VERSION
from kubemam.drm.keys import KEY_BYTES
from kubemam.drm.provider import secret_file_names
from kubemam.kubeapi import KubeApi
from kubemam.plan.asset import KeySecret
from kubemam.plan.jobs import LABEL_ASSET, LABEL_MANAGED_BY, asset_label

log = logging.getLogger(__name__)


def new_tier_entries(tiers: list[str], present: set[str],
                     random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> dict[str, str]:
    """KID and key entries for the tiers the Secret lacks."""
    entries: dict[str, str] = {}
    for tier in tiers:
        kid_name, key_name = secret_file_names(tier)
        if kid_name in present and key_name in present:
            continue
        entries[kid_name] = str(uuid.UUID(bytes=random_bytes(16), version=4))
        entries[key_name] = random_bytes(KEY_BYTES).hex()
    return entries


def ensure_content_keys(api: KubeApi, namespace: str, request: KeySecret, owner: dict[str, Any]) -> None:
    present = api.secret_keys(namespace, request.name)
    missing = new_tier_entries(request.tiers, present or set())
    if not missing:
        return
    if present is None:
        meta = owner["metadata"]
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": request.name, "namespace": namespace,
                         "labels": {LABEL_MANAGED_BY: "kubemam", LABEL_ASSET: asset_label(meta["name"])},
                         "ownerReferences": [{"apiVersion": API_VERSION, "kind": "MediaAsset", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]},
            "stringData": missing,
        }
        if api.create_secret(secret):
            log.info("generated content keys for tiers %s in Secret %s/%s", ", ".join(request.tiers), namespace,
                     request.name)
            return
        present = api.secret_keys(namespace, request.name) or set()  # lost a race: add only what is missing
        missing = new_tier_entries(request.tiers, present)
        if not missing:
            return
    api.add_secret_data(namespace, request.name, missing)
    log.info("added content keys for new tiers to Secret %s/%s", namespace, request.name)
