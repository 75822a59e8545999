"""The packager's side of the key providers: one call, keys (and any signalling) back.

- secret: the operator generated the keys once per asset and tier and keeps them in a Secret the
  asset owns; the package Job mounts it read-only, one `<tier>.kid` and `<tier>.key` file per tier.
- cpix:   a CPIX 2.3 / SPEKE v2 key server, asked for the KIDs the planner derived.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubemam.drm.cpix import KeyRequest, TierRequest, fetch_keys, intended_track_type
from kubemam.drm.errors import KeyProviderError
from kubemam.drm.keys import KEYS_DIR_ENV, ContentKey, ContentKeyError


@dataclass(frozen=True)
class ProvidedKeys:
    keys: dict[str, ContentKey]  # tier → key
    pssh: dict[str, dict[str, bytes]] = field(default_factory=dict)  # tier → system → pssh, when the provider sent it


def secret_file_names(tier: str) -> tuple[str, str]:
    return f"{tier}.kid", f"{tier}.key"


def read_secret_keys(directory: Path, tiers: list[str]) -> ProvidedKeys:
    keys: dict[str, ContentKey] = {}
    for tier in tiers:
        kid_name, key_name = secret_file_names(tier)
        try:
            kid = uuid.UUID((directory / kid_name).read_text().strip())
            key = bytes.fromhex((directory / key_name).read_text().strip())
        except FileNotFoundError as err:
            raise KeyProviderError(f"the key Secret has no {Path(err.filename).name} for tier {tier}") from err
        except ValueError as err:
            raise KeyProviderError(f"the key Secret's entry for tier {tier} is not a UUID KID and a hex key") from err
        try:
            keys[tier] = ContentKey(tier, kid, key)  # type: ignore[arg-type]
        except ContentKeyError as err:
            raise KeyProviderError(str(err)) from err
    return ProvidedKeys(keys)


def fetch_cpix_keys(drm: dict[str, Any], content_id: str, sleep: Callable[[float], None] | None = None) -> ProvidedKeys:
    token_env = drm.get("tokenEnv")
    token = os.environ.get(token_env) if token_env else None
    if token_env and not token:
        raise KeyProviderError(f"the CPIX credentials variable {token_env} is empty")
    kids = {tier: uuid.UUID(kid) for tier, kid in drm["kids"].items()}
    request = KeyRequest(content_id=content_id,
                         tiers=[TierRequest(tier, kid, intended_track_type(tier))
                                for tier, kid in sorted(kids.items())],
                         systems=list(drm["systems"]), scheme=drm["scheme"])
    extra = {"sleep": sleep} if sleep is not None else {}
    answer = fetch_keys(drm["url"], request, token=token, **extra)  # type: ignore[arg-type]
    by_kid = {key.kid: key for key in answer.keys}
    keys = {tier: by_kid[kid] for tier, kid in kids.items()}
    pssh: dict[str, dict[str, bytes]] = {}
    for tier, kid in kids.items():
        for system in drm["systems"]:
            signal = answer.signaling.get((kid, system))
            if signal is not None and signal.pssh:
                pssh.setdefault(tier, {})[system] = signal.pssh
    return ProvidedKeys(keys, pssh)


def provide_keys(drm: dict[str, Any], content_id: str) -> ProvidedKeys:
    if drm.get("provider") == "secret":
        directory = os.environ.get(KEYS_DIR_ENV)
        if not directory:
            raise KeyProviderError(f"{KEYS_DIR_ENV} is not set: the key Secret is not mounted")
        return read_secret_keys(Path(directory), list(drm["tiers"]))
    if drm.get("provider") == "cpix":
        return fetch_cpix_keys(drm, content_id)
    raise KeyProviderError(f"unknown key provider {drm.get('provider')!r}")
