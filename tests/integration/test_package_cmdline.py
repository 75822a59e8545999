"""While a real package step encrypts, no process on the machine has the content key on its command line:
/proc/<pid>/cmdline of every process is sampled as fast as it can be read for the whole step. A control
(a process that does carry the key in argv) proves the sampler sees what it looks for, and the sampler
must have caught the encryptor itself running, so a pass is not a sampler that looked away."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import write_content_keys
from tests.integration.test_package_worker import BUCKET, _run

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]

ENCRYPTOR = b"kubemam-encrypt"


@dataclass
class Sampler:
    needles: list[bytes]
    passes: int = 0
    processes_seen: set[int] = field(default_factory=set)
    encryptor_seen: int = 0  # samples in which kubemam-encrypt was running
    found: list[str] = field(default_factory=list)  # "pid: cmdline" of every hit
    stop: threading.Event = field(default_factory=threading.Event)

    def sample_once(self) -> None:
        me = os.getpid()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue  # gone meanwhile
            self.processes_seen.add(int(entry.name))
            if ENCRYPTOR in cmdline:
                self.encryptor_seen += 1
            lowered = cmdline.lower()
            if any(needle in lowered for needle in self.needles):
                words = cmdline.replace(bytes(1), b" ").decode(errors="replace")
                self.found.append(f"{entry.name}: {words}")
        self.passes += 1

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample_once()

    def __enter__(self) -> Sampler:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _needles(key: bytes) -> list[bytes]:
    """Every way the key could be written: hex (either case; compared lowercased) and base64."""
    return [key.hex().encode(), base64.b64encode(key).lower(), base64.urlsafe_b64encode(key).rstrip(b"=").lower()]


def test_the_sampler_finds_a_key_on_a_command_line() -> None:
    key = os.urandom(16)
    with Sampler(_needles(key)) as sampler:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)", "-key", key.hex()])
        child.wait(30)
    assert sampler.found and str(child.pid) in sampler.found[0]


@pytest.fixture(scope="module")
def long_rendition(tmp_path_factory: pytest.TempPathFactory, minio: Any) -> str:
    """A minute of 2 s GOP H.264 with AAC: long enough that encrypting it takes many sampler passes."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=60", "-f", "lavfi",
                    "-i", "sine=f=440:sample_rate=48000:d=60", "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-c:a", "aac",
                    "-ac", "2", str(path)], check=True)
    key = f"assets/cmdline-{uuid.uuid4().hex[:8]}/long.mp4"
    minio.client().upload_file(str(path), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def test_no_key_on_any_command_line_while_the_package_step_encrypts(minio: Any, long_rendition: str,
                                                                   tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys = write_content_keys(keys_dir)
    inputs = {"contentId": str(uuid.uuid4()), "formats": ["dash", "hls"], "iframePlaylist": False,
              "segmentSeconds": 2, "output": f"s3://{BUCKET}/assets/cmdline/{uuid.uuid4().hex[:12]}",
              "tracks": [{"name": "video", "kind": "video", "uri": long_rendition, "specHash": "a" * 64,
                          "keyTier": "video"},
                         {"name": "audio", "kind": "audio", "uri": long_rendition, "specHash": "b" * 64,
                          "keyTier": "audio", "language": "en"}],
              "drm": {"systems": ["clearkey", "playready", "widevine"], "scheme": "cenc", "tiers": ["audio", "video"],
                      "provider": "secret"}}
    needles = [n for _, key in keys.values() for n in _needles(key)]
    with Sampler(needles) as sampler:
        result, _ = _run(minio, tmp_path, inputs, {"KUBEMAM_KEYS_DIR": str(keys_dir)})
    assert result["packages"][0]["keyIds"] == sorted(str(k) for k, _ in keys.values())
    assert sampler.found == []
    # It looked while the encryptor ran (one call per track), across the whole machine.
    assert sampler.encryptor_seen > 0, f"{sampler.passes} passes never caught {ENCRYPTOR.decode()} running"
    print(f"{sampler.passes} passes over /proc, {len(sampler.processes_seen)} processes, "
          f"kubemam-encrypt seen in {sampler.encryptor_seen}")
