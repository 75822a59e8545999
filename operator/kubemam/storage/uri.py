"""s3:// URIs: parse, join, and name the places a step writes to."""

from __future__ import annotations

import re
from dataclasses import dataclass

# S3 bucket naming rules (the subset every S3 implementation accepts).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class S3UriError(ValueError):
    pass


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not uri.startswith("s3://"):
            raise S3UriError(f"{uri!r} is not an s3:// URI")
        bucket, _, key = uri[len("s3://"):].partition("/")
        if not _BUCKET.match(bucket):
            raise S3UriError(f"{uri!r}: {bucket!r} is not a valid bucket name")
        if ".." in key.split("/"):
            raise S3UriError(f"{uri!r}: '..' is not allowed in a key")
        return cls(bucket, key)

    def join(self, *parts: str) -> S3Uri:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        return S3Uri(self.bucket, key)

    @property
    def prefix(self) -> str:
        """The key as a prefix that lists only what is below it."""
        return self.key.rstrip("/") + "/" if self.key else ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"
