"""What the preview page shows, read once: the asset and its ladder from the API server, the content keys
when the user may read their Secret, and the QC report, loudness series and sprite index from the library.
Anything beside the asset that cannot be read becomes a note on the page, not a failure."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from kubemam.api.kinds import MEDIA_ASSET, TRANSCODE_LADDER
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.api.qc import QCPolicy
from kubemam.kubeapi import KubeApi
from kubemam.plan.package import key_secret_name, key_tier, legacy_key_secret_name
from kubemam.preview.model import PageModel, PreviewError, build_page
from kubemam.storage.uri import S3Uri

log = logging.getLogger(__name__)
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024  # a 2-hour loudness series is ~200 KB; anything near this is not ours


def _read(s3: Any, uri: str | None, what: str, notes: list[str]) -> bytes | None:
    if not uri:
        return None
    try:
        where = S3Uri.parse(uri)
        obj = s3.get_object(Bucket=where.bucket, Key=where.key)
        if int(obj.get("ContentLength") or 0) > MAX_DOCUMENT_BYTES:
            notes.append(f"the {what} at {uri} is larger than {MAX_DOCUMENT_BYTES} bytes; not shown")
            return None
        return bytes(obj["Body"].read())
    except (ClientError, BotoCoreError, ValueError) as err:
        notes.append(f"the {what} at {uri} could not be read: {err}")
        return None


def _json(s3: Any, uri: str | None, what: str, notes: list[str]) -> dict[str, Any] | None:
    raw = _read(s3, uri, what, notes)
    if raw is None:
        return None
    try:
        document = json.loads(raw)
    except ValueError:
        notes.append(f"the {what} at {uri} is not JSON")
        return None
    return document if isinstance(document, dict) else None


def _secret_data(api: KubeApi, namespace: str, secret: str) -> dict[str, str] | None:
    """A Secret's data, decoded; None when it is missing. 403 (not allowed) is raised to the caller."""
    try:
        body = json.loads(api.core.read_namespaced_secret(secret, namespace, _preload_content=False,
                                                          _request_timeout=api.timeout).data)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return {k: base64.b64decode(v).decode(errors="replace").strip() for k, v in (body.get("data") or {}).items()}


def content_keys(api: KubeApi, namespace: str, secrets: list[str], notes: list[str]) -> dict[str, str] | None:
    """ClearKey's KID hex → key hex from the asset's key Secrets (`<tier>.kid` UUID, `<tier>.key` hex each), or
    None when the user may not read them. Neither the keys nor the Secrets' data are logged."""
    keys: dict[str, str] = {}
    for secret in secrets:
        try:
            data = _secret_data(api, namespace, secret)
        except ApiException as err:
            if err.status != 403:
                raise
            notes.append(f"encrypted packages cannot play here: you may not read the key Secret {namespace}/{secret}")
            return None
        data = data or {}
        for name, kid in data.items():
            if not name.endswith(".kid"):
                continue
            try:
                keys[bytes.fromhex(kid.replace("-", "")).hex()] = bytes.fromhex(data[name[:-4] + ".key"]).hex()
            except (KeyError, ValueError):
                notes.append(f"the key Secret {secret}'s entry {name} is not a KID with a hex key; skipped")
    if not keys:
        notes.append("encrypted packages cannot play here: no key Secret of the asset was found "
                     f"({', '.join(secrets)})")
    return keys or None


def key_secrets(namespace: str, body: dict[str, Any], ladder: TranscodeLadderSpec) -> list[str]:
    """The asset's key Secrets, one per key tier its renditions use, then the one of every tier earlier
    versions kept (plan/package.py names both)."""
    meta = body["metadata"]
    tiers_spec = ladder.drm.key_tiers if ladder.drm else None
    renditions = (body.get("status") or {}).get("renditions") or []
    tiers = sorted({key_tier(r.get("kind", "video"), r.get("height"), tiers_spec) for r in renditions})
    return ([key_secret_name(namespace, meta["name"], meta["uid"], ladder, tier) for tier in tiers]
            + [legacy_key_secret_name(meta["name"], ladder)])


def gather(api: KubeApi, s3: Any, namespace: str, name: str) -> PageModel:
    body = api.get(MEDIA_ASSET.plural, namespace, name)
    if body is None:
        raise PreviewError(f"mediaasset {name!r} not found in namespace {namespace}")
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    notes: list[str] = []
    ladder: TranscodeLadderSpec | None = None
    ladder_name = (spec.get("ladderRef") or {}).get("name")
    if ladder_name:
        ladder_body = api.get(TRANSCODE_LADDER.plural, namespace, ladder_name)
        try:
            ladder = TranscodeLadderSpec.model_validate(ladder_body["spec"]) if ladder_body else None
        except ValidationError:
            ladder = None
        if ladder is None:
            notes.append(f"the ladder {ladder_name!r} is missing or unreadable")
    # The QC policy the operator judged with: the asset's, else the ladder's, else EBU R128.
    policy = QCPolicy.model_validate(spec["qc"]) if spec.get("qc") else (ladder.qc if ladder and ladder.qc
                                                                          else QCPolicy())
    keys = None
    if ladder and ladder.drm and ladder.drm.key_provider.type == "secret" and status.get("packages"):
        keys = content_keys(api, namespace, key_secrets(namespace, body, ladder), notes)
    elif ladder and ladder.drm and status.get("packages"):
        notes.append("the packages' keys come from a CPIX key server: encrypted packages cannot play here")
    qc = status.get("qc") or {}
    previews = status.get("previews") or {}
    vtt = _read(s3, previews.get("spriteIndexUri"), "sprite index", notes)
    page = build_page(body, target_lufs=policy.target_lufs, tolerance_lu=policy.tolerance_lu,
                      qc_report=_json(s3, qc.get("reportUri"), "QC report", notes),
                      loudness=_json(s3, qc.get("loudnessUri"), "loudness series", notes),
                      sprite_vtt=vtt.decode(errors="replace") if vtt else None, clear_keys=keys, notes=notes)
    log.info("preview of %s/%s: %d sources, %d timeline entries, %d thumbnails%s", namespace, name,
             len(page.sources), len(page.timeline), len(page.thumbnails), ", with content keys" if keys else "")
    return page
