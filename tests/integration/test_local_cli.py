"""End to end, as a person runs it: `kubemam local up`, apply examples/, the real scheduler, process
node, MinIO and ffmpeg ingest the master; then `down` leaves nothing running."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kubemam.media.timecode import Timecode
from kubemam.storage.uri import S3Uri
from kubemam_local.demo import s3_client, upload_sources
from tests.helpers import EXAMPLES, processes_naming

pytestmark = pytest.mark.integration


def _kubemam(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubemam", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=True)


def _frame(timecode: str) -> int:
    return Timecode.parse(timecode, "25").to_frames("25")


def _assert_qc_matches_the_master(qc: dict, master: Path, s3: Any) -> None:  # type: ignore[type-arg]
    """What the operator reports against ffmpeg run by hand on the same master, and the sample's design."""
    direct = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(master), "-map", "0:a:0", "-af",
                             "ebur128=peak=true", "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
    summary = direct[direct.rfind("Summary:"):]
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))  # type: ignore[union-attr]
    assert abs(qc["loudness"]["integratedLufs"] - integrated) <= 0.5, (qc["loudness"], integrated)
    # The 10 s sample: black 0-1 s, frozen 6-8 s, timecode from 10:00:00:00 at 25 fps; ±1 frame.
    issues = {i["check"]: i for i in qc["issues"]}
    for check, start, end in (("black", "10:00:00:00", "10:00:01:00"), ("freeze", "10:00:06:00", "10:00:08:00")):
        assert abs(_frame(issues[check]["start"]) - _frame(start)) <= 1, issues[check]
        assert abs(_frame(issues[check]["end"]) - _frame(end)) <= 1, issues[check]
    # The example's markers were written for the 30 s demo master: those past this 10 s master are found.
    # Status holds a few issues; the full report the pod wrote to MinIO holds every one.
    report = S3Uri.parse(qc["reportUri"])
    full = json.loads(s3.get_object(Bucket=report.bucket, Key=report.key)["Body"].read())
    assert len(full["issues"]) == qc["issueCount"] >= len(qc["issues"])
    outside = {i["message"].split("'")[1] for i in full["issues"] if i["check"] == "markers"}
    assert outside == {"act-1", "break-1", "credits", "storm-flashes"}, full["issues"]
    assert qc["verdict"] == "Failed"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_up_apply_examples_ingests_for_real_then_down(tmp_path: Path, control_plane: object) -> None:
    # control_plane: the binaries are resolved (built once) before this test starts its own cluster.
    env = {**os.environ, "KUBEMAM_STATE_DIR": str(tmp_path / "state")}
    up = _kubemam("local", "up", env=env)
    try:
        assert "kubemam local cluster v1.36" in up.stdout
        exports = dict(line.removeprefix("export ").split("=", 1)
                       for line in _kubemam("local", "env", env=env).stdout.splitlines())
        state = json.loads((tmp_path / "state" / "ready.json").read_text())
        kubectl = [f"{state['binDir']}/kubectl", f"--kubeconfig={exports['KUBECONFIG']}"]
        upload_sources(state, EXAMPLES, tmp_path / "media", width=640, height=360, seconds=10)
        subprocess.run([*kubectl, "apply", "-n", "kubemam-demo", "-f", str(EXAMPLES)], check=True,
                       capture_output=True, timeout=60)

        def asset() -> dict:  # type: ignore[type-arg]
            out = subprocess.run([*kubectl, "get", "ma", "coastal-s01e01", "-n", "kubemam-demo", "-o", "json"],
                                 check=True, capture_output=True, text=True, timeout=60).stdout
            return dict(json.loads(out))

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if asset().get("status", {}).get("phase") in ("Ready", "Failed"):
                break
            time.sleep(1)
        status = asset()["status"]
        ingested = next(c for c in status["conditions"] if c["type"] == "Ingested")
        assert ingested["status"] == "True", (ingested, (tmp_path / "state" / "operator.log").read_text()[-3000:])
        assert status["phase"] == "Ready", status["conditions"]
        assert status["technical"]["video"]["height"] == 360
        # The example ladder on a 360p master: the rungs above it are skipped, the 360p rung and audio made.
        assert {r["name"] for r in status["renditions"]} == {"h264-360p", "stereo-en"}
        fit = next(c for c in status["conditions"] if c["type"] == "LadderFit")
        assert fit["reason"] == "UpscaleRefused" and "h265-2160p" in fit["message"]
        assert status["technical"]["startTimecode"] == "10:00:00:00"
        # Packaged for DASH and HLS with the example's DRM: key IDs per tier, both caption tracks.
        packages = {p["format"]: p for p in status["packages"]}
        assert set(packages) == {"dash", "hls"} and packages["dash"]["drmSystems"] == ["clearkey", "playready",
                                                                                       "widevine"]
        assert {t["name"] for t in packages["dash"]["tracks"]} == {"h264-360p", "stereo-en"}
        assert len(packages["dash"]["keyIds"]) == 2  # the audio key and the SD key
        store = s3_client(state)
        listed = store.list_objects_v2(Bucket="kubemam-library",
                                       Prefix=packages["dash"]["manifestUri"].split("/", 3)[3].rsplit("/", 1)[0])
        keys = {o["Key"].rsplit("/", 2)[-2] + "/" + o["Key"].rsplit("/", 1)[-1] for o in listed["Contents"]}
        assert {"subs-en-captions/subtitles.vtt", "subs-fr-subtitles/subtitles.vtt"} <= keys
        assert status["previews"]["proxyUri"].startswith("s3://kubemam-library/assets/kubemam-demo/coastal-s01e01/")
        assert status["previews"]["thumbnails"] == 1 and status["previews"]["spriteSheets"] == 1
        _assert_qc_matches_the_master(status["qc"], tmp_path / "media" / "coastal-s01e01.mov", s3_client(state))
        pods = json.loads(subprocess.run([*kubectl, "get", "pods", "-n", "kubemam-demo", "-l", "kubemam.io/step=ingest",
                                          "-o", "json"], check=True, capture_output=True, text=True,
                                         timeout=60).stdout)["items"]
        assert pods[0]["spec"]["nodeName"] == state["node"]
        logs = _kubemam("local", "logs", pods[0]["metadata"]["name"], env=env).stdout
        assert "committed" in logs and 'KUBEMAM_PROGRESS {"percent": 100, "step": "ingest"}' in logs
        # The same log through the API server, which proxies to the process node's kubelet endpoint.
        via_api = subprocess.run([*kubectl, "logs", "-n", "kubemam-demo", pods[0]["metadata"]["name"]], check=True,
                                 capture_output=True, text=True, timeout=60).stdout
        assert via_api == logs
        out = subprocess.run([*kubectl, "get", "ma,tl,rw,ap", "-n", "kubemam-demo"], check=True,
                             capture_output=True, text=True, timeout=60).stdout
        assert "coastal-s01e01" in out and "READY" in out and "PHASE" in out
    finally:
        down = _kubemam("local", "down", env=env)
    assert down.stdout.strip() == "stopped"
    # Nothing of this cluster is left running: no process whose command line names its state dir.
    assert processes_naming(str(tmp_path / "state")) == []
    assert not Path(f"/proc/{state['operatorPid']}").exists()
    gone = subprocess.run([sys.executable, "-m", "kubemam", "local", "env"], capture_output=True, text=True, env=env)
    assert gone.returncode == 1 and "not running" in gone.stderr
