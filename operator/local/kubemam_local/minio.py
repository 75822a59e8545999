"""MinIO as the local S3 server: found or built (local.gotools), started on loopback with generated credentials."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kubemam.storage.s3 import make_client
from kubemam_local.binaries import BinaryError
from kubemam_local.controlplane import free_port
from kubemam_local.gotools import resolve_tool
from kubemam_local.processes import LocalService, stop_process_group

log = logging.getLogger(__name__)

def resolve_minio(allow_build: bool = True) -> Path:
    return resolve_tool("minio", allow_build)


@dataclass
class MinioServer(LocalService):
    """`with MinioServer(buckets=[...]) as s3:` — s3.endpoint, s3.access_key, s3.secret_key."""

    buckets: list[str] = field(default_factory=list)
    locked_buckets: list[str] = field(default_factory=list)  # created with S3 Object Lock enabled
    workdir: Path | None = None
    binary: Path | None = None
    start_timeout: float = 60.0
    # Where it listens: loopback for host processes (the process node's pods), or an address containers reach
    # (the docker bridge's gateway, the real node's bridge).
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self._own_workdir = self.workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="kubemam-minio-")) if self.workdir is None else self.workdir
        self.port = free_port(self.host)
        self.console_port = free_port()
        self.access_key = "kubemam-" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(30)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        assert self.workdir is not None
        binary = self.binary or resolve_minio()
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        self._log = open(self.workdir / "minio.log", "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "MINIO_ROOT_USER": self.access_key, "MINIO_ROOT_PASSWORD": self.secret_key,
               "MINIO_BROWSER": "off", "MINIO_UPDATE": "off"}
        self._proc = subprocess.Popen(
            [str(binary), "server", str(self.workdir / "data"), "--address", f"{self.host}:{self.port}",
             "--console-address", f"127.0.0.1:{self.console_port}", "--quiet"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
            self.create_buckets(self.buckets)
            self.create_buckets(self.locked_buckets, object_lock=True)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BinaryError(f"minio exited with {self._proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/minio/health/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise BinaryError(f"minio not ready after {self.start_timeout:.0f}s")

    def client(self) -> Any:
        return make_client(self.endpoint, self.access_key, self.secret_key)

    def create_buckets(self, names: list[str], object_lock: bool = False) -> None:
        s3 = self.client()
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        for name in names:
            if name not in existing:
                # Object Lock can only be switched on when a bucket is made (it turns on versioning).
                s3.create_bucket(Bucket=name, **({"ObjectLockEnabledForBucket": True} if object_lock else {}))

    def stop(self) -> None:
        if self._proc is not None:
            stop_process_group(self._proc)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
