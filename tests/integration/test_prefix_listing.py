"""worker/listing.py against MinIO: sibling prefixes listed by span give exactly what one listing each gives."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from kubemam.storage.s3 import make_client
from kubemam.storage.uri import S3Uri
from kubemam.worker import listing

pytestmark = pytest.mark.integration
BUCKET = "kubemam-library"


def _put(s3: Any, keys: list[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=BUCKET, Key=k, Body=k.encode()), keys))


def test_siblings_listed_by_span_match_their_own_listings_and_skip_the_rest(minio: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    root = f"span-{uuid.uuid4().hex[:8]}/origin"
    # 60 titles, 3 objects each; between them siblings not asked for, one whose name extends a wanted one
    # ("t-010-extra" sorts between "t-010" and "t-010/"), and a key beside the folders.
    titles = [f"t-{n:03d}" for n in range(60)]
    keys = [f"{root}/{t}/{name}" for t in titles for name in ("manifest.mpd", "v/init.mp4", "v/seg-1.m4s")]
    keys += [f"{root}/t-010-extra/x", f"{root}/t-0105/y", f"{root}/readme.txt"]
    _put(s3, keys)
    wanted = [S3Uri(BUCKET, f"{root}/{t}") for t in titles[::2]] + [S3Uri(BUCKET, f"{root}/missing")]
    with ThreadPoolExecutor(8) as pool:
        got = listing.list_prefixes(s3, pool, wanted, threads=8)
        for prefix, found in zip(wanted, got, strict=True):
            assert found == listing.list_prefix(s3, prefix)
        assert got[-1] == {} and set(got[5]) == {"manifest.mpd", "v/init.mp4", "v/seg-1.m4s"}
        assert got[5]["manifest.mpd"][0] == len(f"{root}/t-010/manifest.mpd")
        # A span that walks too far for its few folders gives up and lists them one by one: same answer.
        monkeypatch.setattr(listing, "SPAN_KEYS_PER_PREFIX", 1)
        abandoned: list[int] = []
        real = listing.list_prefix
        monkeypatch.setattr(listing, "list_prefix", lambda s3_, p: abandoned.append(1) or real(s3_, p))
        assert listing.list_prefixes(s3, pool, wanted, threads=2) == got
        assert len(abandoned) == len(wanted)  # every folder listed alone after its span gave up
        # An unreadable bucket fails each of its prefixes alone; the others are listed.
        broken = [S3Uri("no-such-bucket-here", f"o/{t}") for t in titles[:20]]
        mixed = listing.list_prefixes(s3, pool, broken + wanted, threads=4)
        assert all(isinstance(r, Exception) for r in mixed[:20]) and mixed[20:] == got
