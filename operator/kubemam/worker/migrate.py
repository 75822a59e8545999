"""`kubemam worker migrate`: write a preservation master for a master in a format at risk.

Input: source (s3:// or https:// URI of the master), sha256 (optional, the master's expected checksum),
output (s3:// prefix) and target ("ffv1-mkv"). The master is fetched and checked, encoded to FFV1 in
Matroska, and decoded again: only when every video frame and audio block hashes the same as the
original's are master.mkv and both framemd5 files committed under output with a manifest. A copy
that is not lossless fails the step for good and commits nothing; a re-run whose manifest verifies
only repeats its result.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubemam import __version__
from kubemam.media.preserve import PreservationError, encode_ffv1, verify_lossless
from kubemam.media.probe import ProbeError, probe
from kubemam.media.progress import FfmpegProgress, progress_line
from kubemam.redact import redact_url
from kubemam.storage.manifest import sha256_file
from kubemam.storage.s3 import commit, make_client, read_committed, wait_until_reachable
from kubemam.storage.uri import S3Uri, S3UriError
from kubemam.worker.contract import StepError, digest, step_input, write_result
from kubemam.worker.source import TruncatedDownload, fetch_master

log = logging.getLogger("kubemam.worker.migrate")

TARGETS = ("ffv1-mkv",)
MASTER_KEY = "master.mkv"
SOURCE_HASHES_KEY = "source.framemd5"
MASTER_HASHES_KEY = "master.framemd5"


def _inputs() -> tuple[dict[str, Any], str, str | None, S3Uri]:
    inputs = step_input()
    source, expected, target = inputs.get("source"), inputs.get("sha256"), inputs.get("target", "ffv1-mkv")
    if not isinstance(source, str) or not isinstance(inputs.get("output"), str):
        raise StepError("migrate input needs source (a URI) and output (an s3:// prefix)")
    if target not in TARGETS:
        raise StepError(f"migrate target {target!r} is not one of {', '.join(TARGETS)}")
    if expected is not None and not (isinstance(expected, str) and re.fullmatch(r"[0-9a-f]{64}", expected)):
        raise StepError(f"migrate input sha256 {expected!r} is not 64 lowercase hex digits")
    try:
        output = S3Uri.parse(inputs["output"])
    except S3UriError as err:
        raise StepError(f"migrate output: {err}") from err
    return inputs, source, expected, output


def _progress(start: int, end: int, duration: float | None) -> Callable[[FfmpegProgress], None]:
    """A report callback mapping one ffmpeg run's position onto [start, end] percent of the step."""
    def report(update: FfmpegProgress) -> None:
        share = min(1.0, update.out_seconds / duration) if duration else 0.0
        eta = int((duration - update.out_seconds) / update.speed) if update.speed and duration else None
        print(progress_line("migrate", start + int(share * (end - start)), update.fps, eta), flush=True)
    return report


def run() -> int:
    inputs, source, expected, prefix = _inputs()
    input_digest = digest(inputs)
    s3 = make_client()
    retry_seconds = float(os.environ.get("KUBEMAM_S3_RETRY_SECONDS") or 60)
    buckets = {prefix.bucket} | ({S3Uri.parse(source).bucket} if source.startswith("s3://") else set())
    for bucket in sorted(buckets):
        wait_until_reachable(s3, bucket, retry_seconds)

    done = read_committed(s3, prefix, input_digest)
    if done is not None:
        log.info("already migrated: %s verifies; nothing to do", prefix.join("manifest.json"))
        write_result(done.result)
        return 0

    out_dir, master, fetched = fetch_master(source, s3)
    sha256 = fetched.sha256
    if expected is not None and sha256 != expected:
        message = f"source {redact_url(source)} has sha256 {sha256}, the input expects {expected}"
        if not fetched.complete:  # no declared length: it may be short, not changed
            raise TruncatedDownload(f"{message}; the server declared no length, so the download may be short")
        raise StepError(message)
    log.info("fetched %s: %d bytes, sha256 %s", redact_url(source), master.stat().st_size, sha256)
    try:
        info = probe(master)
    except ProbeError as err:
        raise StepError(f"{redact_url(source)} is not a usable master: {err}") from err
    duration = float((info.get("format") or {}).get("duration") or 0) or None

    preserved = out_dir / MASTER_KEY
    # Encoding is most of the work; verifying decodes the master and the FFV1 copy once more each.
    encode_ffv1(master, preserved, info, report=_progress(0, 60, duration))
    print(progress_line("migrate", 60), flush=True)
    try:
        frames = verify_lossless(master, preserved, out_dir / SOURCE_HASHES_KEY, out_dir / MASTER_HASHES_KEY, info)
    except PreservationError as err:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise StepError(f"the FFV1 copy of {redact_url(source)} is not lossless, nothing was committed: {err}") from err
    log.info("verified lossless: %s", ", ".join(f"{label} {count}" for label, count in frames.items()))
    print(progress_line("migrate", 90), flush=True)

    mkv_sha256, size = sha256_file(preserved)
    result = {"preservationMaster": {"uri": str(prefix.join(MASTER_KEY)), "sha256": mkv_sha256, "size": size,
                                     "frames": frames["v:0"], "verified": True, "codec": "ffv1"},
              "manifest": str(prefix.join("manifest.json"))}
    manifest = commit(s3, out_dir, prefix, step="migrate", input_hash=input_digest, worker_version=__version__,
                      now=datetime.now(UTC), result=result)
    log.info("committed %d objects with %s", len(manifest.objects), prefix.join("manifest.json"))
    print(progress_line("migrate", 100), flush=True)
    write_result(manifest.result)
    master.unlink(missing_ok=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    return 0
