"""Stand-ins for packaged assets in the distribution fault scenarios: a small committed package in the library
and MediaAssets whose status names it, so no ingest or transcode competes for the CPU while a takedown is timed
(as bench/takedown.py does)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client

from kubemam import __version__
from kubemam.api.common import GROUP, VERSION
from kubemam.storage.s3 import commit
from kubemam.storage.uri import S3Uri
from tests.helpers import LocalStack

PACKAGE_FILES = {"manifest.mpd": b"<MPD/>", "master.m3u8": b"#EXTM3U\n", "v/init.mp4": b"\0" * 800,
                 "v/seg-00001.m4s": b"\1" * 20_000}


def commit_package(stack: LocalStack, namespace: str) -> str:
    """A committed package under the library (manifest last, as the package step commits); its prefix."""
    package = f"s3://kubemam-library/faults/{namespace}/package"
    with tempfile.TemporaryDirectory() as folder:
        for name, data in PACKAGE_FILES.items():
            (Path(folder) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(folder) / name).write_bytes(data)
        commit(stack.store, Path(folder), S3Uri.parse(package), step="package", input_hash=namespace,
               worker_version=__version__, now=datetime.now(UTC))
    return package


def packaged_asset(stack: LocalStack, namespace: str, name: str, package: str) -> None:
    """A MediaAsset naming a file:// source the operator does not fetch, its status naming the package."""
    custom = client.CustomObjectsApi(stack.api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "mediaassets", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "MediaAsset", "metadata": {"name": name},
        "spec": {"source": {"uri": f"file:///faults/{name}.mov"}, "metadata": {"title": name}}})
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "mediaassets", name, {
        "status": {"packages": [{"format": "dash", "manifestUri": f"{package}/manifest.mpd"}]}})
