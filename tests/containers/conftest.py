"""Fixtures of the container tests: the Docker Engine, the built images, MinIO where containers reach it.

These tests need root, a Docker Engine (started when none answers) and the images (`make images`); they take
minutes, so they run only under `make test-containers` (KUBEMAM_CONTAINER_TESTS=1), not in `make test`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

ENABLED = os.environ.get("KUBEMAM_CONTAINER_TESTS") == "1"
SKIP = pytest.mark.skipif(not ENABLED or os.geteuid() != 0,
                          reason="container tests run as root under `make test-containers`")


@pytest.fixture(scope="session")
def docker() -> Any:
    from kubemam_local.docker import ensure

    return ensure()


@pytest.fixture(scope="session")
def images(docker: Any) -> dict[str, str]:
    """ghcr.io/kubemam/{operator,worker}:<version>, built when the engine does not have them."""
    from kubemam_local.images import build_images, image_refs

    refs = image_refs()
    if not all(docker.image_exists(ref) for ref in refs.values()):
        build_images(docker)
    return refs


@pytest.fixture(scope="module")
def bridge_minio(docker: Any) -> Iterator[Any]:
    """MinIO on the docker bridge's gateway address: the host and the containers reach it there."""
    from kubemam_local.minio import MinioServer

    with MinioServer(buckets=["kubemam-library"], host=docker.bridge_gateway()) as s3:
        yield s3
