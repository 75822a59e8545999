"""A Docker Engine for building and running the images here: found, or installed and started.

Order: DOCKER_HOST when set (it must answer) → the default socket → the engine this module started before (its
own socket under the cache) → Debian's docker.io installed with apt when `dockerd` is missing, then `dockerd`
started detached with its own data root, exec root and socket, so it never meets a system engine.

The CLI is `KUBEMAM_DOCKER`, else /usr/bin/docker (docker.io's or docker-ce's, which build with BuildKit), else
`docker` on PATH. BuildKit is always on (DOCKER_BUILDKIT=1): the Dockerfiles use per-Dockerfile ignore files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubemam_local.binaries import BinaryError, cache_root

log = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/var/run/docker.sock")
# The exec root holds containerd's and the shims' sockets: a short path (unix sockets are limited to 108 bytes).
EXEC_ROOT = Path("/run/kubemam-docker")


class DockerError(BinaryError):
    pass


def engine_dir() -> Path:
    return cache_root() / "docker"


def own_socket() -> Path:
    return engine_dir() / "docker.sock"


def docker_cli() -> str:
    explicit = os.environ.get("KUBEMAM_DOCKER")
    if explicit:
        return explicit
    if Path("/usr/bin/docker").is_file():
        return "/usr/bin/docker"
    found = shutil.which("docker")
    if found is None:
        raise DockerError("no docker CLI: install docker.io (apt-get install docker.io) or set KUBEMAM_DOCKER")
    return found


@dataclass(frozen=True)
class Docker:
    """A Docker Engine that answers: its CLI and DOCKER_HOST."""

    cli: str
    host: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}

    def run(self, *args: str, check: bool = True, timeout: float | None = None, **kwargs: Any
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.cli, *args], env=self.env(), capture_output=True, text=True,
                                timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise DockerError(f"docker {' '.join(args[:3])} … failed ({result.returncode}):\n"
                              f"{(result.stderr or result.stdout)[-4000:]}")
        return result

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "inspect", "--format", "{{.Id}}", ref, check=False).returncode == 0

    def label(self, ref: str, key: str) -> str | None:
        result = self.run("image", "inspect", "--format", f'{{{{index .Config.Labels "{key}"}}}}', ref, check=False)
        value = result.stdout.strip()
        return value if result.returncode == 0 and value and value != "<no value>" else None

    def image_size(self, ref: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())

    def bridge_gateway(self) -> str:
        """The address of the default bridge on this machine: where a container reaches a server on the host."""
        out = self.run("network", "inspect", "bridge", "--format",
                       "{{range .IPAM.Config}}{{.Gateway}} {{end}}").stdout.split()
        if not out:
            raise DockerError("the docker bridge network has no gateway address")
        return out[0]


def _answers(cli: str, host: str) -> bool:
    try:
        result = subprocess.run([cli, "version", "--format", "{{.Server.Version}}"],
                                env={**os.environ, "DOCKER_HOST": host}, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def install_docker_io() -> None:
    """Debian's docker.io (and with it containerd 1.6 and runc 1.1 for the engine) with apt."""
    apt_install(["docker.io"])


def apt_install(packages: list[str]) -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        raise DockerError(f"{', '.join(packages)} missing and no apt-get to install them: install them by hand")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log.info("installing %s with apt", " ".join(packages))
    command = [apt, "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(command, env=env, capture_output=True, text=True).returncode != 0:
        # A machine whose package lists were never fetched (or are stale) finds nothing: fetch them once.
        subprocess.run([apt, "update", "-q"], env=env, capture_output=True, text=True)
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise DockerError(f"apt-get install {' '.join(packages)} failed:\n{result.stderr[-3000:]}")


def ensure(install: bool = True, start: bool = True, timeout: float = 90.0) -> Docker:
    """A Docker Engine that answers, installing docker.io and starting dockerd when needed."""
    explicit = os.environ.get("DOCKER_HOST")
    if explicit:
        cli = docker_cli()
        if not _answers(cli, explicit):
            raise DockerError(f"DOCKER_HOST={explicit} does not answer")
        return Docker(cli, explicit)
    if shutil.which("dockerd") is None and not Path("/usr/sbin/dockerd").exists():
        if not install:
            raise DockerError("no Docker Engine: install docker.io (apt-get install docker.io)")
        install_docker_io()
    cli = docker_cli()
    for socket in (DEFAULT_SOCKET, own_socket()):
        if socket.exists() and _answers(cli, f"unix://{socket}"):
            return Docker(cli, f"unix://{socket}")
    if not start:
        raise DockerError(f"no Docker Engine answers on {DEFAULT_SOCKET} or {own_socket()}")
    return Docker(cli, start_dockerd(cli, timeout))


def start_dockerd(cli: str, timeout: float = 90.0) -> str:
    """Start dockerd detached (it outlives this process; `kubemam local docker-down` stops it)."""
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    directory = engine_dir()
    directory.mkdir(parents=True, exist_ok=True)
    socket = own_socket()
    socket.unlink(missing_ok=True)
    host = f"unix://{socket}"
    log.info("starting dockerd (data root %s, socket %s)", directory / "data", socket)
    with open(directory / "dockerd.log", "ab") as log_file:
        proc = subprocess.Popen(
            [dockerd, f"--data-root={directory / 'data'}", f"--exec-root={EXEC_ROOT}",
             f"--pidfile={directory / 'dockerd.pid'}", f"--host={host}", "--log-level=warn"],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (directory / "dockerd.log").read_text(errors="replace").splitlines()[-20:]
            raise DockerError("dockerd exited with {}:\n{}".format(proc.returncode, "\n".join(tail)))
        if _answers(cli, host):
            return host
        time.sleep(0.5)
    raise DockerError(f"dockerd did not answer on {socket} within {timeout:.0f}s (see {directory}/dockerd.log)")


def stop_dockerd(timeout: float = 60.0) -> bool:
    """Stop the dockerd this module started (its pid file); True when one was running."""
    try:
        pid = int((engine_dir() / "dockerd.pid").read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.3)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True
