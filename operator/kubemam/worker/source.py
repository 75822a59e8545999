"""Bring a step's master to local scratch: streamed in chunks, hashed on the way, never whole in memory.

A download is only ever accepted whole. HTTP(S): the bytes received are compared with Content-Length, a
premature end (clean EOF, reset, an incomplete chunked body) is a transient error — an ordinary exception,
so the worker exits 1 and the step is retried — never a partial master. S3: botocore checks the length
itself (IncompleteReadError, transient too). A declared checksum that differs is permanent (StepError)
only for a download known to be complete; a body without a declared length cannot be told from a short one,
so a mismatch there is retried as well.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubemam.api.asset import Checksum
from kubemam.redact import redact_url
from kubemam.storage.uri import S3Uri
from kubemam.worker.contract import StepError

# Each read of a body or a file holds this much (http.client builds it once more while joining): 1 MiB
# streams at the same speed as 8 MiB, and two downloads at once (package) no longer add 32 MiB to the peak.
CHUNK = 1024 * 1024
HTTP_TIMEOUT = 60.0  # per socket operation: a stalled server fails the attempt instead of hanging it


class TruncatedDownload(OSError):
    """The source ended before its declared length: a transient fault (the step is retried)."""


@dataclass(frozen=True)
class Fetched:
    sha256: str
    size: int
    complete: bool  # the length was declared (or verified by the transport) and every byte arrived
    md5: str | None = None  # when asked for: hashed in the same pass, not by reading the master again
    etag: str | None = None  # S3: the ETag of the GET whose bytes were hashed — the version they belong to


VERIFIED = -1  # no length to compare with, but the transport checks completeness (chunked framing, botocore)


def _http_chunks(uri: str) -> tuple[Iterator[bytes], int | None]:
    """The body in chunks and its expected length (VERIFIED, or None when nothing can tell a short body)."""
    try:
        response = urllib.request.urlopen(uri, timeout=HTTP_TIMEOUT)  # noqa: S310 - the caller checked the scheme
    except (ValueError, http.client.InvalidURL) as err:  # its text quotes the URL, signature and all
        raise StepError(f"source {redact_url(uri)} is not a URL that can be fetched ({type(err).__name__}: "
                        "a space or control character?)") from None
    except urllib.error.HTTPError as err:
        if 400 <= err.code < 500 and err.code not in (408, 425, 429):
            raise StepError(f"source {redact_url(uri)} answered HTTP {err.code} {err.reason}") from err
        raise  # 5xx, throttling: transient
    declared = response.headers.get("Content-Length")
    if "chunked" in (response.headers.get("Transfer-Encoding") or "").lower():
        expected: int | None = VERIFIED  # an incomplete chunked body raises IncompleteRead
    else:
        expected = int(declared) if declared and declared.isdigit() else None

    def chunks() -> Iterator[bytes]:
        with response:
            while True:
                # At a premature clean EOF of a Content-Length body http.client returns b"" instead of
                # raising: the byte count in fetch_checked is what catches it.
                chunk = response.read(CHUNK)
                if not chunk:
                    return
                yield chunk

    return chunks(), expected


def fetch_checked(uri: str, target: Path, s3: Any, md5: bool = False) -> Fetched:
    """Download the source to target, whole or not at all (TruncatedDownload); every digest in one pass."""
    sha = hashlib.sha256()
    md5_digest = hashlib.md5(usedforsecurity=False) if md5 else None
    expected: int | None
    if uri.startswith("s3://"):
        source = S3Uri.parse(uri)
        try:
            response = s3.get_object(Bucket=source.bucket, Key=source.key)
        except s3.exceptions.NoSuchKey as err:
            raise StepError(f"source {redact_url(uri)} does not exist") from err
        body = response["Body"]
        chunks: Iterator[bytes] = iter(lambda: body.read(CHUNK), b"")
        length = response.get("ContentLength")
        expected = int(length) if length is not None else VERIFIED
        # This response's ETag, not a separate HEAD's: an overwrite between the two would pair new bytes' ETag
        # with the old bytes' hash.
        etag = str(response["ETag"]).strip('"') if response.get("ETag") else None
    elif uri.startswith(("https://", "http://")):
        chunks, expected = _http_chunks(uri)
        etag = None
    else:
        raise StepError(f"unsupported source scheme in {redact_url(uri)}")
    size = 0
    with open(target, "wb") as out:
        for chunk in chunks:
            sha.update(chunk)
            if md5_digest is not None:
                md5_digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    if expected is not None and expected >= 0 and size != expected:
        target.unlink(missing_ok=True)
        raise TruncatedDownload(f"source {redact_url(uri)} ended after {size} of {expected} bytes; it is fetched again")
    return Fetched(sha.hexdigest(), size, complete=expected is not None,
                   md5=md5_digest.hexdigest() if md5_digest is not None else None, etag=etag)


def fetch(uri: str, target: Path, s3: Any) -> str:
    """Download the source to target; returns its sha256."""
    return fetch_checked(uri, target, s3).sha256


def check_checksum(expected: Checksum | None, path: Path, fetched: Fetched | str) -> None:
    if expected is None:
        return
    sha256 = fetched if isinstance(fetched, str) else fetched.sha256
    actual = sha256
    if expected.algorithm == "md5":
        actual = fetched.md5 if isinstance(fetched, Fetched) and fetched.md5 else _md5(path)
    if actual != expected.value:
        message = f"source {expected.algorithm} is {actual}, the asset declares {expected.value}"
        if isinstance(fetched, Fetched) and not fetched.complete:
            # No declared length: a short body looks like a whole one. Retried, not final.
            raise TruncatedDownload(f"{message}; the server declared no length, so the download may be short")
        raise StepError(message)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as data:
        for chunk in iter(lambda: data.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_master(uri: str, s3: Any, checksum: Checksum | None = None) -> tuple[Path, Path, Fetched]:
    """A fresh output folder and the master fetched beside it in the step's scratch: (out_dir, master, fetched).
    With a declared checksum, a master that differs is refused here (permanent only when it arrived whole)."""
    from kubemam.worker.contract import work_dir

    scratch = work_dir()
    out_dir = scratch / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    master = scratch / "master"
    fetched = fetch_checked(uri, master, s3, md5=checksum is not None and checksum.algorithm == "md5")
    check_checksum(checksum, master, fetched)
    return out_dir, master, fetched
