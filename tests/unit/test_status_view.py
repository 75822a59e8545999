"""`kubemam status` and `kubemam describe ma`, pure: dicts and a clock in, text out."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from kubemam.status_view import (
    archive_summary,
    asset_progress,
    distribution_summary,
    progress_bar,
    relative,
    render_asset,
    render_status,
    span,
    window_state,
)

NOW = datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)
ASSET = {
    "metadata": {"name": "coastal-s01e01", "namespace": "kubemam-demo", "uid": "u-1",
                 "creationTimestamp": "2027-03-01T10:00:00Z"},
    "spec": {"source": {"uri": "s3://kubemam-library/incoming/coastal-s01e01.mov"},
             "metadata": {"title": "Coastal — Episode 1"}, "ladderRef": {"name": "ott-standard"},
             "archivePolicyRef": {"name": "library-321"}},
    "status": {
        "phase": "Ready",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Packaged", "message": "all steps done",
                        "lastTransitionTime": "2027-03-01T11:00:00Z"},
                       {"type": "QCPassed", "status": "False", "reason": "QCFailed",
                        "message": "QC verdict Failed with 2 issue(s)", "lastTransitionTime": "2027-03-01T10:05:00Z"}],
        "technical": {"container": "mov,mp4,m4a,3gp,3g2,mj2", "durationSeconds": 30.0, "sha256": "ab" * 32,
                      "video": {"codec": "h264", "width": 1920, "height": 1080, "frameRate": "25"},
                      "audio": [{"index": 1, "codec": "aac", "channels": 2}]},
        "qc": {"verdict": "Failed", "checkedAt": "2027-03-01T10:04:00Z", "issueCount": 2,
               "loudness": {"integratedLufs": -30.46, "truePeakDbtp": -12.0},
               "issues": [{"check": "loudness", "severity": "error", "message": "quiet"},
                          {"check": "black", "severity": "warning", "message": "black"}]},
        "renditions": [
            {"name": "h264-1080p", "kind": "video", "uri": "s3://lib/r/1080", "specHash": "1", "codec": "h264",
             "width": 1920, "height": 1080, "bitrate": 4987000},
            {"name": "h264-360p", "kind": "video", "uri": "s3://lib/r/360", "specHash": "2", "codec": "h264",
             "width": 640, "height": 360, "bitrate": 812345},
            {"name": "stereo-en", "kind": "audio", "uri": "s3://lib/r/a", "specHash": "3", "codec": "aac",
             "bitrate": 128000}],
        "packages": [
            {"format": "dash", "manifestUri": "s3://lib/p/manifest.mpd", "drmSystems": ["widevine", "playready"],
             "scheme": "cenc", "keyIds": ["0123456789abcdef0123456789abcdef"]},
            {"format": "hls", "manifestUri": "s3://lib/p/master.m3u8"}],
        "storage": {"tier": "hot", "copies": [
            {"location": "library", "uri": "s3://kubemam-library/masters/x", "storageClass": "STANDARD",
             "verifiedAt": "2027-03-01T11:30:00Z"},
            {"location": "vault", "uri": "s3://kubemam-vault/masters/x", "storageClass": "DEEP_ARCHIVE",
             "offsite": True}]},
        "distribution": [
            {"target": "svod-nordics", "window": "nordics", "channel": "svod", "territories": ["NO", "SE"],
             "state": "Published", "since": "2027-03-01T11:55:00Z", "origin": "s3://origin/svod-nordics/x/"},
            {"target": "avod-uk", "window": "uk", "channel": "avod", "territories": ["GB"],
             "state": "TakenDown", "since": "2027-02-01T00:00:00Z"}],
        "jobs": [{"step": "ingest", "name": "coastal-s01e01-ingest-1a2b3c4d", "inputHash": "h", "state": "Succeeded"},
                 {"step": "transcode", "name": "coastal-s01e01-transcode-5e6f7a8b", "inputHash": "h",
                  "state": "Succeeded"},
                 {"step": "package", "name": "coastal-s01e01-package-9c0d1e2f", "inputHash": "h",
                  "state": "Succeeded"}],
    },
}
RUNNING = {
    "metadata": {"name": "clip", "namespace": "kubemam-demo"},
    "spec": {"source": {"uri": "s3://x/clip.mov"}, "metadata": {"title": "Clip"}},
    "status": {"phase": "Transcoding",
               "jobs": [{"step": "ingest", "name": "clip-ingest-1", "inputHash": "h", "state": "Succeeded"},
                        {"step": "transcode", "name": "clip-transcode-2", "inputHash": "h", "state": "Running"}],
               "progress": {"step": "transcode", "percent": 50, "fps": 42.4, "etaSeconds": 65}},
}
WINDOWS = [
    {"metadata": {"name": "nordics", "namespace": "kubemam-demo"},
     "spec": {"start": "2027-01-01T00:00:00Z", "end": "2027-03-01T14:10:00Z", "channels": ["svod"],
              "territories": ["NO", "SE", "DK", "FI", "IS"]}, "status": {"phase": "Open", "matchedAssets": 2}},
    {"metadata": {"name": "uk", "namespace": "kubemam-demo"},
     "spec": {"start": "2027-04-01T00:00:00Z", "end": "2027-05-01T00:00:00Z", "channels": ["avod", "fast"],
              "territories": ["GB", "IE", "FR", "DE", "ES", "IT", "PT", "NL"]},
     "status": {"conditions": [{"type": "Conflict", "status": "True", "reason": "ExclusiveOverlap",
                                "lastTransitionTime": "2027-03-01T10:00:00Z"}]}},
]
POLICIES = [{"metadata": {"name": "library-321", "namespace": "kubemam-demo"}, "spec": {"copies": {"minCopies": 3}}}]
JOBS = [{"metadata": {"name": "coastal-s01e01-ingest-1a2b3c4d", "creationTimestamp": "2027-03-01T10:00:59Z"},
         "status": {"startTime": "2027-03-01T10:01:00Z", "completionTime": "2027-03-01T10:04:05Z"}}]


def test_small_pieces() -> None:
    assert progress_bar(50) == "[#####-----]  50%"
    assert progress_bar(100) == "[##########] 100%"
    assert progress_bar("junk") == "[----------]   0%"
    assert (span(45), span(185), span(7800), span(3 * 86400 + 7200)) == ("45s", "3m 05s", "2h 10m", "3d 2h")
    assert relative(NOW + timedelta(minutes=5), NOW) == "in 5m"
    assert relative(NOW - timedelta(seconds=30), NOW) == "30s ago"
    assert relative(NOW, NOW) == "now" and relative(None, NOW) == "-"


def test_an_asset_in_one_line() -> None:
    assert asset_progress(RUNNING["status"]) == "[#####-----]  50% transcode 42 fps ETA 1m 05s"
    assert asset_progress(ASSET["status"]) == "done"
    assert asset_progress({"jobs": [{"step": "transcode-chunks", "state": "Pending"}]}) == "queued transcode-chunks"
    assert asset_progress({"phase": "Failed", "jobs": [{"step": "ingest", "state": "Failed"}]}) == "failed ingest"
    assert archive_summary(ASSET["status"], 3) == "hot 1/3 verified"
    assert archive_summary({"storage": {"tier": "cold", "minCopies": 2, "copies": [], "fixity": {"failures": 1},
                                        "restore": {"request": "r1", "state": "Restoring"}}}) == (
        "cold 0/2 verified restore restoring fixity failures 1")
    assert archive_summary({}) == "-"
    assert distribution_summary(ASSET["status"]) == "Published svod-nordics; TakenDown avod-uk"


def test_windows_say_their_next_transition_by_the_clock() -> None:
    assert window_state(WINDOWS[0], NOW) == ("Open", "closes in 2h 10m (2027-03-01 14:10:00Z)")
    assert window_state(WINDOWS[1], NOW) == ("Scheduled", "opens in 30d 12h (2027-04-01 00:00:00Z)")
    assert window_state(WINDOWS[1], NOW + timedelta(days=70))[0] == "Closed"


def test_status_lists_assets_and_windows() -> None:
    text = render_status([RUNNING, ASSET], WINDOWS, POLICIES, NOW, "namespace kubemam-demo")
    assert text.splitlines()[:5] == [
        "kubemam status: namespace kubemam-demo at 2027-03-01 12:00:00Z",
        "",
        "ASSETS (2)",
        "  NAME            PHASE        PROGRESS                                       QC      ARCHIVE           "
        "DISTRIBUTION",
        "  clip            Transcoding  [#####-----]  50% transcode 42 fps ETA 1m 05s  -       -                 -",
    ]
    assert ("  coastal-s01e01  Ready        done                                           Failed  hot 1/3 verified  "
            "Published svod-nordics; TakenDown avod-uk") in text
    assert "  nordics  Open                svod       NO SE DK FI IS     2       closes in 2h 10m " in text
    assert "  uk       Scheduled CONFLICT  avod,fast  GB IE FR DE ES +3  -       opens in 30d 12h " in text
    everywhere = render_status([ASSET], [], [], NOW, "all namespaces", all_namespaces=True)
    assert "  NAMESPACE     NAME            PHASE" in everywhere
    assert "  kubemam-demo  coastal-s01e01  Ready" in everywhere
    assert "WINDOWS: none" in everywhere
    assert "ASSETS: none" in render_status([], [], [], NOW, "namespace empty")


def test_describe_draws_the_lineage_then_conditions_and_jobs() -> None:
    text = render_asset(ASSET, NOW, JOBS, POLICIES[0])
    lineage = text.split("Lineage\n", 1)[1].split("\n\n", 1)[0]
    assert lineage.splitlines() == [
        "source  s3://kubemam-library/incoming/coastal-s01e01.mov",
        f"│       sha256 {'ab' * 32}",
        "│       mov, 30.00 s, h264 1920x1080 @25, 1 audio track",
        "│       QC Failed (2 issues; failed: loudness), -30.5 LUFS, -12.0 dBTP",
        "├─ renditions (3)",
        "│  ├─ h264-1080p  h264   1920x1080  4987 kb/s",
        "│  ├─ h264-360p   h264   640x360    812 kb/s",
        "│  └─ stereo-en   aac    audio      128 kb/s",
        "├─ packages (2)",
        "│  ├─ dash  s3://lib/p/manifest.mpd",
        "│  │  DRM widevine, playready (cenc)",
        "│  │  key IDs 0123456789abcdef0123456789abcdef",
        "│  └─ hls  s3://lib/p/master.m3u8",
        "│     clear (no DRM)",
        "├─ copies (hot 1/3 verified)",
        "│  ├─ library  STANDARD  verified 30m ago",
        "│  │  s3://kubemam-library/masters/x",
        "│  └─ vault  DEEP_ARCHIVE offsite  not verified",
        "│     s3://kubemam-vault/masters/x",
        "└─ distribution (2)",
        "   ├─ svod-nordics  Published 5m ago",
        "   │  svod; NO SE; window nordics",
        "   │  s3://origin/svod-nordics/x/",
        "   └─ avod-uk  TakenDown 28d 12h ago",
        "      avod; GB; window uk",
    ]
    assert "  Phase:          Ready  (Ready=True Packaged)" in text
    assert "  QCPassed  False   QCFailed  1h 55m ago  QC verdict Failed with 2 issue(s)" in text
    assert "  ingest     coastal-s01e01-ingest-1a2b3c4d     Succeeded  3m 05s" in text
    assert "key" not in text.replace("key IDs", "")  # key IDs only: nothing else about keys is shown


def test_describe_lists_the_live_jobs_the_status_no_longer_records() -> None:
    earlier = {"metadata": {"name": "coastal-s01e01-transcode-00000000", "creationTimestamp": "2027-03-01T09:00:00Z",
                            "labels": {"kubemam.io/step": "transcode"}},
               "spec": {}, "status": {"startTime": "2027-03-01T09:00:05Z", "completionTime": "2027-03-01T09:02:05Z",
                                      "conditions": [{"type": "Complete", "status": "True"}]}}
    queued = {"metadata": {"name": "coastal-s01e01-package-11111111", "creationTimestamp": "2027-03-01T11:59:00Z",
                           "labels": {"kubemam.io/step": "package"}}, "spec": {"suspend": True}, "status": {}}
    jobs = render_asset(ASSET, NOW, [*JOBS, earlier, queued]).split("\nJobs\n", 1)[1].splitlines()
    assert [row.split()[:3] for row in jobs[1:]] == [
        ["transcode", "coastal-s01e01-transcode-5e6f7a8b", "Succeeded"],  # recorded, no longer a Job
        ["package", "coastal-s01e01-package-9c0d1e2f", "Succeeded"],
        ["transcode", "coastal-s01e01-transcode-00000000", "Succeeded"],  # a Job the status no longer lists
        ["ingest", "coastal-s01e01-ingest-1a2b3c4d", "Succeeded"],
        ["package", "coastal-s01e01-package-11111111", "Suspended"],
    ]
    assert [row.split()[3:5] for row in jobs[1:]][2:4] == [["2m"], ["3m", "05s"]]


def test_describe_is_defensive_about_what_the_status_does_not_have_yet() -> None:
    text = render_asset({"metadata": {"name": "new", "namespace": "ns"}, "spec": {}}, NOW)
    assert "├─ renditions: none yet" in text and "├─ copies: not archived" in text
    assert "└─ distribution: not distributed" in text and "Jobs: none yet" in text
    odd = render_asset({"metadata": {"name": "odd", "namespace": "ns"}, "spec": {"source": {"uri": "s3://b/k"}},
                        "status": {"renditions": "not a list", "storage": {"copies": [{"location": "x"}],
                                                                           "preservationMaster": {
                                                                               "uri": "s3://b/p.mkv",
                                                                               "codec": "ffv1", "verified": True}},
                                   "qc": {"verdict": "Passed"}}}, NOW)
    assert "├─ copies (0 verified)" in odd and "preservation master  ffv1  verified" in odd
    assert "QC Passed (0 issues)" in odd


def test_describe_shows_a_quarantined_target_with_its_error_and_retry() -> None:
    from datetime import UTC, datetime

    from kubemam.status_view import render_asset

    now = datetime(2027, 1, 1, tzinfo=UTC)
    body = {"metadata": {"name": "ep1", "namespace": "m"}, "spec": {}, "status": {"distribution": [{
        "target": "svod-bad", "state": "Pending", "channel": "svod", "territories": ["NO"], "window": "w",
        "quarantine": {"action": "publish", "attempts": 3, "error": "bucket origin-bad does not exist",
                       "since": "2027-01-01T00:00:00Z", "retryAt": "2027-01-01T00:00:08Z"}}]}}
    text = render_asset(body, now)
    assert "svod-bad  Pending  QUARANTINED (publish, 3 attempts)" in text
    assert "retry in 8s: bucket origin-bad does not exist" in text


def test_describe_says_whether_qc_holds_the_title_and_who_signed_it_off() -> None:
    def body(status: str, reason: str, message: str, approval: dict[str, str] | None = None) -> dict[str, Any]:
        gate = {"type": "Publishable", "status": status, "reason": reason, "message": message,
                "lastTransitionTime": "2026-11-30T10:00:00Z"}
        return {"metadata": {"name": "ep1", "namespace": "ns"}, "spec": {},
                "status": {"conditions": [gate], **({"qcApproval": approval} if approval else {})}}

    held = render_asset(body("False", "QCHold", "QC failed: loudness; held from publishing until approved"), NOW)
    assert re.search(r"^  Publishable:\s+no \(QCHold\) — QC failed: loudness", held, re.M), held
    signed = render_asset(body("True", "QCApproved", "approved", {"by": "jane", "at": "2026-11-30T10:05:00Z",
                                                                   "reason": "intended score"}), NOW)
    assert "Publishable:    yes — QC failed, approved by jane at 2026-11-30T10:05:00Z: intended score" in signed
    assert "Publishable:    -" in render_asset({"metadata": {"name": "n", "namespace": "ns"}}, NOW)
