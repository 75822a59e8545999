"""Small helpers for tests that talk to the real API server."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubemam.api.common import GROUP, VERSION

T = TypeVar("T")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


def metric_value(exposition: str, name: str, **labels: str) -> float | None:
    """The sum of the samples called `name` whose labels include `labels`, parsed by prometheus_client's
    own parser; None when there is no such sample."""
    from prometheus_client.parser import text_string_to_metric_families

    found = [s.value for family in text_string_to_metric_families(exposition) for s in family.samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found) if found else None


@functools.cache
def worker_tools_env() -> dict[str, str]:
    """What the worker image gives its steps beside the package, for workers run here as host processes:
    KUBEMAM_ENCRYPT, as the image sets it, to the kubemam-encrypt the local cluster builds (its cache,
    or built with Go once). The product never builds it: it looks at that variable, then PATH."""
    if os.environ.get("KUBEMAM_ENCRYPT"):
        return {"KUBEMAM_ENCRYPT": os.environ["KUBEMAM_ENCRYPT"]}
    from kubemam_local.gotools import resolve_tool

    return {"KUBEMAM_ENCRYPT": str(resolve_tool("kubemam-encrypt"))}


def run_step(step: str, minio: Any, tmp_path: Path, inputs: dict[str, Any]) -> tuple[
        subprocess.CompletedProcess[str], Path]:
    """`kubemam worker <step>` as its Job runs it (input and S3 credentials from the environment) against
    a MinIO; the process and where its termination message lands."""
    import json

    message = tmp_path / "termination-log"
    env = {**os.environ, **worker_tools_env(), "AWS_ENDPOINT_URL": minio.endpoint,
           "AWS_ACCESS_KEY_ID": minio.access_key, "AWS_SECRET_ACCESS_KEY": minio.secret_key,
           "KUBEMAM_STEP_INPUT": json.dumps(inputs), "KUBEMAM_TERMINATION_MESSAGE_PATH": str(message),
           "TMPDIR": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "kubemam", "worker", step], env=env, capture_output=True,
                            text=True, timeout=300)
    return result, message


def example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / name).read_text()))


class Custom:
    """CRUD on kubemam resources in one namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.namespace = namespace

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body))

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return dict(self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name))

    def patch(self, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name, body))

    def delete(self, plural: str, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)

    def condition(self, plural: str, name: str, type_: str) -> dict[str, Any] | None:
        status = self.get(plural, name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)


def start_operator(kubeconfig: Path, s3_endpoint: str, log: Path,
                   metrics_port: int = 0, extra_env: dict[str, str] | None = None,
                   liveness_port: int = 0) -> subprocess.Popen[bytes]:
    """`kubemam run` as its own process against a test cluster, its output appended to log; with a
    liveness port, Kopf's /healthz on it (as the chart's Deployment runs it)."""
    from kubemam_local.cluster import S3_SECRET

    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBEMAM_S3_ENDPOINT": s3_endpoint,
           "KUBEMAM_S3_CREDENTIALS_SECRET": S3_SECRET, "KUBEMAM_RECHECK_SECONDS": "5",
           "KUBEMAM_METRICS_PORT": str(metrics_port), **(extra_env or {})}
    liveness = [f"--liveness=http://127.0.0.1:{liveness_port}/healthz"] if liveness_port else []
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "kubemam", "run", "--all-namespaces", *liveness], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def kubeconfig_via(kubeconfig: Path, port: int, out: Path) -> Path:
    """A copy of `kubeconfig` whose server is https://127.0.0.1:<port> (a proxy in front of the API server;
    the serving certificate names 127.0.0.1, so TLS still verifies)."""
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    return out


@dataclass
class LocalStack:
    """A whole local cluster of its own for an end-to-end test: API client, S3 client, operator log."""

    api: Any
    store: Any
    custom: Custom
    log: Path
    kubeconfig: Path
    s3: Any
    operator: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    operator_env: dict[str, str] | None = None
    # The operator's own kubeconfig (default: `kubeconfig`); through `api_proxy` when local_stack made one.
    operator_kubeconfig: Path | None = None
    api_proxy: Any = None
    liveness_port: int = 0

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def healthz(self) -> tuple[int, str]:
        """The operator's /healthz: (HTTP status, body); (0, reason) when it does not answer in 5 s."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read().decode(errors="replace")
        except OSError as err:
            return 0, str(err)

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.terminate()
            self.operator.wait(timeout=30)
            self.operator = None

    def start_operator(self) -> None:
        if self.operator is None:
            self.operator = start_operator(self.operator_kubeconfig or self.kubeconfig, self.s3.endpoint, self.log,
                                           self.metrics_port, self.operator_env, self.liveness_port)


@contextmanager
def local_stack(control_plane: Any, tmp_path: Path, namespace: str,
                operator_env: dict[str, str] | None = None,
                api_proxy: Callable[[Any], AbstractContextManager[Any]] | None = None,
                liveness: bool = False) -> Iterator[LocalStack]:
    """Control plane with a scheduler, MinIO, CRDs, the namespace with its S3 Secret, a process node
    and the operator; all stopped on exit.

    api_proxy: given the ControlPlane, a proxy to put between the operator and the API server (e.g.
    `lambda cp: FaultProxy(cp.api_port)` from tests/faults/proxy.py): it is entered before the operator
    starts and the operator's kubeconfig points at its `port`; the node and the test's own client talk
    to the API server directly. `stack.api_proxy` is the entered proxy. liveness: serve the operator's
    /healthz on `stack.liveness_port` (`stack.healthz()`)."""
    from kubernetes import config

    from kubemam.storage.s3 import make_client
    from kubemam_local.cluster import provision_namespaces
    from kubemam_local.controlplane import ControlPlane, free_port
    from kubemam_local.crdinstall import install_crds
    from kubemam_local.minio import MinioServer
    from kubemam_local.node import ProcessNode

    with ControlPlane(binaries=control_plane.binaries, scheduler=True) as cp, \
            MinioServer(buckets=["kubemam-library"]) as s3, \
            (api_proxy(cp) if api_proxy is not None else nullcontext()) as proxy:
        api = config.new_client_from_config(str(cp.kubeconfig))
        install_crds(api)
        provision_namespaces(api, s3.access_key, s3.secret_key, (namespace,))
        node = ProcessNode(api, tmp_path / "node")
        node.start()
        stack = LocalStack(api, make_client(s3.endpoint, s3.access_key, s3.secret_key), Custom(api, namespace),
                           tmp_path / "operator.log", cp.kubeconfig, s3, metrics_port=free_port(),
                           operator_env=operator_env, api_proxy=proxy,
                           liveness_port=free_port() if liveness else 0)
        if proxy is not None:
            stack.operator_kubeconfig = kubeconfig_via(cp.kubeconfig, proxy.port, tmp_path / "operator-kubeconfig")
        stack.start_operator()
        try:
            yield stack
        finally:
            stack.stop_operator()
            node.stop()


def processes_naming(text: str) -> list[str]:
    """Command lines of running processes that contain `text` (a state directory): what a cluster left behind."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def exists(read: Callable[[], Any]) -> bool:
    """Whether read() finds its object: False on 404, any other API error raised."""
    try:
        read()
        return True
    except ApiException as err:
        if err.status == 404:
            return False
        raise


def packaged(custom: Custom, name: str) -> dict[str, Any] | None:
    """The asset's status once Packaged=True; raises as soon as its transcode or package failed."""
    status = custom.get("mediaassets", name).get("status") or {}
    for kind in ("Transcoded", "Packaged"):
        cond = next((c for c in status.get("conditions") or [] if c["type"] == kind), None)
        if cond and cond["status"] == "False":
            raise AssertionError(f"{kind} failed: {cond}")
    cond = next((c for c in status.get("conditions") or [] if c["type"] == "Packaged"), None)
    return status if cond and cond["status"] == "True" else None


def write_content_keys(directory: Path, tiers: tuple[str, ...] = ("video", "audio")
                       ) -> dict[str, tuple[uuid.UUID, bytes]]:
    """A random KID and key per tier, as the package Job's mounted key Secrets hold them (<tier>.kid, <tier>.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = {tier: (uuid.uuid4(), os.urandom(16)) for tier in tiers}
    for tier, (kid, key) in keys.items():
        (directory / f"{tier}.kid").write_text(str(kid))
        (directory / f"{tier}.key").write_text(key.hex())
    return keys


def wait_key_secret_policies_gone(api_client: Any, namespace: str = "default", timeout: float = 60.0) -> None:
    """After deleting the chart's admission policies: wait until the API server stops enforcing them. It drops
    a deleted policy a moment later, and the key-secrets one refuses every key Secret but its operator's — a
    later test's operator would find its Secrets refused."""
    core = client.CoreV1Api(api_client)
    probe = {"metadata": {"name": f"policy-probe-{uuid.uuid4().hex[:8]}", "labels": {
        "app.kubernetes.io/managed-by": "kubemam", "kubemam.io/asset": "probe", "kubemam.io/key-tier": "all"}},
        "type": "Opaque", "stringData": {"all.kid": "0" * 32}}

    def admitted() -> bool:
        try:
            core.create_namespaced_secret(namespace, probe, dry_run="All")
            return True
        except ApiException as err:
            if err.status in (403, 422):
                return False
            raise

    wait_for(admitted, timeout=timeout, what="the deleted admission policies to stop refusing key Secrets")


def deployment_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The rendered chart's operator container environment with values (not those from valueFrom)."""
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def chart_operator(kubeconfig: Path, api_client: Any, docs: list[dict[str, Any]], namespace: str,
                   tmp_path: Path) -> Iterator[Path]:
    """The rendered chart's operator as a process: the Deployment's command and environment, authenticated with
    a token of its own ServiceAccount (in `namespace`), so it has exactly the chart's RBAC. Yields its log once
    /healthz answers; stopped on exit."""
    from kubemam_local.controlplane import free_port

    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod_spec = deployment["spec"]["template"]["spec"]
    token = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        pod_spec["serviceAccountName"], namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    config = yaml.safe_load(kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    health = free_port()
    command = [sys.executable, "-m", "kubemam", *[
        f"--liveness=http://127.0.0.1:{health}/healthz" if arg.startswith("--liveness=") else arg
        for arg in pod_spec["containers"][0]["command"][1:]]]
    env = {**os.environ, **deployment_env(docs), "KUBECONFIG": str(tmp_path / "kubeconfig"),
           "KUBEMAM_METRICS_PORT": "0", "KUBEMAM_RECHECK_SECONDS": "2", "HOME": str(tmp_path)}
    log_path = tmp_path / "operator.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: proc.poll() is not None or _healthz(health), timeout=60, what="/healthz")
            assert proc.poll() is None, log_path.read_text()
            yield log_path
        finally:
            proc.terminate()
            proc.wait(timeout=30)
