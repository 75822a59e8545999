"""S3 Object Lock legal holds: kubemam lifts only the holds it set itself.

S3 keeps one legal-hold bit per object version and does not record who set it. kubemam tags every
version it holds with `kubemam-legal-hold=on` (an object tag: it sits on the very version it describes,
changing it makes no new version, and Object Lock allows it on a locked version), so the mark survives
what happens around that version — `archive.json` rewritten or deleted first in a vacate, the asset's
status lost in a cluster restore, a tier move, a restore, a Job cut off halfway. A version that is held
without the tag was held by someone else: kubemam never lifts it, and a new version kubemam writes over a
key that carries such a hold (a fixity repair, a storage-class change) is held too, still without the tag.

Order makes a crash harmless: a hold is tagged, then turned on (a crash leaves a tag on an unheld version,
which the next pass removes or completes); a release turns the hold off, then removes the tag.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import ClientError

from kubemam.storage.uri import S3Uri

log = logging.getLogger(__name__)

HOLD_TAG = "kubemam-legal-hold"
HOLD_TAG_VALUE = "on"
_NO_HOLD = ("NoSuchObjectLockConfiguration",)  # a version that was never held
_NO_LOCK = ("ObjectLockConfigurationNotFoundError",)
_GONE = ("NoSuchKey", "NoSuchVersion", "404", "NotFound")


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _unlockable(err: ClientError) -> bool:
    """The bucket has no Object Lock configuration: nothing there can be held."""
    return _code(err) in _NO_LOCK or (_code(err) == "InvalidRequest" and "ObjectLockConfiguration" in str(err))


@dataclass(frozen=True)
class Version:
    """One object version and its legal hold: on or off, and whether kubemam set it."""

    key: str
    version_id: str | None  # None: the bucket is not versioned ("null")
    latest: bool
    on: bool = False
    ours: bool = False  # tagged kubemam-legal-hold=on

    @property
    def foreign(self) -> bool:
        """Held by someone else: kubemam never lifts it."""
        return self.on and not self.ours

    def label(self) -> str:
        return f"{self.key}@{self.version_id or 'null'}"

    def ref(self) -> dict[str, str]:
        return {"VersionId": self.version_id} if self.version_id else {}


@dataclass
class Holds:
    """Legal holds in one S3 server; remembers which buckets have no Object Lock (nothing to check there)."""

    s3: Any
    unlockable: set[str] = field(default_factory=set)
    locked: set[str] = field(default_factory=set)

    def lockable(self, bucket: str) -> bool:
        """The bucket has an Object Lock configuration (asked once per bucket)."""
        if bucket in self.unlockable:
            return False
        if bucket in self.locked:
            return True
        try:
            self.s3.get_object_lock_configuration(Bucket=bucket)
        except ClientError as err:
            if _unlockable(err):
                self.unlockable.add(bucket)
                return False
            if _code(err) != "AccessDenied":  # not allowed to ask: check each version instead
                raise
        self.locked.add(bucket)
        return True

    def inspect(self, bucket: str, version: Version) -> Version:
        """The version's hold as S3 holds it now (read fresh: right before a delete, it is the truth)."""
        if not self.lockable(bucket):
            return replace(version, on=False, ours=False)
        try:
            status = self.s3.get_object_legal_hold(Bucket=bucket, Key=version.key, **version.ref())
            on = (status.get("LegalHold") or {}).get("Status") == "ON"
        except ClientError as err:
            if _unlockable(err):
                self.unlockable.add(bucket)
                return replace(version, on=False, ours=False)
            if _code(err) not in _NO_HOLD + _GONE:
                raise
            on = False
        return replace(version, on=on, ours=self._tagged(bucket, version))

    def _tags(self, bucket: str, version: Version) -> list[dict[str, str]]:
        try:
            return list(self.s3.get_object_tagging(Bucket=bucket, Key=version.key, **version.ref()).get("TagSet", []))
        except ClientError as err:
            if _code(err) in _GONE:
                return []
            raise

    def _tagged(self, bucket: str, version: Version) -> bool:
        return any(t.get("Key") == HOLD_TAG and t.get("Value") == HOLD_TAG_VALUE for t in self._tags(bucket, version))

    def _set_tag(self, bucket: str, version: Version, present: bool) -> None:
        """Add or remove kubemam's tag, keeping every other tag the version carries."""
        others = [t for t in self._tags(bucket, version) if t.get("Key") != HOLD_TAG]
        tags = others + ([{"Key": HOLD_TAG, "Value": HOLD_TAG_VALUE}] if present else [])
        if tags:
            self.s3.put_object_tagging(Bucket=bucket, Key=version.key, Tagging={"TagSet": tags}, **version.ref())
        else:
            self.s3.delete_object_tagging(Bucket=bucket, Key=version.key, **version.ref())

    def _status(self, bucket: str, version: Version, on: bool) -> None:
        self.s3.put_object_legal_hold(Bucket=bucket, Key=version.key, LegalHold={"Status": "ON" if on else "OFF"},
                                      **version.ref())

    def hold(self, bucket: str, version: Version) -> Version:
        """kubemam's hold: tagged first, then on."""
        self._set_tag(bucket, version, True)
        self._status(bucket, version, True)
        return replace(version, on=True, ours=True)

    def hold_for_another(self, bucket: str, version: Version) -> Version:
        """The key carries a hold kubemam did not set: its new version is held too, and stays not ours."""
        if version.ours:
            self._set_tag(bucket, version, False)
        self._status(bucket, version, True)
        return replace(version, on=True, ours=False)

    def release(self, bucket: str, version: Version) -> Version:
        """Lift kubemam's own hold: off first, then untagged. A hold someone else set is never lifted."""
        if not version.ours:
            raise ValueError(f"{version.label()} is not held by kubemam")
        if version.on:
            self._status(bucket, version, False)
        self._set_tag(bucket, version, False)
        return replace(version, on=False, ours=False)

    def versions(self, prefix: S3Uri, key: str | None = None) -> Iterator[Version]:
        """Every object version below prefix (or of exactly key), with its hold read from S3."""
        paginator = self.s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=prefix.bucket, Prefix=key if key is not None else prefix.prefix):
            for entry in page.get("Versions", []):
                if key is not None and entry["Key"] != key:
                    continue
                version_id = entry.get("VersionId")
                listed = Version(entry["Key"], None if version_id in (None, "null") else version_id,
                                 bool(entry.get("IsLatest")))
                yield self.inspect(prefix.bucket, listed)

    def reconcile_key(self, uri: S3Uri, want: bool) -> list[str]:
        """One locked object's versions: held by kubemam while `want`, released when not; a hold someone else
        set stays, and the latest version inherits it. Returns the versions held by someone else."""
        found = list(self.versions(uri, key=uri.key))
        foreign = any(v.foreign for v in found)
        result: list[Version] = []
        for version in found:
            # Released when no longer asked; a stale tag (a crash between tag and hold) is removed, except on
            # the latest version while a hold is asked, where the hold below completes it.
            if version.ours and (not want or not version.on) and not (want and version.latest and not foreign):
                version = self.release(uri.bucket, version)
            if version.latest and not version.on:
                if foreign:
                    version = self.hold_for_another(uri.bucket, version)
                elif want:
                    version = self.hold(uri.bucket, version)
            result.append(version)
        return [v.label() for v in result if v.foreign]

    def delete_unheld(self, prefix: S3Uri, release_ours: bool) -> tuple[list[str], list[str]]:
        """Delete every version and delete marker below prefix, reading each version's hold right before its
        delete. kubemam's own holds are lifted first when `release_ours`; a version someone else holds is
        skipped. Returns (kept by retention, kept by a legal hold)."""
        kept_locked: list[str] = []
        kept_held: list[str] = []
        paginator = self.s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=prefix.bucket, Prefix=prefix.prefix):
            entries = [(e, True) for e in page.get("Versions", [])] + \
                      [(e, False) for e in page.get("DeleteMarkers", [])]
            for entry, is_version in entries:
                version_id = entry.get("VersionId")
                version = Version(entry["Key"], None if version_id in (None, "null") else version_id,
                                  bool(entry.get("IsLatest")))
                if is_version:
                    version = self.inspect(prefix.bucket, version)
                    if version.ours and release_ours:
                        version = self.release(prefix.bucket, version)
                    if version.on:
                        log.warning("%s/%s is under a legal hold%s: kept", prefix.bucket, version.label(),
                                    "" if version.ours else " kubemam did not set")
                        kept_held.append(version.label())
                        continue
                try:
                    self.s3.delete_object(Bucket=prefix.bucket, Key=version.key, **version.ref())
                except ClientError as err:
                    if _code(err) in ("AccessDenied", "InvalidRequest"):  # WORM: retention still runs
                        kept_locked.append(version.label())
                        continue
                    if _code(err) not in _GONE:
                        raise
        return kept_locked, kept_held
