"""`kubemam worker distribute` against real MinIO: packages published to an origin manifests last,
taken down to an empty prefix with a purge webhook, feeds and usage written; `kubemam report usage`."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kubemam.plan import staging
from kubemam.report import parse_time, usage_rows
from kubemam.steps.distribute import feed_file
from kubemam.storage.s3 import commit
from kubemam.storage.uri import S3Uri
from kubemam.worker.contract import StepError
from kubemam.worker.distribute import (
    Feed,
    feed_document,
    merge_usage,
    parse_input,
    publish_order,
    purge_ledger,
    takedown_all,
    takedown_order,
)

pytestmark = pytest.mark.integration

LIBRARY = "kubemam-library"
ORIGIN = "kubemam-origin"
BATCH = "0123456789abcdef"


# --- pure parts --------------------------------------------------------------------------------

def test_publish_order_puts_playlists_last_deepest_first() -> None:
    keys = ["manifest.mpd", "master.m3u8", "v1/init.mp4", "v1/seg-00001.m4s", "v1/media.m3u8", "v1/iframes.M3U8",
            "a1/seg-00001.m4s", "subs-en/subtitles.vtt", "subs-en/media.m3u8", "thumbnails/sprite-001.jpg"]
    assert publish_order(keys) == [
        ["a1/seg-00001.m4s", "subs-en/subtitles.vtt", "thumbnails/sprite-001.jpg", "v1/init.mp4", "v1/seg-00001.m4s"],
        ["subs-en/media.m3u8", "v1/iframes.M3U8", "v1/media.m3u8"],
        ["manifest.mpd", "master.m3u8"],
    ]
    assert takedown_order(keys) == publish_order(keys)[::-1]
    assert publish_order(["hls/v1/media.m3u8", "hls/master.m3u8", "dash/x.mpd", "hls/v1/s.ts"]) == [
        ["hls/v1/s.ts"], ["hls/v1/media.m3u8"], ["dash/x.mpd", "hls/master.m3u8"]]
    assert publish_order([]) == [] and publish_order(["a.m4s"]) == [["a.m4s"]]


def test_feed_usage_and_ledger_are_pure() -> None:
    at = datetime(2027, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    entries = ({"asset": "ep1", "target": "svod-nordics"},)
    assert feed_document(Feed(S3Uri.parse("s3://origin/feeds/svod.json"), entries), at) == {
        "channel": "svod", "updated": "2027-01-01T12:00:00.123Z",
        "entries": [{"asset": "ep1", "target": "svod-nordics"}]}
    assert "channel" not in feed_document(Feed(S3Uri.parse("s3://origin/feeds/all.json"), ()), at)
    prior = [{"action": "publish", "asset": "a", "target": "t", "window": "w", "at": "2027-01-01T00:00:00.000Z"}]
    fresh = [{"action": "publish", "asset": "a", "target": "t", "window": "w", "at": "2027-01-02T00:00:00.000Z"},
             {"action": "takedown", "asset": "b", "target": "t", "window": "w", "at": "2027-01-02T00:00:00.000Z"}]
    merged = merge_usage(prior, fresh)
    assert [(r["asset"], r["at"]) for r in merged] == [("a", "2027-01-01T00:00:00.000Z"),
                                                        ("b", "2027-01-02T00:00:00.000Z")]
    usage = S3Uri.parse("s3://kubemam-library/usage/media/ab.json")
    assert str(purge_ledger(usage, "ab")) == "s3://kubemam-library/distribute/pending-purges/ab.json"
    assert str(purge_ledger(S3Uri.parse("s3://lib/tenant/usage/media/ab.json"), "ab")) == \
        "s3://lib/tenant/distribute/pending-purges/ab.json"


def _record(action: str, asset: str, at: str, territories: list[str] | None = None, window: str = "w1",
            namespace: str = "media") -> dict[str, Any]:
    return {"namespace": namespace, "action": action, "asset": asset, "target": "svod-nordics", "channel": "svod",
            "territories": territories or ["NO", "SE"], "window": window, "at": at, "objects": 3}


def test_usage_rows_pair_publish_with_next_takedown_and_clip() -> None:
    records = [
        _record("publish", "ep1", "2027-01-10T00:00:00Z"),
        _record("publish", "ep1", "2027-01-12T00:00:00Z"),  # a re-publish while published: same period
        _record("takedown", "ep1", "2027-02-10T00:00:00Z"),
        _record("publish", "ep1", "2027-03-01T00:00:00Z"),  # after the range
        _record("publish", "ep2", "2026-12-01T00:00:00Z", ["DK"]),  # still published
        _record("publish", "ep3", "2026-11-01T00:00:00Z"),
        _record("takedown", "ep3", "2026-12-01T00:00:00Z"),  # before the range
        _record("takedown", "ep4", "2027-01-05T00:00:00Z"),  # no publish: ignored
        _record("takedown", "ep1", "2027-01-20T00:00:00Z", window="w2"),  # another window: no publish
    ]
    rows = [r.as_dict() for r in usage_rows(records, parse_time("2027-01-01T00:00:00Z"),
                                            parse_time("2027-02-01T00:00:00Z"))]
    assert rows == [
        {"namespace": "media", "asset": "ep1", "territory": "NO", "channel": "svod", "target": "svod-nordics",
         "window": "w1", "from": "2027-01-10T00:00:00.000Z", "to": "2027-02-01T00:00:00.000Z"},
        {"namespace": "media", "asset": "ep1", "territory": "SE", "channel": "svod", "target": "svod-nordics",
         "window": "w1", "from": "2027-01-10T00:00:00.000Z", "to": "2027-02-01T00:00:00.000Z"},
        {"namespace": "media", "asset": "ep2", "territory": "DK", "channel": "svod", "target": "svod-nordics",
         "window": "w1", "from": "2027-01-01T00:00:00.000Z", "to": None},
    ]
    # The same asset in two namespaces is two timelines.
    other = usage_rows([_record("publish", "ep1", "2027-01-01T00:00:00Z", ["FI"], namespace="kids"),
                        _record("takedown", "ep1", "2027-01-02T00:00:00Z", namespace="media")],
                       parse_time("2026-01-01T00:00:00"), parse_time("2028-01-01T00:00:00"))
    assert [(r.namespace, r.territory, r.end) for r in other] == [("kids", "FI", None)]


@pytest.mark.parametrize(("change", "message"), [
    (lambda i: i.pop("usage"), "input needs usage"),
    (lambda i: i["actions"][0].update(action="unpublish"), "actions[0].action 'unpublish' is unknown"),
    (lambda i: i["actions"][0].pop("asset"), "actions[0] needs asset"),
    (lambda i: i["actions"][0].update(origin="https://x/y"), "actions[0].origin"),
    (lambda i: i["actions"][0].update(origin="s3://Bad_Bucket/x"), "not a valid bucket name"),
    (lambda i: i["actions"][1].update(origin="s3://kubemam-origin"), "names a whole bucket"),
    (lambda i: i["actions"][0].update(package=None), "actions[0].package must be a non-empty string, not None"),
    (lambda i: i["actions"][0].update(territories=["Norway"]), "territories"),
    (lambda i: i["actions"][1].update(purgeWebhook="ftp://x"), "purgeWebhook"),
    (lambda i: i.update(batch="not hex"), "input.batch"),
    (lambda i: i["actions"][0].update(channel="tv"), "actions[0].channel 'tv' is unknown (known: svod, avod"),
    (lambda i: i.update(feeds=i["feeds"] * 2), "input.feeds names the same feed twice"),
    (lambda i: i.update(attempt=-1), "input.attempt"),
    (lambda i: i.update(surprise=1), "input.surprise"),
])
def test_bad_input_is_refused_naming_the_problem(change: Any, message: str) -> None:
    inputs = _example()
    change(inputs)
    with pytest.raises(StepError, match=re.escape(message)):
        parse_input(inputs)


def _example() -> dict[str, Any]:
    return {"namespace": "media", "batch": BATCH, "actions": [
        {"action": "publish", "asset": "ep1", "target": "svod-nordics", "channel": "svod", "territories": ["NO", "SE"],
         "window": "w1", "package": "s3://kubemam-library/assets/media/ep1/packages/0123abcd",
         "origin": "s3://kubemam-origin/svod-nordics/media/ep1", "purgeWebhook": None},
        {"action": "takedown", "asset": "ep2", "target": "svod-nordics", "channel": "svod",
         "territories": ["NO", "SE"], "window": "w1", "package": None,
         "origin": "s3://kubemam-origin/svod-nordics/media/ep2", "purgeWebhook": "http://127.0.0.1:8123/purge"}],
        "feeds": [{"uri": "s3://kubemam-origin/feeds/svod.json", "file": "feed-0.json", "sha256": "0" * 64,
                   "entries": 0}],
        "usage": f"s3://kubemam-library/usage/media/{BATCH}.json"}


@pytest.mark.parametrize(("change", "refused"), [
    (lambda i: i["actions"][1].update(origin="s3://kubemam-origin/svod-nordics"), {
        0: "lies inside origin s3://kubemam-origin/svod-nordics", 1: "holds origin"}),
    (lambda i: i["actions"][1].update(origin="s3://kubemam-library/assets/media"), {1: "holds package"}),
    (lambda i: i["actions"][1].update(origin="s3://kubemam-origin/feeds"), {1: "holds feed"}),
    (lambda i: i["actions"][1].update(origin=i["actions"][0]["origin"]), {
        1: "another action of the batch (actions[0]) has the origin"}),
])
def test_an_overlapping_origin_refuses_only_its_actions(change: Any, refused: dict[int, str]) -> None:
    """A takedown deletes everything under its origin: an action whose origin overlaps another's, a
    package, a feed or the usage object may not run — and only it; the batch's other actions do."""
    inputs = _example()
    inputs["actions"].append({**inputs["actions"][1], "asset": "ep3",
                              "origin": "s3://kubemam-origin/svod-nordics-2/media/ep3"})
    change(inputs)
    batch = parse_input(inputs)
    assert set(batch.refused) == set(refused) and 2 not in batch.refused
    for index, words in refused.items():
        assert words in batch.refused[index]


def test_the_briefs_example_input_parses() -> None:
    batch = parse_input(_example())
    assert [a.action for a in batch.actions] == ["publish", "takedown"] and batch.feeds[0].uri.key == "feeds/svod.json"


def test_what_the_rights_planner_writes_is_what_the_worker_reads() -> None:
    from kubemam.api.asset import MediaAssetStatus
    from kubemam.api.distribution import DistributionTarget
    from kubemam.api.rights import RightsWindowSpec
    from kubemam.config import OperatorConfig
    from kubemam.plan.distribution import AssetFacts, DistributionFacts, WindowFacts, plan_distribution
    from kubemam.plan.jobs import STEP_INPUT_ENV

    now = datetime(2027, 1, 1, tzinfo=UTC)
    spec = RightsWindowSpec.model_validate({"assets": {"names": ["ep1"]}, "territories": ["NO", "SE"],
                                            "channels": ["svod"], "start": now, "end": now + timedelta(hours=1)})
    target = DistributionTarget(name="svod-nordics", channel="svod", origin=f"s3://{ORIGIN}/svod-nordics",
                                territories=["NO", "SE"], purge_webhook="http://cdn.local/purge")
    status = MediaAssetStatus.model_validate({"packages": [
        {"format": "dash", "manifestUri": f"s3://{LIBRARY}/assets/media/ep1/packages/0123abcd/manifest.mpd"}]})
    facts = DistributionFacts("media", [WindowFacts("w1", 1, spec)], [AssetFacts("ep1", {}, status)], [], [target])
    job = plan_distribution(facts, OperatorConfig(library_uri=f"s3://{LIBRARY}"), now).job
    assert job is not None
    env = job.job["spec"]["template"]["spec"]["containers"][0]["env"]
    batch = parse_input(json.loads(next(e["value"] for e in env if e["name"] == STEP_INPUT_ENV)))
    [action] = batch.actions
    assert (action.action, str(action.package), str(action.origin), action.purge_webhook) == (
        "publish", f"s3://{LIBRARY}/assets/media/ep1/packages/0123abcd", f"s3://{ORIGIN}/svod-nordics/media/ep1",
        "http://cdn.local/purge")
    assert str(batch.usage) == f"s3://{LIBRARY}/usage/media/{batch.batch}.json"
    assert [str(f.uri) for f in batch.feeds] == [f"s3://{ORIGIN}/feeds/media/svod.json"]  # the namespace's own


class RefusingS3:
    """Just enough of an S3 client for takedown_all, refusing to delete some keys."""

    def __init__(self, keys: list[str], refuse: set[str]) -> None:
        self.objects = dict.fromkeys(keys, b"x")
        self.refuse = refuse
        self.calls = {"list": 0, "delete": 0}

    def get_paginator(self, name: str) -> RefusingS3:
        return self

    def paginate(self, Bucket: str, Prefix: str) -> Iterator[dict[str, Any]]:  # noqa: N803 - boto3's names
        self.calls["list"] += 1
        yield {"Contents": [{"Key": k, "Size": 1, "ETag": "e"} for k in sorted(self.objects) if k.startswith(Prefix)]}

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        keys = [o["Key"] for o in Delete["Objects"]]
        assert len(keys) <= 1000
        self.calls["delete"] += 1
        for key in keys:
            if key not in self.refuse:
                self.objects.pop(key, None)
        return {"Errors": [{"Key": k, "Code": "AccessDenied"} for k in keys if k in self.refuse]}


def test_a_manifest_that_will_not_go_keeps_its_segments_and_fails_the_takedown() -> None:
    keys = ["svod/ns/ep1/" + k for k in ("manifest.mpd", "master.m3u8", "v1/media.m3u8", "v1/seg-1.m4s")]
    fake = RefusingS3(keys + ["svod/ns/ep2/seg.m4s"], refuse={"svod/ns/ep1/manifest.mpd"})
    batch = parse_input({"namespace": "ns", "batch": BATCH, "usage": f"s3://lib/usage/ns/{BATCH}.json", "actions": [
        _action("takedown", "ns", "ep1", target="svod"), _action("takedown", "ns", "ep2", target="svod")]})
    with ThreadPoolExecutor(max_workers=4) as pool:
        first, second = takedown_all(fake, pool, batch.actions, batch.usage, batch.batch, lambda: datetime.now(UTC))
    assert sorted(fake.objects) == ["svod/ns/ep1/manifest.mpd", "svod/ns/ep1/v1/media.m3u8",
                                    "svod/ns/ep1/v1/seg-1.m4s"]  # the other top-level playlist went
    assert first.error is not None and "3 objects remain" in first.error and "S3 refused to delete" in first.error
    assert second.error is None and second.objects == 1 and second.at is not None


def test_takedowns_share_delete_calls_wave_by_wave() -> None:
    """600 origins of 5 objects: one listing each before and after, and per wave (top-level
    playlists, variant playlists, the rest) DeleteObjects calls of at most 1000 keys for all of them."""
    assets = [f"ep{n}" for n in range(600)]
    fake = RefusingS3([f"svod/ns/{a}/{k}" for a in assets
                       for k in ("manifest.mpd", "master.m3u8", "v1/media.m3u8", "v1/a.m4s", "v1/b.m4s")], set())
    batch = parse_input({"namespace": "ns", "batch": BATCH, "usage": f"s3://lib/usage/ns/{BATCH}.json",
                         "actions": [_action("takedown", "ns", a, target="svod") for a in assets]})
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = takedown_all(fake, pool, batch.actions, batch.usage, batch.batch, lambda: datetime.now(UTC))
    assert fake.objects == {} and all(o.error is None and o.objects == 5 for o in outcomes)
    assert fake.calls == {"list": 1200, "delete": 2 + 1 + 2}  # 1200, 600 and 1200 keys


# --- against MinIO -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3(minio: Any) -> Any:
    client = minio.client()
    if ORIGIN not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=ORIGIN)
    return client


class PurgeServer:
    """A purge webhook on loopback that records every POST and answers `status`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append({"path": self.path, "type": self.headers.get("Content-Type"),
                                        "body": json.loads(body)})
                self.send_response(server.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/purge"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def webhook() -> Iterator[PurgeServer]:
    server = PurgeServer()
    yield server
    server.close()


PACKAGE_FILES = {
    "manifest.mpd": 900, "master.m3u8": 400, "v1/init.mp4": 800, "v1/media.m3u8": 300, "v1/iframes.m3u8": 250,
    "v1/seg-00001.m4s": 40_000, "v1/seg-00002.m4s": 38_000, "a1/init.mp4": 600, "a1/media.m3u8": 280,
    "a1/seg-00001.m4s": 9_000, "a1/seg-00002.m4s": 9_100, "thumbnails/sprite-001.jpg": 5_000,
}


def _package(s3: Any, tmp_path: Path, namespace: str, asset: str) -> tuple[str, dict[str, int]]:
    """A committed, content-addressed package (its manifest.json written last), as the package step leaves it."""
    folder = tmp_path / f"pkg-{asset}"
    for key, size in PACKAGE_FILES.items():
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    prefix = S3Uri(LIBRARY, f"assets/{namespace}/{asset}/packages/{uuid.uuid4().hex[:8]}")
    commit(s3, folder, prefix, step="package", input_hash="h", worker_version="test", now=datetime.now(UTC),
           content_addressed=True)
    return str(prefix), dict(PACKAGE_FILES)


def _listing(s3: Any, uri: str) -> dict[str, int]:
    prefix = S3Uri.parse(uri)
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=prefix.bucket, Prefix=prefix.prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"][len(prefix.prefix):]] = int(obj["Size"])
    return found


def _action(kind: str, namespace: str, asset: str, package: str | None = None, webhook: str | None = None,
            target: str = "svod-nordics") -> dict[str, Any]:
    return {"action": kind, "asset": asset, "target": target, "channel": "svod", "territories": ["NO", "SE"],
            "window": "w1", "package": package, "origin": f"s3://{ORIGIN}/{target}/{namespace}/{asset}",
            "purgeWebhook": webhook}


def _inputs(namespace: str, actions: list[dict[str, Any]], feeds: list[dict[str, Any]] | None = None,
            batch: str | None = None) -> dict[str, Any]:
    batch = batch or uuid.uuid4().hex
    return {"namespace": namespace, "batch": batch, "actions": actions, "feeds": feeds or [],
            "usage": f"s3://{LIBRARY}/usage/{namespace}/{batch}.json"}


def _entry(asset: str) -> dict[str, Any]:
    return {"asset": asset, "target": "svod-nordics", "channel": "svod", "territories": ["NO", "SE"],
            "window": "w1", "start": "2027-01-01T00:00:00Z", "end": "2027-12-31T23:59:59Z"}


def _staged(inputs: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Feeds given with their entries are staged as the Job stages them: a file beside the input, the input
    naming it (plan/staging.py, steps/distribute.py feed_file)."""
    folder.mkdir(parents=True, exist_ok=True)
    feeds = []
    for index, feed in enumerate(inputs["feeds"]):
        if isinstance(feed.get("entries"), list):
            text = feed_file(feed["entries"])
            (folder / f"feed-{index}.json").write_text(text)
            feed = {"uri": feed["uri"], "file": f"feed-{index}.json", "sha256": staging.sha256(text),
                    "entries": len(feed["entries"])}
        feeds.append(feed)
    return {**inputs, "feeds": feeds}


def _env(minio: Any) -> dict[str, str]:
    return {**os.environ, "AWS_ENDPOINT_URL": minio.endpoint, "AWS_ACCESS_KEY_ID": minio.access_key,
            "AWS_SECRET_ACCESS_KEY": minio.secret_key, "KUBEMAM_S3_RETRY_SECONDS": "5"}


def _run(minio: Any, tmp_path: Path, inputs: dict[str, Any], expect: int = 0) -> tuple[dict[str, Any], list[Any], str]:
    """The worker as a subprocess: (termination message, the JSON log lines on stdout, stderr)."""
    message = tmp_path / f"termination-{uuid.uuid4().hex}"
    staged = tmp_path / f"staged-{uuid.uuid4().hex}"
    inputs = _staged(inputs, staged)
    env = {**_env(minio), "KUBEMAM_STEP_INPUT": json.dumps(inputs), "KUBEMAM_TERMINATION_MESSAGE_PATH": str(message),
           "TMPDIR": str(tmp_path), staging.STAGED_DIR_ENV: str(staged)}
    result = subprocess.run([sys.executable, "-m", "kubemam", "worker", "distribute"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == expect, result.stdout[-2000:] + result.stderr[-3000:]
    body = json.loads(message.read_text()) if message.exists() else {}
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return dict(body), lines, result.stderr


def _get(s3: Any, uri: str) -> tuple[Any, str]:
    target = S3Uri.parse(uri)
    answer = s3.get_object(Bucket=target.bucket, Key=target.key)
    return json.loads(answer["Body"].read()), str(answer["ContentType"])


def test_publish_copies_the_package_manifests_last_and_a_rerun_changes_nothing(minio: Any, s3: Any,
                                                                                tmp_path: Path) -> None:
    ns = f"pub-{uuid.uuid4().hex[:6]}"
    package, files = _package(s3, tmp_path, ns, "ep1")
    action = _action("publish", ns, "ep1", package)
    entries = [_entry("ep1")]
    feed = f"s3://{ORIGIN}/feeds/{ns}/svod.json"
    inputs = _inputs(ns, [action], [{"uri": feed, "entries": entries}])
    before = datetime.now(UTC)
    result, lines, _ = _run(minio, tmp_path, inputs)
    assert result == {"published": 1, "takenDown": 0, "usage": inputs["usage"]}
    assert _listing(s3, action["origin"]) == files  # every object at its size, the package manifest.json not
    assert "manifest.json" in _listing(s3, package)
    # Every playlist landed no earlier than every segment (the pure ordering is tested above).
    origin = S3Uri.parse(action["origin"])
    stamps = {o["Key"][len(origin.prefix):]: o["LastModified"]
              for o in s3.list_objects_v2(Bucket=ORIGIN, Prefix=origin.prefix)["Contents"]}
    assert max(t for k, t in stamps.items() if not k.endswith((".m3u8", ".mpd"))) <= \
        min(t for k, t in stamps.items() if k.endswith((".m3u8", ".mpd")))
    assert lines == [{"event": "publish", "asset": "ep1", "target": "svod-nordics", "channel": "svod",
                      "verified": True, "objects": len(files), "copied": len(files),
                      "seconds": lines[0]["seconds"]}]
    document, content_type = _get(s3, feed)
    assert content_type == "application/json" and document["entries"] == entries and document["channel"] == "svod"
    usage, _ = _get(s3, inputs["usage"])
    assert usage["namespace"] == ns and usage["batch"] == inputs["batch"] and usage["complete"] is True
    [record] = usage["records"]
    assert {k: v for k, v in record.items() if k != "at"} == {
        "action": "publish", "asset": "ep1", "target": "svod-nordics", "channel": "svod",
        "territories": ["NO", "SE"], "window": "w1", "objects": len(files)}
    assert before <= parse_time(record["at"]) <= datetime.now(UTC)

    # A re-run (the Job retried after a crash) copies nothing, verifies, keeps the first time.
    again, lines, _ = _run(minio, tmp_path, inputs)
    assert again == result and lines[0]["copied"] == 0 and lines[0]["verified"] is True
    assert _listing(s3, action["origin"]) == files
    assert _get(s3, inputs["usage"])[0]["records"] == [record]

    # An origin missing an object (a crash mid-copy) is completed by the re-run.
    s3.delete_object(Bucket=ORIGIN, Key=origin.prefix + "master.m3u8")
    s3.delete_object(Bucket=ORIGIN, Key=origin.prefix + "v1/seg-00002.m4s")
    _, lines, _ = _run(minio, tmp_path, inputs)
    assert lines[0]["copied"] == 2 and _listing(s3, action["origin"]) == files


def test_a_bad_package_fails_its_publish_for_good_and_holds_up_nothing_else(minio: Any, s3: Any,
                                                                              tmp_path: Path) -> None:
    ns = f"bad-{uuid.uuid4().hex[:6]}"
    taken = _action("takedown", ns, "gone")
    s3.put_object(Bucket=ORIGIN, Key=f"svod-nordics/{ns}/gone/seg.m4s", Body=b"x")
    good, files = _package(s3, tmp_path, ns, "ep2")
    empty = f"s3://{LIBRARY}/assets/{ns}/nothing/packages/00"
    feed = f"s3://{ORIGIN}/feeds/{ns}/svod.json"
    entries = [_entry("ep1"), _entry("ep2")]
    inputs = _inputs(ns, [_action("publish", ns, "ep1", empty), taken, _action("publish", ns, "ep2", good)],
                     [{"uri": feed, "entries": entries}])
    result, lines, stderr = _run(minio, tmp_path, inputs, expect=2)
    assert result["error"] == (f"distribute: 1 of 3 actions failed: publish ep1 on svod-nordics: package {empty} "
                               "holds nothing")
    # Which actions failed, for the rights planner: it records the others as done.
    assert result["failed"] == [[0, 0]] and result["errors"] == [f"package {empty} holds nothing"]
    assert result["usage"] == inputs["usage"]
    assert "holds nothing" in stderr
    assert [line["verified"] for line in lines] == [False, True, True]
    assert _listing(s3, taken["origin"]) == {}  # the takedown was not held up
    assert _listing(s3, f"s3://{ORIGIN}/svod-nordics/{ns}/ep2") == files
    assert _get(s3, feed)[0]["entries"] == entries[1:]  # the feed does not advertise what failed
    usage, _ = _get(s3, inputs["usage"])
    assert usage["complete"] is False and [r["asset"] for r in usage["records"]] == ["gone", "ep2"]

    s3.put_object(Bucket=LIBRARY, Key=f"assets/{ns}/half/packages/00/seg.m4s", Body=b"x")
    half = f"s3://{LIBRARY}/assets/{ns}/half/packages/00"
    result, _, _ = _run(minio, tmp_path, _inputs(ns, [_action("publish", ns, "ep1", half)]), expect=2)
    assert "has no manifest.json" in result["error"]
    assert result["failed"] == [[0, 0]] and "has no manifest.json" in result["errors"][0]


def test_bad_input_exits_2_with_a_message_before_touching_storage(minio: Any, s3: Any, tmp_path: Path) -> None:
    ns = f"inp-{uuid.uuid4().hex[:6]}"
    s3.put_object(Bucket=ORIGIN, Key=f"svod-nordics/{ns}/ep2/seg.m4s", Body=b"x")
    inputs = _inputs(ns, [_action("takedown", ns, "ep2"), {**_action("publish", ns, "ep3"), "action": "unpublish"}])
    result, _, _ = _run(minio, tmp_path, inputs, expect=2)
    assert result["error"] == "distribute: actions[1].action 'unpublish' is unknown (known: publish, takedown)"
    assert _listing(s3, f"s3://{ORIGIN}/svod-nordics/{ns}/ep2") == {"seg.m4s": 1}
    result, _, _ = _run(minio, tmp_path, {**inputs, "actions": inputs["actions"][:1], "usage": "s3:/nope"}, expect=2)
    assert "input.usage" in result["error"]
    # A missing origin bucket fails its actions (not the batch): see the broken-target test below.
    missing = _inputs(ns, [{**_action("takedown", ns, "ep2"), "origin": f"s3://no-such-bucket-{ns}/x"}])
    result, _, _ = _run(minio, tmp_path, missing, expect=2)
    assert result["failed"] == [[0, 0]] and result["errors"] == [f"bucket no-such-bucket-{ns} does not exist"]
    # A missing library (where the batch records what it did) stops the batch before anything runs.
    nowhere = {**_inputs(ns, [_action("takedown", ns, "ep2")]), "usage": f"s3://no-library-{ns}/usage/x.json"}
    result, _, _ = _run(minio, tmp_path, nowhere, expect=2)
    assert result == {"error": f"distribute: bucket no-library-{ns} does not exist"}
    assert _listing(s3, f"s3://{ORIGIN}/svod-nordics/{ns}/ep2") == {"seg.m4s": 1}


def _fill_origin(s3: Any, namespace: str, asset: str, count: int = 5) -> list[str]:
    keys = ["manifest.mpd", "master.m3u8", "v1/media.m3u8"] + [f"v1/seg-{n:05d}.m4s" for n in range(1, count - 2)]
    for key in keys:
        s3.put_object(Bucket=ORIGIN, Key=f"svod-nordics/{namespace}/{asset}/{key}", Body=b"x" * 100)
    return sorted(keys)


def test_takedown_empties_the_origin_and_purges_the_removed_paths(minio: Any, s3: Any, tmp_path: Path,
                                                                   webhook: PurgeServer) -> None:
    ns = f"td-{uuid.uuid4().hex[:6]}"
    package, files = _package(s3, tmp_path, ns, "ep1")
    keys = _fill_origin(s3, ns, "ep2", count=7)
    action = _action("takedown", ns, "ep2", webhook=webhook.url)
    empty = _action("takedown", ns, "never-published")
    feed = f"s3://{ORIGIN}/feeds/{ns}/svod.json"
    entries = [_entry("ep1")]
    inputs = _inputs(ns, [_action("publish", ns, "ep1", package), action, empty], [{"uri": feed, "entries": entries}])
    result, lines, _ = _run(minio, tmp_path, inputs)
    assert result == {"published": 1, "takenDown": 2, "usage": inputs["usage"]}
    assert _listing(s3, action["origin"]) == {}
    assert _listing(s3, f"s3://{ORIGIN}/svod-nordics/{ns}/ep1") == files
    assert webhook.requests == [{"path": "/purge", "type": "application/json", "body": {
        "asset": "ep2", "target": "svod-nordics", "origin": action["origin"], "paths": keys}}]
    assert [(line["asset"], line["verified"], line["objects"], line.get("deleted")) for line in lines] == [
        ("ep1", True, len(files), None), ("ep2", True, len(keys), len(keys)), ("never-published", True, 0, 0)]
    assert _get(s3, feed)[0]["entries"] == entries
    usage, _ = _get(s3, inputs["usage"])
    assert [(r["action"], r["asset"], r["objects"]) for r in usage["records"]] == [
        ("publish", "ep1", len(files)), ("takedown", "ep2", len(keys)), ("takedown", "never-published", 0)]
    assert _get_or_none(s3, purge_ledger(S3Uri.parse(inputs["usage"]), inputs["batch"])) is None  # purged: no ledger


def _armed_env(minio: Any, tmp_path: Path, inputs: dict[str, Any]) -> tuple[dict[str, str], Path]:
    message = tmp_path / f"termination-{uuid.uuid4().hex}"
    staged = tmp_path / f"staged-{uuid.uuid4().hex}"
    inputs = _staged(inputs, staged)
    return {**_env(minio), "KUBEMAM_STEP_INPUT": json.dumps(inputs), "KUBEMAM_TERMINATION_MESSAGE_PATH": str(message),
            "TMPDIR": str(tmp_path), staging.STAGED_DIR_ENV: str(staged)}, message


def test_an_armed_takedown_lists_ahead_and_deletes_nothing_before_its_instant(minio: Any, s3: Any,
                                                                                tmp_path: Path) -> None:
    ns = f"arm-{uuid.uuid4().hex[:6]}"
    keys = _fill_origin(s3, ns, "ep1", count=9)
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
    inputs = {**_inputs(ns, [_action("takedown", ns, "ep1"), _action("takedown", ns, "never-published")]),
              "notBefore": at.isoformat().replace("+00:00", "Z")}
    env, message = _armed_env(minio, tmp_path, inputs)
    worker = subprocess.Popen([sys.executable, "-m", "kubemam", "worker", "distribute"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Listed ahead, then waiting: everything is still on the origin until the instant.
        while datetime.now(UTC) < at - timedelta(seconds=0.5):
            assert sorted(_listing(s3, f"s3://{ORIGIN}/svod-nordics/{ns}/ep1")) == keys
            time.sleep(0.2)
        out, err = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0, err[-2000:]
    finished = datetime.now(UTC)
    assert "armed: 2 origins listed (9 objects)" in err
    assert _listing(s3, f"s3://{ORIGIN}/svod-nordics/{ns}/ep1") == {}
    usage, _ = _get(s3, inputs["usage"])
    # Verified at the instant or after, never before it (the empty origin too: it was listed ahead).
    assert [(r["asset"], r["objects"]) for r in usage["records"]] == [("ep1", len(keys)), ("never-published", 0)]
    assert all(at <= parse_time(r["at"]) <= finished for r in usage["records"])
    assert json.loads(message.read_text())["takenDown"] == 2


def test_an_armed_takedown_stopped_before_its_instant_deletes_nothing(minio: Any, s3: Any, tmp_path: Path) -> None:
    """A cancelled armed Job's pod gets SIGTERM while it waits: it exits, retryable, and the origin is whole."""
    ns = f"arm-{uuid.uuid4().hex[:6]}"
    keys = _fill_origin(s3, ns, "ep1", count=5)
    at = datetime.now(UTC) + timedelta(seconds=60)
    inputs = {**_inputs(ns, [_action("takedown", ns, "ep1")]), "notBefore": at.isoformat().replace("+00:00", "Z")}
    env, message = _armed_env(minio, tmp_path, inputs)
    worker = subprocess.Popen([sys.executable, "-m", "kubemam", "worker", "distribute"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert worker.stdout is not None
        seen = ""
        while "armed:" not in seen:
            line = worker.stdout.readline()
            assert line, f"the worker ended before arming: {seen[-2000:]}"
            seen += line
        worker.terminate()
        worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 128 + 15
    assert sorted(_listing(s3, f"s3://{ORIGIN}/svod-nordics/{ns}/ep1")) == keys
    assert json.loads(message.read_text()).get("retryable") is True
    assert _get_or_none(s3, S3Uri.parse(inputs["usage"])) is None  # nothing recorded as done


def test_a_failing_purge_webhook_fails_the_action_with_the_objects_gone_and_the_rerun_purges_them(
        minio: Any, s3: Any, tmp_path: Path, webhook: PurgeServer) -> None:
    ns = f"wh-{uuid.uuid4().hex[:6]}"
    keys = _fill_origin(s3, ns, "ep2")
    # A token in the webhook's query (the CDN's purge API key) reaches no error, log line or usage record.
    action = _action("takedown", ns, "ep2", webhook=webhook.url + "?token=s3cr3t-purge")
    webhook.status = 500
    inputs = _inputs(ns, [action])
    result, lines, stderr = _run(minio, tmp_path, inputs, expect=2)
    assert result["failed"] == [[0, 0]] and "HTTP 500" in result["errors"][0]
    assert "s3cr3t-purge" not in json.dumps([result, lines, _get(s3, inputs["usage"])]) + stderr
    assert _listing(s3, action["origin"]) == {}
    assert len(webhook.requests) == 3 and webhook.requests[0]["body"]["paths"] == keys
    assert lines[0]["verified"] is False and "HTTP 500" in lines[0]["error"]
    assert "1 of 1 actions failed: takedown ep2 on svod-nordics: purge webhook" in stderr.splitlines()[-1]
    usage = _get(s3, inputs["usage"])[0]
    assert {k: v for k, v in usage.items() if k != "failures"} == {"namespace": ns, "batch": inputs["batch"],
                                                                   "complete": False, "records": []}
    assert [(f["index"], f["asset"], f["permanent"]) for f in usage["failures"]] == [(0, "ep2", False)]
    webhook.status = 204
    webhook.requests.clear()
    result, lines, _ = _run(minio, tmp_path, inputs)
    assert result["takenDown"] == 1 and lines[0]["deleted"] == 0 and lines[0]["objects"] == len(keys)
    assert [r["body"]["paths"] for r in webhook.requests] == [keys]  # the same paths, from the ledger
    assert [r["objects"] for r in _get(s3, inputs["usage"])[0]["records"]] == [len(keys)]


def test_a_later_batch_purges_what_a_failed_batch_removed(minio: Any, s3: Any, tmp_path: Path,
                                                          webhook: PurgeServer) -> None:
    """The first batch's Job failed for good (its purge never went through); the operator's next
    batch for the same origin finds nothing to delete and still purges the removed paths."""
    ns = f"wx-{uuid.uuid4().hex[:6]}"
    keys = _fill_origin(s3, ns, "ep3")
    webhook.status = 503
    first = _inputs(ns, [_action("takedown", ns, "ep3", webhook=webhook.url)])
    _run(minio, tmp_path, first, expect=2)
    ledger = purge_ledger(S3Uri.parse(first["usage"]), first["batch"])
    assert _get_or_none(s3, ledger) == {"purges": {first["actions"][0]["origin"]: keys}}
    webhook.status = 200
    webhook.requests.clear()
    second = _inputs(ns, [_action("takedown", ns, "ep3", webhook=webhook.url)])
    result, lines, _ = _run(minio, tmp_path, second)
    assert result["takenDown"] == 1 and lines[0]["deleted"] == 0
    assert [r["body"]["paths"] for r in webhook.requests] == [keys]
    assert _get_or_none(s3, ledger) is None  # its only origin was purged


def _get_or_none(s3: Any, uri: S3Uri) -> Any:
    try:
        return json.loads(s3.get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def _timed(minio: Any, tmp_path: Path, inputs: dict[str, Any]) -> tuple[float, list[Any]]:
    started = time.monotonic()
    _, lines, _ = _run(minio, tmp_path, inputs)
    return time.monotonic() - started, lines


def test_a_hundred_assets_taken_down_in_one_job(minio: Any, s3: Any, tmp_path: Path, webhook: PurgeServer,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ns = f"bulk-{uuid.uuid4().hex[:6]}"
    assets = [f"ep{n:03d}" for n in range(100)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda a: _fill_origin(s3, ns, a), assets + ["single"]))
    one = _inputs(ns, [_action("takedown", ns, "single", webhook=webhook.url)])
    single, single_lines = _timed(minio, tmp_path, one)
    actions = [_action("takedown", ns, a, webhook=webhook.url) for a in assets]
    inputs = _inputs(ns, actions, [{"uri": f"s3://{ORIGIN}/feeds/{ns}/svod.json", "entries": []}])
    bulk, lines = _timed(minio, tmp_path, inputs)
    assert all(line["verified"] and line["objects"] == 5 for line in lines) and len(lines) == 100
    assert _listing(s3, f"s3://{ORIGIN}/svod-nordics/{ns}") == {}
    assert len(webhook.requests) == 101
    assert len(_get(s3, inputs["usage"])[0]["records"]) == 100
    with capsys.disabled():
        print(f"\ndistribute takedown wall time (subprocess, incl. interpreter start): 100 assets × 5 objects "
              f"{bulk:.2f}s (in-worker {max(line['seconds'] for line in lines):.2f}s), one asset {single:.2f}s "
              f"(in-worker {single_lines[0]['seconds']:.2f}s); input {len(json.dumps(inputs))} bytes")


def test_report_usage_end_to_end_on_what_the_worker_wrote(minio: Any, s3: Any, tmp_path: Path) -> None:
    ns = f"rep-{uuid.uuid4().hex[:6]}"
    package, _ = _package(s3, tmp_path, ns, "ep1")
    start = datetime.now(UTC) - timedelta(minutes=1)
    _run(minio, tmp_path, _inputs(ns, [_action("publish", ns, "ep1", package),
                                       _action("publish", ns, "ep9", package, target="avod-nordics")]))
    _run(minio, tmp_path, _inputs(ns, [_action("takedown", ns, "ep1")]))
    end = datetime.now(UTC) + timedelta(minutes=1)
    env = _env(minio)
    command = [sys.executable, "-m", "kubemam", "report", "usage", "--from", start.isoformat(), "--to", end.isoformat(),
               "--namespace", ns]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=60).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["namespace", "asset", "territory", "channel", "target", "window", "from", "to"]
    assert [(r["asset"], r["territory"], r["target"], bool(r["to"])) for r in rows] == [
        ("ep1", "NO", "svod-nordics", True), ("ep1", "SE", "svod-nordics", True),
        ("ep9", "NO", "avod-nordics", False), ("ep9", "SE", "avod-nordics", False)]
    assert all(r["namespace"] == ns and r["channel"] == "svod" for r in rows)
    assert parse_time(rows[0]["from"]) < parse_time(rows[0]["to"])
    as_json = subprocess.run([*command, "--format", "json"], env=env, capture_output=True, text=True, check=True,
                             timeout=60).stdout
    assert [r["to"] is None for r in json.loads(as_json)] == [False, False, True, True]
    # A range that ends before anything was published is empty: just the header.
    before = subprocess.run([*command[:6], "2020-01-01", "--to", "2020-02-01", "--namespace", ns], env=env,
                            capture_output=True, text=True, check=True, timeout=60).stdout
    assert before == ",".join(["namespace", "asset", "territory", "channel", "target", "window", "from", "to"]) + "\n"
    bad = subprocess.run([*command[:6], "2020-02-01", "--to", "2020-01-01"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--from must be before --to" in bad.stderr


def test_a_broken_target_fails_its_actions_and_feed_and_nothing_else(minio: Any, s3: Any, tmp_path: Path) -> None:
    """One target's bucket is gone: its publish and takedown fail (without being tried), its feed is not
    written; the good target's publish, takedown and feed are done; the report names the failed actions."""
    ns = f"brk-{uuid.uuid4().hex[:6]}"
    broken = f"gone-{ns}"
    package, files = _package(s3, tmp_path, ns, "ep1")
    keys = _fill_origin(s3, ns, "ep2")

    def on(kind: str, asset: str, bucket: str, package: str | None = None) -> dict[str, Any]:
        return {**_action(kind, ns, asset, package), "origin": f"s3://{bucket}/svod-nordics/{ns}/{asset}"}

    actions = [on("takedown", "ep2", ORIGIN), on("takedown", "ep2", broken), on("publish", "ep1", ORIGIN, package),
               on("publish", "ep1", broken, package)]
    actions[1]["target"] = actions[3]["target"] = "svod-broken"
    good_feed, bad_feed = f"s3://{ORIGIN}/feeds/{ns}/svod.json", f"s3://{broken}/feeds/{ns}/svod.json"
    feeds = [{"uri": good_feed, "entries": [_entry("ep1")]},
             {"uri": bad_feed, "entries": [{**_entry("ep1"), "target": "svod-broken"}]}]
    result, lines, _ = _run(minio, tmp_path, _inputs(ns, actions, feeds, batch=uuid.uuid4().hex), expect=2)
    assert [line["verified"] for line in lines] == [True, False, True, False]
    assert [i for i, _ in result["failed"]] == [1, 3]
    assert result["errors"] == [f"bucket {broken} does not exist"]
    assert _listing(s3, actions[0]["origin"]) == {} and len(keys) == 5
    assert _listing(s3, actions[2]["origin"]) == files
    assert _get(s3, good_feed)[0]["entries"] == feeds[0]["entries"]
    usage = _get(s3, result["usage"])[0]
    assert [(r["action"], r["asset"], r["target"]) for r in usage["records"]] == [
        ("takedown", "ep2", "svod-nordics"), ("publish", "ep1", "svod-nordics")]
    assert [f["index"] for f in usage["failures"]] == [1, 3]

    # The bucket is back (empty): the retried pair verifies at once and its feed is written.
    s3.create_bucket(Bucket=broken)
    result, lines, _ = _run(minio, tmp_path, _inputs(ns, [actions[1], actions[3]], feeds[1:]))
    assert result["takenDown"] == 1 and result["published"] == 1 and all(line["verified"] for line in lines)
    assert _listing(s3, actions[3]["origin"]) == files
    assert _get(s3, bad_feed)[0]["entries"] == feeds[1]["entries"]


def test_the_failure_report_fits_the_termination_message() -> None:
    """200 failed actions with long, distinct errors: every index is in the 4 KiB message, the errors as
    far as they fit, the rest pointing at the usage object that holds them all."""
    from kubemam.steps.distribute import DistributeFailure
    from kubemam.worker.contract import MAX_MESSAGE
    from kubemam.worker.distribute import failure_report

    usage = f"s3://{LIBRARY}/usage/media/{BATCH}.json"
    small = failure_report([(3, "bucket x does not exist"), (7, "bucket x does not exist")], "2 of 9 failed", usage)
    assert small.failed == [(3, 0), (7, 0)] and small.errors == ["bucket x does not exist"]
    failed = [(i, f"listing s3://origin/svod/media/asset-{i:03d}: AccessDenied: " + "x" * 300) for i in range(200)]
    report = failure_report(failed, "200 of 200 actions failed: " + "y" * 2000, usage)
    text = json.dumps(report.to_wire(), separators=(",", ":"), sort_keys=True)
    assert len(text.encode()) <= MAX_MESSAGE
    assert [i for i, _ in report.failed] == list(range(200))
    assert report.errors[0].endswith(f"see {usage} (failures)") and len(report.errors) > 1
    by_action = DistributeFailure.model_validate(json.loads(text)).errors_by_action()
    assert by_action[0].startswith("listing s3://origin/svod/media/asset-000") and usage in by_action[199]
