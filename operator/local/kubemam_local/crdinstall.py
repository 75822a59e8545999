"""Install the generated CRDs into a cluster and wait until the API server serves them."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubemam.api.crdgen import crd
from kubemam.api.kinds import ALL_KINDS


def _established(obj: Any) -> bool:
    return any(c.type == "Established" and c.status == "True" for c in (obj.status.conditions or []))


def install_crds(api_client: client.ApiClient, timeout: float = 60.0) -> None:
    """Create or replace every kubemam CRD (server-side), then wait for Established."""
    ext = client.ApiextensionsV1Api(api_client)
    for kind in ALL_KINDS:
        manifest = crd(kind)
        try:
            ext.create_custom_resource_definition(manifest)
        except ApiException as err:
            if err.status != 409:
                raise
            current = ext.read_custom_resource_definition(kind.crd_name)
            manifest["metadata"]["resourceVersion"] = current.metadata.resource_version
            ext.replace_custom_resource_definition(kind.crd_name, manifest)
    deadline = time.monotonic() + timeout
    for kind in ALL_KINDS:
        while not _established(ext.read_custom_resource_definition(kind.crd_name)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {kind.crd_name} not Established after {timeout:.0f}s")
            time.sleep(0.2)
