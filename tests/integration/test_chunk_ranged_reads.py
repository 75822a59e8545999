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
import http.client
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from boto3.s3.transfer import TransferConfig

from kubemam.api.asset import TechnicalMetadata
from kubemam.api.ladder import TranscodeLadderSpec
from kubemam.media.probe import probe, technical_metadata
from kubemam.plan.jobs import PERMANENT_FAILURE_EXIT_CODE
from kubemam.plan.transcode import chunking, fit_ladder, master_facts, transcode_inputs
from kubemam.steps.ingest import IngestResult
from kubemam.storage.manifest import sha256_file
from kubemam.storage.ranged import RangedObject
from kubemam.storage.s3 import make_client, read_committed
from kubemam.storage.transfer import SHA256_METADATA, full_object_checksum, head
from kubemam.storage.uri import S3Uri
from kubemam.worker.source import fetch_checked
from tests.faults.proxy import CutReplies

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")]
SECONDS = 48
MiB = 1024 * 1024
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


def _worker(minio: Any, proxy: CountingProxy, tmp_path: Path, step: str, inputs: dict[str, Any],
            index: int | None = None) -> tuple[int, str, dict[str, Any]]:
    """Run a step's worker against MinIO through the proxy: (exit code, stderr, termination message)."""
    message = tmp_path / f"termination-{uuid.uuid4().hex}"
    scratch = tmp_path / f"scratch-{uuid.uuid4().hex}"
    scratch.mkdir()
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}", "AWS_ACCESS_KEY_ID": minio.access_key,
           "AWS_SECRET_ACCESS_KEY": minio.secret_key, "KUBEMAM_STEP_INPUT": json.dumps(inputs),
           "KUBEMAM_TERMINATION_MESSAGE_PATH": str(message), "TMPDIR": str(scratch)}
    if index is not None:
        env["JOB_COMPLETION_INDEX"] = str(index)
    result = subprocess.run([sys.executable, "-m", "kubemam", "worker", step], env=env, capture_output=True,
                            text=True, timeout=900)
    return result.returncode, result.stderr, json.loads(message.read_text())


def _run(minio: Any, proxy: CountingProxy, tmp_path: Path, inputs: dict[str, Any], index: int) -> str:
    code, stderr, message = _worker(minio, proxy, tmp_path, "transcode", inputs, index)
    assert code == 0, stderr[-3000:]
    assert message == {"chunk": index}
    return stderr


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
            stderr = _run(minio, proxy, tmp_path, inputs, index)
            # The PCM track is hidden (served by ranges as a `free` box, or renamed in the fetched copy): the
            # demuxer does not index the programme's sound for a chunk that encodes only the picture, and
            # -ss counts from the picture's start on both paths (the frames are the same, below).
            hidden = "from the demuxer" if reads is shares else "from the encode, 0 kept"
            assert re.search(rf"\b1 sound track\(s\) hidden {hidden}", stderr), stderr[-2000:]
            reads.append((proxy.take(), _framemd5(s3, inputs["chunks"]["prefix"], index, tmp_path)))
    size = len(data)
    for index, ((ranged_bytes, ranged_frames), (whole_bytes, whole_frames)) in enumerate(zip(shares, whole,
                                                                                               strict=True)):
        assert ranged_frames == whole_frames, f"chunk {index} differs when read by ranges"
        assert whole_bytes >= size  # the fallback still downloads it all
        print(f"chunk {index}: read {ranged_bytes} bytes by ranges, {ranged_bytes * plan.count / size:.3f}x its "
              f"share of the {size}-byte master; {whole_bytes} bytes when fetched whole")
        assert ranged_bytes <= 1.2 * size / plan.count, (index, ranged_bytes, size / plan.count)


def _upload_multipart(s3: Any, key: str, data: bytes) -> dict[str, Any]:
    """Upload as the AWS CLI and boto3 do a large file: in parts, with no checksum of the whole object."""
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    s3.upload_fileobj(io.BytesIO(data), "kubemam-library", key, Config=config)
    found = head(s3, S3Uri("kubemam-library", key), checksum=True)
    assert found is not None and "-" in found["ETag"], found.get("ETag")  # a multipart ETag
    assert full_object_checksum(found) is None and SHA256_METADATA not in (found.get("Metadata") or {})
    return found


@pytest.mark.timeout(1800)  # an ingest (QC decode, proxy) and two chunk runs on a loaded machine
def test_a_multipart_master_without_a_checksum_is_read_by_ranges_of_the_version_ingest_hashed(
        minio: Any, proxy: CountingProxy, master: tuple[Path, TechnicalMetadata], tmp_path: Path) -> None:
    path, probed = master
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    data = path.read_bytes()
    key = f"incoming/{uuid.uuid4().hex}.mov"
    found = _upload_multipart(s3, key, data)
    root = f"s3://kubemam-library/assets/{uuid.uuid4().hex}"
    code, stderr, result = _worker(minio, proxy, tmp_path, "ingest",
                                   {"source": {"uri": f"s3://kubemam-library/{key}"}, "output": f"{root}/ingest"})
    assert code == 0, stderr[-3000:]
    technical = IngestResult.model_validate(result).full_technical()
    assert technical is not None
    # Ingest recorded the ETag of the GET it hashed: the multipart upload's, beside the SHA-256 of its bytes.
    assert technical.etag == found["ETag"].strip('"') and technical.sha256 == probed.sha256
    assert technical.size_bytes == len(data)
    plan = chunking(LADDER, master_facts(technical))
    assert plan is not None
    targets = fit_ladder(LADDER, technical, f"{root}/renditions").targets
    inputs = transcode_inputs(f"s3://kubemam-library/{key}", technical, LADDER, targets, "chunk", f"{root}/chunks",
                              plan)
    assert inputs["source"]["etag"] == technical.etag
    size = len(data)
    for index in range(plan.count):
        proxy.take()
        stderr = _run(minio, proxy, tmp_path, inputs, index)
        read = proxy.take()
        assert "vouched for by its ETag at ingest" in stderr
        frames = _framemd5(s3, inputs["chunks"]["prefix"], index, tmp_path).count("\n0,")
        print(f"multipart master, chunk {index}: read {read} bytes by ranges, {read * plan.count / size:.3f}x its "
              f"share of the {size}-byte master; {frames} frames")
        assert frames == min(plan.frames, master_facts(technical)["frames"] - index * plan.frames)
        assert read <= 1.2 * size / plan.count, (index, read, size / plan.count)


@pytest.mark.timeout(600)
def test_a_master_overwritten_after_ingest_fails_the_chunk_naming_the_change_without_fetching_it(
        minio: Any, proxy: CountingProxy, master: tuple[Path, TechnicalMetadata], tmp_path: Path) -> None:
    path, probed = master
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    data = path.read_bytes()
    key = f"incoming/{uuid.uuid4().hex}.mov"
    uri = f"s3://kubemam-library/{key}"
    _upload_multipart(s3, key, data)
    # What ingest records, by the function ingest fetches with: the ETag of the very GET it hashed.
    fetched = fetch_checked(uri, tmp_path / "ingested.mov", s3)
    assert fetched.sha256 == probed.sha256 and fetched.etag
    technical = probed.model_copy(update={"etag": fetched.etag})
    replaced = _upload_multipart(s3, key, data[: len(data) // 2])  # a different master at the same key
    plan = chunking(LADDER, master_facts(technical))
    assert plan is not None
    root = f"s3://kubemam-library/assets/{uuid.uuid4().hex}"
    inputs = transcode_inputs(uri, technical, LADDER, fit_ladder(LADDER, technical, f"{root}/renditions").targets,
                              "chunk", f"{root}/chunks", plan)
    proxy.take()
    code, stderr, message = _worker(minio, proxy, tmp_path, "transcode", inputs, 0)
    read = proxy.take()
    assert code == PERMANENT_FAILURE_EXIT_CODE, stderr[-3000:]
    error = message["error"]
    assert "changed since ingest" in error and uri in error and "re-ingest" in error, error
    assert fetched.etag in error and replaced["ETag"].strip('"') in error, error
    assert "retryable" not in message
    assert read < 64 * 1024, read  # a HEAD, not the master: the chunk's scratch was sized for its share
    assert read_committed(s3, S3Uri.parse(inputs["chunks"]["prefix"]).join("00000"),
                          f"{inputs['chunks']['hash']}/0") is None


def test_ranged_reads_stay_pinned_to_the_version_ingest_hashed_when_it_is_overwritten(minio: Any) -> None:
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    key = f"incoming/{uuid.uuid4().hex}.bin"
    data = os.urandom(20 * MiB)
    found = _upload_multipart(s3, key, data)
    ranged = RangedObject(s3, S3Uri("kubemam-library", key), found["ETag"], len(data))
    with ranged as url:
        request = urllib.request.Request(url, headers={"Range": f"bytes={9 * MiB}-{9 * MiB + 99}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 206 and response.read() == data[9 * MiB:9 * MiB + 100]
        assert ranged.refused is None
        _upload_multipart(s3, key, os.urandom(len(data)))  # the same size, other bytes
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 412  # never the new version's bytes
    assert ranged.refused is not None and ranged.refused.endswith("PreconditionFailed"), ranged.refused


@pytest.mark.parametrize("cuts", [1, None], ids=["once", "every time"])
def test_a_ranged_read_cut_off_mid_body_is_asked_again_then_recorded_so_the_chunk_is_not_kept(
        minio: Any, cuts: int | None) -> None:
    """S3 cuts a window's body off (a reset: botocore's ResponseStreamingError, not a ClientError). Once: the
    rest is asked for again from where it stopped, and the reader gets every byte. Every time: after a few
    tries the reader's read ends early and the object records the failure — ffmpeg may take a short read for
    the end of its input and exit 0, and the chunk worker then keeps nothing (it runs again)."""
    s3 = make_client(minio.endpoint, minio.access_key, minio.secret_key)
    key = f"incoming/{uuid.uuid4().hex}.bin"
    data = os.urandom(4 * MiB)
    etag = s3.put_object(Bucket="kubemam-library", Key=key, Body=data)["ETag"]
    with CutReplies(urlparse(minio.endpoint).port or 80, after=600 * 1024, times=cuts) as cut:
        through = make_client(cut.url, minio.access_key, minio.secret_key)
        ranged = RangedObject(through, S3Uri("kubemam-library", key), etag, len(data))
        with ranged as url:
            request = urllib.request.Request(url, headers={"Range": f"bytes=0-{3 * MiB - 1}"})
            with urllib.request.urlopen(request, timeout=30) as response:
                got = b""
                with contextlib.suppress(http.client.IncompleteRead):
                    while chunk := response.read(65536):
                        got += chunk
    assert cut.cuts, "the proxy cut no reply: the test did not test anything"
    if cuts == 1:
        assert got == data[:3 * MiB] and ranged.refused is None
        return
    assert len(got) < 3 * MiB and got == data[:len(got)]  # short, never wrong bytes
    assert ranged.refused is not None and ranged.refused.endswith(("ResponseStreamingError", "IncompleteReadError",
                                                                   "ReadTimeoutError")), ranged.refused
