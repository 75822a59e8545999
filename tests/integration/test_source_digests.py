"""The master is hashed once, as it downloads: SHA-256 always, MD5 too when the asset declares one."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from kubemam.api.asset import Checksum
from kubemam.storage.s3 import make_client
from kubemam.worker.contract import StepError
from kubemam.worker.source import check_checksum, fetch_checked

pytestmark = pytest.mark.integration


def test_md5_and_sha256_come_from_the_one_download(minio: Any, tmp_path: Path) -> None:
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    data = os.urandom(3 * 1024 * 1024 + 7)
    key = f"incoming/{uuid.uuid4().hex}.mxf"
    s3.put_object(Bucket="kubemam-library", Key=key, Body=data)
    target = tmp_path / "master"
    fetched = fetch_checked(f"s3://kubemam-library/{key}", target, s3, md5=True)
    assert (fetched.sha256, fetched.md5, fetched.size) == (hashlib.sha256(data).hexdigest(),
                                                           hashlib.md5(data).hexdigest(), len(data))
    assert target.read_bytes() == data
    good = Checksum(algorithm="md5", value=hashlib.md5(data).hexdigest())
    check_checksum(good, target, fetched)
    # The digest checked is the one taken in flight, not a second read of the file.
    target.write_bytes(b"changed after the download")
    check_checksum(good, target, fetched)
    with pytest.raises(StepError, match="md5"):
        check_checksum(Checksum(algorithm="md5", value="0" * 32), target, fetched)
    assert fetch_checked(f"s3://kubemam-library/{key}", target, s3).md5 is None  # not asked for, not computed
