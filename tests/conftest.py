"""Shared fixtures: the real local control plane for a whole session, one namespace per test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="session", autouse=True)
def worker_tools(request: pytest.FixtureRequest) -> Iterator[None]:
    """Workers that tests run as host processes (`kubemam worker package` with os.environ) find
    kubemam-encrypt as in the worker image: KUBEMAM_ENCRYPT, set here for the session to the one
    the local cluster builds. Only when integration tests are selected (building it needs Go)."""
    if not any(item.get_closest_marker("integration") for item in request.session.items):
        yield
        return
    from tests.helpers import worker_tools_env

    with pytest.MonkeyPatch.context() as patch:
        for name, value in worker_tools_env().items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[object]:
    from kubemam_local.binaries import resolve
    from kubemam_local.controlplane import ControlPlane

    binaries = resolve(("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"))
    with ControlPlane(binaries=binaries, scheduler=True) as cp:
        line = (f"integration tests run against the real kube-apiserver {cp.version()} at {cp.server} "
                f"(control plane started in {cp.started_in:.1f}s)")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\n{line}", flush=True)
        yield cp


@pytest.fixture(scope="session")
def api_client(control_plane: object):  # type: ignore[no-untyped-def]
    from kubernetes import config

    from kubemam_local.crdinstall import install_crds

    client = config.new_client_from_config(str(control_plane.kubeconfig))  # type: ignore[attr-defined]
    install_crds(client)
    return client


@pytest.fixture(scope="session")
def kubectl(control_plane: object, api_client: object):  # type: ignore[no-untyped-def]
    binary = str(control_plane.binaries["kubectl"])  # type: ignore[attr-defined]
    kubeconfig = str(control_plane.kubeconfig)  # type: ignore[attr-defined]

    def run(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([binary, f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True,
                                input=input, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    return run


@pytest.fixture
def namespace(api_client: object) -> Iterator[str]:
    """A fresh namespace enforcing Pod Security "restricted", with its default ServiceAccount."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}})
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def operator(control_plane: object, api_client: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The operator, started by the same entry point its container runs."""
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig),  # type: ignore[attr-defined]
           "KUBEMAM_RECHECK_SECONDS": "5"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "kubemam", "run", "--all-namespaces"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        time.sleep(1.0)
        assert proc.poll() is None, log_path.read_text()
        yield log_path
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    if proc.returncode not in (0, -15):
        print(log_path.read_text()[-5000:])


@pytest.fixture(scope="session")
def minio() -> Iterator[object]:
    """A real MinIO server on loopback with generated credentials."""
    from kubemam_local.minio import MinioServer

    with MinioServer(buckets=["kubemam-library"]) as server:
        yield server


NODE_TAINT = {"key": "kubemam.io/test-node", "value": "true", "effect": "NoSchedule"}


@pytest.fixture(scope="session")
def process_node(control_plane: object, api_client: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The process node, tainted so that only pods that tolerate it (the node tests' pods) land there."""
    from kubernetes import client

    state = tmp_path_factory.mktemp("node")
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig),  # type: ignore[attr-defined]
           "KUBEMAM_NODE_NAME": "test-process-node",
           "KUBEMAM_NODE_TAINT": f"{NODE_TAINT['key']}={NODE_TAINT['value']}:{NODE_TAINT['effect']}"}
    with open(state / "node.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "kubemam", "local", "node", "--state-dir", str(state)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        core = client.CoreV1Api(api_client)
        deadline = time.monotonic() + 30
        while not any(c.type == "Ready" and c.status == "True"
                      for n in core.list_node(field_selector="metadata.name=test-process-node").items
                      for c in n.status.conditions or []):
            assert proc.poll() is None and time.monotonic() < deadline, (state / "node.log").read_text()
            time.sleep(0.2)
        yield state
        proc.terminate()
        proc.wait(timeout=30)
        core.delete_node("test-process-node")
