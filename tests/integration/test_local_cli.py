"""`kubemam local up | env | down` as a person runs it: a background cluster, then nothing left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import EXAMPLES

pytestmark = pytest.mark.integration


def _kubemam(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubemam", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=True)


def test_up_env_apply_get_down(tmp_path: Path, control_plane: object) -> None:
    # control_plane: the binaries are resolved (built once) before this test starts its own cluster.
    env = {**os.environ, "KUBEMAM_STATE_DIR": str(tmp_path / "state")}
    up = _kubemam("local", "up", env=env)
    try:
        assert "kubemam local cluster v1.36" in up.stdout
        exports = dict(line.removeprefix("export ").split("=", 1)
                       for line in _kubemam("local", "env", env=env).stdout.splitlines())
        state = json.loads((tmp_path / "state" / "ready.json").read_text())
        kubectl = [f"{state['binDir']}/kubectl", f"--kubeconfig={exports['KUBECONFIG']}"]
        subprocess.run([*kubectl, "apply", "-f", str(EXAMPLES)], check=True, capture_output=True, timeout=60)
        out = subprocess.run([*kubectl, "get", "ma,tl,rw,ap"], check=True, capture_output=True, text=True,
                             timeout=60).stdout
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
