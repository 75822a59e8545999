"""The asset's finalizer against the real API server (no operator running): asset.reconcile puts it on itself
(controllers/asset.py _hold_by_finalizer; Kopf never does), keeps what other controllers hold, and never writes
over a newer object."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from kubemam.api.common import FINALIZER
from kubemam.controllers import asset
from kubemam.kubeapi import KubeApi

pytestmark = [pytest.mark.integration]


def _asset(api_client: Any, namespace: str, finalizers: list[str]) -> dict[str, Any]:
    body = {"apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset",
            "metadata": {"name": "ep1", "finalizers": finalizers},
            "spec": {"source": {"uri": "file:///media/ep1.mov"}, "metadata": {"title": "ep1"}}}
    created: dict[str, Any] = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "kubemam.io", "v1alpha1", namespace, "mediaassets", body)
    return created


def test_the_finalizer_is_added_beside_others_and_only_to_the_object_as_read(api_client: Any, namespace: str) -> None:
    api = KubeApi(api_client)
    custom = client.CustomObjectsApi(api_client)
    created = _asset(api_client, namespace, ["example.com/backup"])
    version = asset._hold_by_finalizer(api, created)
    held = custom.get_namespaced_custom_object("kubemam.io", "v1alpha1", namespace, "mediaassets", "ep1")
    assert held["metadata"]["finalizers"] == ["example.com/backup", FINALIZER]
    assert version == held["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    # Held already: no write, the version read is the one the status write is guarded by.
    assert asset._hold_by_finalizer(api, held) == held["metadata"]["resourceVersion"]

    # Another controller's finalizer came after the asset was read: the stale list is refused, not written over.
    custom.patch_namespaced_custom_object("kubemam.io", "v1alpha1", namespace, "mediaassets", "ep1",
                                          {"metadata": {"finalizers": ["example.com/backup", FINALIZER,
                                                                       "example.com/audit"]}})
    stale = {**created, "metadata": {**created["metadata"], "finalizers": ["example.com/backup"]}}
    with pytest.raises(asset._StatusConflict):
        asset._hold_by_finalizer(api, stale)
    now = custom.get_namespaced_custom_object("kubemam.io", "v1alpha1", namespace, "mediaassets", "ep1")
    assert now["metadata"]["finalizers"] == ["example.com/backup", FINALIZER, "example.com/audit"]
    custom.patch_namespaced_custom_object("kubemam.io", "v1alpha1", namespace, "mediaassets", "ep1",
                                          {"metadata": {"finalizers": []}})
