"""The Secret key provider's operator side: a content key generated once per asset and key tier, each in an
immutable Secret the asset owns (deleted with it), named with a hash of (namespace, asset uid).

- Nothing is ever updated: a tier's Secret is created once (409 is a race with ourselves, checked again)
  and a ladder that gains a tier gets a new Secret, so no key content was encrypted with is ever replaced.
- A Secret already under one of the names is used only when its metadata (read without its data) says it is
  this asset's: controller owner reference with the asset's uid and kubemam's labels. Anything else is a
  problem the asset reports (a condition naming the Secret); its keys are never adopted.
- Migration: earlier versions kept every tier in one Secret (`<namePrefix>-<asset>` / `<asset>-content-keys`).
  When that Secret is this asset's (same checks), a tier's key and KID are carried over (base64 as stored,
  never decoded here): a package published with them must stay playable. Otherwise new keys are generated.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from kubemam.api.common import API_VERSION, GROUP
from kubemam.drm.keys import KEY_BYTES
from kubemam.drm.provider import secret_file_names
from kubemam.kubeapi import KubeApi
from kubemam.plan.asset import KeySecret
from kubemam.plan.jobs import LABEL_ASSET, LABEL_MANAGED_BY, asset_label

log = logging.getLogger(__name__)

LABEL_KEY_TIER = f"{GROUP}/key-tier"


def new_tier_entries(tier: str, random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> dict[str, str]:
    """A fresh random KID (UUID v4) and key for one tier, as the Secret's stringData."""
    kid_name, key_name = secret_file_names(tier)
    return {kid_name: str(uuid.UUID(bytes=random_bytes(16), version=4)), key_name: random_bytes(KEY_BYTES).hex()}


def expected_labels(asset: str, tier: str | None = None) -> dict[str, str]:
    labels = {LABEL_MANAGED_BY: "kubemam", LABEL_ASSET: asset_label(asset)}
    if tier is not None:
        labels[LABEL_KEY_TIER] = tier
    return labels


def not_ours(metadata: dict[str, Any], owner: dict[str, Any], tier: str | None) -> str | None:
    """Why a Secret (its metadata) is not this asset's key Secret, or None when it is."""
    meta = owner["metadata"]
    controllers = [o for o in metadata.get("ownerReferences") or [] if o.get("controller")]
    if not any(o.get("uid") == meta["uid"] and o.get("kind") == "MediaAsset" for o in controllers):
        holder = ", ".join(f"{o.get('kind')} {o.get('name')} (uid {o.get('uid')})" for o in controllers)
        return f"it is controlled by {holder}" if holder else "it has no controller owner reference to the asset"
    labels = metadata.get("labels") or {}
    wrong = sorted(k for k, v in expected_labels(meta["name"], tier).items() if labels.get(k) != v)
    return f"it lacks kubemam's labels {', '.join(wrong)}" if wrong else None


def conflict(namespace: str, name: str, tier: str, why: str) -> str:
    return (f"Secret {name!r} in namespace {namespace} has the name of this asset's {tier} content-key Secret "
            f"but kubemam did not make it for this asset ({why}); its keys are not used and nothing is packaged "
            f"until it is deleted or renamed")


def key_secret(name: str, tier: str, owner: dict[str, Any], entries: dict[str, str], encoded: bool) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
        "metadata": {"name": name, "namespace": meta["namespace"], "labels": expected_labels(meta["name"], tier),
                     "ownerReferences": [{"apiVersion": API_VERSION, "kind": "MediaAsset", "name": meta["name"],
                                          "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
        ("data" if encoded else "stringData"): entries,
    }


class _Legacy:
    """The earlier single Secret, read at most once per call and only when a tier Secret is missing."""

    def __init__(self, api: KubeApi, namespace: str, name: str | None, owner: dict[str, Any]) -> None:
        self.api, self.namespace, self.name, self.owner = api, namespace, name, owner
        self._data: dict[str, str] | None = None

    def entries(self, tier: str) -> dict[str, str] | None:
        """The tier's entries, base64 as stored, when the legacy Secret is this asset's and holds them."""
        if self.name is None:
            return None
        if self._data is None:
            body = self.api.read_secret(self.namespace, self.name)
            self._data = {}
            if body is not None:
                why = not_ours(body.get("metadata") or {}, self.owner, None)
                if why is None:
                    self._data = dict(body.get("data") or {})
                else:
                    log.info("not carrying keys over from Secret %s/%s: %s", self.namespace, self.name, why)
        picked = {n: self._data[n] for n in secret_file_names(tier) if n in self._data}
        return picked if len(picked) == 2 else None


def ensure_content_keys(api: KubeApi, namespace: str, request: KeySecret, owner: dict[str, Any]) -> str | None:
    """Every tier's key Secret there and this asset's: missing ones created; the problem (a Secret that is not
    this asset's under one of the names) or None."""
    legacy = _Legacy(api, namespace, request.legacy, owner)
    for tier, name in sorted(request.names.items()):
        metadata = api.secret_metadata(namespace, name)
        if metadata is None:
            carried = legacy.entries(tier)
            secret = key_secret(name, tier, owner, carried or new_tier_entries(tier), encoded=carried is not None)
            if api.create_secret(secret):
                log.info("%s the %s content key in Secret %s/%s", "carried over" if carried else "generated",
                         tier, namespace, name)
                continue
            metadata = api.secret_metadata(namespace, name)  # 409: someone was first; whose is it?
            if metadata is None:  # and deleted it since: the handler's retry creates ours
                raise RuntimeError(f"Secret {namespace}/{name} was there a moment ago and is gone")
        why = not_ours(metadata, owner, tier)
        if why is not None:
            return conflict(namespace, name, tier, why)
    return None
