"""Run a step Job's pod (as plan/jobs.py builds it) under `docker run`, with the pod's security context.

What a kubelet would do with the pod template, as docker flags: the image and command; env values and
secretKeyRefs (resolved from the Secrets given) and fieldRefs; runAsUser/runAsGroup → --user; a read-only root;
all capabilities dropped; no privilege escalation → no-new-privileges; RuntimeDefault seccomp → Docker's default
profile; emptyDir volumes → tmpfs (exec allowed, as an emptyDir is); secret volumes → a read-only bind mount of
their files (mode 0440, group fsGroup); the termination message file bind-mounted at its path.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubemam_local.docker import Docker

TERMINATION_PATH = "/dev/termination-log"


@dataclass
class PodRun:
    returncode: int
    logs: str
    message: str

    @property
    def result(self) -> dict[str, Any]:
        return dict(json.loads(self.message))


def docker_args(job: dict[str, Any], secrets: dict[str, dict[str, str]], scratch: Path, name: str) -> list[str]:
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    args = ["run", "--name", name, "--network", "bridge"]
    assert security["runAsNonRoot"] and security["runAsUser"] != 0
    args += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"]
    if "fsGroup" in pod.get("securityContext", {}):
        args += ["--group-add", str(pod["securityContext"]["fsGroup"])]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for cap in security.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault"  # Docker's default profile
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            args += ["--tmpfs", f"{mount['mountPath']}:rw,exec,nosuid,nodev,size=4g,mode=1777"]
        elif "secret" in volume:
            folder = scratch / f"secret-{mount['name']}"
            folder.mkdir(parents=True, exist_ok=True)
            for key, value in secrets[volume["secret"]["secretName"]].items():
                path = folder / key
                path.write_text(value)
                os.chown(path, 0, int(pod["securityContext"].get("fsGroup", 0)))
                path.chmod(volume["secret"].get("defaultMode", 0o644))
            args += ["-v", f"{folder}:{mount['mountPath']}:ro"]
        else:
            raise AssertionError(f"volume {volume} has no docker equivalent here")
    message = scratch / "termination-log"
    message.write_text("")
    message.chmod(0o666)
    args += ["-v", f"{message}:{container.get('terminationMessagePath', TERMINATION_PATH)}"]
    for var in container.get("env", []):
        if "value" in var:
            value = var["value"]
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"]][ref["key"]]
        else:
            field = var["valueFrom"]["fieldRef"]["fieldPath"]
            value = {"metadata.name": name, "metadata.namespace": "default"}[field]
        args += ["-e", f"{var['name']}={value}"]
    if container.get("workingDir"):
        args += ["-w", container["workingDir"]]
    command = container["command"]
    args += ["--entrypoint", command[0], container["image"], *command[1:], *container.get("args", [])]
    return args


def run_pod(docker: Docker, job: dict[str, Any], secrets: dict[str, dict[str, str]], scratch: Path,
            timeout: float = 900.0) -> PodRun:
    """Run the Job's pod to completion; its exit code, logs (stdout and stderr) and termination message."""
    scratch.mkdir(parents=True, exist_ok=True)
    name = f"kubemam-test-{uuid.uuid4().hex[:8]}"
    try:
        docker.run("create", *docker_args(job, secrets, scratch, name)[1:])
        docker.run("start", "--attach", name, check=False, timeout=timeout)
        code = int(docker.run("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip())
        logs = docker.run("logs", name, check=False)
        message = (scratch / "termination-log").read_text()
        return PodRun(code, logs.stdout + logs.stderr, message)
    finally:
        subprocess.run([docker.cli, "rm", "-f", name], env=docker.env(), capture_output=True)
