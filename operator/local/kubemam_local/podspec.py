"""Pure parts of the process node: turning a pod's container spec into a local process.

Mapping (documented in docs/architecture.md): the image is recorded, the command runs
from the host's PATH; each volume is a directory in the pod's sandbox; a container path
under a volume's mountPath is rewritten to the sandbox directory wherever it appears in
workingDir, env values, command and args; the termination message file lives in the
sandbox and its path reaches the process as KUBEMAM_TERMINATION_MESSAGE_PATH.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubemam.worker.contract import TERMINATION_PATH_ENV

_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")

# (kind, namespace, name, key) → value, None for a missing key, ReferenceNotFound for a missing object;
# the node reads Secrets and ConfigMaps through it.
Lookup = Callable[[str, str, str, str], str | None]


class PodSpecError(ValueError):
    """A pod the process node cannot run, with the reason the pod's status will carry."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReferenceNotFound(LookupError):
    """The Secret or ConfigMap an env var names does not exist (Lookup raises it; None is a missing key)."""


class MissingReference(PodSpecError):
    """A Secret or ConfigMap (or a key of one) an env var needs is missing: as the kubelet does, the pod waits
    in CreateContainerConfigError, with the kubelet's words, until it appears."""

    def __init__(self, message: str) -> None:
        super().__init__("CreateContainerConfigError", message)


def cpu_millis(quantity: str | None) -> int:
    """A CPU quantity in millicores: "500m" → 500, "2" → 2000, "0.5" → 500."""
    if not quantity:
        return 0
    if quantity.endswith("m"):
        return int(float(quantity[:-1]))
    return int(float(quantity) * 1000)


def pod_cpu_request(pod: Mapping[str, Any]) -> int:
    containers = (pod.get("spec") or {}).get("containers") or []
    return sum(cpu_millis(((c.get("resources") or {}).get("requests") or {}).get("cpu")) for c in containers)


def field_value(pod: Mapping[str, Any], path: str) -> str:
    meta = pod.get("metadata") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path not in simple:
        raise PodSpecError("CreateContainerConfigError", f"unsupported fieldRef {path!r}")
    return str(simple[path] or "")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known names are replaced, $$ escapes, unknown refs stay."""
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(sub, text)


def resolve_env(pod: Mapping[str, Any], container: Mapping[str, Any], lookup: Lookup) -> dict[str, str]:
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var or "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"])
            continue
        for kind, ref_key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if ref_key in source:
                ref = source[ref_key]
                try:
                    value = lookup(kind, namespace, ref["name"], ref["key"])
                except ReferenceNotFound:
                    if ref.get("optional"):
                        break
                    raise MissingReference(f'{kind.lower()} "{ref["name"]}" not found') from None
                if value is None:
                    if ref.get("optional"):
                        break
                    raise MissingReference(f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}")
                env[name] = value
                break
        else:
            raise PodSpecError("CreateContainerConfigError", f"unsupported valueFrom for env {name}")
    return env


@dataclass(frozen=True)
class Mount:
    container_path: str
    host_path: Path


def mounts(container: Mapping[str, Any], volume_dirs: Mapping[str, Path]) -> list[Mount]:
    """Mounts, longest container path first, so a nested mount wins over its parent."""
    found = []
    for vm in container.get("volumeMounts") or []:
        if vm["name"] not in volume_dirs:
            raise PodSpecError("CreateContainerConfigError", f"volumeMount {vm['name']!r} names no volume")
        host = volume_dirs[vm["name"]] / vm.get("subPath", "")
        found.append(Mount(vm["mountPath"].rstrip("/") or "/", host))
    return sorted(found, key=lambda m: len(m.container_path), reverse=True)


def map_path(text: str, mount_list: list[Mount]) -> str:
    """Rewrite container paths under a mountPath (as a whole value or a path prefix) to the host."""
    for mount in mount_list:
        prefix = mount.container_path
        if text == prefix:
            return str(mount.host_path)
        if text.startswith(prefix + "/"):
            return str(mount.host_path) + text[len(prefix):]
    return text


@dataclass(frozen=True)
class ProcessSpec:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    termination_path: Path
    image: str


def process_spec(pod: Mapping[str, Any], container: Mapping[str, Any], sandbox: Path,
                 volume_dirs: Mapping[str, Path], lookup: Lookup, base_env: Mapping[str, str]) -> ProcessSpec:
    command = list(container.get("command") or [])
    if not command:
        raise PodSpecError("CreateContainerConfigError",
                           "the process node runs a container's command from the host PATH; this container "
                           "sets no command (image entrypoints are not known here)")
    mount_list = mounts(container, volume_dirs)
    # Expand in the container's view of paths, then map each value once: a mapped host path
    # may itself start with a mountPath (say /tmp) and must not be mapped again.
    container_env = resolve_env(pod, container, lookup)
    env = {k: map_path(v, mount_list) for k, v in container_env.items()}
    argv = [map_path(expand(a, container_env), mount_list) for a in command + list(container.get("args") or [])]
    working = container.get("workingDir")
    cwd = Path(map_path(working, mount_list)) if working else sandbox
    if working and str(cwd) == working:
        # A workingDir outside every volume would be the host's own directory: refuse it.
        raise PodSpecError("CreateContainerConfigError", f"workingDir {working!r} is not inside a volume mount")
    termination = sandbox / "termination-log"
    full_env = {**base_env, "HOSTNAME": str((pod.get("metadata") or {}).get("name", "")), **env,
                TERMINATION_PATH_ENV: str(termination)}
    return ProcessSpec(argv, full_env, cwd, termination, str(container.get("image", "")))
