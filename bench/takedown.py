"""Takedown benchmark on the local cluster: N assets whose RightsWindows all close at the same second.

It prints p50/p99 of the time from the window end to verified removal (the origin listing holds
none of the asset's objects; goal: p99 <= 5 s at 100 assets), and, as the baseline measured in the
same run, the time a plain boto3 listing + batch delete of the same number of objects takes.

Each asset gets a small package (5 objects) and its own window; they are published when the
windows open and taken down when they close. The assets name a `file://` source the operator
does not fetch, so no ingest Jobs compete with the takedown for the node.

The catalogue mode (issue 13's distribution part) publishes `--published` titles in the namespace and
closes the windows of `--assets` of them at one second, licences covering `--titles-per-window`
titles each by label (a deal covers a season or a package, not one title): what is measured is one
namespace's rights reconcile and takedown among a large published catalogue (goal: p99 <= 5 s for
1,000 closing among 5,000 published).

--seeded writes the published titles directly (their Published records, their objects on the origin) and
then moves the closing windows' end to --open-seconds from then: the takedown measured alone, in minutes
instead of the publishing's quarter of an hour. Either way the run ends with where the seconds after the
window end went, from the operator's log (the rights reconcile's gather, plan and act; the Job).

Usage: .venv/bin/python bench/takedown.py [--assets 100] [--open-seconds 40] [--seeded]
       .venv/bin/python bench/takedown.py --published 5000 --assets 1000 --titles-per-window 100 \
           --open-seconds 900
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import ClientError
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubemam import __version__
from kubemam.api.common import GROUP, VERSION
from kubemam.storage.s3 import commit
from kubemam.storage.uri import S3Uri
from kubemam_local import cluster
from kubemam_local.demo import DEMO_NAMESPACE, s3_client

ORIGIN = "kubemam-origin"
PACKAGE_FILES = {"manifest.mpd": b"<MPD/>", "master.m3u8": b"#EXTM3U\n", "v/init.mp4": b"\0" * 800,
                 "v/seg-00001.m4s": b"\1" * 20_000, "v/seg-00002.m4s": b"\2" * 20_000}


def kubectl(state: dict[str, Any], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run([f"{state['binDir']}/kubectl", f"--kubeconfig={state['kubeconfig']}", "-n",
                             DEMO_NAMESPACE, *args], input=stdin, capture_output=True, text=True, check=True)
    return result.stdout


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def remaining(s3: Any, assets: list[str]) -> set[str]:
    """Assets that still have objects on the origin: one listing of the target prefix, in key order, up to the
    last of `assets` (names sort as they were numbered), so watching 1,000 of 5,000 reads a fifth of it."""
    present: set[str] = set()
    last = max(assets)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=ORIGIN, Prefix=f"svod/{DEMO_NAMESPACE}/"):
        for item in page.get("Contents") or []:
            present.add(item["Key"].split("/")[2])
        if present and max(present) > last:
            break
    return present & set(assets)


def seeded_record(s3: Any, groups: dict[str, str], since: datetime) -> Callable[[str], dict[str, Any]]:
    """--seeded: a title as the rights controller leaves it once published (its package's objects on the
    origin, a Published record), so the run measures the takedown alone."""

    def record(name: str) -> dict[str, Any]:
        for key, body in PACKAGE_FILES.items():
            s3.put_object(Bucket=ORIGIN, Key=f"svod/{DEMO_NAMESPACE}/{name}/{key}", Body=body)
        return {"target": "svod-no", "window": f"w-{groups[name]}", "channel": "svod", "territories": ["NO"],
                "state": "Published", "since": stamp(since), "origin": f"s3://{ORIGIN}/svod/{DEMO_NAMESPACE}/{name}"}
    return record


QUIET_SECONDS = 15.0


def _logged_at(line: str) -> datetime | None:
    """When the operator logged a line ("[2026-12-01 01:32:27,597] …"), or None for a line without a time."""
    try:
        return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC)
    except ValueError:
        return None


def settle(state: dict[str, Any], titles: list[str], log: Path, timeout: float = 900.0) -> None:
    """Until the asset controller has written its Ready condition and the rights controller its Distributed
    condition on every seeded title (what it does once after publishing each), and then until no asset
    handler has run for QUIET_SECONDS (from the operator's log): the takedown then meets the catalogue as it
    stands after real publishes, not a burst of 5,000 creations still being worked through."""
    custom = client.CustomObjectsApi(config.new_client_from_config(state["kubeconfig"]))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, DEMO_NAMESPACE, "mediaassets",
                                                     _request_timeout=(5, 120))["items"]
        bare = [a for a in items if not {"Distributed", "Ready"} <= {
            c.get("type") for c in (a.get("status") or {}).get("conditions") or []}]
        if not bare and len(items) >= len(titles):
            break
        time.sleep(5)
    else:
        raise SystemExit("the operator did not settle the seeded titles in time")
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text(errors="replace").splitlines() if "Handler 'asset" in line]
        last = _logged_at(lines[-1]) if lines else None
        if last is None or (datetime.now(UTC) - last).total_seconds() >= QUIET_SECONDS:
            return
        time.sleep(2)
    raise SystemExit("the operator did not settle the seeded titles in time")


def phases(log: Path, end: datetime) -> None:
    """Where the seconds around the window end went: the rights reconciles (from a minute before) and Jobs the
    operator logged."""
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("[") or ("rights kubemam-demo:" not in line and "created Job" not in line):
            continue
        at = _logged_at(line)
        if at is not None and at >= end - timedelta(seconds=60):
            print(f"  {(at - end).total_seconds():+7.2f} s  {line[line.index(']', 25) + 1:].strip()[:150]}")


def baseline(s3: Any, count: int) -> float:
    """A plain boto3 listing and batch delete of as many objects as the assets hold."""
    keys = [f"baseline/{n}/{name}" for n in range(count) for name in PACKAGE_FILES]
    for key in keys:
        s3.put_object(Bucket=ORIGIN, Key=key, Body=b"x")
    started = time.perf_counter()
    listed = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=ORIGIN, Prefix="baseline/")
              for o in page.get("Contents") or []]
    for i in range(0, len(listed), 1000):
        s3.delete_objects(Bucket=ORIGIN, Delete={"Objects": [{"Key": k} for k in listed[i:i + 1000]]})
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=100, help="titles whose windows close at the same second")
    parser.add_argument("--published", type=int, default=0, help="titles published in all (default: --assets)")
    parser.add_argument("--titles-per-window", type=int, default=1, help="titles a window covers, by label")
    parser.add_argument("--open-seconds", type=int, default=40, help="how long the windows stay open")
    parser.add_argument("--seeded", action="store_true",
                        help="write the titles as published (records and origin objects) instead of publishing "
                             "them through the operator; --open-seconds then counts from when that is done")
    parser.add_argument("--keep-log", type=Path, help="copy the operator's log here at the end")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubemam-bench-") as tmp:
        state = cluster.up(Path(tmp))
        try:
            return run(state, args.assets, args.open_seconds, max(args.published, args.assets),
                       max(1, args.titles_per_window), args.seeded, Path(tmp) / "operator.log")
        finally:
            cluster.down(Path(tmp))
            if args.keep_log and (Path(tmp) / "operator.log").exists():
                shutil.copyfile(Path(tmp) / "operator.log", args.keep_log)


def _create_titles(state: dict[str, Any], titles: list[str], groups: dict[str, str],
                   published: Callable[[str], dict[str, Any]] | None = None) -> None:
    """The titles, each with its package in status (standing in for a finished package step): through the
    API with 16 client threads, as a GitOps sync of a large catalogue would apply them. `published`: the
    title's Published record too, in the same status write (its objects put on the origin first)."""
    api = config.new_client_from_config(state["kubeconfig"])
    custom = client.CustomObjectsApi(api)
    package = {"packages": [{"format": "dash", "manifestUri": "s3://kubemam-library/bench/package/manifest.mpd"}]}

    def create(name: str) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MediaAsset",
                "metadata": {"name": name, "labels": {"bench.kubemam.io/licence": groups[name]}},
                "spec": {"source": {"uri": f"file:///bench/{name}.mov"}, "metadata": {"title": name}}}
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, DEMO_NAMESPACE, "mediaassets", body,
                                                   _request_timeout=(5, 60))
        except ApiException as err:
            if err.status != 409:
                raise
        status = {**package, "distribution": [published(name)]} if published else package
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, DEMO_NAMESPACE, "mediaassets", name,
                                                     {"status": status}, _request_timeout=(5, 60))

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(create, titles))


def run(state: dict[str, Any], count: int, open_seconds: int, published: int = 0,
        titles_per_window: int = 1, seeded: bool = False, log: Path | None = None) -> int:
    s3 = s3_client(state)
    try:
        s3.create_bucket(Bucket=ORIGIN)
    except ClientError as err:  # the local cluster creates the origin bucket itself now; older ones did not
        if err.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    with tempfile.TemporaryDirectory() as folder:  # a committed package, as the package step leaves one
        for name, body in PACKAGE_FILES.items():
            (Path(folder) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(folder) / name).write_bytes(body)
        commit(s3, Path(folder), S3Uri.parse("s3://kubemam-library/bench/package"), step="package",
               input_hash="bench", worker_version=__version__, now=datetime.now(UTC))
    targets = [{"name": "svod-no", "channel": "svod", "origin": f"s3://{ORIGIN}/svod", "territories": ["NO"]}]
    kubectl(state, "create", "configmap", "kubemam-distribution",
            f"--from-literal=targets.yaml={yaml.safe_dump(targets)}")

    published = max(published, count)
    titles = [f"title-{n:05d}" for n in range(published)]
    assets = titles[:count]  # the ones whose windows close
    closing = set(assets)
    groups = {name: f"{'closing' if name in closing else 'staying'}-{n // titles_per_window:04d}"
              for n, name in enumerate(titles)}

    def windows_from(start: datetime, end: datetime) -> list[dict[str, Any]]:
        far = end + timedelta(days=365)
        return [{"apiVersion": "kubemam.io/v1alpha1", "kind": "RightsWindow", "metadata": {"name": f"w-{group}"},
                 "spec": {"assets": ({"names": [name for name in titles if groups[name] == group]}
                                     if titles_per_window == 1 else
                                     {"selector": {"matchLabels": {"bench.kubemam.io/licence": group}}}),
                          "territories": ["NO"], "channels": ["svod"], "start": stamp(start),
                          "end": stamp(end if group.startswith("closing") else far)}}
                for group in sorted(set(groups.values()))]

    made = time.monotonic()
    if seeded:
        # The windows first (open, ending in a year), then each title with its record in one status write:
        # never a licensed title without its record (the operator would publish it) or the reverse.
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        kubectl(state, "apply", "-f", "-", stdin=yaml.safe_dump_all(windows_from(start, start + timedelta(days=365))))
        _create_titles(state, titles, groups, seeded_record(s3, groups, start))
        settle(state, titles, log or Path("/dev/null"))
        end = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=open_seconds)
        windows = windows_from(start, end)
        kubectl(state, "apply", "-f", "-", stdin=yaml.safe_dump_all(windows))
        print(f"{published} titles created as published (their records in status, their objects on the origin) "
              f"and the operator settled in {time.monotonic() - made:.1f} s; the windows of {count} titles now end "
              f"{stamp(end)}")
    else:
        _create_titles(state, titles, groups)
        print(f"{published} titles created with their packages in status in {time.monotonic() - made:.1f} s")
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=15)
        end = start + timedelta(seconds=open_seconds)
        windows = windows_from(start, end)
        kubectl(state, "apply", "-f", "-", stdin=yaml.safe_dump_all(windows))
        print(f"{published} titles published by {len(windows)} windows, {len(PACKAGE_FILES)} objects each; "
              f"windows open {stamp(start)}; those of {count} titles close {stamp(end)}")

    deadline = time.time() + (end - datetime.now(UTC)).total_seconds() - 2
    while time.time() < deadline and remaining(s3, titles) != set(titles):
        time.sleep(0.5)
    on_origin = remaining(s3, titles)
    if not seeded:
        print(f"published before the end: {len(on_origin)}/{published} "
              f"(the last {(time.time() - start.timestamp()):.1f} s after the windows opened)")
    if len(on_origin) < published:
        print(f"{published - len(on_origin)} titles are not on the origin before the end; lengthen --open-seconds")
        return 1

    removed_at: dict[str, float] = {}
    end_ts = end.timestamp()
    while len(removed_at) < count and time.time() < end_ts + 120:
        now = time.time()
        for name in set(assets) - remaining(s3, assets) - set(removed_at):
            removed_at[name] = now
        time.sleep(0.1)
    latencies = sorted(removed_at[name] - end_ts for name in removed_at)
    if len(latencies) < count:
        print(f"only {len(latencies)}/{count} taken down within 120 s")
        return 1
    wrongly = set(titles[count:]) - remaining(s3, titles)
    if wrongly:
        print(f"{len(wrongly)} titles whose windows stay open were taken down too, e.g. {sorted(wrongly)[:3]}")
        return 1
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * len(latencies))) - 1)]
    if log is not None:
        print("where the time went (the operator's log, seconds after the window end):")
        phases(log, end)
    raw = baseline(s3, count)
    print(f"window end -> verified removal, {count} titles of {published} published: p50 {p50:.2f} s, p99 {p99:.2f} s, "
          f"max {latencies[-1]:.2f} s   goal p99 <= 5 s (at 1,000 of 5,000)")
    print(f"baseline: plain boto3 list + batch delete of {count * len(PACKAGE_FILES)} objects {raw:.2f} s; "
          f"p99 / baseline {p99 / raw:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
