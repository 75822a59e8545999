"""`kubemam worker archive` against two real MinIO servers (two sites): what each site holds afterwards."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from kubemam.storage.s3 import make_client
from kubemam.storage.transfer import Place, copy_verified
from kubemam_local.minio import MinioServer
from tests.faults.proxy import CutReplies, DenyObjectGets, FaultProxy

pytestmark = pytest.mark.integration
SITE_B = "KUBEMAM_LOCATION_1"


@pytest.fixture(scope="module")
def site_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    with MinioServer(buckets=["kubemam-library", "kubemam-nearline", "plain-vault"],
                     workdir=tmp_path_factory.mktemp("site-a")) as server:
        yield server


@pytest.fixture(scope="module")
def site_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    server = MinioServer(locked_buckets=["kubemam-vault"], workdir=tmp_path_factory.mktemp("site-b"))
    with server:
        yield server


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _locations(a: MinioServer, b: MinioServer, asset: str) -> list[dict[str, Any]]:
    return [
        {"name": "library", "uri": f"s3://kubemam-library/archive/{asset}", "site": "a"},
        {"name": "nearline", "uri": f"s3://kubemam-nearline/archive/{asset}", "site": "a"},
        {"name": "vault", "uri": f"s3://kubemam-vault/archive/{asset}", "site": "b", "offsite": True,
         "objectLock": False, "endpoint": b.endpoint, "credentials": SITE_B},
    ]


def _inputs(a: MinioServer, b: MinioServer, asset: str, objects: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    locations = _locations(a, b, asset)
    for location in locations:
        location["object_lock"] = location.pop("objectLock", False)
    return {"mode": "place", "tier": "hot", "objects": objects, "locations": locations, **extra}


def _env(a: MinioServer, b: MinioServer, tmp_path: Path, inputs: dict[str, Any], retry: int = 60) -> dict[str, str]:
    return {**os.environ, "AWS_ENDPOINT_URL": a.endpoint, "AWS_ACCESS_KEY_ID": a.access_key,
            "AWS_SECRET_ACCESS_KEY": a.secret_key, f"{SITE_B}_ACCESS_KEY_ID": b.access_key,
            f"{SITE_B}_SECRET_ACCESS_KEY": b.secret_key, "KUBEMAM_STEP_INPUT": json.dumps(inputs),
            "KUBEMAM_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"), "TMPDIR": str(tmp_path),
            "KUBEMAM_S3_RETRY_SECONDS": str(retry)}


def _run(a: MinioServer, b: MinioServer, tmp_path: Path, inputs: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run([sys.executable, "-m", "kubemam", "worker", "archive"], env=_env(a, b, tmp_path, inputs),
                          capture_output=True, text=True, timeout=600)
    message = tmp_path / "termination-log"
    result = json.loads(message.read_text()) if message.exists() else {}
    return done.returncode, result, done.stderr


def _hash_at(server: MinioServer, bucket: str, key: str) -> str | None:
    s3 = server.client()
    try:
        return _sha(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def _keys(server: MinioServer, bucket: str, prefix: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix):] for o in listing.get("Contents", []))


def _master(site: MinioServer, size: int) -> tuple[str, dict[str, Any]]:
    data = os.urandom(size)
    key = f"incoming/{uuid.uuid4().hex}.mxf"
    site.client().put_object(Bucket="kubemam-library", Key=key, Body=data)
    return key, {"key": "master.mxf", "sha256": _sha(data), "size": size, "source": f"s3://kubemam-library/{key}",
                 "lock": True}


def _sidecar(text: str = "<ebuCoreMain/>") -> dict[str, Any]:
    return {"key": "ebucore.xml", "sha256": _sha(text.encode()), "size": len(text.encode()), "content": text,
            "content_type": "application/xml"}


def test_place_makes_verified_copies_on_both_sites_then_a_move_empties_the_old_tier(
        site_a: MinioServer, site_b: MinioServer, tmp_path: Path) -> None:
    asset = uuid.uuid4().hex[:8]
    _, master = _master(site_a, 3 * 1024 * 1024 + 17)
    objects = [master, _sidecar()]
    hot = _inputs(site_a, site_b, asset, objects, targets=[
        {"location": "library", "storage_class": "STANDARD", "primary": True},
        {"location": "vault", "storage_class": "STANDARD"}], vacate=["nearline"])
    code, result, stderr = _run(site_a, site_b, tmp_path, hot)
    assert code == 0, stderr
    assert [c["location"] for c in result["copies"]] == ["library", "vault"]
    assert {c["verifiedBy"] for c in result["copies"]} == {"s3-checksum"}
    assert _hash_at(site_a, "kubemam-library", f"archive/{asset}/master.mxf") == master["sha256"]
    assert _hash_at(site_b, "kubemam-vault", f"archive/{asset}/master.mxf") == master["sha256"]
    assert _keys(site_b, "kubemam-vault", f"archive/{asset}/") == ["archive.json", "ebucore.xml", "master.mxf"]
    recorded = json.loads(site_b.client().get_object(Bucket="kubemam-vault", Key=f"archive/{asset}/archive.json")
                          ["Body"].read())
    assert {o["key"]: o["sha256"] for o in recorded["objects"]}["master.mxf"] == master["sha256"]

    # Again: nothing is copied twice.
    code, again, stderr = _run(site_a, site_b, tmp_path, hot)
    assert code == 0, stderr
    assert again["copiedBytes"] == {}

    # The warm tier: the primary copy moves to nearline at another class; the place run deletes nothing,
    # the vacate run after it empties library.
    warm = {**hot, "tier": "warm", "targets": [
        {"location": "nearline", "storage_class": "REDUCED_REDUNDANCY", "primary": True},
        {"location": "vault", "storage_class": "STANDARD"}], "vacate": []}
    code, moved, stderr = _run(site_a, site_b, tmp_path, warm)
    assert code == 0, stderr
    assert "vacated" not in moved and _keys(site_a, "kubemam-library", f"archive/{asset}/") != []
    code, moved, stderr = _run(site_a, site_b, tmp_path, {**warm, "mode": "vacate", "vacate": ["library"]})
    assert code == 0, stderr
    assert moved["vacated"] == ["library"]
    assert _keys(site_a, "kubemam-library", f"archive/{asset}/") == []
    head = site_a.client().head_object(Bucket="kubemam-nearline", Key=f"archive/{asset}/master.mxf")
    assert head["StorageClass"] == "REDUCED_REDUNDANCY"
    assert _hash_at(site_a, "kubemam-nearline", f"archive/{asset}/master.mxf") == master["sha256"]


def test_a_site_stopped_in_the_middle_of_a_move_loses_nothing(
        site_a: MinioServer, site_b: MinioServer, tmp_path: Path) -> None:
    """Site B stops while the master streams to it: the old copy on site A stays, verified, until the
    copy on B verifies after B returns; only then is A emptied."""
    asset = uuid.uuid4().hex[:8]
    size = 200 * 1024 * 1024
    _, master = _master(site_a, size)
    first = _inputs(site_a, site_b, asset, [master], targets=[
        {"location": "library", "storage_class": "STANDARD", "primary": True}])
    assert _run(site_a, site_b, tmp_path, first)[0] == 0
    move = {**first, "tier": "cold", "targets": [{"location": "vault", "storage_class": "STANDARD",
                                                    "primary": True}]}
    worker = subprocess.Popen([sys.executable, "-m", "kubemam", "worker", "archive"],
                              env=_env(site_a, site_b, tmp_path, move, retry=120), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    copies_seen: list[tuple[str | None, str | None]] = []
    try:
        # Stop B once the streamed upload to it has begun.
        deadline = time.monotonic() + 60
        while not site_b.client().list_multipart_uploads(Bucket="kubemam-vault").get("Uploads"):
            assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()[1]
            time.sleep(0.05)
        site_b.stop()
        for _ in range(3):  # while B is down, A's copy is there and intact
            time.sleep(2)
            copies_seen.append((_hash_at(site_a, "kubemam-library", f"archive/{asset}/master.mxf"), None))
        assert worker.poll() is None, "the worker gave up during a short outage"
        site_b.start()
        _, stderr = worker.communicate(timeout=300)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, stderr
    assert all(a == master["sha256"] for a, _ in copies_seen)
    assert _hash_at(site_b, "kubemam-vault", f"archive/{asset}/master.mxf") == master["sha256"]
    assert _hash_at(site_a, "kubemam-library", f"archive/{asset}/master.mxf") == master["sha256"]
    code, result, stderr = _run(site_a, site_b, tmp_path, {**move, "mode": "vacate", "vacate": ["library"]})
    assert code == 0 and result["vacated"] == ["library"], stderr
    assert _keys(site_a, "kubemam-library", f"archive/{asset}/") == []
    # Object Lock kept nothing behind at B: exactly one version, and no multipart upload left over.
    versions = site_b.client().list_object_versions(Bucket="kubemam-vault", Prefix=f"archive/{asset}/master.mxf")
    assert len(versions.get("Versions", [])) == 1


def test_fixity_finds_a_rotted_copy_and_repairs_it_from_an_intact_one(
        site_a: MinioServer, site_b: MinioServer, tmp_path: Path) -> None:
    asset = uuid.uuid4().hex[:8]
    _, master = _master(site_a, 1024 * 1024)
    targets = [{"location": "library", "storage_class": "STANDARD", "primary": True},
               {"location": "vault", "storage_class": "STANDARD"}]
    assert _run(site_a, site_b, tmp_path, _inputs(site_a, site_b, asset, [master], targets=targets))[0] == 0
    # Bit rot at site B: same size, other bytes, written behind the archive's back.
    site_b.client().put_object(Bucket="kubemam-vault", Key=f"archive/{asset}/master.mxf",
                               Body=os.urandom(master["size"]))
    report = f"s3://kubemam-library/reports/{asset}/fixity.json"
    check = _inputs(site_a, site_b, asset, [master], mode="fixity", targets=targets, run="request:1", report=report)
    code, result, stderr = _run(site_a, site_b, tmp_path, check)
    assert code == 0, stderr
    assert result["failures"] == 1 and result["repaired"] == ["vault:master.mxf"]
    assert _hash_at(site_b, "kubemam-vault", f"archive/{asset}/master.mxf") == master["sha256"]
    recorded = json.loads(site_a.client().get_object(Bucket="kubemam-library", Key=f"reports/{asset}/fixity.json")
                          ["Body"].read())
    assert [c["ok"] for c in recorded["checks"]] == [True, False]
    # A second check finds nothing wrong.
    code, result, stderr = _run(site_a, site_b, tmp_path, check)
    assert code == 0 and result["failures"] == 0, stderr


def test_locations_that_cannot_hold_the_copy_fail_with_the_location_named(
        site_a: MinioServer, site_b: MinioServer, tmp_path: Path) -> None:
    asset = uuid.uuid4().hex[:8]
    _, master = _master(site_a, 1000)
    glacier = _inputs(site_a, site_b, asset, [master], targets=[
        {"location": "nearline", "storage_class": "DEEP_ARCHIVE", "primary": True}])
    code, result, stderr = _run(site_a, site_b, tmp_path, glacier)
    assert code == 2 and "location nearline" in result["error"] and "storage class" in result["error"], stderr
    unlockable = _inputs(site_a, site_b, asset, [master], targets=[
        {"location": "library", "storage_class": "STANDARD", "primary": True}])
    unlockable["locations"][0]["object_lock"] = True
    code, result, stderr = _run(site_a, site_b, tmp_path, unlockable)
    assert code == 2 and "location library" in result["error"] and "Object Lock" in result["error"], stderr
    missing = _inputs(site_a, site_b, asset, [master], targets=[
        {"location": "library", "storage_class": "STANDARD", "primary": True}])
    missing["locations"][0]["uri"] = f"s3://no-such-bucket/archive/{asset}"
    code, result, stderr = _run(site_a, site_b, tmp_path, missing)
    assert code == 2 and "does not exist" in result["error"], stderr


def test_legal_hold_keeps_copies_until_released_then_purge_removes_every_version(
        site_a: MinioServer, site_b: MinioServer, tmp_path: Path) -> None:
    asset = uuid.uuid4().hex[:8]
    _, master = _master(site_a, 2000)
    held = _inputs(site_a, site_b, asset, [master], targets=[
        {"location": "vault", "storage_class": "STANDARD", "primary": True}], legal_hold=True)
    held["locations"][2]["object_lock"] = True
    assert _run(site_a, site_b, tmp_path, held)[0] == 0
    hold = site_b.client().get_object_legal_hold(Bucket="kubemam-vault", Key=f"archive/{asset}/master.mxf")
    assert hold["LegalHold"]["Status"] == "ON"
    # A purge that still holds refuses and deletes nothing.
    code, result, _ = _run(site_a, site_b, tmp_path, {**held, "mode": "purge"})
    assert code == 2 and "Object Lock" in result["error"]
    assert _hash_at(site_b, "kubemam-vault", f"archive/{asset}/master.mxf") == master["sha256"]
    code, result, stderr = _run(site_a, site_b, tmp_path, {**held, "mode": "purge", "legal_hold": False})
    assert code == 0, stderr
    versions = site_b.client().list_object_versions(Bucket="kubemam-vault", Prefix=f"archive/{asset}/")
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")


def test_large_objects_copy_server_side_in_parts_and_verify_by_reading_back(site_a: MinioServer) -> None:
    s3 = make_client(site_a.endpoint, site_a.access_key, site_a.secret_key)
    data = os.urandom(70 * 1024 * 1024)
    s3.put_object(Bucket="kubemam-library", Key="big/source.bin", Body=data)
    place = Place("a", s3, "a")
    from kubemam.storage.uri import S3Uri

    how = copy_verified(place, S3Uri("kubemam-library", "big/source.bin"), place,
                        S3Uri("kubemam-nearline", "big/copy.bin"), sha256=_sha(data), size=len(data),
                        storage_class="STANDARD", multipart_copy_above=1024 * 1024)
    assert how == "read-back"
    assert _hash_at(site_a, "kubemam-nearline", "big/copy.bin") == _sha(data)
    # A source that does not hash to the recorded value is not copied.
    with pytest.raises(Exception, match="read back|does not hash"):
        copy_verified(place, S3Uri("kubemam-library", "big/source.bin"), place,
                      S3Uri("kubemam-nearline", "big/other.bin"), sha256="0" * 64, size=len(data),
                      storage_class="STANDARD", multipart_copy_above=1024 * 1024)
    assert _hash_at(site_a, "kubemam-nearline", "big/other.bin") is None


def _upload_in_parts(s3: Any, bucket: str, key: str, data: bytes, part: int) -> str:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n,
                                                      Body=data[first:first + part])["ETag"]}
             for n, first in enumerate(range(0, len(data), part), start=1)]
    return str(s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                            MultipartUpload={"Parts": parts})["ETag"])


def test_a_source_written_in_parts_is_copied_part_for_part_and_verified_by_its_etag(site_a: MinioServer) -> None:
    from kubemam.storage.transfer import SourceDamaged
    from kubemam.storage.uri import S3Uri

    s3 = make_client(site_a.endpoint, site_a.access_key, site_a.secret_key, hashes_reads=True)
    gets: list[str] = []
    s3.meta.events.register("before-call.s3.GetObject", lambda params, **_: gets.append(params["url_path"]))
    data = os.urandom(12 * 1024 * 1024)
    etag = _upload_in_parts(s3, "kubemam-library", "parts/master.mxf", data, 5 * 1024 * 1024)
    place = Place("a", s3, "a")
    master = S3Uri("kubemam-library", "parts/master.mxf")

    # A master kubemam did not write: hashed once while its parts copy; a wrong record completes nothing.
    with pytest.raises(SourceDamaged):
        copy_verified(place, master, place, S3Uri("kubemam-nearline", "parts/wrong.mxf"), sha256="0" * 64,
                      size=len(data), storage_class="STANDARD")
    with pytest.raises(SourceDamaged, match="not the recorded"):
        copy_verified(place, master, place, S3Uri("kubemam-nearline", "parts/wrong.mxf"), sha256=_sha(data),
                      size=len(data) + 1, storage_class="STANDARD")
    assert _hash_at(site_a, "kubemam-nearline", "parts/wrong.mxf") is None
    assert not s3.list_multipart_uploads(Bucket="kubemam-nearline").get("Uploads")
    assert copy_verified(place, master, place, S3Uri("kubemam-nearline", "parts/first.mxf"), sha256=_sha(data),
                         size=len(data), storage_class="STANDARD") == "s3-etag"
    first = s3.head_object(Bucket="kubemam-nearline", Key="parts/first.mxf")
    assert (first["ETag"], first["Metadata"]["sha256"]) == (etag, _sha(data))
    assert len(gets) == 2  # the source, read once by each of the two copies

    # A copy kubemam verified (x-amz-meta-sha256) is moved without reading a byte of it here.
    gets.clear()
    assert copy_verified(place, S3Uri("kubemam-nearline", "parts/first.mxf"), place,
                         S3Uri("plain-vault", "parts/second.mxf"), sha256=_sha(data), size=len(data),
                         storage_class="STANDARD") == "s3-etag"
    assert gets == []
    assert _hash_at(site_a, "plain-vault", "parts/second.mxf") == _sha(data)
    # The same metadata on a source outside the archive (anyone can set it) is not taken on trust.
    assert copy_verified(place, S3Uri("kubemam-nearline", "parts/first.mxf"), place,
                         S3Uri("plain-vault", "parts/third.mxf"), sha256=_sha(data), size=len(data),
                         storage_class="STANDARD", trust_source_metadata=False) == "s3-etag"
    assert len(gets) == 1


def _placed_at_library_and_vault(site_a: MinioServer, site_b: MinioServer,
                                 tmp_path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A 3 MiB master placed at library and vault: (asset, its object input, the place input)."""
    asset = uuid.uuid4().hex[:8]
    _, master = _master(site_a, 3 * 1024 * 1024)
    both = _inputs(site_a, site_b, asset, [master], targets=[
        {"location": "library", "storage_class": "STANDARD", "primary": True},
        {"location": "vault", "storage_class": "STANDARD"}])
    assert _run(site_a, site_b, tmp_path, both)[0] == 0
    return asset, master, both


def test_a_move_rereads_a_kept_copy_before_it_empties_the_last_other_one(
        site_a: MinioServer, site_b: MinioServer, tmp_path: Path) -> None:
    """A copy at the target that rotted silently (its recorded sha256 metadata intact) is found by
    reading it back before the move deletes the only good copy, and replaced from it first."""
    asset, master, both = _placed_at_library_and_vault(site_a, site_b, tmp_path)
    site_b.client().put_object(Bucket="kubemam-vault", Key=f"archive/{asset}/master.mxf",
                               Body=os.urandom(master["size"]), Metadata={"sha256": master["sha256"]})
    move = {**both, "tier": "cold", "targets": [{"location": "vault", "storage_class": "STANDARD",
                                                   "primary": True}]}
    code, result, stderr = _run(site_a, site_b, tmp_path, move)
    assert code == 0, stderr
    code, result, stderr = _run(site_a, site_b, tmp_path, {**move, "mode": "vacate", "vacate": ["library"]})
    assert code == 0, stderr
    assert result["vacated"] == ["library"] and _keys(site_a, "kubemam-library", f"archive/{asset}/") == []
    assert _hash_at(site_b, "kubemam-vault", f"archive/{asset}/master.mxf") == master["sha256"]


def test_a_kept_copy_whose_server_checksum_contradicts_its_label_is_copied_again(
        site_a: MinioServer, site_b: MinioServer, tmp_path: Path) -> None:
    """A copy labelled with the record's sha256 but whose bytes the server hashed to something else is not
    taken as verified on the next place run: it is replaced from the source, not reported as kept."""
    asset, master, both = _placed_at_library_and_vault(site_a, site_b, tmp_path)
    site_b.client().put_object(Bucket="kubemam-vault", Key=f"archive/{asset}/master.mxf",
                               Body=os.urandom(master["size"]), Metadata={"sha256": master["sha256"]},
                               ChecksumAlgorithm="SHA256")
    code, result, stderr = _run(site_a, site_b, tmp_path, both)
    assert code == 0, stderr
    assert result["copiedBytes"] == {"vault": master["size"]}
    assert {c["location"]: c["verifiedBy"] for c in result["copies"]} == {"library": "s3-checksum",
                                                                          "vault": "s3-checksum"}
    assert _hash_at(site_b, "kubemam-vault", f"archive/{asset}/master.mxf") == master["sha256"]


def _run_site_a_through(proxy: FaultProxy, site_a: MinioServer, site_b: MinioServer, tmp_path: Path,
                        inputs: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The archive worker with every request to site A through the proxy."""
    with proxy:
        env = {**_env(site_a, site_b, tmp_path, inputs), "AWS_ENDPOINT_URL": proxy.url}
        return subprocess.run([sys.executable, "-m", "kubemam", "worker", "archive"], env=env,
                              capture_output=True, text=True, timeout=600)


def test_a_source_read_cut_off_mid_body_is_read_again_not_failed(
        site_a: MinioServer, site_b: MinioServer, tmp_path: Path) -> None:
    """A cross-site copy whose source GET is reset half-way (botocore: ResponseStreamingError) is retried
    inside the run, from the start of a fresh upload, and ends with the whole verified copy."""
    asset = uuid.uuid4().hex[:8]
    _, master = _master(site_a, 24 * 1024 * 1024)
    inputs = _inputs(site_a, site_b, asset, [master], targets=[{"location": "vault", "storage_class": "STANDARD",
                                                                "primary": True}])
    proxy = CutReplies(site_a.port, after=8 * 1024 * 1024, times=1)
    done = _run_site_a_through(proxy, site_a, site_b, tmp_path, inputs)
    assert proxy.cuts, "the proxy never cut a read: the test did not test anything"
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "termination-log").read_text())
    assert result["copiedBytes"] == {"vault": master["size"]}
    assert _hash_at(site_b, "kubemam-vault", f"archive/{asset}/master.mxf") == master["sha256"]
    uploads = site_b.client().list_multipart_uploads(Bucket="kubemam-vault", Prefix=f"archive/{asset}/")
    assert uploads.get("Uploads", []) == []  # the cut attempt's upload was aborted, not left behind


def test_a_source_that_never_delivers_the_whole_object_gives_way_to_the_next_source(
        site_a: MinioServer, site_b: MinioServer, tmp_path: Path) -> None:
    """The first source (a verified copy at a location whose GETs are cut off every time) spends its retries;
    the copy then comes from the next source (the original), not a failed run."""
    asset = uuid.uuid4().hex[:8]
    _, master = _master(site_a, 12 * 1024 * 1024)
    site_a.client().put_object(Bucket="plain-vault", Key=f"archive/{asset}/master.mxf",
                               Body=site_a.client().get_object(Bucket="kubemam-library",
                                                               Key=master["source"].split("/", 3)[3])["Body"].read(),
                               Metadata={"sha256": master["sha256"]})
    inputs = _inputs(site_a, site_b, asset, [master], targets=[{"location": "vault", "storage_class": "STANDARD",
                                                                "primary": True}])
    with CutReplies(site_a.port, after=1024 * 1024) as proxy:
        inputs["locations"].insert(0, {"name": "flaky", "uri": f"s3://plain-vault/archive/{asset}",
                                       "endpoint": proxy.url, "object_lock": False})
        done = subprocess.run([sys.executable, "-m", "kubemam", "worker", "archive"],
                              env=_env(site_a, site_b, tmp_path, inputs, retry=5), capture_output=True, text=True,
                              timeout=600)
    assert proxy.cuts, "the proxy never cut a read: the test did not test anything"
    assert done.returncode == 0, done.stderr
    assert "copying master.mxf from flaky to vault did not succeed" in done.stderr
    result = json.loads((tmp_path / "termination-log").read_text())
    assert result["copiedBytes"] == {"vault": master["size"]}
    assert _hash_at(site_b, "kubemam-vault", f"archive/{asset}/master.mxf") == master["sha256"]


def test_a_fixity_check_at_a_location_that_refuses_reading_names_the_location_and_is_not_retried(
        site_a: MinioServer, site_b: MinioServer, tmp_path: Path) -> None:
    """A location whose objects answer HEAD but refuse GET (SSE-KMS without kms:Decrypt): the check cannot read
    the copy. The run ends as a permanent failure naming the location and the refusal (before: a crash the Job
    retried until its backoff limit), and nothing is written over the copy it could not read."""
    asset = uuid.uuid4().hex[:8]
    _, master = _master(site_a, 1024 * 1024)
    key = f"archive/{asset}/master.mxf"
    copy = site_a.client().get_object(Bucket="kubemam-library", Key=master["source"].split("/", 3)[3])["Body"].read()
    site_a.client().put_object(Bucket="plain-vault", Key=key, Body=copy, Metadata={"sha256": master["sha256"]})
    before = site_a.client().head_object(Bucket="plain-vault", Key=key)["ETag"]
    check = _inputs(site_a, site_b, asset, [master], mode="fixity", run="request:1",
                    targets=[{"location": "sealed", "storage_class": "STANDARD", "primary": True}])
    with DenyObjectGets(site_a.port) as proxy:
        check["locations"].insert(0, {"name": "sealed", "uri": f"s3://plain-vault/archive/{asset}",
                                      "endpoint": proxy.url, "object_lock": False})
        code, result, stderr = _run(site_a, site_b, tmp_path, check)
    assert proxy.denied, "the proxy refused no read: the test did not test anything"
    assert code == 2, stderr
    assert "location sealed" in result["error"] and "refuses reading master.mxf: AccessDenied" in result["error"]
    assert "retryable" not in result
    assert site_a.client().head_object(Bucket="plain-vault", Key=key)["ETag"] == before


def _hold_at(server: MinioServer, bucket: str, key: str, version: str | None = None) -> tuple[str, bool]:
    """(legal hold status, tagged as kubemam's) of one version (the latest when version is None)."""
    s3 = server.client()
    ref = {"VersionId": version} if version else {}
    try:
        status = s3.get_object_legal_hold(Bucket=bucket, Key=key, **ref)["LegalHold"]["Status"]
    except s3.exceptions.ClientError as err:
        if err.response["Error"]["Code"] != "NoSuchObjectLockConfiguration":
            raise
        status = "OFF"
    tags = s3.get_object_tagging(Bucket=bucket, Key=key, **ref)["TagSet"]
    return status, {"Key": "kubemam-legal-hold", "Value": "on"} in tags


def _versions(server: MinioServer, bucket: str, prefix: str) -> list[tuple[str, str]]:
    listing = server.client().list_object_versions(Bucket=bucket, Prefix=prefix)
    return sorted((v["Key"][len(prefix):], v["VersionId"]) for v in listing.get("Versions", []))


def test_kubemam_lifts_only_the_legal_holds_it_set(site_a: MinioServer, site_b: MinioServer,
                                                  tmp_path: Path) -> None:
    """One location under Object Lock holds two locked objects: the master, which only kubemam holds, and a
    preservation master someone held directly in S3. Lifting the asset's hold releases the first only; a
    vacate keeps the second and says so; the purge refuses, deleting nothing, until the hold is lifted in S3."""
    asset = uuid.uuid4().hex[:8]
    prefix = f"archive/{asset}/"
    _, master = _master(site_a, 4000)
    _, preservation = _master(site_a, 3000)
    preservation["key"] = "preservation.mkv"
    vault = {"location": "vault", "storage_class": "STANDARD", "primary": True}
    base = _inputs(site_a, site_b, asset, [master, preservation, _sidecar()], targets=[vault])
    base["locations"][2]["object_lock"] = True
    assert _run(site_a, site_b, tmp_path, base)[0] == 0
    assert _hold_at(site_b, "kubemam-vault", prefix + "master.mxf") == ("OFF", False)
    b = site_b.client()
    b.put_object_legal_hold(Bucket="kubemam-vault", Key=prefix + "preservation.mkv", LegalHold={"Status": "ON"})

    held = {**base, "legal_hold": True, "hold_since": "2026-11-23T12:00:00Z"}
    code, result, stderr = _run(site_a, site_b, tmp_path, held)
    assert code == 0, stderr
    assert _hold_at(site_b, "kubemam-vault", prefix + "master.mxf") == ("ON", True)  # kubemam's, tagged
    assert _hold_at(site_b, "kubemam-vault", prefix + "preservation.mkv") == ("ON", False)  # not claimed
    assert result["foreignHolds"][0].startswith("vault:archive/" + asset + "/preservation.mkv@")

    lifted = {**base, "legal_hold": False, "hold_since": "2026-11-23T13:00:00Z"}
    code, result, stderr = _run(site_a, site_b, tmp_path, lifted)
    assert code == 0, stderr
    assert _hold_at(site_b, "kubemam-vault", prefix + "master.mxf") == ("OFF", False)
    assert _hold_at(site_b, "kubemam-vault", prefix + "preservation.mkv") == ("ON", False)

    # The set moves to library: the vacate run deletes the vault's unheld versions and keeps the held one.
    library = {"location": "library", "storage_class": "STANDARD", "primary": True}
    moved = {**lifted, "tier": "hot", "targets": [library]}
    assert _run(site_a, site_b, tmp_path, moved)[0] == 0
    code, result, stderr = _run(site_a, site_b, tmp_path, {**moved, "mode": "vacate", "vacate": ["vault"]})
    assert code == 0, stderr
    assert result["vacated"] == ["vault"] and len(result["foreignHolds"]) == 1
    assert [k for k, _ in _versions(site_b, "kubemam-vault", prefix)] == ["preservation.mkv"]
    assert _hash_at(site_b, "kubemam-vault", prefix + "preservation.mkv") == preservation["sha256"]

    # Purge: refused before anything is deleted, naming the version; kubemam never lifts it.
    everywhere = {**moved, "mode": "purge", "targets": []}
    code, result, stderr = _run(site_a, site_b, tmp_path, everywhere)
    assert code == 2 and "a legal hold kubemam did not set" in result["error"], stderr
    [(_, version)] = _versions(site_b, "kubemam-vault", prefix)
    assert version in result["error"]
    assert _hold_at(site_b, "kubemam-vault", prefix + "preservation.mkv") == ("ON", False)
    assert _hash_at(site_a, "kubemam-library", prefix + "master.mxf") == master["sha256"]
    # Whoever set it lifts it in S3: the purge goes through.
    b.put_object_legal_hold(Bucket="kubemam-vault", Key=prefix + "preservation.mkv", LegalHold={"Status": "OFF"})
    code, result, stderr = _run(site_a, site_b, tmp_path, everywhere)
    assert code == 0, stderr
    assert _versions(site_b, "kubemam-vault", prefix) == [] and _keys(site_a, "kubemam-library", prefix) == []


def test_a_version_held_after_the_check_is_not_deleted(site_a: MinioServer, site_b: MinioServer,
                                                      tmp_path: Path) -> None:
    """A vacate reads each version's hold right before its delete: a hold set in S3 between the place run and
    the vacate run keeps that version, even at a location the policy does not mark objectLock."""
    asset = uuid.uuid4().hex[:8]
    prefix = f"archive/{asset}/"
    _, master = _master(site_a, 5000)
    both = _inputs(site_a, site_b, asset, [master], targets=[
        {"location": "library", "storage_class": "STANDARD", "primary": True},
        {"location": "vault", "storage_class": "STANDARD"}])
    assert _run(site_a, site_b, tmp_path, both)[0] == 0
    site_b.client().put_object_legal_hold(Bucket="kubemam-vault", Key=prefix + "master.mxf",
                                          LegalHold={"Status": "ON"})
    only_library = {**both, "targets": [{"location": "library", "storage_class": "STANDARD", "primary": True}]}
    code, result, stderr = _run(site_a, site_b, tmp_path, {**only_library, "mode": "vacate", "vacate": ["vault"]})
    assert code == 0, stderr
    assert [k for k, _ in _versions(site_b, "kubemam-vault", prefix)] == ["master.mxf"]
    assert result["foreignHolds"] and "master.mxf" in result["foreignHolds"][0]
    site_b.client().put_object_legal_hold(Bucket="kubemam-vault", Key=prefix + "master.mxf",
                                          LegalHold={"Status": "OFF"})


class RewriteOnPartCopy(FaultProxy):
    """Passes every request, but before the first server-side part copy reaches the server it writes the
    source again (the same bytes in other parts, so a new ETag): the copy's If-Match condition fails (412)."""

    def __init__(self, server: MinioServer, bucket: str, key: str, data: bytes) -> None:
        super().__init__(server.port)
        self.server, self.bucket, self.key, self.data = server, bucket, key, data
        self.rewritten = False

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            if not self.rewritten and b"x-amz-copy-source-if-match" in chunk.lower():
                self.rewritten = True
                await asyncio.get_running_loop().run_in_executor(None, partial(
                    _upload_in_parts, self.server.client(), self.bucket, self.key, self.data, 6 * 1024 * 1024))
            writer.write(chunk)
            await writer.drain()
        writer.close()


def test_a_source_written_again_while_its_parts_copy_is_copied_again_from_the_new_version(
        site_a: MinioServer, site_b: MinioServer, tmp_path: Path) -> None:
    """A master written in parts is copied part for part on its own server with If-Match on every part; the
    user writes it again mid-copy (same bytes, new parts): the copy starts over from the version there now and
    ends verified, with no upload left behind."""
    asset = uuid.uuid4().hex[:8]
    data = os.urandom(12 * 1024 * 1024)
    key = f"incoming/{uuid.uuid4().hex}.mxf"
    first = _upload_in_parts(site_a.client(), "kubemam-library", key, data, 5 * 1024 * 1024)
    master = {"key": "master.mxf", "sha256": _sha(data), "size": len(data), "source": f"s3://kubemam-library/{key}",
              "lock": True}
    inputs = _inputs(site_a, site_b, asset, [master], targets=[{"location": "library", "storage_class": "STANDARD",
                                                                "primary": True}])
    proxy = RewriteOnPartCopy(site_a, "kubemam-library", key, data)
    done = _run_site_a_through(proxy, site_a, site_b, tmp_path, inputs)
    assert proxy.rewritten, "no part copy went through the proxy: the test did not test anything"
    assert done.returncode == 0, done.stderr
    assert "changed while library copied it" in done.stderr
    now = site_a.client().head_object(Bucket="kubemam-library", Key=key)["ETag"]
    assert now != first and now.endswith('-2"')  # the source really was written again, in 6 MiB parts
    copy = site_a.client().head_object(Bucket="kubemam-library", Key=f"archive/{asset}/master.mxf")
    assert copy["ETag"] == now  # copied part for part from the version there now
    result = json.loads((tmp_path / "termination-log").read_text())
    assert [c["verifiedBy"] for c in result["copies"]] == ["s3-etag"]
    assert _hash_at(site_a, "kubemam-library", f"archive/{asset}/master.mxf") == master["sha256"]
    assert not site_a.client().list_multipart_uploads(Bucket="kubemam-library",
                                                      Prefix=f"archive/{asset}/").get("Uploads")
