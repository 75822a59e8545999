"""`kubemam worker archive`: place an asset's archived set per its policy, vacate what it left, check its
fixity, or purge it.

place  — every target location ends with a verified copy of every object, at its storage class and under
         Object Lock where asked. A place run never deletes anything.
vacate — a separate run the operator starts only after the place run verified and only while no legal hold
         is asked: every target copy is read back, then the vacated locations are emptied, each version's
         legal hold read from S3 right before its delete (one someone else set is kept and reported).
fixity — every copy is re-hashed; a missing or changed one is repaired from an intact copy (holding it
         again if its key was held).
purge  — every version at every location is deleted (the operator asks only after retention and with no
         hold asked); a legal hold kubemam did not set stops it before anything is deleted.

Legal holds: kubemam lifts only the holds it set (storage/legalhold.py).
Each run is repeatable: a copy already verified (its x-amz-meta-sha256 and size match) is kept.
A site that stops answering is waited for; an outage longer than that fails the run with an
ordinary exit, the Job controller runs it again, and nothing was deleted before its replacement verified.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, IncompleteReadError, ResponseStreamingError
from pydantic import ValidationError

from kubemam.steps.archive import FOREIGN_HOLD, ArchiveInputs, LocationInput, ObjectInput
from kubemam.storage import transfer
from kubemam.storage.legalhold import Holds
from kubemam.storage.s3 import (
    TRANSIENT_ERRORS,
    is_transient,
    list_entries,
    make_client,
    wait_until_answers,
    wait_until_reachable,
)
from kubemam.storage.uri import S3Uri
from kubemam.worker.contract import StepError, step_input, write_result

log = logging.getLogger(__name__)
LOCATION_MANIFEST = "archive.json"
MAX_LISTED = 8  # versions named in a result: the termination message keeps 4 KiB
T = TypeVar("T")


def _retry_seconds() -> float:
    return float(os.environ.get("KUBEMAM_S3_RETRY_SECONDS") or 60)


@dataclass(frozen=True)
class Site:
    location: LocationInput
    place: transfer.Place
    root: S3Uri
    holds: Holds
    endpoint: str

    def key(self, name: str) -> S3Uri:
        return self.root.join(name)


def _site(location: LocationInput) -> Site:
    endpoint = location.endpoint or os.environ.get("AWS_ENDPOINT_URL") or None
    access = secret = None
    if location.credentials:
        access = os.environ.get(f"{location.credentials}_ACCESS_KEY_ID")
        secret = os.environ.get(f"{location.credentials}_SECRET_ACCESS_KEY")
        if not access or not secret:
            raise StepError(f"location {location.name}: its credentials Secret must hold AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY")
    client = make_client(endpoint, access, secret, hashes_reads=True)  # every copy and fixity read is hashed
    server = f"{endpoint or 'aws'}|{location.credentials or 'default'}"
    return Site(location, transfer.Place(location.name, client, server), S3Uri.parse(location.uri), Holds(client),
                endpoint or "aws")


CONDITIONAL_READS = ("UploadPartCopy", "GetObject")  # the only calls kubemam makes with If-Match on a source


def _changed_while_read(err: BaseException) -> bool:
    """A conditional read (If-Match) refused: the source was overwritten mid-copy. Run again, the copy starts
    over from the version there now and is checked against the record like any other."""
    return isinstance(err, ClientError) and err.operation_name in CONDITIONAL_READS and str(
        err.response.get("Error", {}).get("Code")) in ("PreconditionFailed", "412")


MAX_ATTEMPTS = 8  # per action: a site that answers HEAD but fails every call still ends the run
PROGRESS_SECONDS = 5.0  # a body cut off after streaming this long made progress: the window starts over
CHANGED_RETRIES = 3  # a source overwritten this often during one copy is being rewritten: the next one is tried
CUT_MID_BODY = (ResponseStreamingError, IncompleteReadError)  # bytes were flowing when the connection broke


def _with_retry(site: Site, action: Callable[[], T], reread_changed: bool = False,
                source: tuple[Site, S3Uri] | None = None, sleep: Callable[[float], None] | None = None,
                clock: Callable[[], float] = time.monotonic) -> T:
    """Run action; while the site (and the source object a copy reads) does not answer, wait for it and run
    it again.

    The retry window (KUBEMAM_S3_RETRY_SECONDS) counts from the first attempt and starts over when a body
    that streamed for PROGRESS_SECONDS or more is cut off: a long copy cut an hour in is read again, not
    failed because the hour outlasted the window; slow failures that moved no bytes (timeouts) do not extend
    it. With reread_changed, a copy whose source was overwritten mid-read (412) starts over from the new
    version, up to CHANGED_RETRIES times with a pause; anywhere else a 412 is an error."""
    deadline = clock() + _retry_seconds()
    attempts = changed = 0
    while True:
        began = clock()
        try:
            return action()
        except (ClientError, *TRANSIENT_ERRORS) as err:
            attempts += 1
            now = clock()
            if isinstance(err, CUT_MID_BODY) and now - began >= PROGRESS_SECONDS:
                deadline = now + _retry_seconds()
            if reread_changed and _changed_while_read(err):
                changed += 1
                if changed > CHANGED_RETRIES:
                    raise
                log.warning("a source changed while %s copied it; copying again", site.location.name)
                (sleep or time.sleep)(float(changed))
                continue
            if not is_transient(err) or now >= deadline or attempts >= MAX_ATTEMPTS:
                raise
            # Either end of a copy may be the one that failed: wait until both answer, or the retries would
            # follow each other without a pause while the source's site is down.
            names = [site.location.name] + ([source[0].location.name] if source is not None else [])
            log.warning("location %s did not answer (%s); waiting for %s", " or ".join(dict.fromkeys(names)),
                        type(err).__name__, "both" if len(set(names)) > 1 else "it")
            wait_until_reachable(site.place.s3, site.root.bucket, max(1.0, deadline - clock()))
            if source is not None:
                wait_until_answers(partial(_source_answers, *source), max(1.0, deadline - clock()))


def _source_head_error(site: Site, uri: S3Uri) -> ClientError | BotoCoreError | None:
    """What a HEAD of the object a copy reads answered, when it failed (not a bucket: the original may sit
    where its reader may not list)."""
    try:
        site.place.s3.head_object(Bucket=uri.bucket, Key=uri.key)
    except (ClientError, BotoCoreError) as err:
        return err
    return None


def _source_answers(site: Site, uri: S3Uri) -> None:
    """Raises while the source does not answer. Any answer but a transient failure will do (403 and 404 too):
    the copy's next attempt says what a refusal means."""
    if (err := _source_head_error(site, uri)) is not None and (isinstance(err, BotoCoreError) or is_transient(err)):
        raise err  # a client-side failure (no credentials, a broken request) is no answer either


def _answers(site: Site) -> bool:
    """Whether the site answers now (one HEAD of its bucket, no waiting)."""
    try:
        site.place.s3.head_bucket(Bucket=site.root.bucket)
    except ClientError as err:
        return not is_transient(err)
    except BotoCoreError:
        return False
    return True


def _unreadable(site: Site, uri: S3Uri) -> str | None:
    """Why a source cannot be read (missing, refused), asked after a copy from it failed for good; None when
    it can be read (the failure was the target's) or the answer cannot be had."""
    err = _source_head_error(site, uri)
    if isinstance(err, ClientError) and not is_transient(err):
        return f"{site.location.name} cannot read {uri}: {err.response.get('Error', {}).get('Code')}"
    return None


def _refusal(site: Site, err: ClientError, doing: str) -> StepError | None:
    """A location that will never accept this (missing bucket, refused write, unknown class): a clear error."""
    code = str(err.response.get("Error", {}).get("Code", ""))
    where = f"location {site.location.name} ({site.root})"
    if code == "NoSuchBucket":
        return StepError(f"{where}: bucket {site.root.bucket} does not exist")
    if code in ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return StepError(f"{where} refuses {doing}: {code}")
    if code == "InvalidStorageClass":
        return StepError(f"{where} does not offer the storage class asked for ({doing})")
    if code in ("InvalidRequest", "ObjectLockConfigurationNotFoundError") and "lock" in str(err).lower():
        return StepError(f"{where} has no Object Lock configuration but the policy sets objectLock: true "
                         "(create the bucket with Object Lock enabled)")
    return None


@contextmanager
def _named_refusal(site: Site, doing: str) -> Iterator[None]:
    """A location's lasting refusal (missing bucket, denied access, unknown class) ends the step with an error
    that names the location and what was asked of it; anything else is raised as it is (a transient one is
    retried by the Job)."""
    try:
        yield
    except ClientError as err:
        refusal = _refusal(site, err, doing)
        if refusal is not None:
            raise refusal from err
        raise


def _verified_copy(site: Site, obj: ObjectInput) -> dict[str, Any] | None:
    """The copy's HEAD when it is one this worker verified (recorded sha256 and size match) and the server's
    own full-object SHA-256, where it keeps one, agrees; else None (the copy is made again)."""
    found = transfer.head(site.place.s3, site.key(obj.key), checksum=True)
    if found is None or int(found.get("ContentLength", -1)) != obj.size:
        return None
    if (found.get("Metadata") or {}).get(transfer.SHA256_METADATA) != obj.sha256:
        return None
    server_sum = transfer.full_object_checksum(found)
    if server_sum is not None and server_sum != transfer.b64_sha256(obj.sha256):
        # The label says one thing, the bytes another (written over with the metadata kept, or rotted):
        # never kept as verified.
        log.warning("%s at %s claims sha256 %s but the server's checksum differs; copying it again", obj.key,
                    site.location.name, obj.sha256)
        return None
    return found


@dataclass
class Outcome:
    copies: list[dict[str, Any]] = field(default_factory=list)
    copied_bytes: dict[str, int] = field(default_factory=dict)
    vacated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # versions retention keeps at vacated locations
    held: list[str] = field(default_factory=list)  # versions a legal hold kubemam did not set keeps
    restoring: dict[str, Any] | None = None


class Source(NamedTuple):
    """Where a copy can be read, with the HEAD that found it there when one was made (a kept copy's), so the
    thaw check does not HEAD it again."""
    site: Site
    uri: S3Uri
    head: dict[str, Any] | None = None


def _source_for(obj: ObjectInput, sites: dict[str, Site], exclude: str, default: Site) -> list[Source]:
    """Where obj can be read: locations holding a verified copy first, then its original source.
    A site that does not answer, or refuses to say (403: no s3:GetObject there, or on AWS a missing key without
    s3:ListBucket), is passed over: another may hold the copy."""
    sources: list[Source] = []
    for name, site in sites.items():
        if name == exclude:
            continue
        try:
            found = _verified_copy(site, obj)
        except (ClientError, BotoCoreError) as err:
            code = err.response.get("Error", {}).get("Code") if isinstance(err, ClientError) else type(err).__name__
            log.warning("location %s does not answer (%s); not reading %s from it", name, code, obj.key)
            continue
        if found is not None:
            sources.append(Source(site, site.key(obj.key), found))
    if obj.source and obj.source.startswith("s3://"):
        sources.append(Source(default, S3Uri.parse(obj.source)))
    return sources


def _restore(site: Site, uri: S3Uri, found: dict[str, Any]) -> dict[str, Any]:
    """Ask once for a cold copy's thaw (a restore already under way is not asked again); what to report."""
    if 'ongoing-request="true"' not in str(found.get("Restore") or ""):
        site.place.s3.restore_object(Bucket=uri.bucket, Key=uri.key,
                                     RestoreRequest={"Days": 7, "GlacierJobParameters": {"Tier": "Standard"}})
    hours = 12 if found.get("StorageClass") == "DEEP_ARCHIVE" else 5
    return {"location": site.location.name, "storageClass": found.get("StorageClass"), "estimatedSeconds": hours * 3600}


def _readable_or_thaw(sources: list[Source]) -> tuple[list[Source], dict[str, Any] | None]:
    """The sources to copy from, in order; when none can be read now but cold copies (GLACIER, DEEP_ARCHIVE,
    not restored) hold it, the thaw asked of the first of them (what to report). A thaw costs and takes hours:
    none is asked while a copy reads. A source that is gone (404: an original deleted since ingest) is dropped;
    one whose HEAD fails is still tried, but does not stand in for a readable copy. A source found by a HEAD
    already (a kept copy) is not asked again."""
    to_copy: list[Source] = []
    cold: list[tuple[Source, dict[str, Any]]] = []
    readable = False
    for source in sources:
        site, uri, known = source
        try:
            found = known if known is not None else transfer.head(site.place.s3, uri)
        except (ClientError, BotoCoreError):
            to_copy.append(source)  # the copy attempt says what the failure means
            continue
        if found is None:
            log.warning("%s is gone from %s; not copied from there", uri, site.location.name)
            continue
        if found.get("StorageClass") in transfer.COLD and 'ongoing-request="false"' not in str(
                found.get("Restore") or ""):
            cold.append((source, found))
            continue
        readable = True
        to_copy.append(source)
    if readable or not cold:
        return to_copy, None
    (site, uri, _), found = cold[0]
    return [], _restore(site, uri, found)


def _put_object(obj: ObjectInput, source_sites: list[Source], target: Site, storage_class: str) -> str:
    """Make target hold a verified copy of obj from the first source that is intact."""
    dst = target.key(obj.key)
    if obj.content is not None:
        return transfer.put_verified(target.place, dst, obj.content.encode(), storage_class, obj.content_type)
    problems = []
    unreachable: BaseException | None = None
    for site, uri, _ in source_sites:
        try:
            # Only a copy at an archive location carries an x-amz-meta-sha256 kubemam wrote after verifying it.
            return _with_retry(target, partial(transfer.copy_verified, site.place, uri, target.place, dst,
                                               sha256=obj.sha256, size=obj.size, storage_class=storage_class,
                                               trust_source_metadata=uri == site.key(obj.key)),
                               reread_changed=True, source=(site, uri))
        except (transfer.SourceDamaged, transfer.CopyNotVerified) as err:
            problems.append(str(err))
            log.warning("%s; trying the next source", err)
        except (ClientError, *TRANSIENT_ERRORS) as err:
            if is_transient(err) and not _answers(target):
                raise  # the target is the end that is down: no other source helps, and its window is spent
            if not (is_transient(err) or _changed_while_read(err)):
                if (problem := _unreadable(site, uri)) is None:
                    raise  # the target refused (a class, a lock, a permission): place() names it
                problems.append(problem)  # gone or refused at this source since it was listed
                log.warning("%s; trying the next source", problem)
                continue
            # This source's retries are spent (down, or rewritten again and again): another source may copy.
            unreachable = err
            log.warning("copying %s from %s to %s did not succeed (%s); trying the next source", obj.key,
                        site.location.name, target.location.name, type(err).__name__)
    if unreachable is not None:
        # No source copied and one could not be read for now: a later run may copy it (the Job retries the pod).
        raise unreachable
    raise StepError(f"no intact copy of {obj.key} to copy to {target.location.name}"
                    + (f": {'; '.join(problems)}" if problems else ""))


def _lock(inputs: ArchiveInputs, site: Site, obj: ObjectInput) -> list[str]:
    """Retention and kubemam's legal hold on a locked object; returns the versions someone else holds."""
    if not (site.location.object_lock and obj.lock):
        return []
    uri = site.key(obj.key)
    if not site.holds.lockable(uri.bucket):
        raise StepError(f"location {site.location.name} ({site.root}) has no Object Lock configuration but the "
                        "policy sets objectLock: true (create the bucket with Object Lock enabled)")
    transfer.apply_retention(site.place.s3, uri, inputs.retain_until, inputs.retention_mode)
    foreign = site.holds.reconcile_key(uri, want=inputs.legal_hold)
    if foreign:
        log.warning("location %s: a legal hold kubemam did not set keeps %s; left as it is", site.location.name,
                    ", ".join(foreign))
    return [f"{site.location.name}:{label}" for label in foreign]


def _write_location_manifest(inputs: ArchiveInputs, site: Site, now: datetime, verified_by: dict[str, str]) -> None:
    """Written last at a location: the list of what it holds and how each was verified."""
    document = {"tier": inputs.tier, "verifiedAt": now.isoformat(),
                "objects": [{"key": o.key, "sha256": o.sha256, "size": o.size, "verifiedBy": verified_by.get(o.key)}
                            for o in inputs.objects]}
    uri = site.key(LOCATION_MANIFEST)
    site.place.s3.put_object(Bucket=uri.bucket, Key=uri.key, Body=json.dumps(document, indent=2).encode(),
                             ContentType="application/json")


def place(inputs: ArchiveInputs, sites: dict[str, Site], default: Site, now: Callable[[], datetime]) -> Outcome:
    """Verified copies at every target; nothing is deleted here (vacate is its own run)."""
    outcome = Outcome()
    for target in inputs.targets:
        site = sites[target.location]
        verified_by: dict[str, str] = {}
        for obj in inputs.objects:
            with _named_refusal(site, f"writing {obj.key}"):
                existing = _with_retry(site, partial(_verified_copy, site, obj))
                if existing is not None and (existing.get("StorageClass") or "STANDARD") == target.storage_class:
                    # Verified when written; the server's own checksum confirms it where it keeps one.
                    server_sum = transfer.full_object_checksum(existing)
                    verified_by[obj.key] = ("s3-checksum" if server_sum == transfer.b64_sha256(obj.sha256)
                                            else "recorded")
                elif existing is not None:
                    verified_by[obj.key] = _with_retry(site, partial(
                        transfer.set_storage_class, site.place, site.key(obj.key), obj.sha256, obj.size,
                        target.storage_class))
                else:
                    # Written from the input (the sidecar): no source is read, none thawed.
                    readable, outcome.restoring = ([], None) if obj.content is not None else _readable_or_thaw(
                        _source_for(obj, sites, target.location, default))
                    if outcome.restoring is not None:
                        return outcome
                    verified_by[obj.key] = _put_object(obj, readable, site, target.storage_class)
                    outcome.copied_bytes[target.location] = outcome.copied_bytes.get(target.location, 0) + obj.size
                outcome.held += _with_retry(site, partial(_lock, inputs, site, obj))
        _with_retry(site, partial(_write_location_manifest, inputs, site, now(), verified_by))
        outcome.copies.append({"location": target.location, "uri": str(site.root),
                               "storageClass": target.storage_class, "verifiedAt": now().isoformat(),
                               "verifiedBy": _weakest(verified_by.values())})
    return outcome


def vacate(inputs: ArchiveInputs, sites: dict[str, Site], default: Site) -> Outcome:
    """Empty the locations the placement left, once every target copy reads back intact.

    The operator starts this run only after the place run verified and only while no legal hold is asked.
    Each version's hold is read from S3 right before its delete: kubemam's own is lifted (no hold is asked),
    one someone else set keeps the version, and the run reports it."""
    outcome = Outcome()
    if inputs.legal_hold:
        raise StepError("vacate: the input asks for a legal hold, and a held set is never vacated")
    leaving = [name for name in inputs.vacate if _with_retry(sites[name], partial(_holds_anything, sites[name]))]
    if not leaving:
        return outcome
    # Every target copy is read back first: its recorded checksum says what it was, not what it is; a rotted
    # one is replaced from the copy about to go.
    _reverify_targets(inputs, sites, default)
    for name in leaving:
        site = sites[name]
        overlap = next((t.location for t in inputs.targets if _overlaps(site, sites[t.location])), None)
        if overlap is not None:
            log.error("location %s is the same storage as target %s: not emptied", name, overlap)
            continue
        # The manifest goes first: a location stops claiming a copy before its objects go.
        kept, held = _with_retry(site, partial(_empty, site))
        outcome.vacated.append(name)
        outcome.kept += [f"{name}:{label}" for label in kept]
        outcome.held += [f"{name}:{label}" for label in held]
    return outcome


def _overlaps(a: Site, b: Site) -> bool:
    """Two locations over the same storage (the same endpoint, whatever the credentials; one prefix inside
    the other)."""
    first, second = a.root.prefix, b.root.prefix
    same_server = a.place.same_server(b.place) or a.endpoint == b.endpoint
    return same_server and a.root.bucket == b.root.bucket and (first.startswith(second) or second.startswith(first))


def _reverify_targets(inputs: ArchiveInputs, sites: dict[str, Site], default: Site) -> None:
    """Before other copies go: every target copy is read back and hashed; a bad one is replaced now. A copy
    in a cold class cannot be read without a thaw: the server's own full-object SHA-256 vouches for it."""
    for target in inputs.targets:
        site = sites[target.location]
        for obj in inputs.objects:
            if obj.content is not None:
                continue
            uri = site.key(obj.key)
            with _named_refusal(site, f"reading {obj.key}"):
                found_head = _with_retry(site, partial(transfer.head, site.place.s3, uri, True)) or {}
                if found_head.get("StorageClass") in transfer.COLD:
                    server_sum = transfer.full_object_checksum(found_head)
                    if server_sum in (None, transfer.b64_sha256(obj.sha256)):
                        continue  # without a server checksum, the recorded one is all a cold copy offers
                elif _with_retry(site, partial(transfer.hash_object, site.place.s3, uri)) == (obj.sha256, obj.size):
                    continue
            log.warning("%s at %s no longer matches its sha256; copying it again before the move", obj.key,
                        target.location)
            with _named_refusal(site, f"writing {obj.key}"):
                _put_object(obj, _source_for(obj, sites, target.location, default), site, target.storage_class)
                _with_retry(site, partial(_lock, inputs, site, obj))


def _holds_anything(site: Site) -> bool:
    try:
        return any(True for _ in list_entries(site.place.s3, site.root))
    except ClientError as err:
        if str(err.response.get("Error", {}).get("Code")) == "NoSuchBucket":
            return False
        raise


def _empty(site: Site) -> tuple[list[str], list[str]]:
    manifest = site.key(LOCATION_MANIFEST)
    site.place.s3.delete_object(Bucket=manifest.bucket, Key=manifest.key)
    return site.holds.delete_unheld(site.root, release_ours=True)


def _weakest(methods: Any) -> str:
    values = set(methods)
    return next((m for m in ("recorded", "s3-etag", "read-back") if m in values), "s3-checksum")


def fixity(inputs: ArchiveInputs, sites: dict[str, Site], default: Site,
           now: Callable[[], datetime]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Re-hash every copy; repair the bad ones from an intact copy; return the report and the copies."""
    checks: list[dict[str, Any]] = []
    bad: list[tuple[str, ObjectInput]] = []
    good: dict[str, list[str]] = {}
    checked_bytes = 0
    for target in inputs.targets:
        site = sites[target.location]
        for obj in inputs.objects:
            with _named_refusal(site, f"reading {obj.key}"):
                found = _with_retry(site, partial(transfer.hash_object, site.place.s3, site.key(obj.key)))
            ok = found == (obj.sha256, obj.size)
            checked_bytes += found[1] if found else 0
            checks.append({"location": target.location, "key": obj.key, "ok": ok,
                           "found": found[0] if found else None})
            if ok:
                good.setdefault(obj.key, []).append(target.location)
            else:
                bad.append((target.location, obj))
    repaired = []
    held: list[str] = []
    for location, obj in bad:
        site = sites[location]
        sources = [Source(sites[name], sites[name].key(obj.key)) for name in good.get(obj.key, [])]
        if obj.source and obj.source.startswith("s3://"):
            sources.append(Source(default, S3Uri.parse(obj.source)))
        target = next(t for t in inputs.targets if t.location == location)
        with _named_refusal(site, f"writing {obj.key}"):
            how = _put_object(obj, sources, site, target.storage_class)
            # The repaired version is held again where its key was (by kubemam, or by someone else).
            held += _with_retry(site, partial(_lock, inputs, site, obj))
        repaired.append({"location": location, "key": obj.key, "verifiedBy": how})
        log.warning("fixity: %s at %s did not match its sha256; repaired from an intact copy", obj.key, location)
    at = now().isoformat()
    report = {"run": inputs.run, "checkedAt": at, "checks": checks, "repaired": repaired,
              "checkedBytes": checked_bytes, "foreignHolds": held}
    copies = [{"location": t.location, "uri": str(sites[t.location].root), "storageClass": t.storage_class,
               "verifiedAt": at, "verifiedBy": "fixity"} for t in inputs.targets]
    return report, copies


def purge(inputs: ArchiveInputs, sites: dict[str, Site]) -> list[str]:
    """Remove every version at every location. A legal hold still asked, or one kubemam did not set, stops
    the purge before anything is deleted: the archived set stays whole for whoever holds it."""
    held: list[str] = []
    for name, site in sites.items():
        for version in _with_retry(site, partial(_versions, site)):
            if version.foreign or (version.on and inputs.legal_hold):
                held.append(f"{name}:{version.label()}")
    if held:
        listed = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        if inputs.legal_hold:
            raise StepError(f"Object Lock: the legal hold the policy or the asset asks for keeps {listed}; "
                            "nothing was deleted")
        raise StepError(f"Object Lock: {FOREIGN_HOLD} keeps {len(held)} version(s): {listed}. kubemam never lifts "
                        "a hold it did not set: lift it in S3 (or ask whoever set it) and the purge runs again; "
                        "nothing was deleted")
    kept: list[str] = []
    for name, site in sites.items():
        locked, still_held = _with_retry(site, partial(_empty_all, site))
        kept += [f"{name}:{label}" for label in locked + still_held]
    if kept:
        raise StepError(f"Object Lock still protects {len(kept)} version(s): {', '.join(kept[:5])}")
    return sorted(sites)


def _versions(site: Site) -> list[Any]:
    try:
        return list(site.holds.versions(site.root))
    except ClientError as err:
        if str(err.response.get("Error", {}).get("Code")) == "NoSuchBucket":
            return []
        raise


def _empty_all(site: Site) -> tuple[list[str], list[str]]:
    try:
        return site.holds.delete_unheld(site.root, release_ours=True)
    except ClientError as err:
        if str(err.response.get("Error", {}).get("Code")) == "NoSuchBucket":
            return [], []
        raise


def _write_report(report_uri: str, report: dict[str, Any], default: Site) -> None:
    uri = S3Uri.parse(report_uri)
    default.place.s3.put_object(Bucket=uri.bucket, Key=uri.key, Body=json.dumps(report, indent=2).encode(),
                                ContentType="application/json")


def run() -> int:
    try:
        inputs = ArchiveInputs.model_validate(step_input())
    except ValidationError as err:
        raise StepError(f"archive input does not validate: {err}") from err
    sites = {loc.name: _site(loc) for loc in inputs.locations}
    default = _site(LocationInput(name="library", uri="s3://kubemam-library"))
    now = lambda: datetime.now(UTC)  # noqa: E731
    touched = {t.location for t in inputs.targets} | set(inputs.vacate if inputs.mode == "vacate" else [])
    for site in (sites[name] for name in sorted(touched)):
        try:
            wait_until_reachable(site.place.s3, site.root.bucket, _retry_seconds())
        except ClientError as err:
            refusal = _refusal(site, err, "access")
            if refusal is not None or str(err.response.get("Error", {}).get("Code")) in ("404", "403"):
                raise refusal or StepError(f"location {site.location.name}: bucket {site.root.bucket} does not "
                                           f"exist or refuses access") from err
            raise
    result: dict[str, Any]
    if inputs.mode == "place":
        outcome = place(inputs, sites, default, now)
        result = {"tier": inputs.tier, "copies": outcome.copies, "copiedBytes": outcome.copied_bytes}
        if outcome.held:
            result["foreignHolds"] = sorted(set(outcome.held))[:MAX_LISTED]
        if outcome.restoring is not None:
            result = {"tier": inputs.tier, "restoring": outcome.restoring}
    elif inputs.mode == "vacate":
        outcome = vacate(inputs, sites, default)
        result = {"tier": inputs.tier, "vacated": outcome.vacated}
        if outcome.kept:
            result["keptUnderLock"] = len(outcome.kept)
        if outcome.held:
            result["foreignHolds"] = outcome.held[:MAX_LISTED]
    elif inputs.mode == "fixity":
        report, copies = fixity(inputs, sites, default, now)
        if inputs.report:
            _write_report(inputs.report, report, default)
        result = {"run": inputs.run, "copies": copies, "checked": len(report["checks"]),
                  "failures": len(report["repaired"]), "checkedBytes": report["checkedBytes"],
                  "repaired": [f"{r['location']}:{r['key']}" for r in report["repaired"]][:MAX_LISTED]}
        if report["foreignHolds"]:
            result["foreignHolds"] = sorted(set(report["foreignHolds"]))[:MAX_LISTED]
    else:
        result = {"purged": purge(inputs, sites)}
    write_result(result)
    return 0
