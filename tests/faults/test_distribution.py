"""Distribution faults (issue 15, items 2, 5 and 10): one bad target must not freeze a namespace, an
invalid targets ConfigMap must not stop takedowns, a published asset that is deleted is taken down
before it goes.

One local cluster for the module (tests/helpers.py local_stack), a namespace and origin buckets per
scenario. Each asset stands in for a packaged one: a small committed package in the library and a
MediaAsset naming a file:// source the operator does not fetch (no ingest competes for the CPU), its
status.packages patched to name the package (as tests/faults/test_api.py and bench/takedown.py do).
Everything is measured by listing the origins; the operator's retry ceiling for quarantined pairs is
shrunk to 8 s (KUBEMAM_DISTRIBUTION_RETRY_MAX_SECONDS; 60 s by default).

- broken target: two targets, one whose origin bucket is deleted. The good target keeps publishing
  and taking down on time while the broken one's pairs are quarantined (Distributed=False naming the
  target and the error, on the asset and the window; kubemam_distribution_quarantined). The bucket is
  recreated: the pairs recover by themselves.
- invalid targets: the ConfigMap is made invalid (overlapping origins) while a window closes: the
  takedown still happens on time; nothing new is published until the ConfigMap is fixed.
- asset deleted: a published asset is deleted: it is taken down everywhere within the takedown goal,
  and only then does the MediaAsset go.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubemam.api.common import GROUP, VERSION
from tests.faults.standin import commit_package, packaged_asset
from tests.helpers import LocalStack, local_stack, metric_value, wait_for

TAKEDOWN_GOAL = 5.0  # seconds after a window's end (docs/architecture.md "Rights enforcement")
RECOVERY_GOAL = 60.0  # seconds after a fault ends (issue 15)
RETRY_MAX_SECONDS = 8

@pytest.fixture(scope="module")
def stack(control_plane: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    env = {"KUBEMAM_DISTRIBUTION_RETRY_MAX_SECONDS": str(RETRY_MAX_SECONDS)}
    with local_stack(control_plane, tmp_path_factory.mktemp("distribution"), "fault-dist-base",
                     operator_env=env) as running:
        yield running


# --- helpers -----------------------------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _next_second(after: float) -> datetime:
    """The first whole second at least `after` seconds from now (window ends are whole seconds)."""
    return (datetime.now(UTC) + timedelta(seconds=after + 1)).replace(microsecond=0)


def _custom(stack: LocalStack) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(stack.api)


def _targets(stack: LocalStack, namespace: str, targets: list[dict[str, Any]], create: bool = False) -> None:
    body = {"metadata": {"name": "kubemam-distribution"}, "data": {"targets.yaml": yaml.safe_dump(targets)}}
    core = client.CoreV1Api(stack.api)
    if create:
        core.create_namespaced_config_map(namespace, body)
    else:
        core.replace_namespaced_config_map("kubemam-distribution", namespace, body)


def _target(name: str, bucket: str, prefix: str = "svod") -> dict[str, Any]:
    return {"name": name, "channel": "svod", "origin": f"s3://{bucket}/{prefix}", "territories": ["NO"]}


def _setup(stack: LocalStack, namespace: str, buckets: list[str], targets: list[dict[str, Any]],
           assets: list[str]) -> None:
    """The namespace, its origin buckets and targets, a committed package, and packaged stand-in assets."""
    from kubemam_local.cluster import provision_namespaces

    provision_namespaces(stack.api, stack.s3.access_key, stack.s3.secret_key, (namespace,))
    for bucket in buckets:
        stack.store.create_bucket(Bucket=bucket)
    _targets(stack, namespace, targets, create=True)
    package = commit_package(stack, namespace)
    for asset in assets:
        packaged_asset(stack, namespace, asset, package)


def _window(stack: LocalStack, namespace: str, name: str, assets: list[str], start: datetime,
            end: datetime) -> None:
    _custom(stack).create_namespaced_custom_object(GROUP, VERSION, namespace, "rightswindows", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RightsWindow", "metadata": {"name": name},
        "spec": {"assets": {"names": assets}, "territories": ["NO"], "channels": ["svod"], "start": _stamp(start),
                 "end": _stamp(end)}})


def _end_window(stack: LocalStack, namespace: str, name: str, end: datetime) -> None:
    _custom(stack).patch_namespaced_custom_object(GROUP, VERSION, namespace, "rightswindows", name,
                                                  {"spec": {"end": _stamp(end)}})


def _on(stack: LocalStack, bucket: str, namespace: str, asset: str, prefix: str = "svod") -> list[str]:
    """What the origin holds of the asset (an origin bucket that is gone holds nothing)."""
    try:
        listed = stack.store.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{namespace}/{asset}/")
    except stack.store.exceptions.NoSuchBucket:
        return []
    return [o["Key"] for o in listed.get("Contents") or []]


def _published(stack: LocalStack, bucket: str, namespace: str, asset: str, prefix: str = "svod") -> bool:
    return any(k.endswith("manifest.mpd") for k in _on(stack, bucket, namespace, asset, prefix))


def _get(stack: LocalStack, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(_custom(stack).get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name))
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def _condition(stack: LocalStack, namespace: str, plural: str, name: str, type_: str) -> dict[str, Any] | None:
    body = _get(stack, namespace, plural, name) or {}
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def _record(stack: LocalStack, namespace: str, asset: str, target: str) -> dict[str, Any] | None:
    body = _get(stack, namespace, "mediaassets", asset) or {}
    return next((d for d in (body.get("status") or {}).get("distribution") or [] if d["target"] == target), None)


def _wait(stack: LocalStack, probe: Any, timeout: float, what: str) -> Any:
    try:
        return wait_for(probe, timeout=timeout, what=what)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{stack.log.read_text()[-5000:]}") from None


def _distribute_jobs(stack: LocalStack, namespace: str) -> list[Any]:
    return list(client.BatchV1Api(stack.api).list_namespaced_job(
        namespace, label_selector="kubemam.io/step=distribute").items)


def _delete_bucket(stack: LocalStack, bucket: str) -> None:
    for page in stack.store.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents") or []]
        if keys:
            stack.store.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    stack.store.delete_bucket(Bucket=bucket)


# --- scenarios ------------------------------------------------------------------------------------------


def test_a_broken_target_is_quarantined_while_the_good_one_keeps_publishing_and_taking_down(
        stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    began = time.monotonic()
    ns, good, bad = "fault-dist-broken", "origin-good", "origin-bad"
    _setup(stack, ns, [good, bad], [_target("svod-good", good), _target("svod-bad", bad)], ["ep1", "ep2"])
    now = datetime.now(UTC).replace(microsecond=0)
    _window(stack, ns, "first", ["ep1"], now - timedelta(minutes=1), now + timedelta(hours=1))
    _wait(stack, lambda: _published(stack, good, ns, "ep1") and _published(stack, bad, ns, "ep1"), 60,
          "ep1 on both origins")
    # Recorded, so its Job has ended: it writes the feeds after the copies, into the bucket about to go.
    _wait(stack, lambda: all((_record(stack, ns, "ep1", t) or {}).get("state") == "Published"
                             for t in ("svod-good", "svod-bad")), 30, "ep1's publishes recorded")

    # The bad target's bucket goes (its content with it: a takedown there can never verify).
    _delete_bucket(stack, bad)
    broken_at = time.time()
    jobs_before = len(_distribute_jobs(stack, ns))
    end = _next_second(3)
    _end_window(stack, ns, "first", end)
    _wait(stack, lambda: not _on(stack, good, ns, "ep1"), 30, "ep1 taken down from the good target")
    first_takedown = time.time() - end.timestamp()
    quarantined = _wait(stack, lambda: (c := _condition(stack, ns, "mediaassets", "ep1", "Distributed"))
                        and c["status"] == "False" and c, 30, "ep1's Distributed=False")
    assert quarantined["reason"] == "Quarantined" and "svod-bad" in quarantined["message"], quarantined
    assert f"bucket {bad} does not exist" in quarantined["message"], quarantined
    # The window's condition is written after the assets' in the same reconcile (or the next): waited for too.
    on_window = _wait(stack, lambda: (c := _condition(stack, ns, "rightswindows", "first", "Distributed"))
                      and c["status"] == "False" and c, 30, "the window's Distributed=False")
    assert "ep1 on svod-bad: takedown" in on_window["message"], on_window
    record = _record(stack, ns, "ep1", "svod-bad")
    assert record and record["state"] == "Published" and record["quarantine"]["action"] == "takedown", record
    assert _record(stack, ns, "ep1", "svod-good")["state"] == "TakenDown"  # type: ignore[index]
    scraped = _wait(stack, lambda: (m := stack.metrics())
                    and (metric_value(m, "kubemam_distribution_quarantined", namespace=ns) or 0) >= 1 and m,
                    20, "kubemam_distribution_quarantined")
    assert metric_value(scraped, "kubemam_distribution_failed_attempts", namespace=ns) == 0  # no batch failed whole

    # Meanwhile the good target keeps publishing and taking down on time.
    start = _next_second(2)
    second_end = start + timedelta(seconds=8)
    _window(stack, ns, "second", ["ep2"], start, second_end)
    _wait(stack, lambda: _published(stack, good, ns, "ep2"), 30, "ep2 published on the good target")
    publish_delay = time.time() - start.timestamp()
    _wait(stack, lambda: (r := _record(stack, ns, "ep2", "svod-bad")) and r.get("quarantine") and r, 20,
          "ep2's publish on the bad target quarantined")
    _wait(stack, lambda: not _on(stack, good, ns, "ep2"), 30, "ep2 taken down from the good target")
    second_takedown = time.time() - second_end.timestamp()
    broken_for = time.time() - broken_at
    jobs_while_broken = len(_distribute_jobs(stack, ns)) - jobs_before

    # Fixed: the bucket is back. Every quarantined pair recovers by itself.
    stack.store.create_bucket(Bucket=bad)
    fixed = time.time()

    def recovered() -> bool:
        records = [_record(stack, ns, a, "svod-bad") for a in ("ep1", "ep2")]
        conditions = [_condition(stack, ns, "mediaassets", a, "Distributed") for a in ("ep1", "ep2")]
        return all(r and r["state"] == "TakenDown" and "quarantine" not in r for r in records) and \
            all(c and c["status"] == "True" for c in conditions)

    _wait(stack, recovered, RECOVERY_GOAL + 30, "the bad target's pairs to recover")
    recovery = time.time() - fixed
    scraped = _wait(stack, lambda: (m := stack.metrics())
                    and metric_value(m, "kubemam_distribution_quarantined", namespace=ns) == 0 and m, 20,
                    "kubemam_distribution_quarantined back to 0")
    assert (_condition(stack, ns, "rightswindows", "first", "Distributed") or {}).get("status") == "True"
    assert not _on(stack, bad, ns, "ep1") and not _on(stack, bad, ns, "ep2")
    # Both windows' history: what verified, once each.
    history = [(h["action"], h["asset"], h["target"]) for w in ("first", "second")
               for h in ((_get(stack, ns, "rightswindows", w) or {}).get("status") or {}).get("history") or []]
    assert sorted(history) == sorted([
        ("Published", "ep1", "svod-good"), ("Published", "ep1", "svod-bad"), ("TakenDown", "ep1", "svod-good"),
        ("TakenDown", "ep1", "svod-bad"), ("Published", "ep2", "svod-good"), ("TakenDown", "ep2", "svod-good"),
        ("TakenDown", "ep2", "svod-bad")]), history
    with capsys.disabled():
        print(f"\nbroken target: good takedown {first_takedown:.1f} s after the end while the other target was "
              f"broken; publish {publish_delay:.1f} s after the start, takedown {second_takedown:.1f} s after the "
              f"end; {jobs_while_broken} distribute Jobs in {broken_for:.0f} s broken; recovered {recovery:.1f} s "
              f"after the fix; scenario {time.monotonic() - began:.0f} s")
    assert first_takedown <= TAKEDOWN_GOAL and second_takedown <= TAKEDOWN_GOAL
    assert publish_delay <= TAKEDOWN_GOAL
    assert recovery <= RECOVERY_GOAL


def test_an_invalid_targets_configmap_still_takes_down_when_a_window_closes(
        stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    began = time.monotonic()
    ns, bucket = "fault-dist-config", "origin-config"
    targets = [_target("svod-no", bucket)]
    _setup(stack, ns, [bucket], targets, ["ep1", "ep2"])
    now = datetime.now(UTC).replace(microsecond=0)
    _window(stack, ns, "licence", ["ep1"], now - timedelta(minutes=1), now + timedelta(hours=1))
    _wait(stack, lambda: _published(stack, bucket, ns, "ep1"), 60, "ep1 published")

    # A second target over the same origin: refused, naming both; nothing about the first may change.
    # (The ConfigMap is read on every reconcile; the new window below is what triggers the next one.)
    _targets(stack, ns, [*targets, _target("svod-kids", bucket, "svod/kids")])
    _window(stack, ns, "another", ["ep2"], now - timedelta(minutes=1), now + timedelta(hours=1))
    invalid = _wait(stack, lambda: (c := _condition(stack, ns, "rightswindows", "licence", "TargetsValid"))
                    and c["status"] == "False" and c, 30, "TargetsValid=False")
    assert "svod-no (s3://origin-config/svod) and svod-kids (s3://origin-config/svod/kids)" in invalid["message"]
    end = _next_second(3)
    _end_window(stack, ns, "licence", end)
    _wait(stack, lambda: not _on(stack, bucket, ns, "ep1"), 30, "the takedown with invalid targets")
    takedown = time.time() - end.timestamp()
    record = _wait(stack, lambda: (r := _record(stack, ns, "ep1", "svod-no")) and r["state"] == "TakenDown" and r,
                   20, "the takedown recorded")
    assert record["origin"] == f"s3://{bucket}/svod/{ns}/ep1"
    # No publish while the targets cannot be read: ep2, licensed all along, is not on the origin.
    assert not _on(stack, bucket, ns, "ep2") and _record(stack, ns, "ep2", "svod-no") is None

    # Fixed: nothing watches the ConfigMap, so the windows' 30 s timer (or any other trigger) picks it up.
    _targets(stack, ns, targets)
    fixed = time.time()
    _wait(stack, lambda: _published(stack, bucket, ns, "ep2"), RECOVERY_GOAL, "ep2 published once fixed")
    recovery = time.time() - fixed
    assert (_condition(stack, ns, "rightswindows", "licence", "TargetsValid") or {}).get("status") == "True"
    with capsys.disabled():
        print(f"\ninvalid targets: taken down {takedown:.1f} s after the end; publishing resumed {recovery:.1f} s "
              f"after the fix; scenario {time.monotonic() - began:.0f} s")
    assert takedown <= TAKEDOWN_GOAL and recovery <= RECOVERY_GOAL


def test_a_published_asset_that_is_deleted_is_taken_down_before_it_goes(
        stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    began = time.monotonic()
    ns, bucket = "fault-dist-delete", "origin-delete"
    _setup(stack, ns, [bucket], [_target("svod-a", bucket, "svod-a"), _target("svod-b", bucket, "svod-b")], ["ep1"])
    now = datetime.now(UTC).replace(microsecond=0)
    _window(stack, ns, "licence", ["ep1"], now - timedelta(minutes=1), now + timedelta(hours=1))
    _wait(stack, lambda: _published(stack, bucket, ns, "ep1", "svod-a") and _published(stack, bucket, ns, "ep1",
                                                                                      "svod-b"), 60, "ep1 published")

    _custom(stack).delete_namespaced_custom_object(GROUP, VERSION, ns, "mediaassets", "ep1")
    deleted = time.time()
    emptied = gone = None
    last_seen: dict[str, Any] | None = None
    while time.time() < deleted + 60 and gone is None:
        body = _get(stack, ns, "mediaassets", "ep1")
        held = _on(stack, bucket, ns, "ep1", "svod-a") + _on(stack, bucket, ns, "ep1", "svod-b")
        if body is None:
            gone = time.time()
            # When the asset goes, nothing of it is left on any origin.
            assert not held, held
        else:
            last_seen = body
            assert (body["metadata"].get("deletionTimestamp")), body["metadata"]
        if not held and emptied is None:
            emptied = time.time()
        if held and emptied is not None:
            raise AssertionError(f"published again after it was taken down: {held}")
        time.sleep(0.1)
    assert emptied is not None and gone is not None, stack.log.read_text()[-5000:]
    # The finalizer let it go only once its status said TakenDown everywhere.
    assert last_seen is not None
    records = (last_seen.get("status") or {}).get("distribution") or []
    assert sorted((d["target"], d["state"]) for d in records) == [("svod-a", "TakenDown"), ("svod-b", "TakenDown")]
    history = ((_get(stack, ns, "rightswindows", "licence") or {}).get("status") or {}).get("history") or []
    assert sorted((h["action"], h["target"]) for h in history) == [
        ("Published", "svod-a"), ("Published", "svod-b"), ("TakenDown", "svod-a"), ("TakenDown", "svod-b")]
    feed = stack.store.get_object(Bucket=bucket, Key=f"feeds/{ns}/svod.json")["Body"].read()
    assert b'"ep1"' not in feed
    with capsys.disabled():
        print(f"\nasset deleted: taken down everywhere {emptied - deleted:.1f} s after the delete, the asset gone "
              f"{gone - deleted:.1f} s after it; scenario {time.monotonic() - began:.0f} s")
    assert emptied - deleted <= TAKEDOWN_GOAL
