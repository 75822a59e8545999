"""Rights windows on the local cluster, with windows seconds long: an asset reaches the origins its
licence fully covers when the window opens and is gone — verified by listing — within 5 s of the
end, also across an operator restart; exclusive overlaps are reported; the usage report lists
exactly what happened; `kubemam status` shows the windows and the operator's /metrics count them."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubemam.media.sample import make_sample
from tests.helpers import LocalStack, local_stack, metric_value, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]

NAMESPACE = "kubemam-demo"
ORIGIN = "kubemam-origin"
TARGETS = [
    {"name": "svod-nordics", "channel": "svod", "origin": f"s3://{ORIGIN}/svod-nordics", "territories": ["NO", "SE"]},
    # Great Britain is not licensed: this origin must never receive the asset.
    {"name": "svod-europe", "channel": "svod", "origin": f"s3://{ORIGIN}/svod-europe",
     "territories": ["NO", "SE", "GB"]},
]
LADDER = {
    "apiVersion": "kubemam.io/v1alpha1", "kind": "TranscodeLadder", "metadata": {"name": "small"},
    "spec": {"segmentDurationSeconds": 2,
             "renditions": [{"name": "h264-180p", "codec": "h264", "width": 320, "height": 180, "preset": "veryfast",
                             "rateControl": {"mode": "crf", "crf": 30}}],
             "packaging": {"formats": ["dash", "hls"]}},
}
ASSET = {
    "apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset",
    "metadata": {"name": "ep1", "labels": {"kubemam.io/series": "coastal"}},
    "spec": {"source": {"uri": "s3://kubemam-library/incoming/ep1.mov"}, "metadata": {"title": "Episode 1"},
             "ladderRef": {"name": "small"}},
}


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _window(name: str, start: datetime, end: datetime, territories: list[str], exclusive: bool = False,
            names: list[str] | None = None) -> dict[str, Any]:
    assets = {"names": names} if names else {"selector": {"matchLabels": {"kubemam.io/series": "coastal"}}}
    return {"apiVersion": "kubemam.io/v1alpha1", "kind": "RightsWindow", "metadata": {"name": name},
            "spec": {"assets": assets, "territories": territories, "channels": ["svod"], "start": _stamp(start),
                     "end": _stamp(end), "exclusive": exclusive}}


def _keys(stack: LocalStack, prefix: str) -> list[str]:
    listed = stack.store.list_objects_v2(Bucket=ORIGIN, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents") or []]


def _packaged(stack: LocalStack) -> dict[str, Any] | None:
    status = stack.custom.get("mediaassets", "ep1").get("status") or {}
    if status.get("phase") == "Failed":
        raise AssertionError(status.get("conditions"))
    return status if status.get("packages") else None


def _report(stack: LocalStack, start: datetime, end: datetime) -> list[dict[str, str]]:
    env = {**os.environ, "AWS_ENDPOINT_URL": stack.s3.endpoint, "AWS_ACCESS_KEY_ID": stack.s3.access_key,
           "AWS_SECRET_ACCESS_KEY": stack.s3.secret_key}
    out = subprocess.run([sys.executable, "-m", "kubemam", "report", "usage", "--from", _stamp(start), "--to",
                          _stamp(end), "--format", "csv", "--namespace", NAMESPACE], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return list(csv.DictReader(io.StringIO(out)))


def _armed_job(stack: LocalStack, end: datetime) -> Any:
    """The distribute Job armed for `end` (its not-before annotation), if any."""
    jobs = client.BatchV1Api(stack.api).list_namespaced_job(NAMESPACE, label_selector="kubemam.io/step=distribute")
    return next((j for j in jobs.items if (j.metadata.annotations or {}).get("kubemam.io/not-before") == _stamp(end)),
                None)


def test_windows_publish_and_take_down_on_time(control_plane: Any, tmp_path: Path) -> None:
    with local_stack(control_plane, tmp_path, NAMESPACE) as stack:
        stack.store.create_bucket(Bucket=ORIGIN)
        client.CoreV1Api(stack.api).create_namespaced_config_map(NAMESPACE, {
            "metadata": {"name": "kubemam-distribution"}, "data": {"targets.yaml": yaml.safe_dump(TARGETS)}})
        master = make_sample(tmp_path / "ep1.mov", width=320, height=180, seconds=8)
        stack.store.upload_file(str(master), "kubemam-library", "incoming/ep1.mov")
        stack.custom.create("transcodeladders", copy.deepcopy(LADDER))
        stack.custom.create("mediaassets", copy.deepcopy(ASSET))
        try:
            wait_for(lambda: _packaged(stack), timeout=300, what="the asset to be packaged")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{stack.log.read_text()[-3000:]}") from None
        began = datetime.now(UTC).replace(microsecond=0)

        # The sample's loud passage fails QC: the title is held from publishing until signed off.
        hold = stack.custom.condition("mediaassets", "ep1", "Publishable")
        assert hold is not None and (hold["status"], hold["reason"]) == ("False", "QCHold"), hold
        assert "loudness" in hold["message"] and "qc.kubemam.io/approved" in hold["message"], hold

        # Open in 4 s for 16 s: nothing is published while the hold lasts, the sign-off publishes.
        start, end = began + timedelta(seconds=4), began + timedelta(seconds=20)
        stack.custom.create("rightswindows", _window("nordics", start, end, ["NO", "SE", "DK"]))
        nordics, europe = f"svod-nordics/{NAMESPACE}/ep1/", f"svod-europe/{NAMESPACE}/ep1/"
        time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds() + 3))
        assert _keys(stack, nordics) == [], "published while QC held it"
        client.CustomObjectsApi(stack.api).patch_namespaced_custom_object(
            "kubemam.io", "v1alpha1", NAMESPACE, "mediaassets", "ep1",
            {"metadata": {"annotations": {"qc.kubemam.io/approved": "loud passage is the intended score"}}},
            field_manager="qc-reviewer")
        approved = datetime.now(UTC)
        wait_for(lambda: "manifest.mpd" in {k.rsplit("/", 1)[-1] for k in _keys(stack, nordics)}, timeout=20,
                 what="the package on the Nordic origin")
        opened = datetime.now(UTC)
        assert (opened - approved).total_seconds() < 10
        signed = stack.custom.get("mediaassets", "ep1")["status"]["qcApproval"]
        assert (signed["by"], signed["reason"]) == ("qc-reviewer", "loud passage is the intended score"), signed
        assert "loudness" in signed["failedChecks"], signed
        publishable = stack.custom.condition("mediaassets", "ep1", "Publishable")
        assert publishable is not None and (publishable["status"], publishable["reason"]) == ("True", "QCApproved")
        audit = [e for e in client.CoreV1Api(stack.api).list_namespaced_event(
            NAMESPACE, field_selector="involvedObject.name=ep1").items if e.reason == "QCApproved"]
        assert len(audit) == 1 and "qc-reviewer" in audit[0].message, audit
        published = _keys(stack, nordics)
        assert any(k.endswith(".m4s") for k in published) and any(k.endswith("master.m3u8") for k in published)
        assert _keys(stack, europe) == []  # GB is not licensed
        # The namespace's own feed: another namespace on the same origin bucket has its own.
        feed = json.loads(stack.store.get_object(Bucket=ORIGIN, Key=f"feeds/{NAMESPACE}/svod.json")["Body"].read())
        assert [(e["asset"], e["target"], e["window"]) for e in feed["entries"]] == [("ep1", "svod-nordics",
                                                                                      "nordics")]

        # Armed ahead of the end: the takedown's Job exists before it, and deletes nothing until it.
        armed = wait_for(lambda: _armed_job(stack, end), timeout=30, what="the takedown armed before the end")
        assert armed.metadata.creation_timestamp < end, armed.metadata
        while datetime.now(UTC) < end - timedelta(seconds=1):
            assert _keys(stack, nordics) != [], "taken down before the end"
            time.sleep(0.2)
        # Gone within 5 s of the end, verified by listing.
        wait_for(lambda: _keys(stack, nordics) == [], timeout=30, what="the takedown")
        removed = datetime.now(UTC)
        assert (removed - end).total_seconds() <= 5, f"taken down {removed - end} after the end"
        status = wait_for(lambda: (s := stack.custom.get("rightswindows", "nordics")["status"])
                          and len(s.get("history") or []) == 2 and s, what="the takedown in the window's history")
        assert [(h["action"], h["asset"], h["target"], h["verified"]) for h in status["history"]] == [
            ("Published", "ep1", "svod-nordics", True), ("TakenDown", "ep1", "svod-nordics", True)]
        # Events are written right after the history (same reconcile): wait for them, not for luck.
        wait_for(lambda: {"Published", "TakenDown"} <= {e.reason for e in client.CoreV1Api(stack.api)
                                                        .list_namespaced_event(
                                                            NAMESPACE, field_selector="involvedObject.name=nordics")
                                                        .items}, timeout=10, what="the Published and TakenDown Events")
        asset = stack.custom.get("mediaassets", "ep1")["status"]["distribution"]
        assert [(d["target"], d["state"]) for d in asset] == [("svod-nordics", "TakenDown")]
        distributed = stack.custom.condition("mediaassets", "ep1", "Distributed")
        assert distributed is not None and distributed["status"] == "True", distributed

        # A window that ends while the operator is down is taken down as soon as it is back. (It is stopped
        # well before the end's lead, so that no armed Job takes it down on its own.)
        start2 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        end2 = start2 + timedelta(seconds=35)
        stack.custom.create("rightswindows", _window("nordics-again", start2, end2, ["NO", "SE"]))
        wait_for(lambda: _keys(stack, nordics) != [], timeout=25, what="the second publish")
        stack.stop_operator()
        assert _armed_job(stack, end2) is None
        time.sleep(max(0.0, (end2 - datetime.now(UTC)).total_seconds() + 2))
        assert _keys(stack, nordics) != []  # nobody took it down while the operator was away
        restarted = time.monotonic()
        stack.start_operator()
        wait_for(lambda: _keys(stack, nordics) == [], timeout=60, what="the catch-up takedown")
        assert time.monotonic() - restarted < 30

        # Exclusive overlap: both windows say so, and nothing is published for it.
        later = datetime.now(UTC) + timedelta(hours=1)
        stack.custom.create("rightswindows", _window("exclusive-a", later, later + timedelta(hours=2), ["NO"],
                                                     exclusive=True))
        stack.custom.create("rightswindows", _window("overlap-b", later + timedelta(hours=1),
                                                     later + timedelta(hours=3), ["NO", "SE"]))
        for name in ("exclusive-a", "overlap-b"):
            conflict = wait_for(lambda n=name: (c := stack.custom.condition("rightswindows", n, "Conflict"))
                                and c["status"] == "True" and c, timeout=30, what=f"{name} Conflict")
            assert "ep1" in conflict["message"]

        wait_for(lambda: any(h["action"] == "TakenDown" for h in
                             stack.custom.get("rightswindows", "nordics-again")["status"].get("history") or []),
                 what="the catch-up takedown recorded")
        # Metrics an SRE alerts and graphs on (labels: namespace, channel, action; never an asset).
        # (Counters restarted with the operator: what they hold is the catch-up takedown at least.)
        scraped = stack.metrics()
        assert (metric_value(scraped, "kubemam_distribution_actions_total", action="takedown", channel="svod",
                             namespace=NAMESPACE) or 0) >= 1
        assert (metric_value(scraped, "kubemam_takedown_latency_seconds_count", channel="svod") or 0) >= 1
        assert metric_value(scraped, "kubemam_distribution_failed_attempts", namespace=NAMESPACE) == 0
        assert metric_value(scraped, "kubemam_distribution_quarantined", namespace=NAMESPACE) == 0
        # The catch-up takedown's distribute Job finished after the restart: counted; those before it are not.
        assert (metric_value(scraped, "kubemam_jobs_total", step="distribute", outcome="succeeded") or 0) >= 1
        assert metric_value(scraped, "kubemam_jobs_total", step="ingest") is None
        assert (metric_value(scraped, "kubemam_job_duration_seconds_count", step="distribute") or 0) >= 1
        assert (metric_value(scraped, "kubemam_reconcile_total", kind="RightsWindow", outcome="success") or 0) > 0
        assert (metric_value(scraped, "kubemam_reconcile_total", kind="MediaAsset", outcome="success") or 0) > 0

        # The usage report: exactly the two publishes and two takedowns, one row per territory.
        rows = _report(stack, began - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1))
        assert sorted((r["window"], r["territory"], r["target"]) for r in rows) == [
            ("nordics", "NO", "svod-nordics"), ("nordics", "SE", "svod-nordics"),
            ("nordics-again", "NO", "svod-nordics"), ("nordics-again", "SE", "svod-nordics")]
        assert all(r["to"] for r in rows)

        # A licence open now and ending within a day: the windows gauges (listed every 15 s) and the
        # `kubemam status` view of the windows. It names no existing asset, so it publishes nothing.
        now = datetime.now(UTC).replace(microsecond=0)
        stack.custom.create("rightswindows", _window("open-now", now - timedelta(minutes=1), now + timedelta(hours=2),
                                                     ["FI"], names=["not-an-asset"]))

        def windows_counted() -> str | None:
            text = stack.metrics()
            return text if (metric_value(text, "kubemam_rights_windows_open", namespace=NAMESPACE) or 0) >= 1 \
                else None

        scraped = wait_for(windows_counted, timeout=45, what="kubemam_rights_windows_open")
        assert metric_value(scraped, "kubemam_rights_windows_open", namespace=NAMESPACE) == 1
        assert metric_value(scraped, "kubemam_rights_windows_closing_24h", namespace=NAMESPACE) == 1
        assert metric_value(scraped, "kubemam_assets", namespace=NAMESPACE, phase="Ready") == 1
        overview = subprocess.run([sys.executable, "-m", "kubemam", "status", "-n", NAMESPACE],
                                  env={**os.environ, "KUBECONFIG": str(stack.kubeconfig)}, check=True,
                                  capture_output=True, text=True, timeout=60).stdout
        rows = {line.split()[0]: line for line in overview.splitlines()[1:] if line.startswith("  ")}
        assert " Open " in rows["open-now"] and "closes in " in rows["open-now"], overview
        assert "Scheduled CONFLICT" in rows["exclusive-a"] and "opens in " in rows["exclusive-a"], overview
        assert "Closed" in rows["nordics"], overview
        assert "TakenDown svod-nordics" in rows["ep1"], overview

        # A licence extended within the lead cancels the armed takedown: the title stays (re-published, as the
        # cancelled pod might have raced the cancel), and the records say Published again.
        start3 = datetime.now(UTC).replace(microsecond=0)
        end3 = start3 + timedelta(seconds=25)
        stack.custom.create("rightswindows", _window("extended", start3, end3, ["NO", "SE"]))
        wait_for(lambda: _keys(stack, nordics) != [], timeout=25, what="the third publish")
        armed = wait_for(lambda: _armed_job(stack, end3), timeout=30, what="the third takedown armed")
        client.CustomObjectsApi(stack.api).patch_namespaced_custom_object(
            "kubemam.io", "v1alpha1", NAMESPACE, "rightswindows", "extended",
            {"spec": {"end": _stamp(end3 + timedelta(hours=1))}})
        wait_for(lambda: _armed_job(stack, end3) is None, timeout=30, what="the armed Job cancelled and gone")
        time.sleep(max(0.0, (end3 - datetime.now(UTC)).total_seconds() + 3))
        assert _keys(stack, nordics) != [], "taken down though the licence was extended"
        wait_for(lambda: [(d["target"], d["state"]) for d in
                          stack.custom.get("mediaassets", "ep1")["status"]["distribution"]] == [
                              ("svod-nordics", "Published")], timeout=60, what="Published again")
        assert armed.metadata.name in stack.log.read_text()  # "cancelling armed Job …: ep1 on svod-nordics …"
