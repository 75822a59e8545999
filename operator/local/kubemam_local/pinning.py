"""`kubemam local pin-kube VERSION`: regenerate the wrapper module for another Kubernetes release.

The staging modules to pin are read from the release's own go.mod (its `replace` block of
`./staging/src/...` paths); each is required at the matching v0.x version, then `go mod tidy`
records go.sum.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from kubemam_local.binaries import KUBE_MODULE_DIR, KUBE_PACKAGES, BinaryError

HEADER = """\
// Wrapper module that builds the local control plane of a pinned Kubernetes release.
// k8s.io/kubernetes replaces its staging modules with local paths, which do not apply to
// a dependent module, so every staging module is pinned here to the matching v0.x release.
// Regenerate with: kubemam local pin-kube VERSION
"""


def staging_modules(release_gomod: str) -> list[str]:
    """Module paths the release replaces with ./staging/src/... directories."""
    return re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/src/", release_gomod, re.M)


def published(module: str, version: str, module_dir: Path) -> bool:
    result = subprocess.run(["go", "list", "-m", "-json", f"{module}@{version}"], cwd=module_dir,
                            capture_output=True, text=True)
    return result.returncode == 0


def render_gomod(kube_version: str, go_version: str, staging: list[str]) -> str:
    staging_version = "v0." + kube_version.removeprefix("v1.")
    requires = [f"\tk8s.io/kubernetes {kube_version}"] + [f"\t{m} {staging_version}" for m in staging]
    tools = [f"\t{pkg}" for pkg in sorted(KUBE_PACKAGES.values())]
    return (HEADER + "module kubemam.io/localcluster/kube\n\n" + f"go {go_version}\n\n"
            + "require (\n" + "\n".join(requires) + "\n)\n\n" + "tool (\n" + "\n".join(tools) + "\n)\n")


def pin(kube_version: str, module_dir: Path = KUBE_MODULE_DIR) -> list[str]:
    """Rewrite go.mod/go.sum for kube_version; returns the staging modules pinned."""
    if not re.fullmatch(r"v1\.\d+\.\d+", kube_version):
        raise BinaryError(f"{kube_version!r} is not a Kubernetes release like v1.36.3")
    info = subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{kube_version}"],
                          cwd="/", capture_output=True, text=True)
    if info.returncode != 0:
        raise BinaryError(f"cannot download k8s.io/kubernetes@{kube_version}: {info.stdout}{info.stderr}")
    release_gomod = Path(json.loads(info.stdout)["GoMod"]).read_text()
    go_version = re.search(r"^go (\S+)", release_gomod, re.M)
    staging_version = "v0." + kube_version.removeprefix("v1.")
    # A few staging modules (sample plugins) are never published; they are not needed to build.
    staging = [m for m in staging_modules(release_gomod) if published(m, staging_version, module_dir)]
    (module_dir / "go.mod").write_text(render_gomod(kube_version, go_version.group(1) if go_version else "1.26.0",
                                                    staging))
    (module_dir / "go.sum").unlink(missing_ok=True)
    tidy = subprocess.run(["go", "mod", "tidy"], cwd=module_dir, capture_output=True, text=True,
                          env=None)
    if tidy.returncode != 0:
        raise BinaryError(f"go mod tidy failed:\n{tidy.stderr[-4000:]}")
    return staging
