"""What the container tests and the real node rest on, checked without root, docker or a node (runs in `make test`)."""

from __future__ import annotations

import re
import tomllib
import uuid
from pathlib import Path

from kubemam.config import OperatorConfig
from kubemam.plan.jobs import Owner, StepJobRequest, build_step_job
from kubemam_local import kubelet
from kubemam_local.gotools import NODE_RUNTIME, TOOLS
from kubemam_local.images import REPO, image_refs, version
from tests.containers.dockerpod import docker_args

DOCKERFILES = [REPO / "images" / name / "Dockerfile" for name in ("operator", "worker")]


def test_dockerfiles_pull_nothing_they_are_not_given_and_run_as_a_known_65532() -> None:
    for path in DOCKERFILES:
        text = path.read_text()
        assert not re.search(r"^# *syntax *=", text, re.M), f"{path}: a syntax line makes BuildKit pull its frontend"
        stages = set(re.findall(r"^FROM .* AS (\w+)$", text, re.M))
        for base in re.findall(r"^FROM (\S+)", text, re.M):
            assert base.startswith("${") or base in stages, f"{path}: FROM {base} is neither a build arg nor a stage"
        assert "USER 65532:65532" in text
        assert re.search(r"useradd --uid 65532 --gid 65532", text), f"{path}: uid 65532 needs a passwd entry"
        assert "python -m venv" not in text  # Debian's python3 has no `python`


def test_images_are_tagged_as_the_chart_defaults() -> None:
    chart = (REPO / "charts" / "kubemam" / "Chart.yaml").read_text()
    app_version = re.search(r'^appVersion: "?([^"\n]+)"?', chart, re.M)
    assert app_version and app_version.group(1) == version()
    assert image_refs() == {"operator": f"ghcr.io/kubemam/operator:{version()}",
                            "worker": f"ghcr.io/kubemam/worker:{version()}"}


def test_the_node_runtime_never_comes_from_path() -> None:
    """docker.io brings Debian's containerd 1.6 and runc 1.1, which kubelet 1.36 and containerd 2.4 cannot use."""
    assert set(NODE_RUNTIME) == {"containerd", "ctr", "containerd-shim-runc-v2", "runc"}
    for name in NODE_RUNTIME:
        assert not TOOLS[name].from_path
        assert TOOLS[name].module_dir is not None and (TOOLS[name].module_dir / "go.sum").stat().st_size > 0
    assert TOOLS["runc"].cgo and "seccomp" in TOOLS["runc"].tags
    assert TOOLS["containerd"].version.startswith("v2.")


def test_containerd_config_is_what_this_machine_needs() -> None:
    text = kubelet._containerd_config(Path("/run/x"), Path("/var/x"), Path("/opt/runc"), Path("/etc/cni"))
    config = tomllib.loads(text)
    assert config["version"] == 3 and config["grpc"]["address"] == "/run/x/containerd.sock"
    plugins = config["plugins"]
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True  # no CAP_SYS_RESOURCE here
    assert runtime["netns_mounts_under_state_dir"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {"BinaryName": "/opt/runc", "SystemdCgroup": False}
    assert runtime["cni"]["bin_dirs"] == ["/usr/lib/cni"] and runtime["cni"]["conf_dir"] == "/etc/cni"
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == kubelet.PAUSE_IMAGE


def test_kubelet_config_for_cgroup_v1_and_imported_images() -> None:
    config = kubelet._kubelet_config(Path("/ca.crt"), Path("/run/x/containerd.sock"), 10250, 10248)
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == kubelet.CGROUP_ROOT and config["enforceNodeAllocatable"] == []
    assert config["address"] == kubelet.NODE_IP and config["containerRuntimeEndpoint"] == "unix:///run/x/containerd.sock"
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authentication"]["x509"]["clientCAFile"] == "/ca.crt"
    assert config["imageGCHighThresholdPercent"] == 100  # never collect what cannot be pulled back


def test_pod_network_stays_on_this_machine() -> None:
    (bridge, portmap) = kubelet._cni_config()["plugins"]
    assert bridge["bridge"] == kubelet.BRIDGE and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"][0][0] == {"subnet": kubelet.POD_CIDR, "gateway": kubelet.NODE_IP,
                                              "rangeStart": "10.244.0.10"}
    assert portmap["type"] == "portmap"


def test_a_step_pod_becomes_docker_flags_with_its_security_context(tmp_path: Path) -> None:
    config = OperatorConfig(worker_image="ghcr.io/kubemam/worker:test", s3_endpoint="http://172.17.0.1:9000",
                            s3_credentials_secret="kubemam-s3")
    job = build_step_job(StepJobRequest(owner=Owner("MediaAsset", "ep1", str(uuid.uuid4()), "ns"), step="ingest",
                                        inputs={"source": {"uri": "s3://b/m.mov"}, "output": "s3://b/out"}), config)
    args = docker_args(job, {"kubemam-s3": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}}, tmp_path, "p")
    joined = " ".join(args)
    assert "--user 65532:65532" in joined and "--read-only" in args and "--cap-drop ALL" in joined
    assert "--security-opt no-new-privileges" in joined
    assert "/work:rw,exec" in joined and "/tmp:rw,exec" in joined
    assert "AWS_SECRET_ACCESS_KEY=s" in args and "AWS_ENDPOINT_URL=http://172.17.0.1:9000" in args
    assert args[-5:] == ["--entrypoint", "kubemam", "ghcr.io/kubemam/worker:test", "worker", "ingest"]
