"""The worker contract's commit against a real S3 server (MinIO): manifest last, re-runs do nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kubemam.storage.s3 import commit, list_objects, make_client, read_manifest, verify
from kubemam.storage.uri import S3Uri

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def _outputs(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    (out / "proxy").mkdir(parents=True)
    (out / "proxy" / "proxy.mp4").write_bytes(b"\x00" * 100_000)
    (out / "probe.json").write_text('{"format": "mov"}')
    return out


def test_commit_writes_objects_then_manifest_and_cleans_staging(minio: Any, tmp_path: Path) -> None:
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    prefix = S3Uri("kubemam-library", f"assets/{uuid.uuid4().hex}/ingest")
    manifest = commit(s3, _outputs(tmp_path), prefix, step="ingest", input_hash="h1", worker_version="0.1.0", now=NOW)
    stored = dict(list_objects(s3, prefix))
    assert stored == {"manifest.json": stored["manifest.json"], "probe.json": 17, "proxy/proxy.mp4": 100_000}
    assert read_manifest(s3, prefix) == manifest
    assert verify(s3, prefix, manifest) == []


def test_recommit_of_same_inputs_does_nothing_and_damage_is_repaired(minio: Any, tmp_path: Path) -> None:
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    prefix = S3Uri("kubemam-library", f"assets/{uuid.uuid4().hex}/ingest")
    out = _outputs(tmp_path)
    first = commit(s3, out, prefix, step="ingest", input_hash="h1", worker_version="0.1.0", now=NOW)
    etag = s3.head_object(Bucket=prefix.bucket, Key=prefix.join("manifest.json").key)["ETag"]
    later = datetime(2026, 11, 24, tzinfo=UTC)
    again = commit(s3, out, prefix, step="ingest", input_hash="h1", worker_version="0.1.0", now=later)
    assert again == first
    assert s3.head_object(Bucket=prefix.bucket, Key=prefix.join("manifest.json").key)["ETag"] == etag
    s3.delete_object(Bucket=prefix.bucket, Key=prefix.join("proxy/proxy.mp4").key)
    assert verify(s3, prefix, first) == ["proxy/proxy.mp4"]
    repaired = commit(s3, out, prefix, step="ingest", input_hash="h1", worker_version="0.1.0", now=later)
    assert verify(s3, prefix, repaired) == [] and repaired.created == later


def test_objects_without_a_manifest_are_not_a_result(minio: Any) -> None:
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    prefix = S3Uri("kubemam-library", f"assets/{uuid.uuid4().hex}/ingest")
    s3.put_object(Bucket=prefix.bucket, Key=prefix.join("half-written.mp4").key, Body=b"x")
    assert read_manifest(s3, prefix) is None


def test_a_commit_of_more_objects_than_one_delete_request_takes_lands_whole(minio: Any, tmp_path: Path) -> None:
    """1,050 segments go 8 at a time and a 17 MiB object alone; every byte lands at its key and the staging
    prefix is emptied past one DeleteObjects request's 1,000 keys."""
    out = tmp_path / "many"
    (out / "video").mkdir(parents=True)
    for n in range(1050):
        (out / "video" / f"seg-{n:05d}.m4s").write_bytes(n.to_bytes(4, "big") * 64)
    big = bytes(range(256)) * (17 * 4096)
    (out / "video" / "whole.mp4").write_bytes(big)
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    prefix = S3Uri("kubemam-library", f"assets/{uuid.uuid4().hex}/package")
    manifest = commit(s3, out, prefix, step="package", input_hash="h1", worker_version="0.1.0", now=NOW)
    stored = dict(list_objects(s3, prefix))
    assert len(stored) == 1052 and len(manifest.objects) == 1051
    assert verify(s3, prefix, manifest) == []
    for n in (0, 517, 1049):
        body = s3.get_object(Bucket=prefix.bucket, Key=prefix.join(f"video/seg-{n:05d}.m4s").key)["Body"].read()
        assert body == n.to_bytes(4, "big") * 64
    assert s3.get_object(Bucket=prefix.bucket, Key=prefix.join("video/whole.mp4").key)["Body"].read() == big
    assert not [k for k in stored if k.startswith(".tmp/")]
    left = s3.list_objects_v2(Bucket=prefix.bucket, Prefix=prefix.join(".tmp").key + "/")
    assert left.get("KeyCount") == 0
