"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

Usable as a context manager (a pytest session fixture) and by `kubemam local up`.
Every process runs in its own process group and is stopped on exit, nothing left running.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from kubemam_local import pki as pki_module
from kubemam_local.binaries import Binaries, resolve
from kubemam_local.processes import LocalService, stop_process_group

log = logging.getLogger(__name__)

SERVICE_CIDR = "10.0.0.0/24"
# Controllers the local cluster needs: Jobs and their pods, owner-based garbage collection,
# namespace deletion, the default ServiceAccount, TTL and CronJobs, root CA publication.
CONTROLLERS = "*,-node-ipam-controller,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller"


class ControlPlaneError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class ControlPlane(LocalService):
    """Start with `with ControlPlane() as cp:`; cp.kubeconfig is ready to use inside."""

    workdir: Path | None = None
    binaries: Binaries | None = None
    start_timeout: float = 120.0
    # kube-scheduler binds pods to nodes; off by default because without a node it has nothing to do.
    scheduler: bool = False
    # Where kube-apiserver listens and what it advertises as the `kubernetes` Service's endpoint: loopback, or
    # the real node's bridge address, which pods reach (kubemam_local/kubelet.py).
    address: str = "127.0.0.1"
    processes: list[Process] = field(default_factory=list)
    _own_workdir: bool = False

    def __post_init__(self) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="kubemam-cp-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.api_port = free_port()
        self.kcm_port = free_port()
        self.scheduler_port = free_port()
        if self.address != "127.0.0.1":
            self.api_port = free_port(self.address)

    # --- public surface ----------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    def start(self) -> None:
        started = time.monotonic()
        try:
            if self.binaries is None:
                self.binaries = resolve()
            self.pki = pki_module.generate(self.dir / "pki", ips=[self.address])
            self._write_kubeconfig()
            self._start_etcd()
            self._start_apiserver()
            self._wait_ready()
            self._start_controller_manager()
            if self.scheduler:
                self._start_scheduler()
            self._wait_controllers()
        except BaseException:
            self.stop()
            raise
        log.info("control plane %s ready in %.1fs at %s", self.version(), time.monotonic() - started, self.server)
        self.started_in = time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM every process (reverse start order), SIGKILL what is left after a grace period."""
        for proc in reversed(self.processes):
            stop_process_group(proc.popen)
            proc.log_file.close()
        self.processes.clear()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def request(self, path: str, timeout: float = 5.0) -> Any:
        """GET a path of the API server as the admin; JSON decoded where it is JSON."""
        req = urllib.request.Request(self.server + path, headers={"Authorization": f"Bearer {self.pki.token}"})
        with urllib.request.urlopen(req, context=self._ssl_context(), timeout=timeout) as response:
            data = response.read()
        try:
            return json.loads(data)
        except ValueError:
            return data.decode()

    def version(self) -> str:
        return str(self.request("/version")["gitVersion"])

    def env(self) -> dict[str, str]:
        """Environment for a client of this cluster (kubectl, the operator, tests)."""
        assert self.binaries is not None
        return {"KUBECONFIG": str(self.kubeconfig)}

    # --- internals ---------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki.ca_cert))

    def _spawn(self, name: str, args: list[str]) -> Process:
        log_path = self.dir / f"{name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        popen = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, cwd=self.dir)
        proc = Process(name, popen, log_path, log_file)
        self.processes.append(proc)
        return proc

    def _write_kubeconfig(self) -> None:
        ca = base64.b64encode(self.pki.ca_cert.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubemam-local",
                          "cluster": {"server": self.server, "certificate-authority-data": ca}}],
            "users": [{"name": "kubemam-admin", "user": {"token": self.pki.token}}],
            "contexts": [{"name": "kubemam-local",
                          "context": {"cluster": "kubemam-local", "user": "kubemam-admin", "namespace": "default"}}],
            "current-context": "kubemam-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def _start_etcd(self) -> None:
        assert self.binaries is not None
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn("etcd", [
            str(self.binaries["etcd"]),
            "--name=default",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync=true",  # a throwaway store: durability is not worth the fsync latency
            "--log-level=warn",
        ])

    def _start_apiserver(self) -> None:
        assert self.binaries is not None
        p = self.pki
        self._spawn("kube-apiserver", [
            str(self.binaries["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--secure-port={self.api_port}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--cert-dir={self.dir / 'certs'}",
            f"--tls-cert-file={p.serving_cert}",
            f"--tls-private-key-file={p.serving_key}",
            f"--client-ca-file={p.ca_cert}",
            f"--token-auth-file={p.token_file}",
            "--authorization-mode=RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            "--allow-privileged=false",
            # Reach nodes (the process node's log endpoint, a kubelet) by their InternalIP, never by a
            # hostname lookup; a kubelet trusts the CA that signed this client certificate.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={p.kubelet_client_cert}",
            f"--kubelet-client-key={p.kubelet_client_key}",
            "--enable-priority-and-fairness=false",
            "--v=1",
        ])

    def _start_controller_manager(self) -> None:
        assert self.binaries is not None
        kubeconfig = str(self.kubeconfig)
        self._spawn("kube-controller-manager", [
            str(self.binaries["kube-controller-manager"]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--controllers={CONTROLLERS}",
            "--leader-elect=false",
            f"--secure-port={self.kcm_port}",
            "--bind-address=127.0.0.1",
            f"--cert-dir={self.dir / 'kcm-certs'}",
            f"--service-account-private-key-file={self.pki.sa_key}",
            f"--root-ca-file={self.pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--use-service-account-credentials=false",
            "--v=1",
        ])

    def _start_scheduler(self) -> None:
        assert self.binaries is not None
        kubeconfig = str(self.kubeconfig)
        self._spawn("kube-scheduler", [
            str(self.binaries["kube-scheduler"]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            f"--secure-port={self.scheduler_port}",
            "--bind-address=127.0.0.1",
            "--v=1",
        ])

    def _check_alive(self) -> None:
        for proc in self.processes:
            if proc.popen.poll() is not None:
                raise ControlPlaneError(
                    f"{proc.name} exited with {proc.popen.returncode}; last log lines:\n{proc.tail()}")

    def _wait(self, what: str, probe: Any) -> None:
        deadline = time.monotonic() + self.start_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if probe():
                    return
            except (OSError, urllib.error.URLError, ValueError, KeyError) as err:
                last = err
            time.sleep(0.2)
        raise ControlPlaneError(f"timed out after {self.start_timeout:.0f}s waiting for {what}: {last}")

    def _wait_ready(self) -> None:
        self._wait("kube-apiserver /readyz", lambda: self.request("/readyz") == "ok")

    def _wait_controllers(self) -> None:
        # The controller manager is working once the ServiceAccount controller made `default`
        # in the default namespace: pods cannot be created in a namespace before that.
        self._wait("kube-controller-manager (default ServiceAccount)",
                   lambda: self.request("/api/v1/namespaces/default/serviceaccounts/default")["metadata"])
