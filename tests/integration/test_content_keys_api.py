"""controllers/keys.py against the real API server (no operator running): what ensure_content_keys creates,
what it refuses, what it carries over, and that what it made cannot be changed."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubemam.controllers.keys import ensure_content_keys
from kubemam.kubeapi import KubeApi
from kubemam.plan.package import KeySecret

pytestmark = [pytest.mark.integration]

LABELS = {"app.kubernetes.io/managed-by": "kubemam", "kubemam.io/asset": "ep1"}


def _owner(api_client: Any, namespace: str, name: str = "ep1") -> dict[str, Any]:
    """A real MediaAsset to own the Secrets: with a made-up owner uid the garbage collector deletes them."""
    custom = client.CustomObjectsApi(api_client)
    body = {"apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "metadata": {"name": name},
            "spec": {"source": {"uri": f"file:///keys/{name}.mov"}, "metadata": {"title": name}}}
    created = custom.create_namespaced_custom_object("kubemam.io", "v1alpha1", namespace, "mediaassets", body)
    return {"metadata": {"name": name, "namespace": namespace, "uid": created["metadata"]["uid"]}}


def _owner_ref(owner: dict[str, Any]) -> list[dict[str, Any]]:
    meta = owner["metadata"]
    return [{"apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "name": meta["name"], "uid": meta["uid"],
             "controller": True}]


def _data(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, str]:
    secret = core.read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def test_one_immutable_secret_per_tier_created_once(api_client: Any, namespace: str) -> None:
    api, core = KubeApi(api_client), client.CoreV1Api(api_client)
    owner = _owner(api_client, namespace)
    request = KeySecret({"audio": "ep1-keys-audio", "hd": "ep1-keys-hd"}, legacy="ep1-content-keys")
    assert ensure_content_keys(api, namespace, request, owner) is None
    first = {tier: _data(core, namespace, name) for tier, name in request.names.items()}
    assert set(first["audio"]) == {"audio.kid", "audio.key"} and set(first["hd"]) == {"hd.kid", "hd.key"}
    assert first["audio"]["audio.key"] != first["hd"]["hd.key"]
    secret = core.read_namespaced_secret("ep1-keys-hd", namespace)
    assert secret.immutable is True and secret.type == "Opaque"
    assert secret.metadata.labels == {**LABELS, "kubemam.io/key-tier": "hd"}
    assert [(o.uid, o.controller) for o in secret.metadata.owner_references] == [(owner["metadata"]["uid"], True)]

    # Again, and with a tier more: nothing replaced, the new tier added as a Secret of its own.
    more = KeySecret({**request.names, "sd": "ep1-keys-sd"}, legacy="ep1-content-keys")
    assert ensure_content_keys(api, namespace, more, owner) is None
    assert {tier: _data(core, namespace, request.names[tier]) for tier in request.names} == first
    assert set(_data(core, namespace, "ep1-keys-sd")) == {"sd.kid", "sd.key"}

    # The API server holds it to that: the data of a key Secret cannot be changed.
    with pytest.raises(ApiException) as refused:
        core.patch_namespaced_secret("ep1-keys-hd", namespace, {"stringData": {"hd.key": "00" * 16}})
    assert refused.value.status == 422 and "immutable" in str(refused.value.body)


@pytest.mark.parametrize("planted", [
    {"labels": LABELS | {"kubemam.io/key-tier": "all"}},  # kubemam's labels, no owner
    {"labels": LABELS | {"kubemam.io/key-tier": "all"}, "owner_uid": "another asset's"},
    {"labels": {}, "owner_uid": "same"},  # the asset's owner reference, without kubemam's labels
])
def test_a_secret_not_the_assets_is_refused_and_left_alone(api_client: Any, namespace: str,
                                                           planted: dict[str, Any]) -> None:
    api, core = KubeApi(api_client), client.CoreV1Api(api_client)
    owner = _owner(api_client, namespace)
    other = _owner(api_client, namespace, "ep0")
    meta: dict[str, Any] = {"name": "ep1-keys-all", "labels": planted["labels"]}
    if "owner_uid" in planted:
        meta["ownerReferences"] = _owner_ref(owner if planted["owner_uid"] == "same" else other)
    core.create_namespaced_secret(namespace, {"metadata": meta, "stringData": {"all.kid": "k", "all.key": "v"}})
    problem = ensure_content_keys(api, namespace, KeySecret({"all": "ep1-keys-all"}), owner)
    assert problem is not None and "'ep1-keys-all'" in problem and namespace in problem
    if "owner_uid" not in planted:
        assert "no controller owner reference" in problem
    elif planted["owner_uid"] == "same":
        assert "lacks kubemam's labels" in problem and "kubemam.io/key-tier" in problem
    else:
        assert other["metadata"]["uid"] in problem
    assert _data(core, namespace, "ep1-keys-all") == {"all.kid": "k", "all.key": "v"}


def test_the_assets_keys_carry_over_from_the_old_single_secret_and_no_one_elses(api_client: Any,
                                                                               namespace: str) -> None:
    api, core = KubeApi(api_client), client.CoreV1Api(api_client)
    owner = _owner(api_client, namespace)
    old = {"all.kid": "3b5a1a5e-6d5c-4a53-8d0e-0c1f2e3d4c5b", "all.key": "00112233445566778899aabbccddeeff"}
    core.create_namespaced_secret(namespace, {"metadata": {"name": "ep1-content-keys", "labels": LABELS,
                                                           "ownerReferences": _owner_ref(owner)}, "stringData": old})
    assert ensure_content_keys(api, namespace, KeySecret({"all": "ep1-keys-all", "sd": "ep1-keys-sd"},
                                                         legacy="ep1-content-keys"), owner) is None
    assert _data(core, namespace, "ep1-keys-all") == old  # carried over: what was published still plays
    assert set(_data(core, namespace, "ep1-keys-sd")) == {"sd.kid", "sd.key"}  # not in the old one: new
    assert _data(core, namespace, "ep1-content-keys") == old  # left as it was (deleted with the asset)

    # Another asset whose old name was the same Secret gets keys of its own.
    other = _owner(api_client, namespace, "ep0")
    assert ensure_content_keys(api, namespace, KeySecret({"all": "ep1-keys-all-2"}, legacy="ep1-content-keys"),
                               other) is None
    assert _data(core, namespace, "ep1-keys-all-2")["all.key"] != old["all.key"]
