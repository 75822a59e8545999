"""Archive faults (issue 15, items 9 and 11): kubemam never lifts a legal hold it did not set, and never
deletes a copy a policy edit or a hold still protects.

Two real MinIO sites — A (library, nearline) and B (the vault, under S3 Object Lock) — and the real
`kubemam worker archive`, driven the way the operator drives it: the archive planner (plan_archive, the clock
passed in) says which Jobs to create, each Job's input and secretKeyRef environment are handed to the worker
process, and its termination message goes back into the planner's facts as the Job's result. Every claim is
checked in S3 (hashes, versions, legal-hold status, tags), never in the planner's own output alone.

- A legal hold set directly in S3 on the archived master survives a tier move, a restore and a fixity repair
  (the repaired version is held too, still not kubemam's), and the purge refuses to lift it — deleting
  nothing, naming the version — until it is lifted in S3, after which one purge removes every version.
- A lowered minCopies keeps the copy it no longer needs during the grace (copies.vacateAfterHours), and a hold
  asked during the grace keeps it past the grace; once the hold is lifted and the grace has passed, it goes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kubemam.api.archive import ArchivePolicySpec
from kubemam.api.asset import MediaAssetSpec, MediaAssetStatus, TechnicalMetadata
from kubemam.config import OperatorConfig
from kubemam.plan.archiving import (
    FIXITY_ANNOTATION,
    LEGAL_HOLD_ANNOTATION,
    RESTORE_ANNOTATION,
    ArchiveFacts,
    ArchiveOutcome,
    deletion_blocker,
    plan_archive,
    purge_request,
)
from kubemam.plan.jobs import build_step_job
from kubemam.plan.jobstate import JobObservation
from kubemam.steps.archive import FOREIGN_HOLD
from kubemam_local.minio import MinioServer

SITE_B_SECRET = "site-b-s3"
NAMESPACE = "faults"
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
MASTER_SIZE = 3 * 1024 * 1024 + 11
HOLD_TAG = {"Key": "kubemam-legal-hold", "Value": "on"}


@pytest.fixture(scope="module")
def site_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    with MinioServer(buckets=["kubemam-library", "kubemam-nearline"],
                     workdir=tmp_path_factory.mktemp("site-a")) as server:
        yield server


@pytest.fixture(scope="module")
def site_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    with MinioServer(locked_buckets=["kubemam-vault"], workdir=tmp_path_factory.mktemp("site-b")) as server:
        yield server


def _policy(site_b: MinioServer, min_copies: int = 2, grace_hours: float = 24) -> ArchivePolicySpec:
    return ArchivePolicySpec.model_validate({
        "locations": [
            {"name": "library", "uri": "s3://kubemam-library/archive", "site": "a"},
            {"name": "nearline", "uri": "s3://kubemam-nearline/archive", "site": "a"},
            {"name": "vault", "uri": "s3://kubemam-vault/archive", "site": "b", "offsite": True, "objectLock": True,
             "endpoint": site_b.endpoint, "credentialsSecretRef": {"name": SITE_B_SECRET}},
        ],
        "tiers": [
            {"name": "hot", "location": "library", "storageClass": "STANDARD"},
            {"name": "warm", "location": "nearline", "storageClass": "REDUCED_REDUNDANCY",
             "transition": {"afterDays": 1, "since": "lastUse"}},
        ],
        "copies": {"minCopies": min_copies, "requireOffsite": True, "vacateAfterHours": grace_hours},
        "fixity": {"schedule": "@yearly"},
    })


@dataclass
class Loop:
    """The operator's archive loop for one asset, in this process: plan, create (run the worker), mirror."""

    a: MinioServer
    b: MinioServer
    tmp: Path
    facts: ArchiveFacts
    config: OperatorConfig
    jobs: list[JobObservation] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)  # every Job name run, in order

    def secrets(self) -> dict[str, dict[str, str]]:
        a = {"AWS_ACCESS_KEY_ID": self.a.access_key, "AWS_SECRET_ACCESS_KEY": self.a.secret_key}
        b = {"AWS_ACCESS_KEY_ID": self.b.access_key, "AWS_SECRET_ACCESS_KEY": self.b.secret_key}
        return {SITE_B_SECRET: b, str(self.config.s3_credentials_secret): a}

    def run_job(self, job: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The Job's container as the kubelet would start it: its env, secretKeyRefs resolved."""
        assert job["metadata"]["name"] not in self.ran, "a Job name runs once"
        self.ran.append(job["metadata"]["name"])
        container = job["spec"]["template"]["spec"]["containers"][0]
        env = dict(os.environ)
        for entry in container.get("env") or []:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                env[entry["name"]] = self.secrets()[ref["name"]][ref["key"]]
            elif "value" in entry:  # the downward API (pod name, …) has nothing to say here
                env[entry["name"]] = entry["value"]
        message = self.tmp / f"{job['metadata']['name']}.termination-log"
        env.update({"KUBEMAM_TERMINATION_MESSAGE_PATH": str(message), "TMPDIR": str(self.tmp),
                    "KUBEMAM_S3_RETRY_SECONDS": "5"})
        assert container["command"][-2:] == ["worker", job["metadata"]["labels"]["kubemam.io/step"]]
        done = subprocess.run([sys.executable, "-m", "kubemam", *container["command"][-2:]], env=env,
                              capture_output=True, text=True, timeout=300)
        result = json.loads(message.read_text()) if message.exists() else {}
        assert done.returncode in (0, 2), done.stderr
        return done.returncode, result

    def reconcile(self, now: datetime) -> ArchiveOutcome:
        """One reconcile: plan, run each new archive/fixity Job to its end, keep the planned status."""
        outcome = plan_archive(replace(self.facts, jobs=self.jobs), self.config, now)
        self.facts = replace(self.facts, status=self.facts.status.model_copy(update={"storage": outcome.storage}))
        for job in outcome.create_jobs:
            step = job["metadata"]["labels"]["kubemam.io/step"]
            if step not in ("archive", "fixity"):
                continue
            code, result = self.run_job(job)
            self.jobs.append(JobObservation(job["metadata"]["name"], step, "h", "Succeeded" if code == 0 else "Failed",
                                            message=result.get("error"), result=result if code == 0 else None))
        return outcome

    def settle(self, now: datetime) -> ArchiveOutcome:
        """Reconcile until nothing new is created (a place run, then its vacate run, …)."""
        for _ in range(6):
            outcome = self.reconcile(now)
            if not [j for j in outcome.create_jobs if j["metadata"]["labels"]["kubemam.io/step"] != "migrate"]:
                return plan_archive(replace(self.facts, jobs=self.jobs), self.config, now)
        raise AssertionError("the archive loop did not settle")

    def annotate(self, key: str, value: str | None) -> None:
        annotations = {k: v for k, v in self.facts.annotations.items() if k != key}
        self.facts = replace(self.facts, annotations=annotations if value is None else {**annotations, key: value})

    def purge(self) -> tuple[int, dict[str, Any]]:
        storage = self.facts.status.storage
        assert storage is not None
        request = purge_request(self.facts.name, NAMESPACE, self.facts.uid, self.facts.policy, storage.copies or [],
                                self.config)
        job = build_step_job(request, self.config)
        job["metadata"]["name"] += f"-{len(self.ran)}"  # the controller deletes a failed purge and runs it again
        return self.run_job(job)


def _asset(a: MinioServer, b: MinioServer, tmp: Path, policy: ArchivePolicySpec) -> tuple[Loop, bytes]:
    name = "ep-" + uuid.uuid4().hex[:6]
    master = os.urandom(MASTER_SIZE)
    a.client().put_object(Bucket="kubemam-library", Key=f"incoming/{name}.mov", Body=master)
    spec = MediaAssetSpec.model_validate({"source": {"uri": f"s3://kubemam-library/incoming/{name}.mov"},
                                          "metadata": {"title": "Fault"}, "archivePolicyRef": {"name": "two-sites"}})
    technical = TechnicalMetadata(container="mov", duration_seconds=8, size_bytes=len(master),
                                  sha256=hashlib.sha256(master).hexdigest(),
                                  video={"codec": "h264", "width": 320, "height": 180})
    facts = ArchiveFacts(name, NAMESPACE, "uid-" + name, spec, MediaAssetStatus(technical=technical), policy, {}, [],
                         [], [])
    config = OperatorConfig(s3_endpoint=a.endpoint, s3_credentials_secret="kubemam-s3")
    return Loop(a, b, tmp, facts, config), master


def _sha(s3: Any, bucket: str, key: str, version: str | None = None) -> str | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key, **({"VersionId": version} if version else {}))["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return hashlib.sha256(body).hexdigest()


def _versions(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return [v for v in listing.get("Versions", []) if v["Key"] == key]


def _hold(s3: Any, bucket: str, key: str, version: str) -> tuple[str, bool]:
    """(legal-hold status, tagged as kubemam's) of one version."""
    try:
        status = s3.get_object_legal_hold(Bucket=bucket, Key=key, VersionId=version)["LegalHold"]["Status"]
    except s3.exceptions.ClientError as err:
        assert err.response["Error"]["Code"] == "NoSuchObjectLockConfiguration"
        status = "OFF"
    return status, HOLD_TAG in s3.get_object_tagging(Bucket=bucket, Key=key, VersionId=version)["TagSet"]


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"][len(prefix):] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def test_a_legal_hold_set_in_s3_survives_a_move_a_restore_and_a_repair_and_stops_the_purge(
        site_a: MinioServer, site_b: MinioServer, tmp_path: Path) -> None:
    started = time.monotonic()
    loop, master = _asset(site_a, site_b, tmp_path, _policy(site_b))
    sha = hashlib.sha256(master).hexdigest()
    a, b = site_a.client(), site_b.client()
    prefix = f"archive/{NAMESPACE}/{loop.facts.name}/"
    key = prefix + "master.mov"

    archived = loop.settle(T0)
    assert [c.location for c in archived.storage.copies] == ["library", "vault"]
    [original] = _versions(b, "kubemam-vault", key)
    # Someone (legal, outside kubemam) holds the vault's master directly in S3.
    b.put_object_legal_hold(Bucket="kubemam-vault", Key=key, VersionId=original["VersionId"],
                            LegalHold={"Status": "ON"})

    # 1. The asset ages into the warm tier: copied to nearline, library vacated; the vault keeps the hold.
    moved = loop.settle(T0 + timedelta(days=2))
    assert moved.storage.tier == "warm" and [c.location for c in moved.storage.copies] == ["nearline", "vault"]
    assert _keys(a, "kubemam-library", prefix) == [] and _sha(a, "kubemam-nearline", key) == sha
    assert _hold(b, "kubemam-vault", key, original["VersionId"]) == ("ON", False)
    assert moved.storage.legal_hold is not None and moved.storage.legal_hold.foreign == [
        f"vault:{key}@{original['VersionId']}"]

    # 2. A restore brings the set back to the hot tier and vacates nearline; the hold stays.
    loop.annotate(RESTORE_ANNOTATION, "r1")
    restored = loop.settle(T0 + timedelta(days=2, hours=1))
    assert restored.storage.restore is not None and restored.storage.restore.state == "Restored"
    assert _sha(a, "kubemam-library", key) == sha and _keys(a, "kubemam-nearline", prefix) == []
    assert _hold(b, "kubemam-vault", key, original["VersionId"]) == ("ON", False)

    # 3. Bit rot at the vault (a new version with other bytes), then a fixity check: repaired from library,
    #    and the repaired version is held too — for whoever held the key, so still not kubemam's.
    b.put_object(Bucket="kubemam-vault", Key=key, Body=os.urandom(MASTER_SIZE))
    loop.annotate(FIXITY_ANNOTATION, "f1")
    repaired = loop.settle(T0 + timedelta(days=2, hours=2))
    assert repaired.storage.fixity is not None and repaired.storage.fixity.failures == 1
    assert _sha(b, "kubemam-vault", key) == sha
    latest = next(v for v in _versions(b, "kubemam-vault", key) if v["IsLatest"])
    assert latest["VersionId"] != original["VersionId"]
    assert _hold(b, "kubemam-vault", key, latest["VersionId"]) == ("ON", False)
    assert _hold(b, "kubemam-vault", key, original["VersionId"]) == ("ON", False)

    # 4. The asset is deleted: nothing of kubemam's blocks it, but the purge refuses to lift the foreign
    #    hold, names the version and deletes nothing.
    storage = loop.facts.status.storage
    assert deletion_blocker(loop.facts.policy, loop.facts.annotations, storage, T0 + timedelta(days=3)) is None
    code, result = loop.purge()
    assert code == 2 and FOREIGN_HOLD in result["error"] and original["VersionId"] in result["error"]
    assert _sha(a, "kubemam-library", key) == sha and _sha(b, "kubemam-vault", key) == sha
    assert len(_versions(b, "kubemam-vault", key)) == 3
    before_lift = time.monotonic()

    # 5. The hold is lifted in S3 by whoever set it: the next purge removes every version everywhere.
    for version in _versions(b, "kubemam-vault", key):
        b.put_object_legal_hold(Bucket="kubemam-vault", Key=key, VersionId=version["VersionId"],
                                LegalHold={"Status": "OFF"})
    code, result = loop.purge()
    assert code == 0, result
    recovery = time.monotonic() - before_lift
    for s3, bucket in ((a, "kubemam-library"), (a, "kubemam-nearline"), (b, "kubemam-vault")):
        versions = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
        assert not versions.get("Versions") and not versions.get("DeleteMarkers"), bucket
    print(f"\nforeign hold scenario: {time.monotonic() - started:.1f} s wall, {len(loop.ran)} Jobs, "
          f"purge after the lift {recovery:.1f} s")


def test_a_lowered_min_copies_waits_for_the_grace_and_for_a_hold_asked_meanwhile(
        site_a: MinioServer, site_b: MinioServer, tmp_path: Path) -> None:
    started = time.monotonic()
    loop, master = _asset(site_a, site_b, tmp_path, _policy(site_b, min_copies=3))
    sha = hashlib.sha256(master).hexdigest()
    a, b = site_a.client(), site_b.client()
    prefix = f"archive/{NAMESPACE}/{loop.facts.name}/"
    key = prefix + "master.mov"
    three = loop.settle(T0)
    assert [c.location for c in three.storage.copies] == ["library", "vault", "nearline"]

    # minCopies 3 → 2 with a one-hour grace: nearline is no longer needed, and is kept.
    loop.facts = replace(loop.facts, policy=_policy(site_b, min_copies=2, grace_hours=1))
    edited = T0 + timedelta(hours=1)
    kept = loop.settle(edited)
    extra = kept.storage.extra_copies
    assert extra is not None and extra.locations == ["nearline"] and extra.vacate_after == edited + timedelta(hours=1)
    replicated = next(v for v in kept.verdicts if v.type == "Replicated")
    assert replicated.reason == "ExtraCopies" and "kept until" in replicated.message
    assert _sha(a, "kubemam-nearline", key) == sha

    # A legal hold is asked during the grace: the grace ends, the copy stays (a held set is never vacated).
    loop.annotate(LEGAL_HOLD_ANNOTATION, "true")
    held = loop.settle(edited + timedelta(minutes=30))
    assert held.storage.legal_hold is not None and held.storage.legal_hold.held
    vault_master = next(v for v in _versions(b, "kubemam-vault", key) if v["IsLatest"])
    assert _hold(b, "kubemam-vault", key, vault_master["VersionId"]) == ("ON", True)  # kubemam's own
    loop.settle(edited + timedelta(hours=3))
    assert _sha(a, "kubemam-nearline", key) == sha

    # The hold is lifted: kubemam releases its own hold, and the copy past its grace goes.
    loop.annotate(LEGAL_HOLD_ANNOTATION, None)
    gone = loop.settle(edited + timedelta(hours=4))
    assert [c.location for c in gone.storage.copies] == ["library", "vault"] and gone.storage.extra_copies is None
    assert _keys(a, "kubemam-nearline", prefix) == [] and _sha(a, "kubemam-library", key) == sha
    assert _hold(b, "kubemam-vault", key, vault_master["VersionId"]) == ("OFF", False)
    print(f"\nminCopies grace scenario: {time.monotonic() - started:.1f} s wall, {len(loop.ran)} Jobs")
