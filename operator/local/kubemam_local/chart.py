"""Install the chart (charts/kubemam) with Helm into a local cluster: the operator as a pod, as users run it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubemam_local.binaries import BinaryError
from kubemam_local.gotools import resolve_tool

CHART = Path(__file__).resolve().parents[3] / "charts" / "kubemam"
RELEASE = "kubemam"
NAMESPACE = "kubemam-system"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


def ensure_namespace(api: client.ApiClient, name: str, labels: dict[str, str] | None = None) -> None:
    """Create a namespace that enforces Pod Security "restricted" (or label an existing one)."""
    core = client.CoreV1Api(api)
    body = {"metadata": {"name": name, "labels": {**RESTRICTED, **(labels or {})}}}
    try:
        core.create_namespace(body)
    except ApiException as err:
        if err.status != 409:
            raise
        core.patch_namespace(name, body)


def helm(kubeconfig: Path, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(resolve_tool("helm")), f"--kubeconfig={kubeconfig}", *args],
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise BinaryError(f"helm {' '.join(args[:2])} failed: {result.stderr[-3000:]}")
    return result


def install(api: client.ApiClient, kubeconfig: Path, values: dict[str, str], namespace: str = NAMESPACE,
            release: str = RELEASE, timeout: float = 300.0) -> float:
    """`helm install` the chart with `--set` values, then wait until the operator pod is Ready and the CRDs
    are served. Returns the seconds it took."""
    started = time.monotonic()
    ensure_namespace(api, namespace)
    sets = [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
    helm(kubeconfig, "upgrade", "--install", release, str(CHART), "-n", namespace, *sets,
         "--wait", f"--timeout={int(timeout)}s", timeout=timeout + 30)
    ext = client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + 60
    for crd in ext.list_custom_resource_definition().items:
        if crd.spec.group != "kubemam.io":
            continue
        while not any(c.type == "Established" and c.status == "True"
                      for c in ext.read_custom_resource_definition(crd.metadata.name).status.conditions or []):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {crd.metadata.name} not Established")
            time.sleep(0.2)
    return time.monotonic() - started


def uninstall(kubeconfig: Path, namespace: str = NAMESPACE, release: str = RELEASE) -> None:
    helm(kubeconfig, "uninstall", release, "-n", namespace, "--wait", timeout=180)
