"""The packaging planner (pure): from the ladder's packaging and DRM, the asset's renditions,
captions and previews, the package Job's input and where it lands.

The package prefix is content-addressed: its hash covers every rendition's spec hash, the
captions, the thumbnails, the packaging and DRM settings (never a key) and the worker version,
so a changed rung or DRM system makes a new package and an unchanged ladder re-packages nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from kubemam import __version__
from kubemam.api.asset import MediaAssetSpec, PackageStatus, Previews, RenditionStatus
from kubemam.api.ladder import KeyTiers, Thumbnails, TranscodeLadderSpec
from kubemam.config import OperatorConfig
from kubemam.drm.keys import KEYS_DIR_ENV
from kubemam.plan.conditions import Verdict
from kubemam.plan.facts import AssetFacts
from kubemam.plan.hashing import input_hash
from kubemam.plan.jobs import StepJobRequest
from kubemam.plan.stepjob import Retries, StepOutcome
from kubemam.steps.registry import PACKAGE

__all__ = ["KEYS_DIR_ENV", "KEYS_MOUNT", "KeySecret", "packaged", "plan_package", "plan_packaging"]

KEYS_MOUNT = "/var/run/kubemam/keys"
CPIX_TOKEN_ENV = "KUBEMAM_CPIX_TOKEN"
# KIDs asked of a CPIX server are derived, so a retried or re-planned request asks for the same ones.
KID_NAMESPACE = uuid.UUID("6f1c7c3e-5b0e-4a51-9a55-6b7566616d6d")


def key_tier(kind: str, height: int | None, tiers: KeyTiers | None) -> str:
    """The key a track is encrypted with: one for everything unless the ladder separates them."""
    separate_audio = bool(tiers and tiers.separate_audio)
    separate_video = bool(tiers and tiers.separate_video_tiers)
    if kind == "audio":
        return "audio" if separate_audio else ("sd" if separate_video else "all")
    if not separate_video:
        return "video" if separate_audio else "all"
    height = height or 0
    return "sd" if height < 720 else "hd" if height <= 1080 else "uhd"


def cpix_kid(asset_uid: str, tier: str) -> uuid.UUID:
    return uuid.uuid5(KID_NAMESPACE, f"{asset_uid}/{tier}")


def _name_prefix(ladder: TranscodeLadderSpec) -> str | None:
    provider = ladder.drm.key_provider if ladder.drm else None
    return provider.secret.name_prefix if provider and provider.secret else None


def key_secret_name(namespace: str, asset: str, asset_uid: str, ladder: TranscodeLadderSpec, tier: str) -> str:
    """One tier's key Secret: readable stem, then a hash of (namespace, asset uid) and the tier. Names
    once collided ("a-b" + "c" = "a" + "b-c"; long names cut to one), so two titles shared keys."""
    prefix = _name_prefix(ladder)
    stem = f"{prefix}-{asset}" if prefix else f"{asset}-content-keys"
    suffix = f"-{input_hash({'namespace': namespace, 'uid': asset_uid})[:16]}-{tier}"
    return stem[:253 - len(suffix)].rstrip("-.") + suffix


def legacy_key_secret_name(asset: str, ladder: TranscodeLadderSpec) -> str:
    """The one Secret of every tier that earlier versions kept; the asset's own keys in it are carried over."""
    prefix = _name_prefix(ladder)
    return f"{prefix}-{asset}"[:253] if prefix else f"{asset}-content-keys"[:253]


def sprite_sheet_uris(previews: Previews | None) -> list[str]:
    if previews is None or not previews.sprite_uri or not previews.sprite_sheets:
        return []
    first = previews.sprite_uri
    if not first.endswith("sprite-001.jpg"):
        return [first]
    base = first.removesuffix("sprite-001.jpg")
    return [f"{base}sprite-{n:03d}.jpg" for n in range(1, previews.sprite_sheets + 1)]


@dataclass(frozen=True)
class PackagePlan:
    inputs: dict[str, Any]
    output: str
    tiers: list[str]  # key tiers the package needs (empty: in the clear)
    key_secrets: dict[str, str]  # tier → the Secret the operator must hold its key in (secret provider)
    legacy_key_secret: str | None  # where earlier versions kept every tier's key
    token_secret: tuple[str, str] | None  # (Secret, key) of the CPIX bearer token


def plan_package(asset: str, asset_uid: str, spec: MediaAssetSpec, ladder: TranscodeLadderSpec,
                 renditions: list[RenditionStatus], previews: Previews | None, root: str,
                 namespace: str) -> PackagePlan | None:
    packaging = ladder.packaging
    if packaging is None or not renditions:
        return None
    languages = {a.name: a.language for a in ladder.audio or []}
    drm = ladder.drm
    tiers_spec = drm.key_tiers if drm else None
    tracks = []
    for rendition in renditions:
        track: dict[str, Any] = {"name": rendition.name, "kind": rendition.kind, "uri": rendition.uri,
                                 "specHash": rendition.spec_hash}
        if rendition.kind == "audio" and languages.get(rendition.name):
            track["language"] = languages[rendition.name]
        if drm is not None:
            track["keyTier"] = key_tier(rendition.kind, rendition.height, tiers_spec)
        tracks.append(track)
    tiers = sorted({t["keyTier"] for t in tracks if "keyTier" in t})
    inputs: dict[str, Any] = {
        "contentId": asset_uid,
        "formats": sorted(packaging.formats),
        "iframePlaylist": packaging.iframe_playlist,
        "segmentSeconds": ladder.segment_duration_seconds,
        "tracks": tracks,
    }
    if spec.captions:
        inputs["captions"] = [c.to_wire() for c in spec.captions]
    sheets = sprite_sheet_uris(previews)
    if sheets:
        thumbnails = ladder.thumbnails or Thumbnails()  # what ingest used to cut the sheets
        inputs["thumbnails"] = {"sheets": sheets, "columns": thumbnails.sprite_columns,
                                "rows": thumbnails.sprite_rows, "intervalSeconds": thumbnails.interval_seconds}
    key_secrets: dict[str, str] = {}
    legacy, token_secret = None, None
    if drm is not None:
        provider = drm.key_provider
        drm_inputs: dict[str, Any] = {"systems": sorted(drm.systems), "scheme": drm.scheme, "tiers": tiers}
        if provider.type == "secret":
            key_secrets = {tier: key_secret_name(namespace, asset, asset_uid, ladder, tier) for tier in tiers}
            legacy = legacy_key_secret_name(asset, ladder)
            drm_inputs["provider"] = "secret"  # the keys are mounted at KEYS_DIR_ENV's path
        else:
            assert provider.cpix is not None  # the CRD's CEL rule: type cpix needs the cpix field
            drm_inputs |= {"provider": "cpix", "url": provider.cpix.url,
                           "kids": {tier: str(cpix_kid(asset_uid, tier)) for tier in tiers}}
            ref = provider.cpix.credentials_secret_ref
            if ref is not None:
                drm_inputs["tokenEnv"] = CPIX_TOKEN_ENV
                token_secret = (ref.name, ref.key or "token")  # the key defaults to "token"
        inputs["drm"] = drm_inputs
    digest = input_hash({"inputs": inputs, "worker": __version__})
    output = f"{root}/packages/{digest[:16]}"
    inputs["output"] = output
    return PackagePlan(inputs, output, tiers, key_secrets, legacy, token_secret)


def packaged(plan: PackagePlan, status: list[PackageStatus] | None,
             results: list[dict[str, Any]]) -> list[PackageStatus] | None:
    """The packages of this plan, from status or from a package Job's result; None while not made."""
    prefix = plan.output + "/"
    current = [p for p in status or [] if p.manifest_uri.startswith(prefix)]
    if current:
        return current
    for result in results:
        entries = [PackageStatus.model_validate(_status_entry(p, result)) for p in result.get("packages") or []]
        if entries and all(p.manifest_uri.startswith(prefix) for p in entries):
            return entries
    return None


def _status_entry(package: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    tracks = [t for t in result.get("tracks") or [] if isinstance(t, dict)]
    return {**package, "tracks": tracks}


@dataclass(frozen=True)
class KeySecret:
    """Content keys the operator must hold (generated once per tier, an immutable Secret each) before the
    package Job runs."""

    names: dict[str, str]  # tier → Secret
    legacy: str | None = None  # the Secret of every tier earlier versions kept: the asset's keys there carry over


@dataclass
class PackageOutcome(StepOutcome):
    packages: list[PackageStatus] | None = None
    key_secret: KeySecret | None = None


def _reported_nothing(_: object) -> bool:
    """A succeeded package Job whose result named this plan's packages would have made them done: if it is
    still the current attempt, its result was lost, and a recover attempt reports the committed manifest."""
    return False


def _packaged_bytes(facts: AssetFacts, renditions: list[RenditionStatus]) -> int | None:
    """What the package step downloads: the renditions' bytes, or the master's while one size is unknown."""
    sizes = [r.size_bytes for r in renditions]
    if sizes and all(size is not None for size in sizes):
        return sum(size for size in sizes if size is not None)
    return facts.status.technical.size_bytes if facts.status.technical else None


def plan_packaging(facts: AssetFacts, ladder: TranscodeLadderSpec, renditions: list[RenditionStatus],
                   previews: Previews | None, config: OperatorConfig, retries: Retries) -> PackageOutcome:
    """One package Job over every rendition; a package already made for the same inputs is kept."""
    outcome = PackageOutcome()
    plan = plan_package(facts.name, facts.uid, facts.spec, ladder, renditions, previews, facts.root(config),
                        facts.namespace)
    if plan is None:
        return outcome
    results = [j.result for j in facts.jobs if j.step == PACKAGE and j.state == "Succeeded" and j.result]
    done = packaged(plan, facts.status.packages, results)
    if done is not None:
        outcome.packages = done
        outcome.verdicts.append(Verdict("Packaged", "True", "PackagesReady",
                                        ", ".join(sorted({p.format for p in done})) + " packaged"))
        return outcome
    if plan.key_secrets:
        outcome.key_secret = KeySecret(plan.key_secrets, plan.legacy_key_secret)
        if facts.key_secret_problem:  # a Secret not this asset's holds a key name: no Job mounts it
            outcome.verdicts.append(Verdict("Packaged", "False", "KeySecretConflict", facts.key_secret_problem))
            outcome.phase = "Packaging"  # not Failed: rechecked by the timer until that Secret is gone
            return outcome
    request = StepJobRequest(
        owner=facts.owner, step=PACKAGE, inputs=plan.inputs,
        priority_class_name=ladder.priority_class_name, queue_name=ladder.queue_name,
        # Every tier's Secret into one directory (a projected volume), `<tier>.kid`/`<tier>.key` each.
        secret_mounts=tuple((plan.key_secrets[tier], KEYS_MOUNT) for tier in sorted(plan.key_secrets)),
        env=((KEYS_DIR_ENV, KEYS_MOUNT),) if plan.key_secrets else (),
        secret_env=((CPIX_TOKEN_ENV, *plan.token_secret),) if plan.token_secret else (),
        scratch_bytes=_packaged_bytes(facts, renditions))
    run = outcome.add(facts.run(request, config, retries, has_result=_reported_nothing))
    outcome.phase = "Packaging"
    if run.state == "Failed":
        message = (run.observed.message if run.observed else None) or ""
        reason = "KeyProviderFailed" if "key provider" in message else "PackageFailed"
        outcome.verdicts.append(Verdict("Packaged", "False", reason, run.failure()))
        outcome.phase = "Failed"
    elif run.state == "Retrying":
        outcome.verdicts.append(run.retry_verdict("Packaged"))
    else:
        outcome.running = run.observed if run.state == "Running" else None
        reason = "PackageRunning" if outcome.running else "PackagePending"
        outcome.verdicts.append(Verdict("Packaged", "Unknown", reason, f"packaging "
                                        f"{', '.join(plan.inputs['formats'])} into {plan.output}{run.note()}"))
    return outcome
