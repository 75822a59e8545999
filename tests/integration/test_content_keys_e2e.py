"""Content-key Secrets through the operator on the local cluster.

- Assets "c" (namePrefix "a-b") and "b-c" (namePrefix "a") had one key Secret name, "a-b-c". An earlier
  version left "a-b-c" holding c's keys: c carries them over (its published packages stay playable), b-c
  does not adopt them and gets keys of its own. Each tier key lives in an immutable Secret the asset owns.
- A Secret planted under an asset's key name, with kubemam's labels but not owned by the asset, is refused:
  Packaged=False KeySecretConflict naming it, and no package Job; once it is gone the asset packages with a
  key the operator made.
"""

from __future__ import annotations

import base64
import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.media.sample import make_sample
from kubemam.plan.package import key_secret_name
from tests.helpers import Custom, local_stack, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]

NAMESPACE = "kubemam-keys"
MASTER = "s3://kubemam-library/incoming/keys.mov"


def _ladder(name: str, prefix: str | None) -> dict[str, Any]:
    secret = {"secret": {"namePrefix": prefix}} if prefix else {}
    return {
        "apiVersion": "kubemam.io/v1alpha1", "kind": "TranscodeLadder", "metadata": {"name": name},
        "spec": {
            "segmentDurationSeconds": 2,
            "renditions": [{"name": "h264-180p", "codec": "h264", "width": 320, "height": 180, "profile": "main",
                            "preset": "ultrafast", "rateControl": {"mode": "crf", "crf": 30, "maxrateKbps": 300,
                                                                   "bufsizeKbps": 600}}],
            "audio": [{"name": "stereo-en", "bitrateKbps": 64, "language": "en"}],
            "packaging": {"formats": ["dash"], "iframePlaylist": False},
            "drm": {"systems": ["clearkey"], "scheme": "cenc", "keyProvider": {"type": "secret", **secret}},
        },
    }


def _asset(name: str, ladder: str) -> dict[str, Any]:
    return {"apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "metadata": {"name": name},
            "spec": {"source": {"uri": MASTER}, "metadata": {"title": name},
                     "timeline": {"frameRate": "25", "startTimecode": "10:00:00:00"}, "ladderRef": {"name": ladder}}}


def _condition(custom: Custom, asset: str, type_: str) -> dict[str, Any] | None:
    return custom.condition("mediaassets", asset, type_)


def _packaged(custom: Custom, asset: str, waiting_out: str | None = None) -> dict[str, Any] | None:
    """The status once Packaged=True; a failure raises, but for `waiting_out` (a reason about to clear)."""
    status = custom.get("mediaassets", asset).get("status") or {}
    for kind in ("Ingested", "Transcoded", "Packaged"):
        cond = next((c for c in status.get("conditions") or [] if c["type"] == kind), None)
        if cond and cond["status"] == "False" and cond["reason"] != waiting_out:
            raise AssertionError(f"{asset}: {kind} failed: {cond}")
    cond = next((c for c in status.get("conditions") or [] if c["type"] == "Packaged"), None)
    return status if cond and cond["status"] == "True" else None


def _secret_name(custom: Custom, asset: str, ladder: dict[str, Any], tier: str = "all") -> str:
    uid = custom.get("mediaassets", asset)["metadata"]["uid"]
    return key_secret_name(NAMESPACE, asset, uid, TranscodeLadderSpec.model_validate(ladder["spec"]), tier)


def _owned_by(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "name": meta["name"], "uid": meta["uid"],
             "controller": True, "blockOwnerDeletion": True}]


def _data(secret: Any) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def test_colliding_names_get_their_own_keys_and_a_planted_secret_is_refused(control_plane: Any,
                                                                            tmp_path: Path) -> None:
    with local_stack(control_plane, tmp_path, NAMESPACE) as stack:
        custom, core, batch = stack.custom, client.CoreV1Api(stack.api), client.BatchV1Api(stack.api)
        master = make_sample(tmp_path / "keys.mov", width=320, height=180, seconds=8)
        stack.store.upload_file(str(master), "kubemam-library", "incoming/keys.mov")
        ladders = {"ab": _ladder("ab", "a-b"), "a": _ladder("a", "a"), "plain": _ladder("plain", None)}
        for ladder in ladders.values():
            custom.create("transcodeladders", copy.deepcopy(ladder))

        # What an earlier version left: "a-b-c", c's keys (owner and labels as it wrote them).
        c = custom.create("mediaassets", _asset("c", "ab"))["metadata"]
        legacy_keys = {"all.kid": "3b5a1a5e-6d5c-4a53-8d0e-0c1f2e3d4c5b", "all.key": "00112233445566778899aabbccddeeff"}
        core.create_namespaced_secret(NAMESPACE, {
            "metadata": {"name": "a-b-c", "ownerReferences": _owned_by(c),
                         "labels": {"app.kubernetes.io/managed-by": "kubemam", "kubemam.io/asset": "c"}},
            "type": "Opaque", "stringData": legacy_keys})
        custom.create("mediaassets", _asset("b-c", "a"))

        # Planted under the name "planted" will look for, with kubemam's labels but no owner.
        custom.create("mediaassets", _asset("planted", "plain"))
        planted_name = _secret_name(custom, "planted", ladders["plain"])
        planted_keys = {"all.kid": "8e0b2b2a-5f6e-4c1d-9a8b-7c6d5e4f3a2b",
                        "all.key": "ffeeddccbbaa99887766554433221100"}
        core.create_namespaced_secret(NAMESPACE, {
            "metadata": {"name": planted_name, "labels": {"app.kubernetes.io/managed-by": "kubemam",
                                                          "kubemam.io/asset": "planted", "kubemam.io/key-tier": "all"}},
            "type": "Opaque", "stringData": planted_keys})

        try:
            statuses = {name: wait_for(lambda name=name: _packaged(custom, name), timeout=600,  # type: ignore[misc]
                                       what=f"{name} to be packaged") for name in ("c", "b-c")}
            refused = wait_for(lambda: (cond := _condition(custom, "planted", "Packaged"))
                               and cond["reason"] == "KeySecretConflict" and cond, timeout=300,
                               what="planted to report the conflict")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{stack.log.read_text()[-4000:]}") from None

        # c and b-c: distinct Secrets, each the asset's own, immutable; c's key carried over, b-c's new.
        secrets = {name: core.read_namespaced_secret(_secret_name(custom, name, ladders[lad]), NAMESPACE)
                   for name, lad in (("c", "ab"), ("b-c", "a"))}
        assert secrets["c"].metadata.name != secrets["b-c"].metadata.name
        for name, secret in secrets.items():
            assert secret.immutable is True
            uid = custom.get("mediaassets", name)["metadata"]["uid"]
            assert [(o.uid, o.controller) for o in secret.metadata.owner_references] == [(uid, True)]
        assert _data(secrets["c"]) == legacy_keys
        fresh = _data(secrets["b-c"])
        assert fresh["all.key"] != legacy_keys["all.key"] and fresh["all.kid"] != legacy_keys["all.kid"]
        assert statuses["c"]["packages"][0]["keyIds"] == [legacy_keys["all.kid"]]
        assert statuses["b-c"]["packages"][0]["keyIds"] == [fresh["all.kid"]]
        assert _data(core.read_namespaced_secret("a-b-c", NAMESPACE)) == legacy_keys  # left as it was

        # planted: refused by name, no package Job, the planted Secret untouched.
        assert planted_name in refused["message"] and "no controller owner reference" in refused["message"]
        jobs = batch.list_namespaced_job(NAMESPACE, label_selector="kubemam.io/asset=planted,kubemam.io/step=package")
        assert jobs.items == []
        assert _data(core.read_namespaced_secret(planted_name, NAMESPACE)) == planted_keys
        planted = custom.get("mediaassets", "planted")["status"]
        assert planted["phase"] == "Packaging"  # not Failed: re-checked until the Secret is gone
        assert next(c for c in planted["conditions"] if c["type"] == "Ready")["reason"] == "KeySecretConflict"

        # Gone: the operator makes its own key and packages.
        core.delete_namespaced_secret(planted_name, NAMESPACE)
        status = wait_for(lambda: _packaged(custom, "planted", waiting_out="KeySecretConflict"), timeout=300,
                          what="planted to be packaged")
        own = core.read_namespaced_secret(planted_name, NAMESPACE)
        assert own.metadata.owner_references[0].uid == custom.get("mediaassets", "planted")["metadata"]["uid"]
        assert _data(own)["all.key"] != planted_keys["all.key"]
        assert status["packages"][0]["keyIds"] == [_data(own)["all.kid"]]
