"""Copies between S3 locations that count only once verified, and Object Lock retention.

A copy is verified by the server's own SHA-256 where the server computes one (a single
CopyObject or PutObject with a SHA-256 checksum, or per-part checksums of a multipart upload),
else by reading the copy back and hashing it. A copy that does not verify is removed and the
error raised: nothing downstream (a move's delete of its source) runs on an unverified copy.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from kubemam.storage.uri import S3Uri

log = logging.getLogger(__name__)

MiB = 1024 * 1024
PART_SIZE = 64 * MiB
SINGLE_COPY_LIMIT = 5 * 1024 * MiB  # S3's limit for one CopyObject
READ_CHUNK = 8 * MiB
UPLOADS_IN_FLIGHT = 4
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


def _ranges(size: int) -> list[tuple[int, int]]:
    return [(start, min(start + PART_SIZE, size) - 1) for start in range(0, max(size, 1), PART_SIZE)]


def _multipart_copy(src: Place, src_uri: S3Uri, dst: Place, dst_uri: S3Uri, size: int, sha256: str,
                    storage_class: str) -> None:
    upload = dst.s3.create_multipart_upload(Bucket=dst_uri.bucket, Key=dst_uri.key, StorageClass=storage_class,
                                            Metadata={SHA256_METADATA: sha256})
    upload_id = upload["UploadId"]

    def part(number: int, first: int, last: int) -> dict[str, Any]:
        result = dst.s3.upload_part_copy(Bucket=dst_uri.bucket, Key=dst_uri.key, UploadId=upload_id,
                                         PartNumber=number, CopySource={"Bucket": src_uri.bucket, "Key": src_uri.key},
                                         CopySourceRange=f"bytes={first}-{last}")
        return {"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]}

    try:
        with ThreadPoolExecutor(UPLOADS_IN_FLIGHT) as pool:
            futures = [pool.submit(part, n, a, b) for n, (a, b) in enumerate(_ranges(size), start=1)]
            parts = [f.result() for f in futures]
        dst.s3.complete_multipart_upload(Bucket=dst_uri.bucket, Key=dst_uri.key, UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
    except BaseException:
        _abort(dst, dst_uri, upload_id)
        raise


def _abort(dst: Place, uri: S3Uri, upload_id: str) -> None:
    try:
        dst.s3.abort_multipart_upload(Bucket=uri.bucket, Key=uri.key, UploadId=upload_id)
    except Exception as err:  # the server may be the thing that is down; it expires stale uploads itself
        log.warning("could not abort upload %s of %s: %s", upload_id, uri, err)


def _parts(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Re-cut a stream of chunks into PART_SIZE parts (the last may be shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= PART_SIZE:
            yield bytes(buffer[:PART_SIZE])
            del buffer[:PART_SIZE]
    if buffer:
        yield bytes(buffer)


def _stream_copy(src: Place, src_uri: S3Uri, dst: Place, dst_uri: S3Uri, *, sha256: str, size: int,
                 storage_class: str) -> str:
    """Read from one server, write to another; the source is hashed on the way, each part checksummed."""
    if size <= PART_SIZE:
        body = b"".join(read_chunks(src.s3, src_uri))
        if hashlib.sha256(body).hexdigest() != sha256 or len(body) != size:
            raise SourceDamaged(f"{src.name}:{src_uri} does not hash to the recorded sha256")
        dst.s3.put_object(Bucket=dst_uri.bucket, Key=dst_uri.key, Body=body, StorageClass=storage_class,
                          ChecksumSHA256=b64_sha256(sha256), Metadata={SHA256_METADATA: sha256})
        return "s3-checksum"
    upload = dst.s3.create_multipart_upload(Bucket=dst_uri.bucket, Key=dst_uri.key, StorageClass=storage_class,
                                            ChecksumAlgorithm="SHA256", Metadata={SHA256_METADATA: sha256})
    upload_id = upload["UploadId"]
    whole = hashlib.sha256()
    copied = 0

    def send(number: int, data: bytes) -> tuple[dict[str, Any], bytes]:
        # Hashed here, on the upload thread, while the reading thread hashes the whole stream:
        # hashlib releases the GIL, so the two digests of each byte run on two cores.
        digest = hashlib.sha256(data).digest()
        checksum = base64.b64encode(digest).decode()
        result = dst.s3.upload_part(Bucket=dst_uri.bucket, Key=dst_uri.key, UploadId=upload_id, PartNumber=number,
                                    Body=data, ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum)
        return {"PartNumber": number, "ETag": result["ETag"], "ChecksumSHA256": checksum}, digest

    try:
        futures: list[Future[tuple[dict[str, Any], bytes]]] = []
        with ThreadPoolExecutor(UPLOADS_IN_FLIGHT) as pool:
            for number, data in enumerate(_parts(read_chunks(src.s3, src_uri)), start=1):
                futures.append(pool.submit(send, number, data))
                whole.update(data)
                copied += len(data)
                # Bound memory: at most UPLOADS_IN_FLIGHT parts wait in this process.
                while sum(not f.done() for f in futures) >= UPLOADS_IN_FLIGHT:
                    next(f for f in futures if not f.done()).result()
            sent = [f.result() for f in futures]
        parts = [part for part, _ in sent]
        part_digests = [digest for _, digest in sent]
        if whole.hexdigest() != sha256 or copied != size:
            raise SourceDamaged(f"{src.name}:{src_uri} does not hash to the recorded sha256")
        done = dst.s3.complete_multipart_upload(Bucket=dst_uri.bucket, Key=dst_uri.key, UploadId=upload_id,
                                                MultipartUpload={"Parts": parts})
    except BaseException:
        _abort(dst, dst_uri, upload_id)
        raise
    composite = base64.b64encode(hashlib.sha256(b"".join(part_digests)).digest()).decode() + f"-{len(parts)}"
    if done.get("ChecksumSHA256") not in (None, composite):
        if not (src.same_server(dst) and src_uri == dst_uri):
            _remove_bad_copy(dst.s3, dst_uri)
        raise CopyNotVerified(f"{dst.name}:{dst_uri} holds checksum {done.get('ChecksumSHA256')}, sent {composite}")
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
