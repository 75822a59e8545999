"""Bring a step's master to local scratch: streamed in chunks, hashed on the way, never whole in memory."""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
from pathlib import Path
from typing import Any

from kubemam.api.asset import Checksum
from kubemam.storage.uri import S3Uri
from kubemam.worker.contract import StepError

CHUNK = 8 * 1024 * 1024


def fetch(uri: str, target: Path, s3: Any) -> str:
    """Download the source to target; returns its sha256."""
    sha = hashlib.sha256()
    if uri.startswith("s3://"):
        source = S3Uri.parse(uri)
        try:
            body = s3.get_object(Bucket=source.bucket, Key=source.key)["Body"]
        except s3.exceptions.NoSuchKey as err:
            raise StepError(f"source {uri} does not exist") from err
        chunks = iter(lambda: body.read(CHUNK), b"")
    elif uri.startswith(("https://", "http://")):
        response = urllib.request.urlopen(uri, timeout=60)  # noqa: S310 - the scheme is checked above
        chunks = iter(lambda: response.read(CHUNK), b"")
    else:
        raise StepError(f"unsupported source scheme in {uri}")
    with open(target, "wb") as out:
        for chunk in chunks:
            sha.update(chunk)
            out.write(chunk)
    return sha.hexdigest()


def check_checksum(expected: Checksum | None, path: Path, sha256: str) -> None:
    if expected is None:
        return
    actual = sha256
    if expected.algorithm == "md5":
        actual = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    if actual != expected.value:
        raise StepError(f"source {expected.algorithm} is {actual}, the asset declares {expected.value}")


def fetch_master(uri: str, s3: Any) -> tuple[Path, Path, str]:
    """A fresh output folder and the master fetched beside it in the step's scratch: (out_dir, master, sha256)."""
    from kubemam.worker.contract import work_dir

    scratch = work_dir()
    out_dir = scratch / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    master = scratch / "master"
    return out_dir, master, fetch(uri, master, s3)
