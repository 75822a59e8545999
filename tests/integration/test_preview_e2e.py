"""`kubemam preview` in Chromium: a demo-like asset (black at the start, a freeze, a loud passage) ingested,
transcoded and packaged with ClearKey by the operator on a local cluster; the page is served by the real
command, loaded in Debian's Chromium (tests/browser/preview.mjs). A click on the freeze in the QC timeline seeks
the player there, and the decoded frame is the test picture (not blank); the loudness plot has a point a second
and the target line; the thumbnail sprite sheets load from presigned S3 URLs; the DASH package plays with the
asset's ClearKey keys. The keys never reach the command's output."""

from __future__ import annotations

import base64
import copy
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubemam.media.sample import make_sample
from tests.browser_player import BROWSER_DIR, CHROMIUM, ensure_browser_deps
from tests.helpers import local_stack, packaged, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]

NAMESPACE = "kubemam-preview"
SECONDS = 10  # the sample: black 0-1 s, a freeze 6-8 s, a loud passage 4-7 s
LADDER = {
    "apiVersion": "kubemam.io/v1alpha1", "kind": "TranscodeLadder", "metadata": {"name": "preview"},
    "spec": {
        "segmentDurationSeconds": 2,
        "renditions": [{"name": "h264-180p", "codec": "h264", "width": 320, "height": 180, "profile": "main",
                        "preset": "veryfast", "rateControl": {"mode": "crf", "crf": 28, "maxrateKbps": 400,
                                                              "bufsizeKbps": 800}}],
        "audio": [{"name": "stereo-en", "bitrateKbps": 96, "language": "en"}],
        "packaging": {"formats": ["dash", "hls"]},
        "thumbnails": {"intervalSeconds": 2, "width": 160, "spriteColumns": 3, "spriteRows": 1},
        "drm": {"systems": ["clearkey"], "scheme": "cenc", "keyProvider": {"type": "secret"}},
    },
}
ASSET = {
    "apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "metadata": {"name": "clip"},
    "spec": {"source": {"uri": "s3://kubemam-library/incoming/clip.mov"}, "metadata": {"title": "Clip <b>one</b>"},
             "timeline": {"frameRate": "25", "startTimecode": "10:00:00:00"}, "ladderRef": {"name": "preview"},
             "markers": [{"name": "break-1", "kind": "adBreak", "start": "10:00:03:00",
                          "note": "</script><script>window.__pwned=1</script>"}]},
}




def _gray_pixels(png: Path) -> bytes:
    """The screenshot's pixels as 8-bit luma, decoded by ffmpeg."""
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(png), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                          capture_output=True, check=True, timeout=60)
    return done.stdout


def _start_preview(kubeconfig: Path, endpoint: str, log: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBEMAM_CHROMIUM": CHROMIUM}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KUBEMAM_PLAYER_JS"):
        env.pop(name, None)  # credentials come from the namespace's Secret; the player is found by itself
    proc = subprocess.Popen([sys.executable, "-m", "kubemam", "preview", "ma", "clip", "-n", NAMESPACE, "--no-open",
                             "--s3-endpoint", endpoint, "--s3-secret", "kubemam-s3", *extra], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=open(log, "w"))  # noqa: SIM115 - closed with the process
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True).start()
    for _ in range(60):
        try:
            first = lines.get(timeout=1)
            break
        except queue.Empty:
            assert proc.poll() is None, f"kubemam preview exited {proc.returncode}:\n{log.read_text()}"
    else:
        raise AssertionError(f"kubemam preview printed no URL in 60 s:\n{log.read_text()}")
    url = first.rsplit(" ", 1)[-1].strip()
    assert url.startswith("http://127.0.0.1:"), first + log.read_text()
    return proc, url


def _browse(config: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(["node", str(BROWSER_DIR / "preview.mjs"), "--config", json.dumps(config)],
                          cwd=BROWSER_DIR, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "KUBEMAM_CHROMIUM": CHROMIUM})
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_preview_page_seeks_plots_and_plays(control_plane: Any, tmp_path: Path) -> None:
    ensure_browser_deps()
    with local_stack(control_plane, tmp_path, NAMESPACE) as stack:
        store, custom = stack.store, stack.custom
        master = make_sample(tmp_path / "clip.mov", width=640, height=360, seconds=SECONDS)
        store.upload_file(str(master), "kubemam-library", "incoming/clip.mov")
        custom.create("transcodeladders", copy.deepcopy(LADDER))
        custom.create("mediaassets", copy.deepcopy(ASSET))
        missing = subprocess.run([sys.executable, "-m", "kubemam", "preview", "ma", "nosuch", "-n", NAMESPACE,
                                  "--no-open", "--s3-endpoint", stack.s3.endpoint, "--s3-secret", "kubemam-s3"],
                                 env={**os.environ, "KUBECONFIG": str(stack.kubeconfig)}, capture_output=True,
                                 text=True, timeout=60)
        assert missing.returncode == 1 and missing.stderr.strip().endswith(
            f"mediaasset 'nosuch' not found in namespace {NAMESPACE}"), missing.stderr
        try:
            status = wait_for(lambda: packaged(custom, "clip"), timeout=600, what="the asset to be packaged")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{stack.log.read_text()[-3000:]}") from None
        checks = {i["check"] for i in status["qc"]["issues"]}
        assert {"black", "freeze", "loudness"} <= checks, status["qc"]
        assert status["qc"]["loudnessUri"].endswith("/loudness.json")

        proc, url = _start_preview(stack.kubeconfig, stack.s3.endpoint, tmp_path / "preview.log")
        try:
            shot = tmp_path / "seek.png"
            config = {"url": url, "check": "freeze", "screenshot": str(shot), "timeout": 120,
                      "packages": ["package-dash", "package-hls"]}
            result = _browse(config)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        assert result["ok"] and not result["errors"], result

        # The QC timeline: the freeze at 6 s (10:00:06:00) seeks the player there, on the proxy.
        freeze = next(r for r in result["timeline"] if r["check"] == "freeze")
        assert abs(freeze["start"] - 6.0) < 0.1 and "10:00:06:00" in freeze["text"], result["timeline"]
        assert any(r["check"] == "black" and r["start"] == 0.0 for r in result["timeline"])
        marker = next(r for r in result["timeline"] if r["source"] == "marker")
        assert marker["start"] == 3.0 and "</script>" in marker["text"]  # shown as text, not run
        seek = result["seek"]
        assert seek["source"] == "proxy" and abs(seek["currentTime"] - freeze["start"]) < 0.05, seek

        # The frame there is the test picture: a decoded frame with many grey levels, not a blank box.
        pixels = _gray_pixels(shot)
        mean = sum(pixels) / len(pixels)
        spread = (sum((p - mean) ** 2 for p in pixels[::7]) / len(pixels[::7])) ** 0.5
        assert len(set(pixels)) > 50 and spread > 20, (len(set(pixels)), spread)

        # The loudness plot: one point a second for both meters, and the -23 LUFS target line.
        assert result["plot"]["momentary"] == result["plot"]["shortTerm"] >= SECONDS - 1, result["plot"]
        assert result["plot"]["target"] == -23.0 and result["plot"]["targetY"] > 0

        # The thumbnail strip: every sprite sheet loaded from its presigned URL; one thumbnail per 2 s.
        thumbs = result["thumbnails"]
        assert thumbs["sheets"] >= 2 and thumbs["loaded"] == thumbs["sheets"] and thumbs["thumbs"] == SECONDS // 2

        # The DASH and HLS packages played through Shaka Player with the asset's ClearKey keys.
        assert "shaka-player.compiled.js" in result["player"], result["player"]
        for played, fmt in zip(result["packages"], ("dash", "hls"), strict=True):
            assert played["source"] == f"package-{fmt}" and played["height"] == 180, played
            assert played["currentTime"] > played["from"] + 1.0, played

        # With no Shaka Player at all the files still play and seek; the packages are offered disabled.
        proc, url = _start_preview(stack.kubeconfig, stack.s3.endpoint, tmp_path / "plain.log", "--player-js", "none")
        try:
            plain = _browse({"url": url, "check": "freeze", "timeout": 120})
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        assert plain["ok"] and not plain["errors"], plain
        assert abs(plain["seek"]["currentTime"] - 6.0) < 0.05 and plain["seek"]["source"] == "proxy", plain["seek"]
        assert "no Shaka Player" in plain["player"]
        assert {s["id"]: s["disabled"] for s in plain["sources"]} == {
            "proxy": False, "rendition-h264-180p": False, "rendition-stereo-en": False, "package-dash": True,
            "package-hls": True}

        # The keys went into the page only: not into the command's output.
        secrets = client.CoreV1Api(stack.api).list_namespaced_secret(NAMESPACE).items
        keys = [base64.b64decode(v).decode().strip() for s in secrets for k, v in (s.data or {}).items()
                if k.endswith(".key")]
        assert keys
        printed = (tmp_path / "preview.log").read_text() + json.dumps(result)
        assert not [key for key in keys if key in printed]
