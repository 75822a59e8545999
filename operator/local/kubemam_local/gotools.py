"""Go-built tools the project runs (MinIO, the CENC encryptor over mp4ff, Helm, and the real node's containerd and
runc): found or built, then cached.

Lookup order for each tool: its environment override (e.g. MINIO_BINARY) → PATH (not for the node's runtime:
Debian's docker.io brings a containerd 1.6 and a runc 1.1 that kubelet 1.36 cannot use) → the per-version
cache → `go build` in its wrapper module (or `go install PACKAGE@VERSION`) from the Go module proxy into that
cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kubemam_local.binaries import GOBUILD_DIR, BinaryError, cache_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GoTool:
    name: str
    package: str  # what `go install` builds
    version: str
    env_var: str
    cache_name: str  # the cache folder: tools of one module share it
    # A wrapper module (go.mod + go.sum in kubemam_local/gobuild/) to `go build` in; else `go install pkg@version`.
    module_dir: Path | None = None
    ldflags: str = ""  # added to "-s -w", e.g. -X for the version a tool reports
    tags: str = ""  # go build -tags
    cgo: bool = False  # runc links libseccomp
    from_path: bool = True  # False: never take a same-named binary from PATH (another version of it)

    @property
    def cache_dir(self) -> Path:
        return cache_root() / self.cache_name / self.version / "bin"


# MinIO tags releases as RELEASE.*, so the proxy knows it only by pseudo-version.
MINIO = GoTool("minio", "github.com/minio/minio", "v0.0.0-20260212201848-7aac2a2c5b7c", "MINIO_BINARY", "minio")
# v0.56.0 chains the CENC IV across a file's segments (older mp4ff-encrypt restarted it per fragment).
MP4FF_VERSION = "v0.56.0"
MP4FF_MODULE = GOBUILD_DIR / "mp4ff"


def _module_digest(folder: Path) -> str:
    """Our own source is in the module: its cache folder changes with it, not only with mp4ff's version."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*")):
        if path.suffix in (".go", ".mod", ".sum"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


# kubemam-encrypt (the module's main.go): mp4ff's CENC with the key read from stdin, never argv. The proxy
# here serves no version list for mp4ff, which `go install pkg@version` asks for: the module's go.sum pins it.
KUBEMAM_ENCRYPT = GoTool("kubemam-encrypt", "kubemam.local/gobuild/mp4ff",
                         f"{MP4FF_VERSION}-{_module_digest(MP4FF_MODULE)}", "KUBEMAM_ENCRYPT_BINARY",
                         "kubemam-encrypt", MP4FF_MODULE, from_path=False)
# mp4ff's own command, built from the same module: only the reference tests/integration/test_encryptor.py
# compares kubemam-encrypt's bytes with (it takes the key as an argument; no step runs it).
MP4FF_ENCRYPT = GoTool("mp4ff-encrypt", "github.com/Eyevinn/mp4ff/cmd/mp4ff-encrypt", MP4FF_VERSION,
                       "MP4FF_ENCRYPT_BINARY", "mp4ff", MP4FF_MODULE, from_path=False)
# Helm renders, lints and tests the chart (charts/kubemam). The checksum database is not reachable
# here, so `go install pkg@version` cannot verify it: a wrapper module's go.sum pins it instead.
HELM_VERSION = "v3.22.0"
# As Helm's Makefile does: its version, and the Kubernetes version `helm template` and `helm lint` assume
# (1.x for client-go v0.x, v0.37.0 in v3.22.0's go.mod); unset, they would assume 1.20.
HELM_LDFLAGS = " ".join([f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"] + [
    f"-X helm.sh/helm/v3/pkg/{pkg}.k8sVersion{part}={value}"
    for pkg in ("chartutil", "lint/rules") for part, value in (("Major", "1"), ("Minor", "37"))])
HELM = GoTool("helm", "helm.sh/helm/v3/cmd/helm", HELM_VERSION, "HELM_BINARY", "helm", GOBUILD_DIR / "helm",
              ldflags=HELM_LDFLAGS)
# The real node's container runtime (kubemam_local/kubelet.py): containerd 2.x with its CLI and the runc shim,
# and runc with seccomp (cgo; Debian's libseccomp-dev and pkg-config, which the node installs when missing).
CONTAINERD_VERSION = "v2.4.2"
_CONTAINERD_LDFLAGS = (f"-X github.com/containerd/containerd/v2/version.Version={CONTAINERD_VERSION} "
                       "-X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2")
CONTAINERD, CTR, CONTAINERD_SHIM = (
    GoTool(name, f"github.com/containerd/containerd/v2/cmd/{name}", CONTAINERD_VERSION, env_var, "containerd",
           GOBUILD_DIR / "containerd", ldflags=_CONTAINERD_LDFLAGS, tags="no_btrfs", from_path=False)
    for name, env_var in (("containerd", "CONTAINERD_BINARY"), ("ctr", "CTR_BINARY"),
                          ("containerd-shim-runc-v2", "CONTAINERD_SHIM_BINARY")))
RUNC = GoTool("runc", "github.com/opencontainers/runc", "v1.4.4", "RUNC_BINARY", "runc", GOBUILD_DIR / "runc",
              tags="seccomp", cgo=True, from_path=False)
NODE_RUNTIME = ("containerd", "ctr", "containerd-shim-runc-v2", "runc")
# kube-score judges the rendered chart and the golden step Job (tests/integration/test_chart_security.py).
KUBE_SCORE_VERSION = "v1.20.0"
KUBE_SCORE = GoTool("kube-score", "github.com/zegl/kube-score/cmd/kube-score", KUBE_SCORE_VERSION,
                    "KUBE_SCORE_BINARY", "kube-score", GOBUILD_DIR / "kube-score",
                    ldflags=f"-X main.version={KUBE_SCORE_VERSION.removeprefix('v')}")
TOOLS = {tool.name: tool for tool in (MINIO, KUBEMAM_ENCRYPT, MP4FF_ENCRYPT, HELM, CONTAINERD, CTR, CONTAINERD_SHIM,
                                      RUNC, KUBE_SCORE)}


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def resolve_tool(name: str, allow_build: bool = True) -> Path:
    tool = TOOLS[name]
    explicit = os.environ.get(tool.env_var)
    if explicit:
        if not _executable(Path(explicit)):
            raise BinaryError(f"{tool.env_var}={explicit} is not an executable file")
        return Path(explicit)
    on_path = shutil.which(tool.name) if tool.from_path else None
    if on_path:
        return Path(on_path)
    cached = tool.cache_dir / tool.name
    if _executable(cached):
        return cached
    if not allow_build:
        raise BinaryError(f"no {tool.name}: set {tool.env_var}, put it on PATH, or build it into {cached.parent}")
    return _build(tool, cached)


# The tools the worker image carries beside the package (images/worker/Dockerfile): the process node
# puts them on its pods' PATH, as the image puts them on its own.
WORKER_TOOLS = ("kubemam-encrypt",)


def worker_tools(allow_build: bool = True) -> dict[str, Path]:
    """The worker image's tools, found or built; a tool that cannot be had is left out with a warning
    (the step that needs it then fails in words: the package worker's StepError)."""
    found: dict[str, Path] = {}
    for name in WORKER_TOOLS:
        try:
            found[name] = resolve_tool(name, allow_build=allow_build)
        except BinaryError as err:
            log.warning("step pods will have no %s: %s", name, err)
    return found


def _build(tool: GoTool, cached: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        raise BinaryError(f"{tool.name} is not cached and Go is not on PATH to build it; set {tool.env_var}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    with open(cached.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # make demo and make test starting at once build once
        if _executable(cached):
            return cached
        started = time.monotonic()
        log.info("building %s %s from the Go module proxy (cached in %s)", tool.name, tool.version, cached.parent)
        with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
            env = {**os.environ, "CGO_ENABLED": "1" if tool.cgo else "0", "GOBIN": tmp,
                   "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "auto")}
            ldflags = f"-s -w {tool.ldflags}".strip()
            tags = ["-tags", tool.tags] if tool.tags else []
            if tool.module_dir is not None:
                command = [go, "build", "-mod=readonly", "-trimpath", *tags, "-ldflags", ldflags, "-o",
                           str(Path(tmp) / tool.name), tool.package]
                cwd = str(tool.module_dir)
            else:
                command = [go, "install", "-trimpath", *tags, "-ldflags", ldflags, f"{tool.package}@{tool.version}"]
                cwd = tmp
            result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
            if result.returncode != 0:
                raise BinaryError(f"go install {tool.package} failed:\n{result.stderr[-4000:]}")
            (Path(tmp) / tool.name).replace(cached)
        log.info("built %s in %.0fs", tool.name, time.monotonic() - started)
    return cached
