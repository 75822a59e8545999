"""The manifest a step commits with its outputs: sha256 and size of every object.

A step writes its outputs under a temporary prefix, then copies them to their final keys
and writes the manifest last. A manifest therefore exists only for a complete result, and
a re-run whose manifest verifies does nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kubemam.storage.uri import S3Uri

MANIFEST_NAME = "manifest.json"
CHUNK = 1024 * 1024  # hashes as fast as 8 MiB; steps hash in threads, and each read is held until hashed


class ManifestEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str = Field(min_length=1, description="Key relative to the manifest's prefix.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: str
    input_hash: str
    worker_version: str
    created: datetime
    objects: list[ManifestEntry]
    result: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2).encode()

    def entry(self, key: str) -> ManifestEntry | None:
        return next((e for e in self.objects if e.key == key), None)


def sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def entries_for(directory: Path) -> list[ManifestEntry]:
    """One entry per file below directory, keyed by its relative POSIX path, sorted."""
    entries = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        sha, size = sha256_file(path)
        entries.append(ManifestEntry(key=path.relative_to(directory).as_posix(), sha256=sha, size=size))
    return entries


def manifest_uri(prefix: S3Uri) -> S3Uri:
    return prefix.join(MANIFEST_NAME)


def missing_or_changed(manifest: Manifest, listing: Iterable[tuple[str, int]]) -> list[str]:
    """Keys the manifest names that a listing (key, size) lacks or holds at another size."""
    sizes = dict(listing)
    return [e.key for e in manifest.objects if sizes.get(e.key) != e.size]
