"""Copies between S3 locations that count only once verified, and Object Lock retention.

A copy is verified by the server's own SHA-256 where the server computes one (a single
CopyObject or PutObject with a SHA-256 checksum), by a one-pass stream (the source's bytes hashed
with SHA-256 as they are read, each part's CRC32 checked by the receiving server: every byte read
is the recorded content and every byte stored is a byte read), else by reading the copy back and
hashing it. A copy that does not verify is removed and the error raised: nothing downstream (a
move's delete of its source) runs on an unverified copy. Part sizes come from storage/parts.py.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from kubemam.storage.parts import SINGLE_COPY_LIMIT, PartPlan, plan_parts
from kubemam.storage.uri import S3Uri

log = logging.getLogger(__name__)

MiB = 1024 * 1024
READ_CHUNK = 8 * MiB
UPLOADS_IN_FLIGHT = 4
STREAM_BUFFER = 256 * MiB  # parts a streamed copy holds at once, in bytes (at least one part)
STREAM_PART = 16 * MiB  # small parts keep the pipeline full and its tail short (the planner grows them)
STREAM_UPLOADS = 8
SHA256_METADATA = "sha256"  # x-amz-meta-sha256: the hex digest this copy was verified against


class CopyNotVerified(RuntimeError):
    """The copy's bytes differ from what was expected; the copy was removed."""


class SourceDamaged(RuntimeError):
    """The source's bytes do not hash to what the archive recorded; try another source."""


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


def read_chunks(s3: Any, uri: S3Uri) -> Iterator[bytes]:
    body = s3.get_object(Bucket=uri.bucket, Key=uri.key)["Body"]
    try:
        while chunk := body.read(READ_CHUNK):
            yield chunk
    finally:
        body.close()


def hash_object(s3: Any, uri: S3Uri) -> tuple[str, int] | None:
    """(sha256 hex, size) of the object's bytes as stored, or None when it does not exist."""
    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in read_chunks(s3, uri):
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
    except ClientError as err:  # a locked version stays; the next run overwrites it with a good one
        log.warning("could not remove the unverified copy %s: %s", uri, err)


def put_verified(dst: Place, uri: S3Uri, body: bytes, storage_class: str, content_type: str) -> str:
    """Write small content with its SHA-256: the server refuses bytes that do not match it."""
    sha = hashlib.sha256(body).hexdigest()
    dst.s3.put_object(Bucket=uri.bucket, Key=uri.key, Body=body, ContentType=content_type,
                      StorageClass=storage_class, ChecksumSHA256=b64_sha256(sha),
                      Metadata={SHA256_METADATA: sha})
    return "s3-checksum"


def copy_verified(src: Place, src_uri: S3Uri, dst: Place, dst_uri: S3Uri, *, sha256: str, size: int,
                  storage_class: str, multipart_copy_above: int = SINGLE_COPY_LIMIT) -> str:
    """Copy one object and verify the copy is sha256; returns how it was verified.

    Same server: server-side CopyObject with a SHA-256 checksum the server computes (≤ 5 GiB),
    else a parallel multipart copy verified by reading it back. Another server: streamed through
    this process as a multipart upload with per-part SHA-256 checksums the server checks.
    """
    if src.same_server(dst):
        if size <= multipart_copy_above:
            # Tags are not copied: kubemam's legal-hold mark belongs to the version it was set on.
            dst.s3.copy_object(Bucket=dst_uri.bucket, Key=dst_uri.key,
                               CopySource={"Bucket": src_uri.bucket, "Key": src_uri.key},
                               StorageClass=storage_class, MetadataDirective="REPLACE",
                               Metadata={SHA256_METADATA: sha256}, ChecksumAlgorithm="SHA256",
                               TaggingDirective="REPLACE")
            stored = head(dst.s3, dst_uri, checksum=True) or {}
            server_sum = full_object_checksum(stored)
            if server_sum is not None:
                if server_sum != b64_sha256(sha256):
                    if src_uri != dst_uri:  # an in-place class change never deletes its only source
                        _remove_bad_copy(dst.s3, dst_uri)
                    raise SourceDamaged(f"{src.name}:{src_uri} does not hash to the recorded sha256")
                return "s3-checksum"
        else:
            _multipart_copy(src, src_uri, dst, dst_uri, size, sha256, storage_class)
        return _read_back(dst, dst_uri, sha256, size, remove=src_uri != dst_uri)
    return _stream_copy(src, src_uri, dst, dst_uri, sha256=sha256, size=size, storage_class=storage_class)


def _read_back(dst: Place, uri: S3Uri, sha256: str, size: int, remove: bool) -> str:
    found = hash_object(dst.s3, uri)
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


def _multipart_copy(src: Place, src_uri: S3Uri, dst: Place, dst_uri: S3Uri, size: int, sha256: str,
                    storage_class: str) -> None:
    _copy_parts(dst.s3, src_uri, dst_uri, plan_parts(size),
                {"StorageClass": storage_class, "Metadata": {SHA256_METADATA: sha256}})


def _copy_parts(s3: Any, src_uri: S3Uri, dst_uri: S3Uri, plan: PartPlan, create: dict[str, Any]) -> None:
    upload_id = s3.create_multipart_upload(Bucket=dst_uri.bucket, Key=dst_uri.key, **create)["UploadId"]

    def part(number: int, first: int, last: int) -> dict[str, Any]:
        result = s3.upload_part_copy(Bucket=dst_uri.bucket, Key=dst_uri.key, UploadId=upload_id,
                                     PartNumber=number, CopySource={"Bucket": src_uri.bucket, "Key": src_uri.key},
                                     CopySourceRange=f"bytes={first}-{last}")
        return {"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]}

    try:
        with ThreadPoolExecutor(UPLOADS_IN_FLIGHT) as pool:
            futures = [pool.submit(part, n, a, b) for n, (a, b) in enumerate(plan.ranges(), start=1)]
            parts = [f.result() for f in futures]
        s3.complete_multipart_upload(Bucket=dst_uri.bucket, Key=dst_uri.key, UploadId=upload_id,
                                     MultipartUpload={"Parts": parts})
    except BaseException:
        _abort(s3, dst_uri, upload_id)
        raise


def _abort(s3: Any, uri: S3Uri, upload_id: str) -> None:
    try:
        s3.abort_multipart_upload(Bucket=uri.bucket, Key=uri.key, UploadId=upload_id)
    except Exception as err:  # the server may be the thing that is down; it expires stale uploads itself
        log.warning("could not abort upload %s of %s: %s", upload_id, uri, err)


def _read_parts(s3: Any, uri: S3Uri, part_size: int) -> Iterator[bytes]:
    """The object in part_size parts (the last may be shorter), each read in pieces that never straddle two
    parts and joined once: one copy of every byte, not a re-cut buffer's several."""
    body = s3.get_object(Bucket=uri.bucket, Key=uri.key)["Body"]
    try:
        while True:
            pieces, held = [], 0
            while held < part_size and (piece := body.read(min(READ_CHUNK, part_size - held))):
                pieces.append(piece)
                held += len(piece)
            if not pieces:
                return
            yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if held < part_size:
                return
    finally:
        body.close()


def _crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _stream_copy(src: Place, src_uri: S3Uri, dst: Place, dst_uri: S3Uri, *, sha256: str, size: int,
                 storage_class: str) -> str:
    """Read from one server, write to another, in one pass over the bytes: the reading thread hashes the
    whole stream with SHA-256 (the source is what was recorded), each part carries a CRC32 the receiving
    server checks (what it stored is what was read). A part in memory at a time per upload in flight,
    within STREAM_BUFFER."""
    plan = plan_parts(size, preferred=STREAM_PART)
    if size <= plan.part_size:
        body = b"".join(read_chunks(src.s3, src_uri))
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
            for number, data in enumerate(_read_parts(src.s3, src_uri, plan.part_size), start=1):
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
