from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from kubemam.storage.manifest import Manifest, entries_for, missing_or_changed
from kubemam.storage.uri import S3Uri, S3UriError


def test_s3_uri_parse_join_and_refusals() -> None:
    uri = S3Uri.parse("s3://kubemam-library/masters/ep1.mov")
    assert (uri.bucket, uri.key) == ("kubemam-library", "masters/ep1.mov")
    assert str(S3Uri.parse("s3://lib").join("a/", "/b")) == "s3://lib/a/b"
    assert S3Uri.parse("s3://lib/x/").prefix == "x/"
    for bad in ("https://lib/x", "s3://UPPER/x", "s3://a/../etc"):
        with pytest.raises(S3UriError):
            S3Uri.parse(bad)


def test_manifest_entries_hash_every_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_bytes(b"abc")
    (tmp_path / "sub" / "b.bin").write_bytes(b"")
    entries = entries_for(tmp_path)
    assert [(e.key, e.size) for e in entries] == [("a.txt", 3), ("sub/b.bin", 0)]
    assert entries[0].sha256 == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    manifest = Manifest(step="ingest", input_hash="h", worker_version="0", created=datetime.now(UTC),
                        objects=entries)
    assert missing_or_changed(manifest, [("a.txt", 3), ("sub/b.bin", 0)]) == []
    assert missing_or_changed(manifest, [("a.txt", 2)]) == ["a.txt", "sub/b.bin"]
