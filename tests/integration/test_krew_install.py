"""The krew release installs with krew itself: `krew install --manifest --archive` validates the Plugin manifest
(apiVersion, name, semver, platforms) and checks the archive's sha256 against it; kubectl then finds the plugin
and `kubectl kubemam` runs the CLI through the launcher krew linked. krew is built from the Go module proxy
once and cached like the project's other Go tools (KREW_BINARY overrides)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubemam_local.gotools import GoTool, _build
from tests import krew

pytestmark = pytest.mark.integration

KREW = GoTool("krew", "sigs.k8s.io/krew/cmd/krew", "v0.4.3", "KREW_BINARY", "krew")  # the proxy's newest here


def _krew() -> Path:
    explicit = os.environ.get(KREW.env_var)
    if explicit:
        return Path(explicit)
    cached = KREW.cache_dir / KREW.name
    return cached if cached.is_file() else _build(KREW, cached)


def test_krew_installs_the_release_and_kubectl_runs_it(tmp_path: Path) -> None:
    archive, manifest = krew.write(tmp_path / "dist")
    env = {**os.environ, "KREW_ROOT": str(tmp_path / "krew"), "KUBEMAM_PYTHON": sys.executable,
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([str(_krew()), "install", f"--manifest={manifest}", f"--archive={archive}"], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Installed plugin: kubemam" in done.stdout + done.stderr

    env["PATH"] = f"{tmp_path / 'krew' / 'bin'}:{env.get('PATH', '')}"
    done = subprocess.run(["kubectl", "kubemam", "preview", "--help"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: kubemam preview")

    # A manifest whose sha256 is not the archive's is refused: the sha256 is what krew checks.
    tampered = tmp_path / "kubemam.yaml"
    tampered.write_text(manifest.read_text().replace(hashlib.sha256(archive.read_bytes()).hexdigest(), "0" * 64))
    env["KREW_ROOT"] = str(tmp_path / "krew2")
    done = subprocess.run([str(_krew()), "install", f"--manifest={tampered}", f"--archive={archive}"], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode != 0 and "sha256" in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
