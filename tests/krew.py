"""The kubectl plugin's release: an archive krew installs and the krew Plugin manifest naming it.

The archive (kubectl-kubemam-v<version>.tar.gz, byte-for-byte reproducible) holds:
- kubectl-kubemam: a POSIX sh launcher (krew's `bin`), which finds python3 >= 3.11 and runs kubemam.pyz with
  kubemam's dependencies from a venv it makes once, with pip, under ${XDG_CACHE_HOME:-~/.cache}/kubemam/
  (KUBEMAM_PYTHON: an interpreter to use; one that already has the dependencies is used as it is);
- kubemam.pyz: a zipapp of the kubemam package (pure Python; its compiled dependencies, such as pydantic-core,
  cannot be imported from a zip, hence the venv);
- requirements.txt: pyproject.toml's dependencies, what pip installs into that venv.

The manifest (kubemam.yaml) carries the archive's sha256 and the release URL. `make krew` (python -m tests.krew)
writes both to dist/krew/; tests/unit/test_krew.py builds them and checks the manifest against the archive.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "operator" / "kubemam"
PLUGIN = "kubemam"
BIN = "kubectl-kubemam"
RELEASE_URL = "https://github.com/kubemam/kubemam/releases/download/v{version}/{archive}"
EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: the same sources make the same bytes
TAR_MTIME = 315532800  # 1980-01-01, the same instant

LAUNCHER = r"""#!/bin/sh
# kubectl-kubemam @VERSION@: the kubemam CLI as a kubectl plugin (`kubectl kubemam status`). Needs python3 >= 3.11.
# kubemam's Python dependencies are installed once, by pip, into a venv under
# ${XDG_CACHE_HOME:-~/.cache}/kubemam/; KUBEMAM_PYTHON names an interpreter to use instead of python3, and one
# that already has the dependencies is used as it is.
set -eu
self=$0
while [ -L "$self" ]; do  # krew links ~/.krew/bin/kubectl-kubemam to its store: find the store
    link=$(readlink "$self")
    case $link in /*) self=$link ;; *) self=$(dirname "$self")/$link ;; esac
done
here=$(CDPATH='' cd -- "$(dirname -- "$self")" && pwd -P)
python=
for candidate in ${KUBEMAM_PYTHON:-} python3 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python=$candidate
        break
    fi
done
if [ -z "$python" ]; then
    echo "kubectl-kubemam: needs python3 3.11 or newer (or KUBEMAM_PYTHON naming one)" >&2
    exit 1
fi
if [ -n "${KUBEMAM_PYTHON:-}" ] && "$python" -c '
import importlib.util, sys
needed = ("kopf", "kubernetes", "pydantic", "boto3", "yaml", "ffmpeg", "prometheus_client")
sys.exit(any(importlib.util.find_spec(m) is None for m in needed))
' 2>/dev/null; then
    exec "$python" "$here/kubemam.pyz" "$@"
fi
venv=${XDG_CACHE_HOME:-$HOME/.cache}/kubemam/kubectl-kubemam-@VERSION@-@DIGEST@
if [ ! -f "$venv/.ready" ]; then
    echo "kubectl-kubemam: installing kubemam's Python dependencies into $venv (once)" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    : >"$venv/.ready"
fi
exec "$venv/bin/python" "$here/kubemam.pyz" "$@"
"""

MAIN = "from kubemam.cli import main\n\nraise SystemExit(main())\n"


def project() -> dict[str, object]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"])


def package_files() -> list[Path]:
    """What the kubemam distribution installs: its modules and package data (no caches)."""
    data = {"py.typed", "preview/page.html"}
    return sorted(p for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and (p.suffix == ".py" or p.relative_to(PACKAGE).as_posix() in data))


def zipapp_bytes() -> bytes:
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as pyz:
        def add(name: str, content: bytes) -> None:
            info = zipfile.ZipInfo(name, EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            pyz.writestr(info, content)

        add("__main__.py", MAIN.encode())
        for path in package_files():
            add(f"kubemam/{path.relative_to(PACKAGE).as_posix()}", path.read_bytes())
    return buffer.getvalue()


def archive_name(version: str) -> str:
    return f"{BIN}-v{version}.tar.gz"


def build_archive(out_dir: Path) -> Path:
    """The release archive, reproducible: fixed times and owners, sorted members, gzip without a timestamp."""
    meta = project()
    version = str(meta["version"])
    pyz = zipapp_bytes()
    launcher = (LAUNCHER.replace("@VERSION@", version)
                .replace("@DIGEST@", hashlib.sha256(pyz).hexdigest()[:12]).encode())
    requirements = ("".join(f"{d}\n" for d in meta["dependencies"])).encode()  # type: ignore[attr-defined]
    members = [(BIN, launcher, 0o755), ("kubemam.pyz", pyz, 0o644), ("requirements.txt", requirements, 0o644)]
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / archive_name(version)
    with open(target, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content, mode in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, TAR_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(content))
    return target


def manifest(archive: Path, release_url: str = RELEASE_URL) -> dict[str, object]:
    """The krew Plugin for the archive: one platform entry for Linux and macOS (the launcher is sh, the rest
    Python), with the archive's sha256."""
    version = str(project()["version"])
    return {
        "apiVersion": "krew.googlecontainertools.github.com/v1alpha2",
        "kind": "Plugin",
        "metadata": {"name": PLUGIN},
        "spec": {
            "version": f"v{version}",
            "homepage": "https://github.com/kubemam/kubemam",
            "shortDescription": "Status, describe and preview of kubemam media assets",
            "description": (
                "kubemam's command line as a kubectl plugin: `kubectl kubemam status` (assets with progress,\n"
                "archive and distribution; -o json|yaml), `kubectl kubemam describe ma NAME` (an asset's lineage\n"
                "and Jobs) and `kubectl kubemam preview ma NAME` (a local page to watch an asset's renditions\n"
                "and packages and find its QC findings by timecode).\n"),
            "caveats": (
                "Needs python3 3.11 or newer. The first run installs kubemam's Python dependencies with pip into\n"
                "a venv under ~/.cache/kubemam (KUBEMAM_PYTHON names another interpreter).\n"),
            "platforms": [{
                "selector": {"matchExpressions": [{"key": "os", "operator": "In", "values": ["darwin", "linux"]}]},
                "uri": release_url.format(version=version, archive=archive.name),
                "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
                "bin": BIN,
            }],
        },
    }


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def write(out_dir: Path, release_url: str = RELEASE_URL) -> tuple[Path, Path]:
    archive = build_archive(out_dir)
    target = out_dir / f"{PLUGIN}.yaml"
    target.write_text(yaml.dump(manifest(archive, release_url), Dumper=_Dumper, sort_keys=False, width=120))
    return archive, target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.krew", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "krew", help="default: dist/krew")
    parser.add_argument("--release-url", default=RELEASE_URL, help="with {version} and {archive} (default: the "
                        "GitHub release of v{version})")
    args = parser.parse_args(argv)
    for path in write(args.out, args.release_url):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
