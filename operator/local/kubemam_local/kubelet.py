"""The real node: a kubelet with containerd, runc and the CNI bridge, running the built images (as root).

`kubemam local up --node kubelet` starts it in place of the process node (kubemam_local/node.py), which stays the
default. What it takes, and why (see docs/containers.md and shared/REAL-NODE.md for the measurements):

- kubelet v1.36.3 from the same wrapper module as the control plane (kubemam_local/binaries.py); containerd 2.x,
  `ctr`, the runc shim and runc from their wrapper modules (kubemam_local/gotools.py): kubelet 1.36 refuses
  containerd 1.x, and Debian's runc 1.1 and crun 1.8 cannot run what containerd 2.4 asks.
- The pod network is a bridge of its own (`kubemam0`, 10.244.0.0/24) whose gateway address, 10.244.0.1, is the
  node's InternalIP and where the control plane and MinIO listen: pods reach the API server and S3 there, and all
  traffic stays on this machine (no masquerading, no route out). Debian's CNI plugins (bridge, host-local,
  loopback, portmap) wire pods to it.
- There is no kube-proxy: one DNAT rule (chain KUBEMAM-SERVICES) sends the `kubernetes` Service
  (10.0.0.1:443) to the API server, which is all in-cluster clients (the operator's pod) need.
- cgroup v1 on these machines: `failCgroupV1: false`, the cgroupfs driver and a cgroup root created beforehand
  in every hierarchy. No CAP_SYS_RESOURCE: containerd's `restrict_oom_score_adj`.
- No registry: images come from the Docker Engine (`docker save | ctr -n k8s.io images import -`), the sandbox
  image is the kubelet module's build/pause/linux/pause.c compiled statically here, and image garbage collection
  is held off (an image removed here could not be pulled back).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubemam_local.binaries import KUBE_MODULE_DIR, BinaryError, cache_root, kube_version, resolve
from kubemam_local.controlplane import ControlPlane, free_port
from kubemam_local.docker import Docker, apt_install
from kubemam_local.gotools import NODE_RUNTIME, resolve_tool
from kubemam_local.processes import LocalService, stop_process_group

log = logging.getLogger(__name__)

BRIDGE = "kubemam0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = "10.244.0.1"
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service: the first address of controlplane.SERVICE_CIDR
NAT_CHAIN = "KUBEMAM-SERVICES"
RUN_DIR = Path("/run/kubemam-node")  # containerd's state and socket: short paths (unix sockets ≤ 108 bytes)
CGROUP_ROOT = "/kubemam"
CGROUP_FS = Path("/sys/fs/cgroup")
PAUSE_VERSION = "3.10.2"  # kubernetes v1.36.3 build/pause/Makefile TAG, and containerd 2.4's pinned sandbox
PAUSE_IMAGE = f"registry.k8s.io/pause:{PAUSE_VERSION}"
NODE_NAME = "kubemam-kubelet"
# Debian packages the node runs (CNI plugins, iptables, ip) or builds with (runc's libseccomp, pause's static libc).
PACKAGES = {"/usr/lib/cni/bridge": "containernetworking-plugins", "/usr/sbin/iptables": "iptables",
            "/usr/bin/pkg-config": "pkg-config", "/usr/include/seccomp.h": "libseccomp-dev",
            "/usr/bin/gcc": "gcc", "/usr/lib/x86_64-linux-gnu/libc.a": "libc6-dev", "/usr/sbin/ip": "iproute2"}


class NodeError(BinaryError):
    pass


def _run(*args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(args)} failed ({result.returncode}): {(result.stderr or result.stdout)[-2000:]}")
    return result


def ensure_prerequisites() -> None:
    if os.geteuid() != 0:
        raise NodeError("the kubelet node runs containers, so it needs root (the process node does not)")
    missing = sorted({package for path, package in PACKAGES.items() if not Path(path).exists()})
    if missing:
        apt_install(missing)


def node_root() -> Path:
    """What outlives a cluster: containerd's content store (imported images are kept between runs)."""
    return cache_root() / "node"


@dataclass
class PodNetwork(LocalService):
    """The bridge whose address the control plane, MinIO and the kubelet listen on, and the Service DNAT."""

    _created: bool = False
    _lock: IO[str] | None = None

    def start(self) -> None:
        """Take the machine's one real-node lock first: a second cluster must not touch the bridge, the NAT
        chain, containerd's state or the cgroup root of a running one (not even to clean up after itself)."""
        if os.geteuid() != 0:
            raise NodeError("the kubelet node runs containers, so it needs root (the process node does not)")
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        lock = open(RUN_DIR / "lock", "w")  # noqa: SIM115 - released in stop()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            lock.close()
            raise NodeError("another kubelet node of kubemam runs on this machine (`kubemam local down` it)") from err
        self._lock = lock
        ensure_prerequisites()
        if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
            self._created = True
        addresses = _run("ip", "-o", "-4", "addr", "show", "dev", BRIDGE).stdout
        if f"inet {NODE_IP}/" not in addresses:
            _run("ip", "addr", "add", f"{NODE_IP}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        _run("iptables", "-t", "nat", "-N", NAT_CHAIN, check=False)
        _run("iptables", "-t", "nat", "-F", NAT_CHAIN)
        jump = ["PREROUTING", "-s", POD_CIDR, "-j", NAT_CHAIN]
        if _run("iptables", "-t", "nat", "-C", *jump, check=False).returncode != 0:
            _run("iptables", "-t", "nat", "-I", *jump)

    def route_service(self, port: int, service_ip: str = SERVICE_IP, service_port: int = 443,
                      target: str = NODE_IP) -> None:
        """Pods' connections to service_ip:service_port go to target:port (what kube-proxy would do)."""
        _run("iptables", "-t", "nat", "-A", NAT_CHAIN, "-d", f"{service_ip}/32", "-p", "tcp", "--dport",
             str(service_port), "-j", "DNAT", "--to-destination", f"{target}:{port}")

    def stop(self) -> None:
        if self._lock is None:
            return  # never started (or another node holds the machine): nothing here is ours
        _run("iptables", "-t", "nat", "-D", "PREROUTING", "-s", POD_CIDR, "-j", NAT_CHAIN, check=False)
        _run("iptables", "-t", "nat", "-F", NAT_CHAIN, check=False)
        _run("iptables", "-t", "nat", "-X", NAT_CHAIN, check=False)
        _run("ip", "link", "del", BRIDGE, check=False)
        self._lock.close()
        self._lock = None


def _kube_module_source() -> Path:
    """The k8s.io/kubernetes module the wrapper pins, from the module cache (downloaded when missing)."""
    info = _run("go", "mod", "download", "-json", f"k8s.io/kubernetes@{kube_version()}", cwd=KUBE_MODULE_DIR)
    return Path(json.loads(info.stdout)["Dir"])


def ensure_pause_image(docker: Docker) -> str:
    """registry.k8s.io/pause:<version> in the Docker Engine: the release's pause.c, compiled statically."""
    key = f"pause-{PAUSE_VERSION}-{kube_version()}"
    if docker.label(PAUSE_IMAGE, "io.kubemam.local.key") == key:
        return PAUSE_IMAGE
    source = _kube_module_source() / "build" / "pause" / "linux" / "pause.c"
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "pause"
        _run("gcc", "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{PAUSE_VERSION}-0", "-o", str(binary),
             str(source))
        layer = Path(tmp) / "rootfs.tar"
        with tarfile.open(layer, "w") as tar:
            info = tar.gettarinfo(str(binary), arcname="pause")
            info.uid = info.gid = 0
            info.mode = 0o755
            with open(binary, "rb") as handle:
                tar.addfile(info, handle)
        docker.run("import", "--change", 'ENTRYPOINT ["/pause"]', "--change", "USER 65535:65535",
                   "--change", f"LABEL io.kubemam.local.key={key}", str(layer), PAUSE_IMAGE)
    return PAUSE_IMAGE


def _containerd_config(state: Path, root: Path, runc: Path, cni_conf: Path) -> str:
    return f"""version = 3
root = "{root}"
state = "{state}"

[grpc]
  address = "{state}/containerd.sock"

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "{PAUSE_IMAGE}"

  [plugins.'io.containerd.cri.v1.runtime']
    # No CAP_SYS_RESOURCE here: runc may not lower a process's oom_score_adj below its parent's.
    restrict_oom_score_adj = true
    # Network namespaces under the state directory, so a stop leaves nothing in /run/netns.
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "{runc}"
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["/usr/lib/cni"]
      conf_dir = "{cni_conf}"
      max_conf_num = 1

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = "127.0.0.1"
"""


def _cni_config() -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "kubemam",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP,
                                                         "rangeStart": POD_CIDR.rsplit(".", 1)[0] + ".10"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _kubelet_config(ca: Path, socket: Path, port: int, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        # `kubectl logs`: the API server's client certificate (pki.py) is signed by the cluster CA.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca)}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": CGROUP_ROOT,
        "failCgroupV1": False,
        "failSwapOn": False,
        "enforceNodeAllocatable": [],
        "podCIDR": POD_CIDR,
        "resolvConf": "/etc/resolv.conf",
        "clusterDomain": "cluster.local",
        "serializeImagePulls": False,
        # Imported images cannot be pulled back: never collect them; evict only when really short of space.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "maxPods": 40,
        "registerNode": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "nodeStatusReportFrequency": "20s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
    }


def _make_cgroup_root() -> None:
    """kubelet refuses a cgroupRoot missing in any v1 hierarchy."""
    for hierarchy in CGROUP_FS.iterdir():
        if hierarchy.is_dir() and not hierarchy.is_symlink() and (hierarchy / "cgroup.procs").exists():
            (hierarchy / CGROUP_ROOT.lstrip("/")).mkdir(exist_ok=True)


def _remove_cgroup_root() -> None:
    for hierarchy in CGROUP_FS.iterdir():
        top = hierarchy / CGROUP_ROOT.lstrip("/")
        if not top.is_dir() or hierarchy.is_symlink():
            continue
        for directory in sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def unmount_under(*roots: Path) -> None:
    """Lazily unmount every mount at or below the given directories, deepest first (kubelet's secret and
    token volumes and the bind mount of its root directory onto itself, containerd's rootfs overlays and
    network namespaces)."""
    exact = {str(r.resolve()) for r in roots}
    prefixes = tuple(path + "/" for path in exact)
    mounts = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].replace("\\040", " ")
            if point in exact or point.startswith(prefixes):
                mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        _run("umount", "-l", point, check=False)


def import_image(docker: Docker, ref: str, socket: Path = RUN_DIR / "containerd" / "containerd.sock") -> None:
    """`docker save REF | ctr -n k8s.io images import -`: an image of the Docker Engine into the node's containerd."""
    log.info("importing %s into containerd", ref)
    save = subprocess.Popen([docker.cli, "save", ref], env=docker.env(), stdout=subprocess.PIPE)
    imported = subprocess.run([str(resolve_tool("ctr")), "--address", str(socket), "--namespace", "k8s.io", "images",
                               "import", "-"], stdin=save.stdout, capture_output=True, text=True)
    save.wait()
    if save.returncode != 0 or imported.returncode != 0:
        raise NodeError(f"importing {ref} failed: {imported.stderr[-2000:]}")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_file: IO[bytes]
    log_path: Path

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class KubeletNode(LocalService):
    """`with KubeletNode(cp, network, workdir, docker, images=[...]) as node:` — a Ready node named node.name.

    The control plane must listen on NODE_IP (ControlPlane(address=NODE_IP)); pods reach it through the
    `kubernetes` Service. images are references in the Docker Engine, imported into containerd when changed."""

    control_plane: ControlPlane
    network: PodNetwork
    workdir: Path
    docker: Docker
    images: list[str] = field(default_factory=list)
    name: str = NODE_NAME
    start_timeout: float = 180.0
    processes: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = RUN_DIR / "containerd"
        self.socket = self.state / "containerd.sock"
        self.root = node_root() / "containerd"
        self.timings: dict[str, float] = {}

    # --- public surface ----------------------------------------------------------------------

    def start(self) -> None:
        if self.network._lock is None:
            raise NodeError("start the PodNetwork first: it holds the machine's real-node lock")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def ctr(self, *args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return _run(str(self.tools["ctr"]), "--address", str(self.socket), "--namespace", "k8s.io", *args,
                    check=check, **kwargs)

    def stop(self) -> None:
        """Pods first (the kubelet tears down their sandboxes and networks), then the kubelet, what is left of
        the containers, containerd; then mounts and cgroups."""
        kubelet = next((p for p in self.processes if p.name == "kubelet"), None)
        if kubelet is not None and kubelet.popen.poll() is None:
            try:
                self._drain()
            except Exception as err:  # a stop goes on: what the kubelet left is killed below
                log.warning("could not drain node %s: %s", self.name, err)
        for proc in reversed(self.processes):
            if proc.name == "containerd":
                with contextlib.suppress(Exception):
                    self._kill_tasks()
            stop_process_group(proc.popen)
            proc.log_file.close()
        self.processes.clear()
        unmount_under(self.state, self.workdir / "kubelet", self.root)
        _remove_cgroup_root()

    # --- internals ---------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        log_path = self.workdir / f"{name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        popen = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=env or dict(os.environ))
        proc = Process(name, popen, log_file, log_path)
        self.processes.append(proc)
        return proc

    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 1)

    def _start(self) -> None:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tools = {name: resolve_tool(name) for name in NODE_RUNTIME}
        kubelet = resolve(["kubelet"])["kubelet"]
        self._timed("binaries", started)
        self._start_containerd()
        self._import_images()
        self._start_kubelet(kubelet)
        self.network.route_service(self.control_plane.api_port)
        self._timed("total", started)

    def _start_containerd(self) -> None:
        started = time.monotonic()
        unmount_under(self.state)  # a previous run killed hard
        shutil.rmtree(self.state, ignore_errors=True)
        self.state.mkdir(parents=True)
        self.root.mkdir(parents=True, exist_ok=True)
        cni_conf = self.workdir / "cni"
        cni_conf.mkdir(exist_ok=True)
        (cni_conf / "10-kubemam.conflist").write_text(json.dumps(_cni_config(), indent=2))
        config = self.workdir / "containerd.toml"
        config.write_text(_containerd_config(self.state, self.root, self.tools["runc"], cni_conf))
        # The shim is found on PATH: ours first (Debian's containerd 1.6, there for docker.io, brings its own).
        shim_dir = str(self.tools["containerd-shim-runc-v2"].parent)
        env = {**os.environ, "PATH": f"{shim_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
        proc = self._spawn("containerd", [str(self.tools["containerd"]), "--config", str(config)], env)
        deadline = time.monotonic() + 60
        while self.ctr("version", check=False).returncode != 0:
            if proc.popen.poll() is not None:
                raise NodeError(f"containerd exited with {proc.popen.returncode}:\n{proc.tail()}")
            if time.monotonic() > deadline:
                raise NodeError(f"containerd did not answer on {self.socket}:\n{proc.tail()}")
            time.sleep(0.3)
        self._timed("containerd", started)

    def _import_images(self) -> None:
        """docker save | ctr import, for each image whose Docker image ID containerd has not seen yet."""
        started = time.monotonic()
        record_path = self.root / "kubemam-images.json"
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record = {}
        present = set(self.ctr("images", "ls", "-q").stdout.split())
        for ref in [ensure_pause_image(self.docker), *self.images]:
            image_id = self.docker.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
            name = ref if "/" in ref.split(":")[0] else f"docker.io/library/{ref}"
            if record.get(ref) == image_id and name in present:
                continue
            import_image(self.docker, ref, self.socket)
            record[ref] = image_id
            record_path.write_text(json.dumps(record, indent=2))
        self._timed("images", started)

    def _start_kubelet(self, binary: Path) -> None:
        started = time.monotonic()
        cp = self.control_plane
        _make_cgroup_root()
        kubelet_dir = self.workdir / "kubelet"
        unmount_under(kubelet_dir)
        shutil.rmtree(kubelet_dir, ignore_errors=True)
        kubelet_dir.mkdir(parents=True)
        config = self.workdir / "kubelet-config.yaml"
        config.write_text(yaml.safe_dump(_kubelet_config(cp.pki.ca_cert, self.socket, free_port(NODE_IP),
                                                         free_port())))
        proc = self._spawn("kubelet", [
            str(binary), f"--config={config}", f"--kubeconfig={cp.kubeconfig}",
            f"--root-dir={kubelet_dir}", f"--cert-dir={self.workdir / 'kubelet-pki'}",
            f"--hostname-override={self.name}", f"--node-ip={NODE_IP}", "--v=1",
        ])
        core = client.CoreV1Api(self._api())
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.popen.poll() is not None:
                raise NodeError(f"kubelet exited with {proc.popen.returncode}:\n{proc.tail()}")
            with contextlib.suppress(ApiException):
                node = core.read_node(self.name)
                if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []):
                    break
            if time.monotonic() > deadline:
                raise NodeError(f"node {self.name} not Ready after {self.start_timeout:.0f}s:\n{proc.tail()}")
            time.sleep(0.5)
        self._timed("kubelet", started)

    def _api(self) -> client.ApiClient:
        from kubernetes import config

        return config.new_client_from_config(str(self.control_plane.kubeconfig))

    def _drain(self, timeout: float = 60.0) -> None:
        """Delete the node's pods at once and wait until containerd runs none of them."""
        core = client.CoreV1Api(self._api())
        for pod in core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.name}").items:
            with contextlib.suppress(ApiException):
                core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
            if not tasks:
                return
            time.sleep(1.0)

    def _kill_tasks(self) -> None:
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        time.sleep(0.5)
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "rm", "-f", task, check=False)
