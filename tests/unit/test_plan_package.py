"""The packaging planner, pure: after the renditions, one package Job; keys by reference only."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import yaml

from kubemam.api.ladder import KeyTiers, TranscodeLadderSpec
from kubemam.controllers.keys import new_tier_entries
from kubemam.plan.asset import AssetPlan, JobObservation, plan_asset
from kubemam.plan.package import KEYS_MOUNT, key_tier
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
    assert plan.key_secret is not None and plan.key_secret.name == "drm-keys-ep1"
    assert plan.key_secret.tiers == ["audio", "hd", "sd"]
    pod = job["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == "drm-keys-ep1"
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
    entries = new_tier_entries(["audio", "hd"], {"audio.kid", "audio.key"})
    assert set(entries) == {"hd.kid", "hd.key"} and len(bytes.fromhex(entries["hd.key"])) == 16
    assert new_tier_entries(["audio"], {"audio.kid", "audio.key"}) == {}
