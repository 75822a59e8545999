"""Find or build the control-plane binaries of the pinned Kubernetes release.

Order: KUBEBUILDER_ASSETS (the envtest convention) → the per-version cache → built from
the Go module proxy through the wrapper module in gobuild/kube, whose go.mod pins every
Kubernetes staging module to the release's matching v0.x version.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GOBUILD_DIR = Path(__file__).parent / "gobuild"
KUBE_MODULE_DIR = GOBUILD_DIR / "kube"

# binary name → Go package (built inside the wrapper module)
KUBE_PACKAGES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    # The real node (`kubemam local up --node kubelet`, kubemam_local/kubelet.py); built on first use only.
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "etcd": "go.etcd.io/etcd/server/v3",
}
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager")
# Packages whose version variables `kubectl version` and the API server's /version report.
VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")


class BinaryError(RuntimeError):
    pass


def kube_version(module_dir: Path = KUBE_MODULE_DIR) -> str:
    """The Kubernetes release the wrapper module pins, e.g. v1.36.3."""
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", (module_dir / "go.mod").read_text(), re.M)
    if not match:
        raise BinaryError(f"{module_dir}/go.mod does not require k8s.io/kubernetes")
    return match.group(1)


def etcd_version(module_dir: Path = KUBE_MODULE_DIR) -> str:
    match = re.search(r"^\s*go\.etcd\.io/etcd/server/v3 (v\S+)", (module_dir / "go.mod").read_text(), re.M)
    if not match:
        raise BinaryError(f"{module_dir}/go.mod does not pin go.etcd.io/etcd/server/v3")
    return match.group(1)


def cache_root() -> Path:
    base = os.environ.get("KUBEMAM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kubemam"
    )
    return Path(base)


def cache_dir(version: str) -> Path:
    return cache_root() / "kube" / version / "bin"


def version_ldflags(version: str) -> str:
    match = re.match(r"^v(\d+)\.(\d+)\.", version)
    if not match:
        raise BinaryError(f"not a release version: {version}")
    major, minor = match.groups()
    flags = ["-s", "-w"]
    for pkg in VERSION_PACKAGES:
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


@dataclass(frozen=True)
class Binaries:
    version: str
    paths: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def build(names: list[str], version: str, out_dir: Path, module_dir: Path = KUBE_MODULE_DIR) -> None:
    """go build the named binaries into out_dir; each lands atomically (temp name, then rename)."""
    go = shutil.which("go")
    if go is None:
        raise BinaryError(
            "the control-plane binaries are not cached and Go is not on PATH to build them: install Go "
            "1.26+ or set KUBEBUILDER_ASSETS to a directory holding etcd, kube-apiserver and "
            "kube-controller-manager"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
    for name in names:
        started = time.monotonic()
        ldflags = "-s -w" if name == "etcd" else version_ldflags(version)
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            target = Path(tmp) / name
            shown = etcd_version() if name == "etcd" else version
            log.info("building %s %s from the Go module proxy (cached in %s)", name, shown, out_dir)
            result = subprocess.run(
                [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(target), KUBE_PACKAGES[name]],
                cwd=module_dir, env=env, capture_output=True, text=True,
            )
            if result.returncode != 0:
                raise BinaryError(f"go build {KUBE_PACKAGES[name]} failed:\n{result.stderr[-4000:]}")
            target.replace(out_dir / name)
        log.info("built %s in %.0fs", name, time.monotonic() - started)


def resolve(names: tuple[str, ...] | list[str] = CONTROL_PLANE, allow_build: bool = True) -> Binaries:
    """Paths of the named binaries, building the missing ones when allowed."""
    version = kube_version()
    found: dict[str, Path] = {}
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    cached = cache_dir(version)
    for name in names:
        for directory in ([Path(assets)] if assets else []) + [cached]:
            if _executable(directory / name):
                found[name] = directory / name
                break
    missing = [n for n in names if n not in found]
    if missing:
        if not allow_build:
            raise BinaryError(f"missing binaries {', '.join(missing)} (looked in KUBEBUILDER_ASSETS and {cached})")
        cached.mkdir(parents=True, exist_ok=True)
        # Two runs starting at once (make demo and make test) must not build twice.
        with open(cached / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            build([n for n in missing if not _executable(cached / n)], version, cached)
        found.update({n: cached / n for n in missing})
    return Binaries(version, found)
