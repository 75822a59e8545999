"""`kubemam local images` (`make images`): the operator and worker images, built here without a registry.

No image registry is reachable from these machines, so the Dockerfiles' public bases (python:3.11-slim-bookworm,
golang:1.26-bookworm) are replaced through their build args by local stand-ins made from Debian packages:

- `kubemam.local/python:3.11-slim-bookworm`: `mmdebstrap --variant=minbase bookworm` with python3 (3.11) and
  python3-venv, `docker import`ed; the root filesystem tarball is cached under ~/.cache/kubemam/images/ and the
  image is re-imported from it when the engine lost it. It trusts what the host trusts (its
  /usr/local/share/ca-certificates, and pip is pointed at the system bundle), so that pip, apt and Go inside a
  build reach the package registries the way the host does.
- `kubemam.local/golang:<go>-bookworm`: that base plus the host's Go toolchain (GOROOT), for the worker's
  kubemam-encrypt stage, which builds from its module (main.go, go.mod, go.sum) as in a real pipeline.

Then images/operator and images/worker are built with the tags the chart defaults to:
ghcr.io/kubemam/{operator,worker}:<version of pyproject.toml>.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from kubemam_local.binaries import cache_root
from kubemam_local.docker import Docker, DockerError, apt_install

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# What python:3.11-slim-bookworm gives the Dockerfiles: python3 (bookworm's is 3.11) with venv, and CA roots.
BASE_PACKAGES = ("ca-certificates", "python3", "python3-venv")
BASE_IMAGE = "kubemam.local/python:3.11-slim-bookworm"
GO_IMAGE_REPO = "kubemam.local/golang"
HOST_CAS = Path("/usr/local/share/ca-certificates")
KEY_LABEL = "io.kubemam.local.key"
REGISTRY = "ghcr.io/kubemam"


def images_dir() -> Path:
    return cache_root() / "images"


def version() -> str:
    """The product's version (pyproject.toml), which is the chart's appVersion and so its default image tag."""
    with open(REPO / "pyproject.toml", "rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def image_refs(tag: str | None = None) -> dict[str, str]:
    tag = tag or version()
    return {"operator": f"{REGISTRY}/operator:{tag}", "worker": f"{REGISTRY}/worker:{tag}"}


def _host_cas() -> list[Path]:
    return sorted(HOST_CAS.glob("**/*.crt")) if HOST_CAS.is_dir() else []


def base_key() -> str:
    """What the base is made from: suite, mirrors, packages and the host's extra CA certificates."""
    digest = hashlib.sha256(json.dumps([SUITE, MIRRORS, BASE_PACKAGES]).encode())
    for ca in _host_cas():
        digest.update(ca.read_bytes())
    return digest.hexdigest()[:12]


@dataclass
class BuildReport:
    """Seconds per phase and image sizes in bytes, written to ~/.cache/kubemam/images/last-build.json."""

    seconds: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)

    def timed(self, name: str, started: float) -> None:
        self.seconds[name] = round(time.monotonic() - started, 1)

    def lines(self) -> list[str]:
        out = [f"{name:<10} {secs:7.1f} s" + ("  (cached)" if name in self.cached else "")
               for name, secs in self.seconds.items()]
        out += [f"{ref}  {size / 1e6:.0f} MB" for ref, size in self.sizes.items()]
        return out


def _mmdebstrap_rootfs(target: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        apt_install(["mmdebstrap"])
    hooks = []
    if _host_cas():
        hooks += [f"--customize-hook=sync-in {HOST_CAS} /usr/local/share/ca-certificates",
                  '--customize-hook=chroot "$1" update-ca-certificates']
    # pip trusts its own bundle unless told: point it at the system's (as the host's /etc/pip.conf does).
    hooks.append("--customize-hook=printf '[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n' "
                 '> "$1/etc/pip.conf"')
    command = ["nice", "-n", "19", "mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
               # As slim images do: no manuals, documentation (copyright notices stay) or translations.
               "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
               "--dpkgopt=path-include=/usr/share/doc/*/copyright", "--dpkgopt=path-exclude=/usr/share/locale/*",
               *hooks, SUITE, str(target), *MIRRORS]
    log.info("making the %s base with mmdebstrap (%s)", SUITE, ", ".join(BASE_PACKAGES))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise DockerError(f"mmdebstrap failed:\n{result.stderr[-4000:]}")


def ensure_base(docker: Docker, report: BuildReport, rebuild: bool = False) -> str:
    """The local stand-in for python:3.11-slim-bookworm: in the engine, else from the cached tarball, else made."""
    started = time.monotonic()
    key = base_key()
    if not rebuild and docker.label(BASE_IMAGE, KEY_LABEL) == key:
        report.cached.append("base")
        report.timed("base", started)
        return BASE_IMAGE
    tarball = images_dir() / f"{SUITE}-python-{key}.tar"
    if rebuild or not tarball.is_file():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tarball.parent) as tmp:
            partial = Path(tmp) / tarball.name
            _mmdebstrap_rootfs(partial)
            partial.replace(tarball)
    docker.run("import", "--change", "ENV LANG=C.UTF-8", "--change", f"LABEL {KEY_LABEL}={key}",
               "--change", 'CMD ["python3"]', str(tarball), BASE_IMAGE)
    report.timed("base", started)
    return BASE_IMAGE


def _go() -> tuple[Path, str]:
    go = shutil.which("go")
    if go is None:
        raise DockerError("the worker's kubemam-encrypt stage needs a Go builder image, made here from the host's "
                          "Go toolchain: install Go 1.26+")
    env = json.loads(subprocess.run([go, "env", "-json", "GOROOT", "GOVERSION"], capture_output=True,
                                    text=True, check=True).stdout)
    return Path(env["GOROOT"]), env["GOVERSION"].removeprefix("go")


def _toolchain_only(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """GOROOT without its tests (go/test, testdata): what building needs."""
    return None if member.name.startswith("go/test/") or "/testdata" in member.name else member


def ensure_go_builder(docker: Docker, base: str, report: BuildReport) -> str:
    """The local stand-in for golang:1.26-bookworm: the base plus the host's GOROOT, built from a context
    streamed to `docker build -` (GOROOT is read-only to us and has no .dockerignore)."""
    started = time.monotonic()
    goroot, go_version = _go()
    ref = f"{GO_IMAGE_REPO}:{go_version}-{SUITE}"
    key = f"{go_version}-{base_key()}"
    if docker.label(ref, KEY_LABEL) == key:
        report.cached.append("go")
        report.timed("go", started)
        return ref
    dockerfile = (f"FROM {base}\nCOPY go /usr/local/go\nLABEL {KEY_LABEL}={key}\n"
                  "ENV PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
                  "GOPATH=/go GOTOOLCHAIN=local\n")
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([docker.cli, "build", "-q", "-t", ref, "-"], env=docker.env(), stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=errors)
        assert proc.stdin is not None
        with proc.stdin, tarfile.open(fileobj=proc.stdin, mode="w|") as context:
            data = dockerfile.encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(data)
            context.addfile(info, io.BytesIO(data))
            context.add(str(goroot), arcname="go", filter=_toolchain_only)
        if proc.wait() != 0:
            errors.seek(0)
            raise DockerError(f"building {ref} failed:\n{errors.read().decode(errors='replace')[-4000:]}")
    report.timed("go", started)
    return ref


def build_images(docker: Docker, tag: str | None = None, which: tuple[str, ...] = ("operator", "worker"),
                 rebuild_base: bool = False, progress: bool = False) -> tuple[dict[str, str], BuildReport]:
    """Build the product images with local bases; returns their references and what it took."""
    report = BuildReport()
    base = ensure_base(docker, report, rebuild=rebuild_base)
    go_builder = ensure_go_builder(docker, base, report) if "worker" in which else None
    refs = image_refs(tag)
    for name in which:
        started = time.monotonic()
        args = ["build", "-f", str(REPO / "images" / name / "Dockerfile"), "-t", refs[name],
                "--build-arg", f"PYTHON_IMAGE={base}"]
        if name == "worker" and go_builder:
            args += ["--build-arg", f"GO_IMAGE={go_builder}"]
            if os.environ.get("GOPROXY"):
                args += ["--build-arg", f"GOPROXY={os.environ['GOPROXY']}"]
        args += ["--progress=plain", str(REPO)]
        log.info("building %s", refs[name])
        if progress:
            result = subprocess.run([docker.cli, *args], env=docker.env())
            if result.returncode != 0:
                raise DockerError(f"docker build of {refs[name]} failed")
        else:
            docker.run(*args)
        report.timed(name, started)
        report.sizes[refs[name]] = docker.image_size(refs[name])
    images_dir().mkdir(parents=True, exist_ok=True)
    (images_dir() / "last-build.json").write_text(json.dumps(
        {"refs": refs, "seconds": report.seconds, "sizes": report.sizes, "cached": report.cached}, indent=2))
    return {name: refs[name] for name in which}, report
