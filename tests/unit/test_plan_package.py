"""The packaging planner, pure: after the renditions, one package Job; keys by reference only."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any

import yaml

from kubemam.api.ladder import KeyTiers, TranscodeLadderSpec
from kubemam.controllers.keys import new_tier_entries
from kubemam.plan.asset import AssetPlan, JobObservation, plan_asset
from kubemam.plan.package import KEYS_MOUNT, key_secret_name, key_tier, legacy_key_secret_name
from tests.helpers import EXAMPLES
from tests.unit.test_plan_transcode import CONFIG, NOW, _cond, _facts, _input

HEIGHTS = {"h264-1080p": 1080, "h264-720p": 720, "h264-540p": 540, "h264-360p": 360}


def _ladder(**changes: Any) -> TranscodeLadderSpec:
    doc = yaml.safe_load((EXAMPLES / "transcodeladder.yaml").read_text())["spec"]
    doc.pop("chunking")
    doc.update(changes)
    return TranscodeLadderSpec.model_validate(doc)


def _transcoded(job: dict[str, Any]) -> JobObservation:
    inputs = _input(job)
    items = [{"name": r["name"], "kind": kind, "specHash": r["specHash"], "uri": r["output"] + f"/{r['name']}.mp4",
              "sha256": "cd" * 32, "sizeBytes": 1000, "bitrate": 800_000, "codec": "h264",
              "height": HEIGHTS.get(r["name"])}
             for kind in ("video", "audio") for r in inputs[kind]]
    return JobObservation(job["metadata"]["name"], "transcode", "h", "Succeeded", result={"renditions": items})


def _after_transcode(ladder: TranscodeLadderSpec, jobs: list[JobObservation] | None = None,
                     at: datetime = NOW) -> AssetPlan:
    first = plan_asset(_facts(ladder), CONFIG, NOW)
    return plan_asset(_facts(ladder, [_transcoded(first.create_jobs[0]), *(jobs or [])]), CONFIG, at)


def test_renditions_ready_make_one_package_job_that_mounts_the_key_secret() -> None:
    plan = _after_transcode(_ladder())
    assert [j["metadata"]["labels"]["kubemam.io/step"] for j in plan.create_jobs] == ["package"]
    job = plan.create_jobs[0]
    inputs = _input(job)
    assert plan.status.phase == "Packaging" and _cond(plan.status, "Packaged") == ("Unknown", "PackagePending")
    assert _cond(plan.status, "Ready") == ("False", "PackagePending")
    # Separate audio and SD/HD keys, as the example ladder asks; no UHD rung fits a 1080p master.
    assert {t["name"]: t["keyTier"] for t in inputs["tracks"]} == {
        "h264-1080p": "hd", "h264-720p": "hd", "h264-540p": "sd", "h264-360p": "sd", "stereo-en": "audio"}
    assert inputs["drm"] == {"systems": ["clearkey", "playready", "widevine"], "scheme": "cenc",
                             "tiers": ["audio", "hd", "sd"], "provider": "secret"}
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBEMAM_KEYS_DIR"] == KEYS_MOUNT
    # One Secret per tier, its name hashed from (namespace, uid), all projected into one directory.
    names = {tier: key_secret_name("media", "ep1", "uid-1", _ladder(), tier) for tier in ("audio", "hd", "sd")}
    assert plan.key_secret is not None and plan.key_secret.names == names
    assert names["hd"].startswith("drm-keys-ep1-") and names["hd"].endswith("-hd")
    assert plan.key_secret.legacy == "drm-keys-ep1"
    pod = job["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "projected" in v)
    assert volume["projected"]["sources"] == [{"secret": {"name": names[t]}} for t in ("audio", "hd", "sd")]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert mount == {"name": volume["name"], "mountPath": KEYS_MOUNT, "readOnly": True}
    # The manifest names the Secret; it holds no key (no 128-bit hex anywhere in it).
    assert not re.search(r"\b[0-9a-f]{32}\b", json.dumps(job))
    assert inputs["output"].endswith(f"/packages/{inputs['output'].rsplit('/', 1)[-1]}")


def test_a_finished_package_is_mirrored_and_nothing_is_packaged_again() -> None:
    ladder = _ladder()
    pending = _after_transcode(ladder)
    job = pending.create_jobs[0]
    output = _input(job)["output"]
    result = {"packages": [{"format": "dash", "manifestUri": f"{output}/manifest.mpd", "scheme": "cenc",
                            "drmSystems": ["widevine"], "keyIds": ["0f" * 16]},
                           {"format": "hls", "manifestUri": f"{output}/master.m3u8", "scheme": "cenc",
                            "drmSystems": ["widevine"], "keyIds": ["0f" * 16]}],
              "tracks": [{"name": "h264-360p", "kind": "video", "keyId": "0f" * 16}]}
    done = _after_transcode(ladder, [JobObservation(job["metadata"]["name"], "package", "h", "Succeeded",
                                                    result=result)])
    assert done.create_jobs == [] and done.status.phase == "Ready"
    assert _cond(done.status, "Packaged") == ("True", "PackagesReady")
    packages = done.status.packages or []
    assert [p.format for p in packages] == ["dash", "hls"]
    assert packages[0].tracks is not None and packages[0].tracks[0].key_id == "0f" * 16


def test_a_drm_change_makes_a_new_package_and_a_no_op_does_not() -> None:
    base = _input(_after_transcode(_ladder()).create_jobs[0])["output"]
    assert _input(_after_transcode(_ladder()).create_jobs[0])["output"] == base
    changed = _ladder(drm={"systems": ["widevine"], "scheme": "cenc", "keyProvider": {"type": "secret"}})
    assert _input(_after_transcode(changed).create_jobs[0])["output"] != base


def test_a_refused_key_provider_is_a_clear_condition() -> None:
    ladder = _ladder()
    job = _after_transcode(ladder).create_jobs[0]
    failed = JobObservation(job["metadata"]["name"], "package", "h", "Failed",
                            message="key provider: the key server answered HTTP 403")
    plan = _after_transcode(ladder, [failed])
    assert plan.status.phase == "Failed" and plan.create_jobs == []
    assert _cond(plan.status, "Packaged") == ("False", "KeyProviderFailed")
    assert _cond(plan.status, "Ready") == ("False", "KeyProviderFailed")


def test_cpix_kids_are_derived_and_the_token_travels_by_reference() -> None:
    ladder = _ladder(drm={"systems": ["widevine", "fairplay"], "scheme": "cbcs",
                          "keyProvider": {"type": "cpix", "cpix": {
                              "url": "https://keys.example/speke/v2",
                              "credentialsSecretRef": {"name": "speke", "key": "token"}}}})
    job = _after_transcode(ladder).create_jobs[0]
    drm = _input(job)["drm"]
    assert drm["provider"] == "cpix" and list(drm["kids"]) == ["all"]
    assert drm["kids"] == _input(_after_transcode(ladder).create_jobs[0])["drm"]["kids"]  # stable
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    token = next(e for e in env if e["name"] == drm["tokenEnv"])
    assert token["valueFrom"] == {"secretKeyRef": {"name": "speke", "key": "token"}}


def test_key_tiers_and_secret_entries() -> None:
    both = KeyTiers(separate_audio=True, separate_video_tiers=True)
    assert [key_tier("video", h, both) for h in (480, 720, 1080, 2160)] == ["sd", "hd", "hd", "uhd"]
    assert key_tier("audio", None, both) == "audio"
    assert key_tier("audio", None, None) == key_tier("video", 2160, None) == "all"
    assert key_tier("audio", None, KeyTiers(separate_video_tiers=True)) == "sd"
    entries = new_tier_entries("hd")
    assert set(entries) == {"hd.kid", "hd.key"} and len(bytes.fromhex(entries["hd.key"])) == 16
    assert uuid.UUID(entries["hd.kid"]).version == 4 and entries != new_tier_entries("hd")


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _secret_ladder(prefix: str | None = None) -> TranscodeLadderSpec:
    drm = _ladder().drm
    assert drm is not None
    provider: dict[str, Any] = {"type": "secret", **({"secret": {"namePrefix": prefix}} if prefix else {})}
    return _ladder(drm={**drm.to_wire(), "keyProvider": provider})


def test_key_secret_names_do_not_collide() -> None:
    # The old names: prefix "a-b" + asset "c" and prefix "a" + asset "b-c" were one Secret.
    ab, a = _secret_ladder("a-b"), _secret_ladder("a")
    assert legacy_key_secret_name("c", ab) == legacy_key_secret_name("b-c", a) == "a-b-c"
    assert key_secret_name("ns", "c", "uid-1", ab, "all") != key_secret_name("ns", "b-c", "uid-2", a, "all")
    # Long names were cut to the same 253 characters; now the hash differs, and the tier is kept.
    long_prefix = _secret_ladder("p" * 200)
    long_a, long_b = "x" * 60 + "a", "x" * 60 + "b"
    assert legacy_key_secret_name(long_a, long_prefix) == legacy_key_secret_name(long_b, long_prefix)
    names = {key_secret_name("ns", n, uid, long_prefix, "uhd") for n, uid in ((long_a, "u1"), (long_b, "u2"))}
    assert len(names) == 2 and all(len(n) <= 253 and n.endswith("-uhd") and DNS_SUBDOMAIN.match(n) for n in names)
    # The same asset name in another namespace, or again after a delete (a new uid): another Secret.
    plain = _secret_ladder()
    assert len({key_secret_name(ns, "ep1", uid, plain, "all") for ns, uid in (("a", "1"), ("b", "1"), ("a", "2"))}) == 3
    # A cut that ends on a dot or a dash still makes a valid name.
    for asset in ("y" * 231 + ".z", "y" * 231 + "-z"):  # the cut (232 characters for "all") ends on "." / "-"
        name = key_secret_name("ns", asset, "u", plain, "all")
        assert DNS_SUBDOMAIN.match(name) and len(name) <= 253


def test_a_key_secret_that_is_not_the_assets_stops_packaging_with_a_condition() -> None:
    ladder = _ladder()
    first = plan_asset(_facts(ladder), CONFIG, NOW)
    facts = replace(_facts(ladder, [_transcoded(first.create_jobs[0])]),
                    key_secret_problem="Secret 'x' in namespace media has the name of this asset's hd content-key "
                                       "Secret but kubemam did not make it for this asset")
    plan = plan_asset(facts, CONFIG, NOW)
    assert plan.create_jobs == []  # no package Job would mount it
    assert plan.key_secret is not None  # still checked on every reconcile, so the asset recovers once it is gone
    assert _cond(plan.status, "Packaged") == ("False", "KeySecretConflict")
    assert _cond(plan.status, "Ready") == ("False", "KeySecretConflict")
    assert plan.status.phase == "Packaging"  # not Failed, which the recheck timer leaves alone
