"""Large-master benchmark: part plans up to 5 TiB, and one real commit and copy of an object over 5 GiB.

  parts  — the multipart plan (storage/parts.py) for objects from 1 GiB to 5 TiB against the former fixed
           64 MiB parts: S3 takes at most 10,000 parts of 5 MiB to 5 GiB.
  commit — a --size-gib object (default 5.1: over CopyObject's 5 GiB) committed to a real MinIO the way
           the migrate step commits (staged upload, then a server-side copy to the final key, which takes
           UploadPartCopy parts above 5 GiB, then the manifest), then copied to another bucket as the archive
           does on one server (part copies, then read back and hashed). Each phase is timed; the process's
           peak RSS says what it held. The object is a sparse file of zeros (no disk for the source); MinIO
           holds up to three copies while it runs, all deleted at the end — mind `df -h`.

Usage: .venv/bin/python bench/large.py [--size-gib 5.1] [--skip-commit]
Timings are wall clock on a shared machine: compare phases within one run, not across runs.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from kubemam.storage.parts import PREFERRED_PART, GiB, MiB, TiB, plan_parts
from kubemam.storage.s3 import commit, list_objects
from kubemam.storage.transfer import Place, copy_verified
from kubemam.storage.uri import S3Uri
from kubemam_local.minio import MinioServer

SIZES = [("1 GiB", GiB), ("100 GiB", 100 * GiB), ("626 GiB", 626 * GiB), ("1 TiB", TiB), ("2 TiB", 2 * TiB),
         ("5 TiB", 5 * TiB)]


def parts() -> None:
    print("part plans (S3: ≤ 10,000 parts, 5 MiB–5 GiB each):")
    print(f"  {'object':>8}  {'fixed 64 MiB parts':>18}  {'planned part':>12}  {'parts':>6}")
    for label, size in SIZES:
        plan = plan_parts(size)
        fixed = -(-size // PREFERRED_PART)
        print(f"  {label:>8}  {fixed:>18,}{'!' if fixed > 10_000 else ' '}  {plan.part_size // MiB:>8} MiB  "
              f"{plan.count:>6,}")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def big_commit(size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="kubemam-large-") as tmp:
        work = Path(tmp)
        out = work / "out"
        out.mkdir()
        master = out / "master.mkv"
        with open(master, "wb") as handle:  # sparse: zeros that take no disk
            handle.truncate(size)
        digest = hashlib.sha256()
        with open(master, "rb") as handle:
            while block := handle.read(8 * MiB):
                digest.update(block)
        sha = digest.hexdigest()
        print(f"commit and copy of {size / GiB:.2f} GiB ({size:,} bytes; over CopyObject's 5 GiB: "
              f"{size > 5 * GiB}), {plan_parts(size).count} parts of {plan_parts(size).part_size // MiB} MiB:")
        with MinioServer(buckets=["kubemam-library", "kubemam-nearline"], workdir=work / "minio") as server:
            s3 = server.client()
            prefix = S3Uri("kubemam-library", "assets/large/preservation")
            started = time.perf_counter()
            manifest = commit(s3, out, prefix, step="migrate", input_hash="large", worker_version="bench",
                              now=datetime.now(UTC))
            committed = time.perf_counter() - started
            stored = dict(list_objects(s3, prefix))
            assert stored["master.mkv"] == size and manifest.objects[0].sha256 == sha, stored
            head = s3.head_object(Bucket=prefix.bucket, Key=prefix.join("master.mkv").key)
            print(f"  commit (staged upload + part copy + manifest): {committed:7.1f} s  "
                  f"({size / 1e6 / committed:6.1f} MB/s), ETag {head['ETag']}")
            master.unlink()
            place = Place("library", s3, "local")
            started = time.perf_counter()
            how = copy_verified(place, prefix.join("master.mkv"), place,
                                S3Uri("kubemam-nearline", "archive/large/master.mkv"), sha256=sha, size=size,
                                storage_class="STANDARD")
            copied = time.perf_counter() - started
            print(f"  archive copy on one server (part copies, then read back): {copied:7.1f} s  "
                  f"({size / 1e6 / copied:6.1f} MB/s), verified by {how}")
            print(f"  peak RSS of this process: {_peak_rss_mib():.0f} MiB")
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=5.1)
    parser.add_argument("--skip-commit", action="store_true", help="only the part plans (no MinIO, no disk)")
    args = parser.parse_args()
    parts()
    if not args.skip_commit:
        big_commit(int(args.size_gib * GiB))


if __name__ == "__main__":
    main()
