"""S3 side of the worker contract: commit a directory under a prefix with its manifest, verify it.

Commit order: every object to a temporary prefix, server-side copy to its final key, then the
manifest, then the temporary objects are removed. Readers trust only a manifest, so a crash at
any point leaves either no manifest (re-run) or a complete, verifiable result.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from kubemam.storage.manifest import Manifest, entries_for, manifest_uri, missing_or_changed
from kubemam.storage.uri import S3Uri

TMP_DIR = ".tmp"


def make_client(endpoint: str | None = None, access_key: str | None = None, secret_key: str | None = None) -> Any:
    """A boto3 S3 client; without arguments it reads AWS_ENDPOINT_URL and the AWS_* credentials."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
    )


def list_objects(s3: Any, prefix: S3Uri) -> Iterator[tuple[str, int]]:
    """(key relative to prefix, size) for every object below prefix."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.prefix):
        for obj in page.get("Contents", []):
            yield obj["Key"][len(prefix.prefix):], int(obj["Size"])


def read_manifest(s3: Any, prefix: S3Uri) -> Manifest | None:
    target = manifest_uri(prefix)
    try:
        body = s3.get_object(Bucket=target.bucket, Key=target.key)["Body"].read()
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    return Manifest.model_validate(json.loads(body))


def verify(s3: Any, prefix: S3Uri, manifest: Manifest) -> list[str]:
    """Keys the manifest names that storage lacks or holds at another size ([] when complete)."""
    return missing_or_changed(manifest, list_objects(s3, prefix))


def commit(s3: Any, local_dir: Path, prefix: S3Uri, *, step: str, input_hash: str, worker_version: str,
           now: datetime, result: dict[str, Any] | None = None) -> Manifest:
    """Upload local_dir under prefix with its manifest; a verified earlier commit of the same inputs wins."""
    existing = read_manifest(s3, prefix)
    if existing is not None and existing.input_hash == input_hash and not verify(s3, prefix, existing):
        return existing
    manifest = Manifest(step=step, input_hash=input_hash, worker_version=worker_version, created=now,
                        objects=entries_for(local_dir), result=result or {})
    staging = prefix.join(TMP_DIR, uuid.uuid4().hex)
    for entry in manifest.objects:
        s3.upload_file(str(local_dir / entry.key), staging.bucket, staging.join(entry.key).key)
    for entry in manifest.objects:
        s3.copy_object(Bucket=prefix.bucket, Key=prefix.join(entry.key).key,
                       CopySource={"Bucket": staging.bucket, "Key": staging.join(entry.key).key})
    problems = verify(s3, prefix, manifest)
    if problems:
        raise RuntimeError(f"commit to {prefix} did not verify: {', '.join(problems)}")
    target = manifest_uri(prefix)
    s3.put_object(Bucket=target.bucket, Key=target.key, Body=manifest.to_json(), ContentType="application/json")
    for entry in manifest.objects:
        s3.delete_object(Bucket=staging.bucket, Key=staging.join(entry.key).key)
    return manifest
