"""Tier-move benchmark: `kubemam worker archive` moving a 1 GiB master, against plain boto3 in the same run.

Two real MinIO servers (two sites). Measured, best of --runs each, interleaved:
  same site   — the worker's place run library -> nearline (the copy at library written in parts by an
                earlier archive run: the same parts copied server-side, the copy's ETag compared with the
                source's, `s3-etag`) vs boto3's managed `s3.copy` of the same object (no verification);
  cross site  — the worker's place run library (site A) -> vault (site B), streamed in one pass: the
                source hashed with SHA-256 as it is read, each part's CRC32 checked by site B, vs a
                plain boto3 `upload_fileobj` of the `get_object` stream.
The worker is timed as a whole process (Python start-up, probes, location manifest included).
Prints MB/s for each and the ratio worker/boto3 (1.00 = as fast as the unverified copy).
--compare DIR also times the worker from another copy of the kubemam package (DIR/kubemam, e.g. an
earlier version), interleaved in the same run, so before/after share the machine's load.

Usage: .venv/bin/python bench/tier_move.py [--size-mib 1024] [--runs 2] [--compare DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubemam.storage.s3 import upload_file
from kubemam.storage.transfer import Place, copy_verified
from kubemam.storage.uri import S3Uri
from kubemam_local.minio import MinioServer

MiB = 1024 * 1024
SEED = "seed/master.mxf"


def _source(path: Path, size: int) -> str:
    """size bytes of incompressible data on disk (written in 64 MiB blocks) and its sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(64 * MiB, left))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


VERIFIED_BY: dict[str, set[str]] = {}  # tier -> how the worker said its copies were verified


def _worker(a: MinioServer, b: MinioServer, inputs: dict[str, Any], workdir: Path, code: str | None = None
            ) -> float:
    path = {"PYTHONPATH": os.pathsep.join(filter(None, [code, os.environ.get("PYTHONPATH")]))} if code else {}
    env = {**os.environ, **path, "AWS_ENDPOINT_URL": a.endpoint, "AWS_ACCESS_KEY_ID": a.access_key,
           "AWS_SECRET_ACCESS_KEY": a.secret_key, "SITE_B_ACCESS_KEY_ID": b.access_key,
           "SITE_B_SECRET_ACCESS_KEY": b.secret_key, "KUBEMAM_STEP_INPUT": json.dumps(inputs),
           "KUBEMAM_TERMINATION_MESSAGE_PATH": str(workdir / "termination-log"), "TMPDIR": str(workdir)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kubemam", "worker", "archive"], env=env, capture_output=True,
                          text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"worker failed: {done.stderr[-2000:]}")
    result = json.loads((workdir / "termination-log").read_text())
    VERIFIED_BY.setdefault(inputs["tier"], set()).update(c["verifiedBy"] for c in result.get("copies", []))
    return elapsed


def _move_inputs(b: MinioServer, sha: str, size: int, to: str, run: int) -> dict[str, Any]:
    prefix = f"bench/{run}"
    locations = [
        {"name": "library", "uri": f"s3://library/{prefix}"},
        {"name": "nearline", "uri": f"s3://nearline/{prefix}"},
        {"name": "vault", "uri": f"s3://vault/{prefix}", "endpoint": b.endpoint, "credentials": "SITE_B"},
    ]
    return {"mode": "place", "tier": to, "locations": locations,
            "objects": [{"key": "master.mxf", "sha256": sha, "size": size, "lock": True}],
            "targets": [{"location": to, "storage_class": "STANDARD", "primary": True}],
            "vacate": [name for name in ("library", "nearline", "vault") if name != to]}


def _seed(a: MinioServer, run: int, sha: str, size: int) -> None:
    """A verified copy at library, as an earlier archive run leaves it, for the worker to move (not timed)."""
    place = Place("library", a.client(), "a")
    copy_verified(place, S3Uri("library", SEED), place, S3Uri("library", f"bench/{run}/master.mxf"), sha256=sha,
                  size=size, storage_class="STANDARD")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--compare", help="a directory holding another kubemam package to time as well")
    args = parser.parse_args()
    size = args.size_mib * MiB
    with tempfile.TemporaryDirectory(prefix="kubemam-bench-") as tmp, \
            MinioServer(buckets=["library", "nearline"], workdir=Path(tmp) / "a") as a, \
            MinioServer(buckets=["vault"], workdir=Path(tmp) / "b") as b:
        work = Path(tmp)
        source = work / "master.bin"
        sha = _source(source, size)
        kinds = ["worker", "boto3"] + (["compare"] if args.compare else [])
        results: dict[str, list[float]] = {f"{k}-{site}": [] for k in kinds for site in ("same", "cross")}
        s3a, s3b = a.client(), b.client()
        upload_file(s3a, source, S3Uri("library", SEED), size)  # as ingest uploads a master
        run = 0
        for _ in range(args.runs):
            if args.compare:
                run += 1
                _seed(a, run, sha, size)
                results["compare-same"].append(_worker(a, b, _move_inputs(b, sha, size, "nearline", run), work,
                                                       args.compare))
                run += 1
                _seed(a, run, sha, size)
                results["compare-cross"].append(_worker(a, b, _move_inputs(b, sha, size, "vault", run), work,
                                                        args.compare))
            run += 1
            _seed(a, run, sha, size)
            results["worker-same"].append(_worker(a, b, _move_inputs(b, sha, size, "nearline", run), work))
            started = time.perf_counter()
            s3a.copy({"Bucket": "library", "Key": SEED}, "nearline", f"plain/{run}/master.mxf")
            results["boto3-same"].append(time.perf_counter() - started)

            run += 1
            _seed(a, run, sha, size)
            results["worker-cross"].append(_worker(a, b, _move_inputs(b, sha, size, "vault", run), work))
            started = time.perf_counter()
            s3b.upload_fileobj(s3a.get_object(Bucket="library", Key=SEED)["Body"], "vault", f"plain/{run}/master.mxf")
            results["boto3-cross"].append(time.perf_counter() - started)
        best = {k: min(v) for k, v in results.items()}
        mb = size / 1e6
        print(f"tier move of {args.size_mib} MiB, best of {args.runs}; verified by: "
              f"same site {sorted(VERIFIED_BY['nearline'])}, cross site {sorted(VERIFIED_BY['vault'])}")
        for kind in ("same", "cross"):
            worker, plain = best[f"worker-{kind}"], best[f"boto3-{kind}"]
            print(f"  {kind:5} site: worker {worker:6.2f} s ({mb / worker:7.1f} MB/s)  boto3 {plain:6.2f} s "
                  f"({mb / plain:7.1f} MB/s)  ratio worker/boto3 time = {worker / plain:.3f}")
            pairs = " ".join(f"{w:.2f}/{p:.2f}" for w, p in zip(results[f"worker-{kind}"], results[f"boto3-{kind}"],
                                                                 strict=True))
            print(f"  {kind:5} site: every run, worker/boto3 s: {pairs}")
            if args.compare:
                other = best[f"compare-{kind}"]
                print(f"  {kind:5} site: --compare worker {other:6.2f} s  ratio compare/boto3 time = "
                      f"{other / plain:.3f}")


if __name__ == "__main__":
    main()
