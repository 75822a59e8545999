"""End to end, as a person runs it: `kubemam local up`, apply examples/, the real scheduler, process
node, MinIO and ffmpeg ingest the master; then `down` leaves nothing running."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubemam.demo import upload_sources
from tests.helpers import EXAMPLES

pytestmark = pytest.mark.integration


def _kubemam(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubemam", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=True)


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

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            ingested = [c for c in asset().get("status", {}).get("conditions", []) if c["type"] == "Ingested"]
            if ingested and ingested[0]["status"] != "Unknown":
                break
            time.sleep(1)
        status = asset()["status"]
        ingested = next(c for c in status["conditions"] if c["type"] == "Ingested")
        assert ingested["status"] == "True", (ingested, (tmp_path / "state" / "operator.log").read_text()[-3000:])
        assert status["phase"] == "Ready" and status["technical"]["video"]["height"] == 360
        assert status["technical"]["startTimecode"] == "10:00:00:00"
        assert status["previews"]["proxyUri"].startswith("s3://kubemam-library/assets/kubemam-demo/coastal-s01e01/")
        assert status["previews"]["thumbnails"] == 1
        checks = {i["check"]: i.get("start") for i in status["qc"]["issues"]}
        assert checks["black"] == "10:00:00:00" and checks["freeze"] == "10:00:06:00"
        pods = json.loads(subprocess.run([*kubectl, "get", "pods", "-n", "kubemam-demo", "-o", "json"], check=True,
                                         capture_output=True, text=True, timeout=60).stdout)["items"]
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
    leftovers = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(tmp_path / "state") in cmdline:
            leftovers.append(cmdline)
    assert leftovers == []
    assert not Path(f"/proc/{state['operatorPid']}").exists()
    gone = subprocess.run([sys.executable, "-m", "kubemam", "local", "env"], capture_output=True, text=True, env=env)
    assert gone.returncode == 1 and "not running" in gone.stderr
