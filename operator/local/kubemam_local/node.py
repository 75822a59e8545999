"""The process node: a Node whose pods run as local processes (a kubelet for the local cluster).

Pods are bound by the real kube-scheduler (ControlPlane(scheduler=True)); the node runs what
is bound to it: resolves env and volumes (podspec.py), starts the command, reports Running,
then the exit code, the termination message and the phase. Deleting a pod stops its process
(SIGTERM, SIGKILL after the grace period), then the node completes the deletion as a kubelet
does. The Job controller, not the node, gives Job semantics (retries, parallelism, indexes).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from kubemam.worker.contract import MAX_MESSAGE
from kubemam_local.podspec import (
    MissingReference,
    PodSpecError,
    ProcessSpec,
    ReferenceNotFound,
    field_value,
    pod_cpu_request,
    process_spec,
)

log = logging.getLogger(__name__)

NODE_NAME = "kubemam-local"
LEASE_NAMESPACE = "kube-node-lease"
CONTAINER_LOG = "container.log"
CONFIG_RETRY_SECONDS = 2.0  # a pod waiting for a Secret or ConfigMap (key) tries again this often


def sandbox_log(root: Path, namespace: str, pod: str) -> Path | None:
    """The container log of the newest pod of that name that ran on the node under root."""
    found = sorted((root / "pods").glob(f"{namespace}_{pod}_*/{CONTAINER_LOG}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


class _LogHandler(BaseHTTPRequestHandler):
    """The slice of the kubelet API the API server proxies for `kubectl logs`: /containerLogs."""

    root: Path

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        url = urllib.parse.urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(404, "only /containerLogs/NAMESPACE/POD/CONTAINER is served")
            return
        path = sandbox_log(self.root, parts[1], parts[2])
        if path is None:
            self.send_error(404, f"pod {parts[1]}/{parts[2]} has no log on this node")
            return
        text = path.read_bytes()
        tail = urllib.parse.parse_qs(url.query).get("tailLines")
        if tail:
            text = b"".join(text.splitlines(keepends=True)[-int(tail[0]):])
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
        log.debug("kubelet api: " + format, *args)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class RunningPod:
    uid: str
    name: str
    namespace: str
    cpu: int
    popen: subprocess.Popen[bytes] | None = None
    stopping: threading.Event = field(default_factory=threading.Event)


class ProcessNode:
    def __init__(self, api_client: client.ApiClient, root: Path, name: str = NODE_NAME,
                 cpu_millis: int | None = None, memory_bytes: int | None = None,
                 taints: list[dict[str, str]] | None = None, tool_dirs: Sequence[Path] | None = None) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.name = name
        self.root = root
        self.cpu_capacity = cpu_millis or (os.cpu_count() or 1) * 1000
        self.memory = memory_bytes or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        self.pods: dict[str, RunningPod] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        # A taint keeps pods that do not tolerate it off this node (tests share a cluster).
        self.taints = taints or []
        # The node's "image": directories put on every pod's PATH after the node's Python bin directory —
        # by default <root>/bin, links to the worker image's tools (kubemam-encrypt) found or built at start.
        self.tool_dirs: list[Path] | None = list(tool_dirs) if tool_dirs is not None else None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.tool_dirs is None:
            self.tool_dirs = [self._link_worker_tools(self.root / "bin")]
        self._serve_logs()
        self._register()
        for target in (self._heartbeat_loop, self._watch_loop):
            thread = threading.Thread(target=target, name=f"node-{target.__name__}", daemon=True)
            thread.start()
            self.threads.append(thread)

    @staticmethod
    def _link_worker_tools(bin_dir: Path) -> Path:
        """A directory of links to the worker image's tools (found or built), under their own names."""
        from kubemam_local.gotools import worker_tools

        bin_dir.mkdir(parents=True, exist_ok=True)
        for name, path in worker_tools().items():
            link = bin_dir / name
            link.unlink(missing_ok=True)
            link.symlink_to(path.resolve())
        return bin_dir

    def _serve_logs(self) -> None:
        """HTTPS on loopback for the API server's log requests (it does not verify kubelet certs
        unless --kubelet-certificate-authority is set, and the local cluster does not set it)."""
        from kubemam_local.pki import self_signed

        cert, key = self_signed(self.root / "kubelet", "kubemam-process-node")
        handler = type("LogHandler", (_LogHandler,), {"root": self.root})
        self.log_server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.log_server.socket = context.wrap_socket(self.log_server.socket, server_side=True)
        self.kubelet_port = self.log_server.server_address[1]
        thread = threading.Thread(target=self.log_server.serve_forever, name="node-logs", daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        self.log_server.shutdown()
        with self.lock:
            running = list(self.pods.values())
        for pod in running:
            self._terminate(pod, grace=5)
        for thread in self.threads:
            thread.join(timeout=5)

    def deregister(self) -> None:
        with contextlib.suppress(ApiException):
            self.core.delete_node(self.name)

    # --- the Node object ---------------------------------------------------------------------

    def _capacity(self) -> dict[str, str]:
        return {"cpu": f"{self.cpu_capacity}m", "memory": str(self.memory), "pods": "110",
                "ephemeral-storage": str(shutil.disk_usage(self.root).total)}

    def _node_status(self) -> dict[str, Any]:
        now = _now()
        conditions = [
            {"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": "process node",
             "lastHeartbeatTime": now, "lastTransitionTime": now}
            for t, r in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                         ("PIDPressure", "SufficientPID"))
        ]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": "kubemam process node is running pods as local processes",
                           "lastHeartbeatTime": now, "lastTransitionTime": now})
        return {
            "capacity": self._capacity(),
            "allocatable": self._capacity(),
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "kubemam-process-node",
                         "kubeProxyVersion": "", "osImage": "local processes", "kernelVersion": os.uname().release,
                         "containerRuntimeVersion": "process://", "machineID": "", "systemUUID": "", "bootID": ""},
        }

    def _register(self) -> None:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": {
            "kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "kubemam.io/process-node": "true"}}, "spec": {"taints": self.taints}}
        try:
            self.core.create_node(body)
        except ApiException as err:
            if err.status != 409:
                raise
        self.core.patch_node_status(self.name, {"status": self._node_status()})

    def _heartbeat_loop(self) -> None:
        last_status = 0.0
        while not self.stop_event.wait(5.0):
            try:
                self._renew_lease()
                if time.monotonic() - last_status > 20:
                    try:
                        self.core.patch_node_status(self.name, {"status": self._node_status()})
                    except ApiException as err:
                        if err.status != 404:
                            raise
                        # The Node object was deleted (by hand, or a cluster's node cleanup): as a kubelet
                        # that restarts does, register again, so the Job controller's new pods have a home.
                        log.warning("node %s was deleted; registering it again", self.name)
                        self._register()
                    last_status = time.monotonic()
            except Exception:  # noqa: BLE001 - a missed heartbeat is retried on the next tick
                log.exception("node heartbeat failed")

    def _renew_lease(self) -> None:
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": _micro_now()}
        try:
            self.coordination.patch_namespaced_lease(self.name, LEASE_NAMESPACE, {"spec": spec})
        except ApiException as err:
            if err.status != 404:
                raise
            self.coordination.create_namespaced_lease(LEASE_NAMESPACE, {
                "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE}, "spec": spec})

    # --- pods --------------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        selector = f"spec.nodeName={self.name}"
        while not self.stop_event.is_set():
            try:
                stream = watch.Watch().stream(self.core.list_pod_for_all_namespaces, field_selector=selector,
                                              timeout_seconds=60)
                for event in stream:
                    if self.stop_event.is_set():
                        return
                    self._on_pod(event["object"], deleted=event["type"] == "DELETED")
            except Exception:  # noqa: BLE001 - the watch is re-established
                if not self.stop_event.is_set():
                    log.exception("pod watch failed; re-listing")
                    time.sleep(1.0)

    def _on_pod(self, pod: client.V1Pod, deleted: bool = False) -> None:
        raw: dict[str, Any] = self.api_client.sanitize_for_serialization(pod)
        meta = raw["metadata"]
        uid = meta["uid"]
        with self.lock:
            known = self.pods.get(uid)
        if deleted:
            # Gone from the API server already (a force delete, e.g. the pod GC after its Node was deleted):
            # nobody waits for a grace period, and a process left running would be an orphan.
            if known is not None:
                threading.Thread(target=self._terminate, args=(known, 0), daemon=True).start()
            return
        if meta.get("deletionTimestamp"):
            grace = int(meta.get("deletionGracePeriodSeconds") or 30)
            if known is not None:
                threading.Thread(target=self._terminate, args=(known, grace), daemon=True).start()
            else:
                self._finish_deletion(meta["namespace"], meta["name"], uid)
            return
        phase = (raw.get("status") or {}).get("phase", "Pending")
        if known is not None or phase != "Pending" or (raw.get("status") or {}).get("containerStatuses"):
            return
        cpu = pod_cpu_request(raw)
        with self.lock:
            used = sum(p.cpu for p in self.pods.values())
            admitted = used + cpu <= self.cpu_capacity
            if admitted:
                self.pods[uid] = RunningPod(uid, meta["name"], meta["namespace"], cpu)
        if not admitted:
            self._report_failed(raw, "OutOfcpu", f"Node didn't have enough resource: cpu, requested: {cpu}m, "
                                                 f"used: {used}m, capacity: {self.cpu_capacity}m")
            return
        threading.Thread(target=self._run, args=(raw,), name=f"pod-{meta['name']}", daemon=True).start()

    def _lookup(self, kind: str, namespace: str, name: str, key: str) -> str | None:
        try:
            if kind == "Secret":
                data = self.core.read_namespaced_secret(name, namespace).data or {}
                return base64.b64decode(data[key]).decode() if key in data else None
            cm = self.core.read_namespaced_config_map(name, namespace)
            return (cm.data or {}).get(key)
        except ApiException as err:
            if err.status == 404:
                raise ReferenceNotFound(name) from None
            raise

    def _volumes(self, raw: dict[str, Any], sandbox: Path) -> dict[str, Path]:
        namespace = raw["metadata"]["namespace"]
        dirs: dict[str, Path] = {}
        for volume in raw["spec"].get("volumes") or []:
            path = sandbox / "volumes" / volume["name"]
            path.mkdir(parents=True, exist_ok=True)
            dirs[volume["name"]] = path
            files: dict[str, bytes] = {}
            if "emptyDir" in volume:
                continue
            if "secret" in volume:
                secret = self.core.read_namespaced_secret(volume["secret"]["secretName"], namespace)
                files = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
            elif "configMap" in volume:
                cm = self.core.read_namespaced_config_map(volume["configMap"]["name"], namespace)
                files = {k: v.encode() for k, v in (cm.data or {}).items()}
            elif "projected" in volume:
                files = self._projected(raw, volume["projected"])
            else:
                kinds = sorted(k for k in volume if k != "name")
                raise PodSpecError("CreateContainerConfigError", f"volume {volume['name']!r}: {kinds} not supported "
                                                                 "by the process node (emptyDir, secret, configMap, "
                                                                 "projected are)")
            for key, content in files.items():
                target = path / key
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
                target.chmod(0o600)
        return dirs

    def _projected(self, raw: dict[str, Any], projected: dict[str, Any]) -> dict[str, bytes]:
        """serviceAccountToken, configMap, secret and downwardAPI sources, as the kubelet projects them."""
        namespace = raw["metadata"]["namespace"]
        files: dict[str, bytes] = {}
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                sa = raw["spec"].get("serviceAccountName") or "default"
                seconds = source["serviceAccountToken"].get("expirationSeconds", 3600)
                token = self.core.create_namespaced_service_account_token(sa, namespace, {"spec": {
                    "audiences": [], "expirationSeconds": seconds}})
                files[source["serviceAccountToken"]["path"]] = token.status.token.encode()
            elif "configMap" in source:
                cm = self.core.read_namespaced_config_map(source["configMap"]["name"], namespace)
                for item in source["configMap"].get("items") or [{"key": k, "path": k} for k in cm.data or {}]:
                    files[item["path"]] = (cm.data or {}).get(item["key"], "").encode()
            elif "secret" in source:
                secret = self.core.read_namespaced_secret(source["secret"]["name"], namespace)
                data = secret.data or {}
                for item in source["secret"].get("items") or [{"key": k, "path": k} for k in data]:
                    files[item["path"]] = base64.b64decode(data.get(item["key"], ""))
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    files[item["path"]] = field_value(raw, item["fieldRef"]["fieldPath"]).encode()
        return files

    def pod_path(self) -> str:
        """PATH of every pod: the node's Python bin directory (`kubemam`), its tool directories, the host's."""
        dirs = [os.path.dirname(sys.executable), *(str(d) for d in self.tool_dirs or ())]
        return os.pathsep.join(dict.fromkeys([*dirs, os.environ.get("PATH", "")]))

    def _run(self, raw: dict[str, Any]) -> None:
        meta = raw["metadata"]
        uid = meta["uid"]
        running = self.pods[uid]
        sandbox = self.root / "pods" / f"{meta['namespace']}_{meta['name']}_{uid}"
        container = raw["spec"]["containers"][0]
        started = _now()
        try:
            spec = self._prepare(raw, container, sandbox, running)
            if spec is None:  # deleted while it waited for a Secret or ConfigMap
                self._forget(uid)
                return
            # stdout and stderr interleaved in one file, as a container runtime keeps them.
            with open(sandbox / CONTAINER_LOG, "wb") as out:
                running.popen = subprocess.Popen(spec.argv, env=spec.env, cwd=spec.cwd, stdout=out,
                                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 start_new_session=True)
                self._report_running(raw, spec.image, started)
                exit_code = self._wait(raw, running)
        except PodSpecError as err:
            self._report_failed(raw, err.reason, str(err))
            self._forget(uid)
            return
        except FileNotFoundError as err:
            self._report_failed(raw, "ContainerCannotRun", f"command not found on the host PATH: {err.filename}")
            self._forget(uid)
            return
        message = ""
        if spec.termination_path.exists():
            message = spec.termination_path.read_text(errors="replace")[:MAX_MESSAGE]
        elif container.get("terminationMessagePolicy") == "FallbackToLogsOnError" and exit_code != 0:
            message = (sandbox / CONTAINER_LOG).read_text(errors="replace")[-MAX_MESSAGE:]
        self._report_terminated(raw, spec.image, started, exit_code, message, running)
        self._forget(uid)

    def _prepare(self, raw: dict[str, Any], container: dict[str, Any], sandbox: Path,
                 running: RunningPod) -> ProcessSpec | None:
        """The process to start; while a Secret or ConfigMap (key) its env needs is missing, the pod waits in
        CreateContainerConfigError and is tried again, as the kubelet does. None: deleted meanwhile."""
        while True:
            try:
                sandbox.mkdir(parents=True, exist_ok=True)
                volume_dirs = self._volumes(raw, sandbox)
                base_env = {"PATH": self.pod_path(), "LANG": os.environ.get("LANG", "C.UTF-8")}
                return process_spec(raw, container, sandbox, volume_dirs, self._lookup, base_env)
            except MissingReference as err:
                self._report_waiting(raw, err.reason, str(err))
                if running.stopping.wait(CONFIG_RETRY_SECONDS) or self.stop_event.is_set():
                    return None

    def _wait(self, raw: dict[str, Any], running: RunningPod) -> int:
        assert running.popen is not None
        deadline_s = raw["spec"].get("activeDeadlineSeconds")
        deadline = time.monotonic() + deadline_s if deadline_s else None
        while True:
            try:
                return running.popen.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() > deadline:
                    self._signal(running, signal.SIGKILL)

    def _signal(self, running: RunningPod, sig: int) -> None:
        if running.popen is not None and running.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.popen.pid, sig)

    def _terminate(self, running: RunningPod, grace: int) -> None:
        """Graceful stop: SIGTERM, then SIGKILL once the grace period is over; then finish deletion."""
        if running.stopping.is_set():
            return
        running.stopping.set()
        self._signal(running, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while running.popen is not None and running.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        self._signal(running, signal.SIGKILL)
        self._finish_deletion(running.namespace, running.name, running.uid)

    def _finish_deletion(self, namespace: str, name: str, uid: str) -> None:
        with contextlib.suppress(ApiException):
            # With a body the API server ignores the query's gracePeriodSeconds: it must be in the body,
            # or the pod stays Terminating for the whole grace period again.
            self.core.delete_namespaced_pod(name, namespace, body=client.V1DeleteOptions(
                grace_period_seconds=0, preconditions={"uid": uid}))

    def _forget(self, uid: str) -> None:
        with self.lock:
            self.pods.pop(uid, None)

    # --- status ------------------------------------------------------------------------------

    def _patch_status(self, raw: dict[str, Any], status: dict[str, Any]) -> None:
        meta = raw["metadata"]
        try:
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})
        except ApiException as err:
            if err.status != 404:
                raise

    def _conditions(self, ready: bool) -> list[dict[str, Any]]:
        now = _now()
        flag = "True" if ready else "False"
        return [{"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
                {"type": "Ready", "status": flag, "lastTransitionTime": now}]

    def _report_running(self, raw: dict[str, Any], image: str, started: str) -> None:
        name = raw["spec"]["containers"][0]["name"]
        self._patch_status(raw, {
            "phase": "Running", "startTime": started, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}], "conditions": self._conditions(True),
            "containerStatuses": [{"name": name, "image": image, "imageID": f"process://{image}", "ready": True,
                                   "restartCount": 0, "started": True, "state": {"running": {"startedAt": started}}}],
        })

    def _report_terminated(self, raw: dict[str, Any], image: str, started: str, exit_code: int, message: str,
                           running: RunningPod) -> None:
        name = raw["spec"]["containers"][0]["name"]
        if exit_code < 0:  # killed by a signal: report as a shell would, 128 + signal
            exit_code = 128 - exit_code
        reason = "Completed" if exit_code == 0 else ("Error" if not running.stopping.is_set() else "Killed")
        terminated = {"exitCode": exit_code, "reason": reason, "startedAt": started, "finishedAt": _now()}
        if message:
            terminated["message"] = message
        self._patch_status(raw, {
            "phase": "Succeeded" if exit_code == 0 else "Failed", "conditions": self._conditions(False),
            "containerStatuses": [{"name": name, "image": image, "imageID": f"process://{image}", "ready": False,
                                   "restartCount": 0, "started": False, "state": {"terminated": terminated}}],
        })

    def _report_waiting(self, raw: dict[str, Any], reason: str, message: str) -> None:
        container = raw["spec"]["containers"][0]
        self._patch_status(raw, {
            "phase": "Pending", "hostIP": "127.0.0.1", "conditions": self._conditions(False),
            "containerStatuses": [{"name": container["name"], "image": container.get("image", ""), "imageID": "",
                                   "ready": False, "restartCount": 0, "started": False,
                                   "state": {"waiting": {"reason": reason, "message": message[:MAX_MESSAGE]}}}],
        })

    def _report_failed(self, raw: dict[str, Any], reason: str, message: str) -> None:
        self._patch_status(raw, {"phase": "Failed", "reason": reason, "message": message[:MAX_MESSAGE],
                                 "conditions": self._conditions(False)})
