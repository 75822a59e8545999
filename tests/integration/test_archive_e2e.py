"""The archive on the local cluster with two MinIO sites: an ingested master reaches minCopies verified
copies (one offsite), moves tier when it ages, a rotted copy is found and repaired, a restore brings it
back to the hot tier, its EBUCore sidecar parses back, and a legal hold blocks deletion until lifted; a
legal hold set directly in S3 stops the purge (Deletable=False ForeignLegalHold) until it is lifted there —
then deletion removes every copy. Every claim is checked by listing and hashing what each site holds."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubemam.archive.ebucore import parse_sidecar
from kubemam.media.sample import make_sample
from kubemam.plan.archiving import FIXITY_ANNOTATION, LEGAL_HOLD_ANNOTATION, RESTORE_ANNOTATION
from kubemam_local.minio import MinioServer
from tests.faults.proxy import CutReplies
from tests.helpers import LocalStack, local_stack, metric_value, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]

NAMESPACE = "archive-e2e"
WARM_AFTER_SECONDS = 45


def _policy(site_b: MinioServer) -> dict[str, Any]:
    return {
        "apiVersion": "kubemam.io/v1alpha1", "kind": "ArchivePolicy", "metadata": {"name": "two-sites"},
        "spec": {
            "locations": [
                {"name": "library", "uri": "s3://kubemam-library/archive", "site": "a"},
                {"name": "nearline", "uri": "s3://kubemam-nearline/archive", "site": "a"},
                {"name": "vault", "uri": "s3://kubemam-vault/archive", "site": "b", "offsite": True,
                 "objectLock": True, "endpoint": site_b.endpoint, "credentialsSecretRef": {"name": "site-b-s3"}},
            ],
            "tiers": [
                {"name": "hot", "location": "library", "storageClass": "STANDARD"},
                {"name": "warm", "location": "nearline", "storageClass": "REDUCED_REDUNDANCY",
                 "transition": {"afterDays": WARM_AFTER_SECONDS / 86400, "since": "lastUse"}},
            ],
            "copies": {"minCopies": 2, "requireOffsite": True},
            "fixity": {"schedule": "@yearly"},
            "formatsAtRisk": ["mpeg2video", "dvvideo"],
        },
    }


ASSET = {
    "apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "metadata": {"name": "ep7"},
    "spec": {"source": {"uri": "s3://kubemam-library/incoming/ep7.mov"},
             "metadata": {"title": "Café – Épisode 7", "series": "Coastal", "episode": 7},
             "markers": [{"name": "open", "kind": "segment", "start": "10:00:00:00", "end": "10:00:04:00"}],
             "archivePolicyRef": {"name": "two-sites"}},
}
PREFIX = f"archive/{NAMESPACE}/ep7/"
HOLD_TAG = {"Key": "kubemam-legal-hold", "Value": "on"}


@pytest.fixture
def site_b(tmp_path: Path) -> Iterator[MinioServer]:
    with MinioServer(locked_buckets=["kubemam-vault"], workdir=tmp_path / "site-b") as server:
        yield server


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hash(s3: Any, bucket: str, key: str) -> str | None:
    try:
        return _sha(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def _hold(s3: Any, key: str, version: str | None = None) -> str:
    """The legal hold of a vault version: a version no one ever held has no Object Lock record (OFF)."""
    try:
        return str(s3.get_object_legal_hold(Bucket="kubemam-vault", Key=key,
                                            **({"VersionId": version} if version else {}))["LegalHold"]["Status"])
    except s3.exceptions.ClientError as err:
        if err.response["Error"]["Code"] != "NoSuchObjectLockConfiguration":
            raise
        return "OFF"


def _keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"][len(PREFIX):] for o in s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX).get("Contents", []))


def _storage(stack: LocalStack) -> dict[str, Any]:
    status = stack.custom.get("mediaassets", "ep7").get("status") or {}
    if status.get("phase") == "Failed":
        raise AssertionError(status.get("conditions"))
    return dict(status.get("storage") or {})


def _annotate(stack: LocalStack, key: str, value: str | None) -> None:
    stack.custom.patch("mediaassets", "ep7", {"metadata": {"annotations": {key: value}}})


def _upload_master(stack: LocalStack, site_b: MinioServer, tmp_path: Path, seconds: int) -> tuple[Path, str]:
    """Site B's credentials Secret in the namespace, and a lossless 720p master (many MiB in a few seconds)
    uploaded where the asset names it; (its path, its sha256)."""
    client.CoreV1Api(stack.api).create_namespaced_secret(NAMESPACE, {
        "metadata": {"name": "site-b-s3"},
        "stringData": {"AWS_ACCESS_KEY_ID": site_b.access_key, "AWS_SECRET_ACCESS_KEY": site_b.secret_key}})
    master = make_sample(tmp_path / "ep7.mov", width=1280, height=720, seconds=seconds, crf=0)
    stack.store.upload_file(str(master), "kubemam-library", "incoming/ep7.mov")
    return master, _sha(master.read_bytes())


def test_archive_copies_tiers_repairs_restores_and_holds(control_plane: Any, tmp_path: Path,
                                                         site_b: MinioServer) -> None:
    # The safety net hourly: the move to the warm tier 45 s after ingest is the asset clock's doing.
    env = {"KUBEMAM_ARCHIVE_CHECK_SECONDS": "3600"}
    with local_stack(control_plane, tmp_path, NAMESPACE, operator_env=env) as stack:
        a, b = stack.store, site_b.client()
        a.create_bucket(Bucket="kubemam-nearline")
        # Lossless 720p: over 8 MiB, so boto3 uploads it in parts (8 MiB and the rest), as a real master
        # arrives; the same-site copy then goes part for part and is verified by its multipart ETag.
        master, master_sha = _upload_master(stack, site_b, tmp_path, seconds=14)
        assert master.stat().st_size > 8 * 1024 * 1024
        assert a.head_object(Bucket="kubemam-library", Key="incoming/ep7.mov")["ETag"].endswith('-2"')
        stack.custom.create("archivepolicies", _policy(site_b))
        stack.custom.create("mediaassets", ASSET)

        # A namespace without the S3 Secret the Jobs name: the ingest pod waits for it (the kubelet's
        # CreateContainerConfigError; the operator never reads that Secret), the asset says so, nothing else runs.
        client.CoreV1Api(stack.api).create_namespace({"metadata": {"name": "no-s3-secret"}})
        orphan_spec = {k: v for k, v in ASSET["spec"].items() if k != "archivePolicyRef"}  # no policy there
        stack.custom.api.create_namespaced_custom_object("kubemam.io", "v1alpha1", "no-s3-secret", "mediaassets",
                                                         {**ASSET, "metadata": {"name": "orphan"}, "spec": orphan_spec})
        missing = wait_for(lambda: next((c for c in (stack.custom.api.get_namespaced_custom_object(
            "kubemam.io", "v1alpha1", "no-s3-secret", "mediaassets", "orphan").get("status") or {}).get(
            "conditions") or [] if c["type"] == "Ready" and c["reason"] == "S3SecretMissing"), None), timeout=90,
            what="the orphan's Ready=False S3SecretMissing")
        assert missing["reason"] == "S3SecretMissing" and "kubemam-s3" in missing["message"], missing
        assert [j.metadata.labels["kubemam.io/step"]
                for j in client.BatchV1Api(stack.api).list_namespaced_job("no-s3-secret").items] == ["ingest"]
        assert stack.operator is not None and stack.operator.poll() is None

        # 1. Two verified copies, one offsite, before the asset is Ready.
        wait_for(lambda: (stack.custom.condition("mediaassets", "ep7", "Ready") or {}).get("status") == "True",
                 timeout=180, what="the asset archived and Ready")
        storage = _storage(stack)
        assert storage["tier"] == "hot" and [c["location"] for c in storage["copies"]] == ["library", "vault"]
        # Same site: the master's own parts copied server-side, the copy's ETag equal to the source's and the
        # source's SHA-256 taken while its parts copied. Offsite: streamed, hashed, checked by site B.
        assert {c["location"]: c["verifiedBy"] for c in storage["copies"]} == {"library": "s3-etag",
                                                                               "vault": "s3-checksum"}
        assert a.head_object(Bucket="kubemam-library", Key=PREFIX + "master.mov")["ETag"].endswith('-2"')
        assert _hash(a, "kubemam-library", PREFIX + "master.mov") == master_sha
        assert _hash(b, "kubemam-vault", PREFIX + "master.mov") == master_sha
        assert stack.custom.condition("mediaassets", "ep7", "Replicated")["status"] == "True"
        assert stack.custom.condition("mediaassets", "ep7", "MigrationRecommended")["reason"] == "NoFormatAtRisk"
        first_job = next(j["name"] for j in stack.custom.get("mediaassets", "ep7")["status"]["jobs"]
                         if j["step"] == "archive")

        # 2. The EBUCore sidecar beside the master parses back to what the asset says.
        sidecar = parse_sidecar(b.get_object(Bucket="kubemam-vault", Key=PREFIX + "ebucore.xml")["Body"].read())
        assert sidecar.descriptive.title == "Café – Épisode 7" and sidecar.name == "ep7"
        assert {c.name: c.value for c in sidecar.checksums}["master.mov"] == master_sha
        assert [m.name for m in sidecar.markers] == ["open"]
        assert sidecar.technical.sha256 == master_sha

        # 3. Aged past the warm tier's transition: the primary copy moved to nearline, library emptied.
        wait_for(lambda: _storage(stack).get("tier") == "warm", timeout=WARM_AFTER_SECONDS + 90,
                 what="the move to the warm tier")
        storage = _storage(stack)
        assert [c["location"] for c in storage["copies"]] == ["nearline", "vault"]
        assert storage["copies"][0]["verifiedBy"] == "s3-etag"  # library's parts, vouched by its recorded sha256
        # The place run deletes nothing; the vacate run after it empties library.
        wait_for(lambda: _keys(a, "kubemam-library") == [], timeout=60, what="library vacated after the move")
        assert a.head_object(Bucket="kubemam-nearline", Key=PREFIX + "master.mov")["StorageClass"] == \
            "REDUCED_REDUNDANCY"
        assert _hash(a, "kubemam-nearline", PREFIX + "master.mov") == master_sha
        # The first placement's Job is superseded: it is let go (TTL) instead of piling up.
        batch = client.BatchV1Api(stack.api)

        def let_go() -> bool:
            try:
                job = batch.read_namespaced_job(first_job, NAMESPACE)
            except ApiException as err:
                return err.status == 404
            return bool(job.spec.ttl_seconds_after_finished is not None
                        and (job.metadata.annotations or {}).get("kubemam.io/superseded"))

        wait_for(let_go, timeout=60, what="the superseded hot-tier archive Job let go")

        # 4. Bit rot at site B, then a fixity check: found, repaired from nearline, recorded.
        b.put_object(Bucket="kubemam-vault", Key=PREFIX + "master.mov", Body=os.urandom(master.stat().st_size))
        _annotate(stack, FIXITY_ANNOTATION, "1")
        wait_for(lambda: (stack.custom.condition("mediaassets", "ep7", "FixityVerified") or {}).get("reason")
                 == "Repaired", timeout=120, what="the fixity run to repair the vault copy")
        assert _hash(b, "kubemam-vault", PREFIX + "master.mov") == master_sha
        fixity = _storage(stack)["fixity"]
        assert fixity["failures"] == 1 and "vault:master.mov" in fixity["lastRepair"]
        report = a.get_object(Bucket="kubemam-library",
                              Key=f"assets/{NAMESPACE}/ep7/fixity/request-1.json")["Body"].read()
        assert b'"ok": false' in report
        events = client.CoreV1Api(stack.api).list_namespaced_event(NAMESPACE).items
        assert any(e.reason == "FixityRepaired" and e.involved_object.name == "ep7" for e in events)
        exposition = stack.metrics()
        assert (metric_value(exposition, "kubemam_fixity_failures_total", namespace=NAMESPACE, location="vault")
                or 0) >= 1
        assert (metric_value(exposition, "kubemam_tiered_bytes_total", namespace=NAMESPACE) or 0) > 0

        # 5. A restore brings the master back to the hot tier, with an estimate while it runs.
        _annotate(stack, RESTORE_ANNOTATION, "r1")
        wait_for(lambda: (_storage(stack).get("restore") or {}).get("state") == "Restored", timeout=120,
                 what="the restore")
        restore = _storage(stack)["restore"]
        assert restore["request"] == "r1" and restore["estimatedCompletion"] and restore["completedAt"]
        assert _hash(a, "kubemam-library", PREFIX + "master.mov") == master_sha

        # 6. A legal hold: deleting the asset deletes nothing until the hold is lifted. kubemam's hold is
        #    marked as kubemam's on the very version it holds.
        _annotate(stack, LEGAL_HOLD_ANNOTATION, "true")
        wait_for(lambda: _hold(b, PREFIX + "master.mov") == "ON", timeout=60,
                 what="the Object Lock legal hold on the vault copy")
        assert HOLD_TAG in b.get_object_tagging(Bucket="kubemam-vault", Key=PREFIX + "master.mov")["TagSet"]
        # Someone also holds an older version of the vault's master directly in S3 (not through kubemam).
        older = [v for v in b.list_object_versions(Bucket="kubemam-vault", Prefix=PREFIX + "master.mov")["Versions"]
                 if not v["IsLatest"]][-1]["VersionId"]
        b.put_object_legal_hold(Bucket="kubemam-vault", Key=PREFIX + "master.mov", VersionId=older,
                                LegalHold={"Status": "ON"})
        stack.custom.delete("mediaassets", "ep7")
        wait_for(lambda: (stack.custom.condition("mediaassets", "ep7", "Deletable") or {}).get("reason")
                 == "LegalHold", timeout=60, what="deletion blocked by the legal hold")
        time.sleep(5)
        assert stack.custom.get("mediaassets", "ep7")["status"]["phase"] == "Deleting"
        assert _hash(b, "kubemam-vault", PREFIX + "master.mov") == master_sha
        assert _hash(a, "kubemam-library", PREFIX + "master.mov") == master_sha
        _annotate(stack, LEGAL_HOLD_ANNOTATION, None)
        # kubemam's hold is lifted, the other is not: the purge refuses, names the version, deletes nothing.
        refused = wait_for(lambda: (lambda c: c if c and c.get("reason") == "ForeignLegalHold" else None)(
            stack.custom.condition("mediaassets", "ep7", "Deletable")), timeout=90,
            what="the purge stopped by the legal hold kubemam did not set")
        assert older in refused["message"] and "kubemam did not set" in refused["message"]
        assert _hash(b, "kubemam-vault", PREFIX + "master.mov") == master_sha
        assert _hash(a, "kubemam-library", PREFIX + "master.mov") == master_sha
        assert _hold(b, PREFIX + "master.mov", older) == "ON"
        lifted = time.monotonic()
        b.put_object_legal_hold(Bucket="kubemam-vault", Key=PREFIX + "master.mov", VersionId=older,
                                LegalHold={"Status": "OFF"})

        def gone() -> bool:
            try:
                stack.custom.get("mediaassets", "ep7")
                return False
            except ApiException as err:
                return err.status == 404

        wait_for(gone, timeout=150, what="the asset deleted once the holds were lifted")
        print(f"\npurged {time.monotonic() - lifted:.0f} s after the hold kubemam did not set was lifted in S3")
        for s3, bucket in ((a, "kubemam-library"), (a, "kubemam-nearline"), (b, "kubemam-vault")):
            versions = s3.list_object_versions(Bucket=bucket, Prefix=PREFIX)
            assert not versions.get("Versions") and not versions.get("DeleteMarkers"), bucket


def test_an_archive_copy_cut_off_mid_read_is_read_again_through_the_operator(
        control_plane: Any, tmp_path: Path, site_b: MinioServer) -> None:
    """The library location is reached through a proxy that cuts off the first read of a large object
    half-way (a load balancer's restart): the archive Job reads it again inside the run, the asset reaches
    its two verified copies, and site B holds the master's bytes."""
    with local_stack(control_plane, tmp_path, NAMESPACE) as stack, \
            CutReplies(stack.s3.port, after=2 * 1024 * 1024, times=1) as proxy:
        a, b = stack.store, site_b.client()
        master, master_sha = _upload_master(stack, site_b, tmp_path, seconds=8)
        assert master.stat().st_size > 4 * 1024 * 1024
        policy = _policy(site_b)
        library, _, vault = policy["spec"]["locations"]
        policy["spec"]["locations"] = [{**library, "endpoint": proxy.url}, vault]
        policy["spec"]["tiers"] = policy["spec"]["tiers"][:1]
        stack.custom.create("archivepolicies", policy)
        stack.custom.create("mediaassets", ASSET)

        wait_for(lambda: (stack.custom.condition("mediaassets", "ep7", "Ready") or {}).get("status") == "True",
                 timeout=180, what="the asset archived and Ready")
        assert proxy.cuts == 1, "no read through the library location was cut: the test did not test anything"
        storage = _storage(stack)
        assert [c["location"] for c in storage["copies"]] == ["library", "vault"]
        assert stack.custom.condition("mediaassets", "ep7", "Replicated")["status"] == "True"
        assert _hash(a, "kubemam-library", PREFIX + "master.mov") == master_sha
        assert _hash(b, "kubemam-vault", PREFIX + "master.mov") == master_sha
        jobs = [client.BatchV1Api(stack.api).read_namespaced_job(j["name"], NAMESPACE)
                for j in stack.custom.get("mediaassets", "ep7")["status"]["jobs"] if j["step"] == "archive"]
        # Read again inside the run: one pod, which succeeded, not a failed pod retried by the Job controller.
        assert [(job.status.succeeded, job.status.failed or 0) for job in jobs] == [(1, 0)]
        core = client.CoreV1Api(stack.api)
        pod = core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={jobs[0].metadata.name}").items[0]
        logs = core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE)  # what `kubectl logs` shows
        assert "location vault or library did not answer (ResponseStreamingError); waiting for both" in logs, logs
        assert "trying the next source" not in logs, logs  # read again, not given up for the original
