"""A chunk pod reads only its range of the master, and encodes exactly what it would from the whole file.

The worker talks to MinIO through a counting TCP proxy: what the proxy carried from MinIO is what the chunk
pod read from S3, whatever the worker thinks it read. Past its share a chunk reads a constant (the request
ffmpeg abandons: at most one 4 MiB window, and socket buffers), so the master is ~100 MB and each chunk's
share ~50 MB; a feature-length master's chunk shares are hundreds of MB.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from kubemam.api.asset import TechnicalMetadata
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.media.probe import probe, technical_metadata
from kubemam.plan.transcode import chunking, fit_ladder, master_facts, transcode_inputs
from kubemam.storage.manifest import sha256_file
from kubemam.storage.s3 import make_client
from kubemam.storage.uri import S3Uri

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]
SECONDS = 48
LADDER = TranscodeLadderSpec.model_validate({
    "segmentDurationSeconds": 2,
    "renditions": [{"name": "h264-180p", "codec": "h264", "width": 320, "height": 180, "preset": "ultrafast",
                    "rateControl": {"mode": "crf", "crf": 30}}],
    "chunking": {"chunkSeconds": 24, "maxParallel": 2},
})


class CountingProxy:
    """Forwards TCP to an upstream; counts the bytes the upstream sent back."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.received = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream, timeout=60)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(65536):
                if count:
                    with self._lock:
                        self.received += len(data)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def take(self) -> int:
        with self._lock:
            taken, self.received = self.received, 0
            return taken

    def close(self) -> None:
        self._server.close()


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TechnicalMetadata]:
    """An intra-frame mezzanine master (ProRes, PCM), index at the end as cameras and NLEs write it."""
    path = tmp_path_factory.mktemp("media") / "master.mov"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s=640x360:r=25:d={SECONDS}",
                    "-f", "lavfi", "-i", f"sine=f=440:sample_rate=48000:d={SECONDS}", "-c:v", "prores_ks",
                    "-profile:v", "3", "-c:a", "pcm_s16le", "-timecode", "10:00:00:00", str(path)], check=True)
    sha, _ = sha256_file(path)
    return path, technical_metadata(probe(path), sha)


@pytest.fixture(scope="module")
def proxy(minio: Any) -> Iterator[CountingProxy]:
    endpoint = urlparse(minio.endpoint)
    counting = CountingProxy((endpoint.hostname or "127.0.0.1", endpoint.port or 80))
    yield counting
    counting.close()


def _run(minio: Any, proxy: CountingProxy, tmp_path: Path, inputs: dict[str, Any], index: int) -> str:
    message = tmp_path / f"termination-{uuid.uuid4().hex}"
    scratch = tmp_path / f"scratch-{uuid.uuid4().hex}"
    scratch.mkdir()
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}", "AWS_ACCESS_KEY_ID": minio.access_key,
           "AWS_SECRET_ACCESS_KEY": minio.secret_key, "KUBEMAM_STEP_INPUT": json.dumps(inputs),
           "KUBEMAM_TERMINATION_MESSAGE_PATH": str(message), "TMPDIR": str(scratch),
           "JOB_COMPLETION_INDEX": str(index)}
    result = subprocess.run([sys.executable, "-m", "kubemam", "worker", "transcode"], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(message.read_text()) == {"chunk": index}
    return result.stderr


def _framemd5(s3: Any, prefix: str, index: int, tmp_path: Path) -> str:
    where = S3Uri.parse(prefix).join(f"{index:05d}", "h264-180p.mp4")
    local = tmp_path / f"{uuid.uuid4().hex}.mp4"
    s3.download_file(where.bucket, where.key, str(local))
    return subprocess.run(["ffmpeg", "-v", "error", "-i", str(local), "-map", "0:v", "-f", "framemd5", "-"],
                          check=True, capture_output=True, text=True).stdout


@pytest.mark.timeout(1800)  # eight worker runs and a ProRes encode: minutes on a loaded machine
def test_each_chunk_reads_about_its_share_and_encodes_the_same_frames(
        minio: Any, proxy: CountingProxy, master: tuple[Path, TechnicalMetadata], tmp_path: Path) -> None:
    path, technical = master
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    data = path.read_bytes()
    vouched, plain = f"incoming/{uuid.uuid4().hex}.mov", f"incoming/{uuid.uuid4().hex}.mov"
    # The store holds the master's full-object SHA-256: it vouches for the bytes ingest hashed.
    s3.put_object(Bucket="kubemam-library", Key=vouched, Body=data,
                  ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode())
    s3.put_object(Bucket="kubemam-library", Key=plain, Body=data)  # nothing vouches: fetched whole
    plan = chunking(LADDER, master_facts(technical))
    assert plan is not None and plan.count == SECONDS // 24
    shares, whole = [], []
    for key, reads in ((vouched, shares), (plain, whole)):
        root = f"s3://kubemam-library/assets/{uuid.uuid4().hex}"
        targets = fit_ladder(LADDER, technical, f"{root}/renditions").targets
        inputs = transcode_inputs(f"s3://kubemam-library/{key}", technical, LADDER, targets, "chunk",
                                  f"{root}/chunks", plan)
        for index in range(plan.count):
            proxy.take()
            _run(minio, proxy, tmp_path, inputs, index)
            reads.append((proxy.take(), _framemd5(s3, inputs["chunks"]["prefix"], index, tmp_path)))
    size = len(data)
    for index, ((ranged_bytes, ranged_frames), (whole_bytes, whole_frames)) in enumerate(zip(shares, whole,
                                                                                               strict=True)):
        assert ranged_frames == whole_frames, f"chunk {index} differs when read by ranges"
        assert whole_bytes >= size  # the fallback still downloads it all
        print(f"chunk {index}: read {ranged_bytes} bytes by ranges, {ranged_bytes * plan.count / size:.3f}x its "
              f"share of the {size}-byte master; {whole_bytes} bytes when fetched whole")
        assert ranged_bytes <= 1.2 * size / plan.count, (index, ranged_bytes, size / plan.count)
