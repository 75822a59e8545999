"""`kubemam demo` as `make demo` runs it, from a clean state to Ready: the examples applied in dependency
order, each step shown as it goes, and the status and describe views at the end; then `local down`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import processes_naming

pytestmark = pytest.mark.integration

ASSET = "coastal-s01e01"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_demo_from_a_clean_state_reaches_ready_and_shows_each_step(tmp_path: Path, control_plane: object) -> None:
    # control_plane: the binaries are resolved (built once) before the demo starts a cluster of its own,
    # in a state directory of its own so it does not meet any other test's (or a developer's) cluster.
    state = tmp_path / "state"
    env = {**os.environ, "KUBEMAM_STATE_DIR": str(state)}
    started = time.monotonic()
    try:
        demo = subprocess.run([sys.executable, "-m", "kubemam", "demo", "--master-size", "640x360",
                               "--master-seconds", "10", "--watch", "600"], capture_output=True, text=True,
                              env=env, timeout=900)
    finally:
        down = subprocess.run([sys.executable, "-m", "kubemam", "local", "down"], capture_output=True, text=True,
                              env=env, timeout=120)
    took = time.monotonic() - started
    out = demo.stdout
    print(out)
    print(f"the demo took {took:.0f}s")
    assert demo.returncode == 0, (out[-4000:], demo.stderr[-3000:],
                                  (state / "operator.log").read_text(errors="replace")[-3000:])
    assert down.stdout.strip() == "stopped"

    # What assets refer to is applied (and reconciled) before the asset: no LadderNotFound on the way.
    applied = [m.group(1) for m in re.finditer(r"^== applying \d+ (\w+?)s? to namespace", out, re.M)]
    assert applied == ["TranscodeLadder", "ArchivePolicy", "ConfigMap", "RightsWindow", "MediaAsset"], applied
    assert re.search(r"^   TranscodeLadder ott-standard: Ready=True", out, re.M), out
    assert "LadderNotFound" not in out

    # Each step as it goes, in order: its Job running, then succeeded; one line per change.
    follow = out[out.index("== following"):out.index("== kubemam status")]
    positions = []
    for step in ("ingest", "transcode", "package", "archive"):
        succeeded = re.search(rf"^   \d\d:\d\d:\d\d {ASSET}  {step}\s+Job {ASSET}-{step}-\S+ Succeeded$", follow, re.M)
        assert succeeded, (step, follow)
        positions.append(succeeded.start())
    assert positions[:3] == sorted(positions[:3]), follow  # archive runs beside transcode and package
    assert re.search(rf"^   \d\d:\d\d:\d\d {ASSET}  Ready=True", follow, re.M), follow
    # The demo master's loudness fails QC: the title is held from publishing until signed off.
    assert re.search(rf"^   \d\d:\d\d:\d\d {ASSET}  Publishable=False \(QCHold\) — QC failed: .*loudness.*"
                     r"kubectl annotate mediaasset", follow, re.M), follow
    lines = follow.splitlines()[1:]
    assert len(lines) == len(set(lines)), "a line repeats: the demo prints changes only"

    # The views people use, from the CLI itself.
    status = out[out.index("== kubemam status -n kubemam-demo"):]
    assert re.search(rf"^  {ASSET}\s+Ready\s+done\s", status, re.M), status
    describe = out[out.index(f"== kubemam describe ma {ASSET} -n kubemam-demo"):]
    assert f"MediaAsset kubemam-demo/{ASSET}" in describe and "Lineage" in describe
    assert re.search(r"^  Phase:\s+Ready", describe, re.M), describe
    assert f"{ASSET} is Ready." in out

    # Nothing of the demo's cluster is left running.
    assert processes_naming(str(state)) == []
