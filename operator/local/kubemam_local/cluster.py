"""`kubemam local up | down | env`: the local cluster as a background service.

`up` starts a detached supervisor (`kubemam local serve`) that runs the control plane,
installs the CRDs and runs the operator with the same entry point its container runs;
`down` asks it to stop (SIGTERM) and waits until nothing is left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubemam_local.binaries import cache_root, resolve
from kubemam_local.controlplane import ControlPlane
from kubemam_local.crdinstall import install_crds
from kubemam_local.minio import MinioServer
from kubemam_local.node import ProcessNode

TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
# The buckets the examples use: the library (masters and step outputs), nearline, vault, and the
# distribution origin.
BUCKETS = ["kubemam-library", "kubemam-origin"]
# The archive's nearline and vault keep masters under S3 Object Lock (examples/archivepolicy.yaml).
LOCKED_BUCKETS = ["kubemam-nearline", "kubemam-vault"]
S3_SECRET = "kubemam-s3"
# Namespaces that get the S3 credentials Secret (the demo's and the default one).
WORKLOAD_NAMESPACES = ("default", "kubemam-demo")


def provision_namespaces(api: client.ApiClient, access_key: str, secret_key: str,
                         namespaces: tuple[str, ...] = WORKLOAD_NAMESPACES) -> None:
    """Create the namespaces and the S3 credentials Secret the step pods read by reference."""
    core = client.CoreV1Api(api)
    for namespace in namespaces:
        try:
            core.create_namespace({"metadata": {"name": namespace}})
        except ApiException as err:
            if err.status != 409:
                raise
        body = {"metadata": {"name": S3_SECRET, "labels": {"app.kubernetes.io/managed-by": "kubemam"}},
                "stringData": {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}}
        try:
            core.create_namespaced_secret(namespace, body)
        except ApiException as err:
            if err.status != 409:
                raise
            core.replace_namespaced_secret(S3_SECRET, namespace, body)


def state_dir() -> Path:
    return Path(os.environ.get("KUBEMAM_STATE_DIR") or cache_root() / "local")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A supervisor started by this very process (a test's `up`) is a zombie once it exits, until reaped.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def read_state(directory: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((directory / "ready.json").read_text())
    except (OSError, ValueError):
        return None
    return state if _alive(int(state["pid"])) else None


def operator_command() -> list[str]:
    return [sys.executable, "-m", "kubemam", "run", "--all-namespaces"]


def _state(cp: Any, binaries: Any, s3: Any, node: str, directory: Path) -> dict[str, Any]:
    """What ready.json says of a running cluster, whichever node it runs (`up`, `env` and the demo read it)."""
    return {"pid": os.getpid(), "kubeconfig": str(cp.kubeconfig), "server": cp.server, "version": cp.version(),
            "binDir": str(binaries["kubectl"].parent), "startedInSeconds": round(cp.started_in, 2),
            "s3Endpoint": s3.endpoint, "s3CredentialsSecret": S3_SECRET, "node": node, "logs": str(directory)}


def serve(directory: Path, node: str = "process") -> int:
    """Run the control plane and the operator until SIGTERM or SIGINT."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ready.json").unlink(missing_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if node == "kubelet":
        return serve_kubelet(directory, stop)
    binaries = resolve(TOOLS)
    for stale in ("cluster", "minio", "node"):
        shutil.rmtree(directory / stale, ignore_errors=True)  # a fresh cluster each time
    with ControlPlane(workdir=directory / "cluster", binaries=binaries, scheduler=True) as cp, \
            MinioServer(buckets=BUCKETS, locked_buckets=LOCKED_BUCKETS, workdir=directory / "minio") as s3:
        api = config.new_client_from_config(str(cp.kubeconfig))
        install_crds(api)
        provision_namespaces(api, s3.access_key, s3.secret_key)
        process_node = ProcessNode(api, directory / "node")
        process_node.start()
        operator_env = {**os.environ, **cp.env(), "KUBEMAM_S3_ENDPOINT": s3.endpoint,
                        "KUBEMAM_S3_CREDENTIALS_SECRET": S3_SECRET}
        try:
            with open(directory / "operator.log", "ab") as op_log:
                operator = subprocess.Popen(operator_command(), env=operator_env, stdout=op_log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
                state = {**_state(cp, binaries, s3, process_node.name, directory), "operatorPid": operator.pid}
                (directory / "ready.json").write_text(json.dumps(state, indent=2))
                while not stop.wait(1.0):
                    if operator.poll() is not None:
                        break  # the operator died: stop the cluster rather than run half of it
                if operator.poll() is None:
                    operator.terminate()
                    try:
                        operator.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        operator.kill()
                        operator.wait()
        finally:
            process_node.stop()
    (directory / "ready.json").unlink(missing_ok=True)
    return 0


def serve_kubelet(directory: Path, stop: threading.Event) -> int:
    """The real node instead of the process node: the control plane, MinIO and the kubelet on the pod bridge's
    address; the built images in containerd; the operator installed by the chart as a pod (kubemam_local/kubelet.py,
    docs/containers.md)."""
    from kubemam_local import chart
    from kubemam_local.docker import ensure as ensure_docker
    from kubemam_local.images import image_refs
    from kubemam_local.kubelet import NODE_IP, KubeletNode, PodNetwork

    def leave(signum: int, _: Any) -> None:
        # Unwind whatever runs (a helm install waiting, an image import) so every `with` below stops what it
        # started: the node's containers, mounts and cgroups, the bridge, MinIO, the control plane.
        print(f"stopping on {signal.Signals(signum).name}", flush=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
    engine = ensure_docker()
    refs = image_refs()
    missing = [ref for ref in refs.values() if not engine.image_exists(ref)]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not built: run `make images` first")
    binaries = resolve(TOOLS)
    for stale in ("cluster", "minio", "node"):
        shutil.rmtree(directory / stale, ignore_errors=True)
    with PodNetwork() as network, \
            ControlPlane(workdir=directory / "cluster", binaries=binaries, scheduler=True, address=NODE_IP) as cp, \
            MinioServer(buckets=BUCKETS, locked_buckets=LOCKED_BUCKETS, workdir=directory / "minio",
                        host=NODE_IP) as s3, \
            KubeletNode(cp, network, directory / "node", engine, images=list(refs.values())) as node:
        api = config.new_client_from_config(str(cp.kubeconfig))
        for namespace in WORKLOAD_NAMESPACES:
            chart.ensure_namespace(api, namespace)  # Pod Security "restricted", enforced
        provision_namespaces(api, s3.access_key, s3.secret_key)
        chart.install(api, cp.kubeconfig, {
            "s3.endpoint": s3.endpoint, "s3.credentialsSecret": S3_SECRET,
            # Images come from the Docker Engine, imported into containerd: never pulled.
            "image.pullPolicy": "Never", "workerImage.pullPolicy": "Never",
            # The example ladder's transcode asks for 2 CPUs, all a 2-core machine has: the operator's own 100m
            # request would leave it unschedulable (on the process node the operator is no pod).
            "resources.requests.cpu": "0"})
        state = {**_state(cp, binaries, s3, node.name, directory), "nodeKind": "kubelet",
                 "operator": f"{chart.NAMESPACE}/deployment/{chart.RELEASE}", "images": refs}
        (directory / "ready.json").write_text(json.dumps(state, indent=2))
        try:
            while not stop.wait(1.0):
                pass
        finally:
            (directory / "ready.json").unlink(missing_ok=True)
    return 0


def up(directory: Path, timeout: float = 1800.0, node: str = "process") -> dict[str, Any]:
    """Start the supervisor in the background (or find it running) and wait until ready."""
    state = read_state(directory)
    if state:
        return state
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ready.json").unlink(missing_ok=True)
    with open(directory / "serve.log", "ab") as serve_log:
        proc = subprocess.Popen([sys.executable, "-m", "kubemam", "local", "serve", "--state-dir", str(directory),
                                 "--node", node],
                                stdout=serve_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(directory)
        if state:
            return state
        if proc.poll() is not None:
            tail = (directory / "serve.log").read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError("the local cluster failed to start:\n" + "\n".join(tail))
        time.sleep(0.5)
    raise TimeoutError(f"the local cluster was not ready after {timeout:.0f}s (see {directory}/serve.log)")


def down(directory: Path, timeout: float | None = None) -> bool:
    """Stop the supervisor; True when something was running. It gets `timeout` seconds before SIGKILL (default
    60 s; 180 s for the kubelet node, whose pods are deleted and torn down first)."""
    try:
        state = json.loads((directory / "ready.json").read_text())
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError):
        return False
    if timeout is None:
        timeout = 180.0 if state.get("nodeKind") == "kubelet" else 60.0
    if not _alive(pid):
        (directory / "ready.json").unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True


def env_lines(state: dict[str, Any]) -> list[str]:
    """What a shell needs for kubectl and the kubemam CLI (`kubemam preview` finds MinIO and its credentials'
    Secret through the last two)."""
    return [
        f"export KUBECONFIG={state['kubeconfig']}",
        f"export PATH={state['binDir']}:$PATH",
        f"export AWS_ENDPOINT_URL={state['s3Endpoint']}",
        f"export KUBEMAM_S3_CREDENTIALS_SECRET={state['s3CredentialsSecret']}",
    ]

