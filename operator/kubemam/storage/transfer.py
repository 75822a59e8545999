"""Copies between S3 locations that count only once verified, and Object Lock retention.

Which checksum proves what:
- `s3-etag` (same server, a source written in parts): the source's own parts are copied server-side, and
  the copy's multipart ETag (the server's MD5 of every part it wrote) equals the source's, computed when the
  source was written: the copy holds the source's bytes. That the source's bytes are the recorded sha256 is
  kubemam's x-amz-meta-sha256 on it (set only on copies it verified); a source without it is hashed with
  SHA-256 while its parts copy, and the copy is completed only if it matches.
- `s3-checksum`: the server computed the SHA-256 (CopyObject, PutObject) or checked each part's CRC32 of
  a one-pass stream whose SHA-256 this process computed (another server).
- `read-back`: the copy was read and hashed (an ETag that is not an MD5, e.g. under SSE-KMS).
A copy that does not verify is removed and the error raised: nothing downstream (a move's delete of its
source) runs on an unverified copy. Part sizes come from storage/parts.py.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kubemam.storage.parts import MIN_PART, SINGLE_COPY_LIMIT, PartPlan, plan_parts
from kubemam.storage.uri import S3Uri

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Reads to hash (fixity, read-backs): 1 MiB, not 8. http.client builds each read once more while joining it, so
# an 8 MiB read held ~16 MiB at its peak: hashing 39 MiB, 120 MiB or 1,000 MiB peaked at 76 MiB (VmHWM)
# with 8 MiB reads, 60 MiB with 1 MiB ones, at the same speed (1,000 MiB from MinIO in 1.2 s either way).
READ_CHUNK = 1 * MiB
COPIES_IN_FLIGHT = 8  # server-side part copies at once, under botocore's pool of 10 connections
STREAM_BUFFER = 256 * MiB  # parts a streamed copy holds at once, in bytes (at least one part)
STREAM_PART = 16 * MiB  # small parts keep the pipeline full and its tail short (the planner grows them)
STREAM_UPLOADS = 8
COLD = {"GLACIER", "DEEP_ARCHIVE"}  # classes read only after a thaw: no read-back, the server's SHA-256 instead
SHA256_METADATA = "sha256"  # x-amz-meta-sha256: the hex digest this copy was verified against


class CopyNotVerified(RuntimeError):
    """The copy's bytes differ from what was expected; the copy was removed."""


class SourceDamaged(RuntimeError):
    """The source's bytes do not hash to what the archive recorded; try another source."""


class SourceUnreadable(SourceDamaged):
    """The source refuses its bytes (denied, gone, encrypted under a key the reader may not use, e.g. SSE-KMS
    without kms:Decrypt, which HEAD does not need): try another source. Not the target's refusal."""


@dataclass(frozen=True)
class Place:
    """One S3 server as the worker sees it: a client, and a key naming server + credentials."""

    name: str
    s3: Any
    server: str  # equal servers can copy server-side

    def same_server(self, other: Place) -> bool:
        return self.server == other.server


def b64_sha256(hexdigest: str) -> str:
    return base64.b64encode(bytes.fromhex(hexdigest)).decode()


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def head(s3: Any, uri: S3Uri, checksum: bool = False) -> dict[str, Any] | None:
    """The object's HEAD, or None when it does not exist."""
    try:
        kwargs = {"ChecksumMode": "ENABLED"} if checksum else {}
        return dict(s3.head_object(Bucket=uri.bucket, Key=uri.key, **kwargs))
    except ClientError as err:
        if _code(err) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def full_object_checksum(head_response: dict[str, Any]) -> str | None:
    """The server's SHA-256 of the whole object (base64), if it holds one (multipart ones are composite)."""
    value = head_response.get("ChecksumSHA256")
    if not value or "-" in str(value):
        return None
    return str(value)


def read_chunks(s3: Any, uri: S3Uri, if_match: str | None = None) -> Iterator[bytes]:
    condition = {"IfMatch": if_match} if if_match else {}
    body = s3.get_object(Bucket=uri.bucket, Key=uri.key, **condition)["Body"]
    try:
        while chunk := body.read(READ_CHUNK):
            yield chunk
    finally:
        body.close()


def hash_object(s3: Any, uri: S3Uri, if_match: str | None = None,
                stop: threading.Event | None = None) -> tuple[str, int] | None:
    """(sha256 hex, size) of the object's bytes as stored, or None when it does not exist. if_match: that
    version only; stop: set by another thread to give up early (the result is then not the object's)."""
    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in read_chunks(s3, uri, if_match):
            if stop is not None and stop.is_set():
                break
            digest.update(chunk)
            size += len(chunk)
    except ClientError as err:
        if _code(err) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return digest.hexdigest(), size


def _remove_bad_copy(s3: Any, uri: S3Uri) -> None:
    try:
        s3.delete_object(Bucket=uri.bucket, Key=uri.key)
    except (ClientError, BotoCoreError) as err:  # a locked version or a site down: the next run overwrites it
        log.warning("could not remove the unverified copy %s: %s", uri, err)


def put_verified(dst: Place, uri: S3Uri, body: bytes, storage_class: str, content_type: str) -> str:
    """Write small content with its SHA-256: the server refuses bytes that do not match it."""
    sha = hashlib.sha256(body).hexdigest()
    dst.s3.put_object(Bucket=uri.bucket, Key=uri.key, Body=body, ContentType=content_type,
                      StorageClass=storage_class, ChecksumSHA256=b64_sha256(sha),
                      Metadata={SHA256_METADATA: sha})
    return "s3-checksum"


def copy_verified(src: Place, src_uri: S3Uri, dst: Place, dst_uri: S3Uri, *, sha256: str, size: int,
                  storage_class: str, multipart_copy_above: int = SINGLE_COPY_LIMIT,
                  trust_source_metadata: bool = True) -> str:
    """Copy one object and verify the copy is sha256; returns how it was verified.

    Same server, a source written in parts: the same parts copied server-side in parallel, and the copy's
    ETag (the server's MD5 of every part it wrote) must equal the source's (`s3-etag`); a source kubemam did
    not write verified (no matching x-amz-meta-sha256) is also hashed as the parts copy, and the copy is
    completed only if it is sha256. Same server, one part: CopyObject with a SHA-256 the server computes
    (≤ 5 GiB), also for a cold class (a copy there cannot be read back without a thaw) and for a source under
    SSE-KMS or SSE-C (its ETag is no MD5). Another server: streamed through this process (one pass, see
    _stream_copy). trust_source_metadata: False for a source outside the archive (the user's master), whose
    x-amz-meta-sha256 anyone could have set.
    """
    if not src.same_server(dst):
        return _stream_copy(src, src_uri, dst, dst_uri, sha256=sha256, size=size, storage_class=storage_class)
    # Only an object over 5 MiB can have been written in parts; raises SourceDamaged on a size not the record's.
    source = _source_parts(src.s3, src_uri, size) if size > MIN_PART and storage_class not in COLD else None
    create = {"StorageClass": storage_class, "Metadata": {SHA256_METADATA: sha256}}
    if source is not None and source.plan is not None:
        if not trust_source_metadata:
            source = replace(source, verified_sha256=None)
        return _aligned_copy(src, src_uri, dst, dst_uri, source, sha256, size, create)
    if size <= multipart_copy_above:
        # Tags are not copied: kubemam's legal-hold mark belongs to the version it was set on.
        dst.s3.copy_object(Bucket=dst_uri.bucket, Key=dst_uri.key,
                           CopySource={"Bucket": src_uri.bucket, "Key": src_uri.key},
                           MetadataDirective="REPLACE", ChecksumAlgorithm="SHA256", TaggingDirective="REPLACE",
                           **create)
        stored = head(dst.s3, dst_uri, checksum=True) or {}
        server_sum = full_object_checksum(stored)
        if server_sum is not None:
            if server_sum != b64_sha256(sha256):
                if src_uri != dst_uri:  # an in-place class change never deletes its only source
                    _remove_bad_copy(dst.s3, dst_uri)
                raise SourceDamaged(f"{src.name}:{src_uri} does not hash to the recorded sha256")
            return "s3-checksum"
    else:
        _copy_parts(dst.s3, src_uri, dst_uri, plan_parts(size), create)
    return _read_back(dst, dst_uri, sha256, size, remove=src_uri != dst_uri)


@dataclass(frozen=True)
class SourceParts:
    """How the source was written: its ETag, its parts when they are equal (the last may be shorter), and
    the sha256 kubemam verified it against when it wrote it (x-amz-meta-sha256), if it did."""

    etag: str
    plan: PartPlan | None
    verified_sha256: str | None


def _source_parts(s3: Any, uri: S3Uri, size: int) -> SourceParts | None:
    """The source's part layout from one HEAD of its first part; None when it does not exist. A source whose
    size is not the recorded one is damaged: it cannot be the recorded content."""
    try:
        found = s3.head_object(Bucket=uri.bucket, Key=uri.key, PartNumber=1)
    except ClientError as err:
        if _code(err) in ("404", "NoSuchKey", "NotFound"):
            return None
        if _code(err) in ("416", "InvalidPartNumber", "InvalidRange"):  # emptied: no first part
            raise SourceDamaged(f"{uri} has no first part: it is not the recorded {size} bytes") from err
        raise
    total = str(found.get("ContentRange") or "").rpartition("/")[2]  # "bytes 0-N/TOTAL"
    if total.isdigit() and int(total) != size:
        raise SourceDamaged(f"{uri} holds {total} bytes, not the recorded {size}")
    count = int(found.get("PartsCount") or 1)
    plan = PartPlan(size=size, part_size=int(found["ContentLength"]))
    # A source whose parts are not all the size of the first (but the last) cannot be re-cut from one HEAD;
    # under SSE-KMS or SSE-C an ETag is no MD5, and equal bytes would not show as equal ETags.
    encrypted = found.get("ServerSideEncryption") == "aws:kms" or bool(found.get("SSECustomerAlgorithm"))
    equal = count > 1 and plan.count == count and plan.part_size >= MIN_PART and not encrypted
    return SourceParts(etag=str(found["ETag"]), plan=plan if equal else None,
                       verified_sha256=(found.get("Metadata") or {}).get(SHA256_METADATA))


def _aligned_copy(src: Place, src_uri: S3Uri, dst: Place, dst_uri: S3Uri, source: SourceParts, sha256: str,
                  size: int, create: dict[str, Any]) -> str:
    """The source's own parts copied server-side: equal bytes give an equal multipart ETag. One pass over the
    bytes (the server's); a source kubemam did not verify is also read once, hashed while the parts copy."""
    assert source.plan is not None
    stop = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="source-hash") as reader:
        hashing = None
        if source.verified_sha256 != sha256:
            hashing = reader.submit(hash_object, src.s3, src_uri, if_match=source.etag, stop=stop)

        def source_is_recorded() -> None:
            if hashing is not None and hashing.result() != (sha256, size):
                raise SourceDamaged(f"{src.name}:{src_uri} does not hash to the recorded sha256")

        try:
            etag = _copy_parts(dst.s3, src_uri, dst_uri, source.plan, create, if_match=source.etag,
                               before_complete=source_is_recorded)
        finally:
            stop.set()
    if etag.strip('"') == source.etag.strip('"'):
        return "s3-etag"
    # Equal bytes in equal parts have equal ETags unless the ETag is no MD5 (a bucket's default encryption): hash
    # the copy.
    log.info("%s:%s has ETag %s, its source %s; reading it back", dst.name, dst_uri, etag, source.etag)
    return _read_back(dst, dst_uri, sha256, size, remove=src_uri != dst_uri)


def _read_back(dst: Place, uri: S3Uri, sha256: str, size: int, remove: bool) -> str:
    """Hash the copy as stored. It carries x-amz-meta-sha256 already, and a copy written in parts has no
    checksum of the server's to contradict it: a read-back that cannot finish (a cut, a timeout) removes it too,
    so a re-run does not take it as verified. Best effort: a target down for the delete as well, or a killed
    pod, leaves it (a move still hashes every target copy before it empties anything)."""
    try:
        found = hash_object(dst.s3, uri)
    except BaseException:
        if remove:
            _remove_bad_copy(dst.s3, uri)
        raise
    if found != (sha256, size):
        if remove:
            _remove_bad_copy(dst.s3, uri)
        raise CopyNotVerified(f"{dst.name}:{uri} read back as {found}, expected ({sha256}, {size})")
    return "read-back"


def copy_within(s3: Any, src_uri: S3Uri, dst_uri: S3Uri, size: int, single_limit: int = SINGLE_COPY_LIMIT,
                **create: Any) -> None:
    """A server-side copy on one server at any size: one CopyObject up to 5 GiB, planned UploadPartCopy parts
    above it (CopyObject refuses more). create: arguments for the new object (Metadata, StorageClass)."""
    if size <= single_limit:
        s3.copy_object(Bucket=dst_uri.bucket, Key=dst_uri.key, CopySource={"Bucket": src_uri.bucket,
                                                                          "Key": src_uri.key}, **create)
        return
    _copy_parts(s3, src_uri, dst_uri, plan_parts(size), create)


def _copy_parts(s3: Any, src_uri: S3Uri, dst_uri: S3Uri, plan: PartPlan, create: dict[str, Any], *,
                if_match: str | None = None, before_complete: Callable[[], None] | None = None) -> str:
    """UploadPartCopy of every planned part, in parallel; returns the new object's ETag. if_match: every
    part from that version of the source only. before_complete: a check that aborts the upload by raising."""
    upload_id = s3.create_multipart_upload(Bucket=dst_uri.bucket, Key=dst_uri.key, **create)["UploadId"]
    condition = {"CopySourceIfMatch": if_match} if if_match else {}

    def part(number: int, first: int, last: int) -> dict[str, Any]:
        result = s3.upload_part_copy(Bucket=dst_uri.bucket, Key=dst_uri.key, UploadId=upload_id,
                                     PartNumber=number, CopySource={"Bucket": src_uri.bucket, "Key": src_uri.key},
                                     CopySourceRange=f"bytes={first}-{last}", **condition)
        return {"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]}

    try:
        with ThreadPoolExecutor(COPIES_IN_FLIGHT, thread_name_prefix="part-copy") as pool:
            futures = [pool.submit(part, n, a, b) for n, (a, b) in enumerate(plan.ranges(), start=1)]
            try:
                parts = [f.result() for f in futures]
            finally:
                for future in futures:
                    future.cancel()
        if before_complete is not None:
            before_complete()
        done = s3.complete_multipart_upload(Bucket=dst_uri.bucket, Key=dst_uri.key, UploadId=upload_id,
                                            MultipartUpload={"Parts": parts})
    except BaseException:
        _abort(s3, dst_uri, upload_id)
        raise
    return str(done.get("ETag", ""))


def _abort(s3: Any, uri: S3Uri, upload_id: str) -> None:
    try:
        s3.abort_multipart_upload(Bucket=uri.bucket, Key=uri.key, UploadId=upload_id)
    except Exception as err:  # the server may be the thing that is down; it expires stale uploads itself
        log.warning("could not abort upload %s of %s: %s", upload_id, uri, err)


def _read_parts(s3: Any, uri: S3Uri, part_size: int) -> Iterator[bytes]:
    """The object in part_size parts (the last may be shorter). One read per part: the stream fills one
    buffer of the part's size, where 8 MiB pieces joined cost a second copy of every byte (1.6 s a GiB)."""
    body = s3.get_object(Bucket=uri.bucket, Key=uri.key)["Body"]
    try:
        while True:
            pieces, held = [], 0
            while held < part_size and (piece := body.read(part_size - held)):
                pieces.append(piece)
                held += len(piece)
            if not pieces:
                return
            yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if held < part_size:
                return
    finally:
        body.close()


def _from_source(src: Place, uri: S3Uri, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A copy's source read on another server: its refusals (4xx but a 412, which says it changed mid-read) are
    the source's, raised as SourceUnreadable."""
    try:
        yield from chunks
    except ClientError as err:
        status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if 400 <= status < 500 and status != 412:
            raise SourceUnreadable(f"{src.name}:{uri} cannot be read: {_code(err)}") from err
        raise


def _crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _stream_copy(src: Place, src_uri: S3Uri, dst: Place, dst_uri: S3Uri, *, sha256: str, size: int,
                 storage_class: str) -> str:
    """Read from one server, write to another, in one pass over the bytes: the reading thread hashes the
    whole stream with SHA-256 (the source is what was recorded), each part carries a CRC32 the receiving
    server checks (what it stored is what was read; an Object Lock bucket also insists on a checksum). A part
    in memory at a time per upload in flight, within STREAM_BUFFER."""
    plan = plan_parts(size, preferred=STREAM_PART)
    if size <= plan.part_size:
        body = b"".join(_from_source(src, src_uri, read_chunks(src.s3, src_uri)))
        if hashlib.sha256(body).hexdigest() != sha256 or len(body) != size:
            raise SourceDamaged(f"{src.name}:{src_uri} does not hash to the recorded sha256")
        dst.s3.put_object(Bucket=dst_uri.bucket, Key=dst_uri.key, Body=body, StorageClass=storage_class,
                          ChecksumSHA256=b64_sha256(sha256), Metadata={SHA256_METADATA: sha256})
        return "s3-checksum"
    in_flight = max(1, min(STREAM_UPLOADS, STREAM_BUFFER // plan.part_size))
    upload = dst.s3.create_multipart_upload(Bucket=dst_uri.bucket, Key=dst_uri.key, StorageClass=storage_class,
                                            ChecksumAlgorithm="CRC32", Metadata={SHA256_METADATA: sha256})
    upload_id = upload["UploadId"]
    whole = hashlib.sha256()
    copied = 0

    def send(number: int, data: bytes) -> dict[str, Any]:
        # On the upload thread: zlib and hashlib release the GIL, so the CRC and the SHA-256 of the
        # reading thread run on two cores.
        checksum = _crc32(data)
        result = dst.s3.upload_part(Bucket=dst_uri.bucket, Key=dst_uri.key, UploadId=upload_id, PartNumber=number,
                                    Body=data, ChecksumAlgorithm="CRC32", ChecksumCRC32=checksum)
        return {"PartNumber": number, "ETag": result["ETag"], "ChecksumCRC32": checksum}

    try:
        futures: list[Future[dict[str, Any]]] = []
        hashed: list[Future[None]] = []
        # Three stages on their own threads: reading, the whole-stream SHA-256 (one thread: in order), uploads.
        with ThreadPoolExecutor(in_flight) as pool, ThreadPoolExecutor(1) as hasher:
            for number, data in enumerate(_from_source(src, src_uri, _read_parts(src.s3, src_uri, plan.part_size)),
                                          start=1):
                futures.append(pool.submit(send, number, data))
                hashed.append(hasher.submit(whole.update, data))
                copied += len(data)
                del data
                # Bound memory: at most in_flight parts wait in this process, to be sent or hashed.
                while sum(not f.done() for f in futures) >= in_flight:
                    next(f for f in futures if not f.done()).result()
                while sum(not f.done() for f in hashed) >= in_flight:
                    next(f for f in hashed if not f.done()).result()
            parts = [f.result() for f in futures]
            for f in hashed:
                f.result()
        if whole.hexdigest() != sha256 or copied != size:
            raise SourceDamaged(f"{src.name}:{src_uri} does not hash to the recorded sha256")
        done = dst.s3.complete_multipart_upload(Bucket=dst_uri.bucket, Key=dst_uri.key, UploadId=upload_id,
                                                MultipartUpload={"Parts": parts})
    except BaseException:
        _abort(dst.s3, dst_uri, upload_id)
        raise
    crcs = b"".join(base64.b64decode(p["ChecksumCRC32"]) for p in parts)
    composite = base64.b64encode(zlib.crc32(crcs).to_bytes(4, "big")).decode() + f"-{len(parts)}"
    if done.get("ChecksumCRC32") not in (None, composite):
        if not (src.same_server(dst) and src_uri == dst_uri):
            _remove_bad_copy(dst.s3, dst_uri)
        raise CopyNotVerified(f"{dst.name}:{dst_uri} holds checksum {done.get('ChecksumCRC32')}, sent {composite}")
    return "s3-checksum"


def set_storage_class(place: Place, uri: S3Uri, sha256: str, size: int, storage_class: str) -> str:
    """Change a verified copy's storage class in place (a copy onto itself)."""
    return copy_verified(place, uri, place, uri, sha256=sha256, size=size, storage_class=storage_class)


def apply_retention(s3: Any, uri: S3Uri, retain_until: datetime | None, mode: str) -> None:
    """Object Lock retention on the latest version: only ever extended. Legal holds are storage/legalhold.py's."""
    if retain_until is None or retain_until <= datetime.now(UTC):  # S3 refuses a date in the past
        return
    current = None
    try:
        current = s3.get_object_retention(Bucket=uri.bucket, Key=uri.key).get("Retention")
    except ClientError as err:
        if _code(err) not in ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError"):
            raise
    if not current or current.get("RetainUntilDate") is None or current["RetainUntilDate"] < retain_until:
        s3.put_object_retention(Bucket=uri.bucket, Key=uri.key,
                                Retention={"Mode": mode, "RetainUntilDate": retain_until})
