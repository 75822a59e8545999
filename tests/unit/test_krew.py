"""The krew plugin release (tests/krew.py): the manifest has krew's shape and names the archive it was built
with by its real sha256; the archive is reproducible, and its launcher runs the CLI from the zipapp."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from kubemam import __version__
from tests import krew


def test_manifest_names_the_built_archive_by_its_sha256(tmp_path: Path) -> None:
    archive, manifest_path = krew.write(tmp_path / "a")
    plugin = yaml.safe_load(manifest_path.read_text())
    assert plugin["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2" and plugin["kind"] == "Plugin"
    assert plugin["metadata"]["name"] == manifest_path.stem == "kubemam"  # krew-index: file named after the plugin
    spec = plugin["spec"]
    assert spec["version"] == f"v{__version__}" and re.fullmatch(r"v\d+\.\d+\.\d+", spec["version"])
    assert spec["homepage"].startswith("https://") and 0 < len(spec["shortDescription"]) <= 60
    assert spec["description"] and spec["caveats"]
    [platform] = spec["platforms"]
    assert set(platform) == {"selector", "uri", "sha256", "bin"}
    assert platform["selector"]["matchExpressions"] == [{"key": "os", "operator": "In",
                                                         "values": ["darwin", "linux"]}]
    assert platform["uri"] == (f"https://github.com/kubemam/kubemam/releases/download/v{__version__}/"
                               f"kubectl-kubemam-v{__version__}.tar.gz")
    assert platform["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"kubectl-kubemam", "kubemam.pyz", "requirements.txt"}
    assert members[platform["bin"]].mode & 0o111, "krew's bin must be executable"

    # The same sources build the same bytes, so the sha256 in a manifest can be checked by a rebuild.
    again, _ = krew.write(tmp_path / "b")
    assert again.read_bytes() == archive.read_bytes()
    other, custom = krew.write(tmp_path / "c", "https://example.org/{version}/{archive}")
    assert yaml.safe_load(custom.read_text())["spec"]["platforms"][0]["uri"] == (
        f"https://example.org/{__version__}/{other.name}")


def test_launcher_runs_the_cli_from_the_zipapp(tmp_path: Path) -> None:
    archive = krew.build_archive(tmp_path)
    store = tmp_path / "store"
    with tarfile.open(archive) as tar:
        tar.extractall(store, filter="data")
    # krew links ~/.krew/bin/kubectl-kubemam into its store; the launcher must find the store behind the link.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kubectl-kubemam").symlink_to(store / "kubectl-kubemam")
    env = {**os.environ, "KUBEMAM_PYTHON": sys.executable, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([str(tmp_path / "bin" / "kubectl-kubemam"), "preview", "--help"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: kubemam preview" in done.stdout
    assert not (tmp_path / "cache").exists()  # an interpreter with the dependencies needs no venv

    # kubemam itself (and the page template, package data) comes from the zipapp, not from this checkout.
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import kubemam.preview.page as p; "
             "print(p.__file__); print(len(p.template()))")
    done = subprocess.run([sys.executable, "-c", probe, str(store / "kubemam.pyz")], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    where, size = done.stdout.split()
    assert where.startswith(str(store / "kubemam.pyz")) and int(size) > 1000, done.stderr
    requirements = (store / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("kubernetes") for r in requirements) and any(r.startswith("boto3") for r in requirements)
