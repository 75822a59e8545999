"""The chart on a real kubelet: the operator as a pod under its chart RBAC, every step in the worker image.

`kubemam local up --node kubelet` (kubemam_local/kubelet.py): the control plane, kubelet v1.36.3 with containerd
2.x, runc and the CNI bridge, MinIO on the bridge's address, the built images imported into containerd, and
`helm install charts/kubemam` with them; the namespaces enforce Pod Security "restricted". Then the demo's
example asset goes ingest → transcode → package → archive to Ready, a rights window publishes it (once its
failed QC is signed off) to the origin, where it plays in Chromium, and takes it down at its end; and bad
input — a worker image without ffmpeg, S3 out of the pods' reach — ends in a condition that names the cause.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.containers.conftest import SKIP

pytestmark = [SKIP]

DEMO = "kubemam-demo"
ORIGIN = "kubemam-origin"  # the local cluster makes it; examples/distribution-targets.yaml names it
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster_state(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    from kubemam_local import cluster

    directory = tmp_path_factory.mktemp("kubelet-cluster")
    started = time.monotonic()
    try:
        state = cluster.up(directory, timeout=1200, node="kubelet")
        TIMINGS["cluster up (control plane, node, images, chart)"] = time.monotonic() - started
        yield state
    finally:
        cluster.down(directory, timeout=180)
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            for what, seconds in TIMINGS.items():
                print(f"\n{what}: {seconds:.0f} s", end="", flush=True)
            print(flush=True)


def kubectl(state: dict[str, Any], *args: str, check: bool = True, input: str | None = None) -> str:
    result = subprocess.run([f"{state['binDir']}/kubectl", f"--kubeconfig={state['kubeconfig']}", *args],
                            capture_output=True, text=True, timeout=120, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def get(state: dict[str, Any], *args: str) -> Any:
    return json.loads(kubectl(state, "get", *args, "-o", "json"))


def test_the_operator_runs_as_a_pod_of_the_chart(cluster_state: dict[str, Any], images: dict[str, str]) -> None:
    state = cluster_state
    namespace = state["operator"].split("/")[0]
    assert get(state, "namespace", namespace)["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"] == "restricted"
    (pod,) = get(state, "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator")["items"]
    assert pod["spec"]["nodeName"] == state["node"]
    assert pod["spec"]["containers"][0]["image"] == images["operator"]
    assert pod["spec"]["serviceAccountName"] == "kubemam"  # the chart's account, bound to its ClusterRole only
    assert pod["status"]["phase"] == "Running"
    assert all(c["ready"] for c in pod["status"]["containerStatuses"])
    # What the runtime gave it: not root, a read-only root filesystem, `kubectl logs` through the kubelet.
    logs = kubectl(state, "logs", "-n", namespace, pod["metadata"]["name"])
    assert logs.strip()
    node = get(state, "node", state["node"])
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"


def test_the_example_asset_reaches_ready_with_every_step_in_the_worker_image(
        cluster_state: dict[str, Any], images: dict[str, str], tmp_path: Path) -> None:
    from kubemam_local import demo

    state = cluster_state
    started = time.monotonic()
    assert demo.run(watch_seconds=900, state_dir=Path(state["logs"]),
                    sample={"width": 640, "height": 360, "seconds": 10}, node="kubelet") == 0
    TIMINGS["demo asset to Ready"] = time.monotonic() - started
    (asset,) = get(state, "mediaassets", "-n", DEMO)["items"]
    status = asset["status"]
    assert status["renditions"] and status["packages"]
    assert {p["format"] for p in status["packages"]} == {"dash", "hls"}
    storage = status.get("storage") or {}
    assert len([c for c in storage.get("copies") or [] if c.get("verifiedAt")]) >= storage["minCopies"], storage
    # Every step ran as a pod on the real node, in the worker image, under "restricted".
    pods = get(state, "pods", "-n", DEMO, "-l", "app.kubernetes.io/component=worker")["items"]
    steps = {p["metadata"]["labels"]["kubemam.io/step"] for p in pods}
    assert {"ingest", "transcode", "package", "archive"} <= steps, steps
    for pod in pods:
        assert pod["spec"]["nodeName"] == state["node"]
        assert pod["spec"]["containers"][0]["image"] == images["worker"]
        assert pod["status"]["phase"] == "Succeeded", (pod["metadata"]["name"], pod["status"])
        (container,) = pod["status"]["containerStatuses"]
        assert container["imageID"], container  # a container runtime's image, not the process node's


def _origin_keys(store: Any, prefix: str) -> list[str]:
    listed = store.list_objects_v2(Bucket=ORIGIN, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents") or []]


def _wait(what: str, probe: Any, timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(every)
    raise AssertionError(f"no {what} after {timeout:.0f}s")


def _content_keys(state: dict[str, Any], asset: dict[str, Any]) -> dict[str, str]:
    """kid hex → key hex from the key Secrets the asset owns (found by owner, whatever they are named)."""
    keys: dict[str, str] = {}
    for secret in get(state, "secrets", "-n", DEMO)["items"]:
        if not any(o.get("uid") == asset["metadata"]["uid"] for o in secret["metadata"].get("ownerReferences") or []):
            continue
        data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        for name, kid in data.items():
            if name.endswith(".kid") and f"{name[:-4]}.key" in data:
                keys[uuid.UUID(kid).hex] = data[f"{name[:-4]}.key"]
    return keys


def test_a_window_publishes_the_signed_off_package_which_plays_then_takes_it_down(
        cluster_state: dict[str, Any], tmp_path: Path) -> None:
    """On the real node: the demo asset's failed QC holds it inside an open window until signed off; then the
    distribute pod publishes it to the origin, where Chromium plays it with the asset's ClearKey keys, and the
    window's end takes it down."""
    from kubemam_local import demo
    from tests.browser_player import ensure_browser_deps, play, serve_directory

    state = cluster_state
    started = time.monotonic()
    (asset,) = get(state, "mediaassets", "-n", DEMO)["items"]
    name = asset["metadata"]["name"]
    gate = next(c for c in asset["status"]["conditions"] if c["type"] == "Publishable")
    assert (gate["status"], gate["reason"]) == ("False", "QCHold"), gate
    store = demo.s3_client(state)
    prefix = f"svod-nordics/{DEMO}/{name}/"
    now = datetime.now(UTC).replace(microsecond=0)
    window = {"apiVersion": "kubemam.io/v1alpha1", "kind": "RightsWindow", "metadata": {"name": "nordics-now"},
              "spec": {"assets": {"names": [name]}, "territories": ["NO", "SE", "DK", "FI", "IS"],
                       "channels": ["svod"], "start": _stamp(now - timedelta(minutes=1)),
                       "end": _stamp(now + timedelta(minutes=30))}}
    kubectl(state, "apply", "-n", DEMO, "-f", "-", input=json.dumps(window))
    time.sleep(8)
    assert _origin_keys(store, prefix) == [], "published while QC held it"

    kubectl(state, "annotate", "-n", DEMO, "mediaasset", name, "--field-manager=qc-reviewer",
            "qc.kubemam.io/approved=reviewed on the real node")
    _wait("package on the origin", lambda: any(k.endswith("manifest.mpd") for k in _origin_keys(store, prefix)), 180)
    TIMINGS["sign-off to published on the origin"] = time.monotonic() - started
    pods = get(state, "pods", "-n", DEMO, "-l", "kubemam.io/step=distribute")["items"]
    assert pods and all(p["spec"]["nodeName"] == state["node"] for p in pods)

    # What a viewer gets: the origin's copy plays in Chromium with the asset's keys.
    local = tmp_path / "origin"
    for key in _origin_keys(store, prefix):
        (local / key[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)
        store.download_file(ORIGIN, key, str(local / key[len(prefix):]))
    (manifest,) = local.rglob("manifest.mpd")
    keys = _content_keys(state, get(state, "mediaasset", name, "-n", DEMO))
    assert keys, "no key Secret owned by the asset"
    ensure_browser_deps()
    with serve_directory(manifest.parent) as base:
        result = play(f"{base}/manifest.mpd", clearkeys=keys, seconds=4, screenshot=tmp_path / "frame.png")
    assert result["ok"], result

    # The licence ends: taken down from the origin, verified by listing.
    ended = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    kubectl(state, "patch", "rightswindow", "nordics-now", "-n", DEMO, "--type=merge", "-p",
            json.dumps({"spec": {"end": _stamp(ended)}}))
    _wait("takedown", lambda: _origin_keys(store, prefix) == [], 120)
    TIMINGS["window end to taken down"] = (datetime.now(UTC) - ended).total_seconds()
    history = get(state, "rightswindow", "nordics-now", "-n", DEMO)["status"].get("history") or []
    assert ("Published", name) in {(h["action"], h["asset"]) for h in history}, history


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _helm_set(state: dict[str, Any], values: dict[str, str]) -> None:
    from kubemam_local import chart

    chart.helm(Path(state["kubeconfig"]), "upgrade", chart.RELEASE, str(chart.CHART), "-n", chart.NAMESPACE,
               "--reuse-values", *[a for k, v in values.items() for a in ("--set", f"{k}={v}")], "--wait",
               "--timeout=300s")


def _asset(state: dict[str, Any], namespace: str, name: str, source: str) -> None:
    kubectl(state, "apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "metadata": {"name": name},
        "spec": {"source": {"uri": source}, "metadata": {"title": f"Bad input: {name}"}}}))


def _failure(state: dict[str, Any], namespace: str, name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = get(state, "mediaasset", name, "-n", namespace)
        last = body.get("status") or {}
        for condition in last.get("conditions") or []:
            # A permanent failure is Ingested=False IngestFailed; a transient one waits for its next attempt,
            # Ingested=Unknown RetryScheduled — both in the worker's words.
            if condition["type"] == "Ingested" and condition.get("reason") in ("IngestFailed", "RetryScheduled"):
                return dict(condition)
        time.sleep(2)
    raise AssertionError(f"{name}: no failed ingest in its conditions after {timeout:.0f}s: {json.dumps(last)[:3000]}")


def test_bad_input_ends_in_a_condition_that_names_the_cause(cluster_state: dict[str, Any], images: dict[str, str],
                                                           docker: Any, tmp_path: Path) -> None:
    """A worker image without ffmpeg, then S3 out of the pods' reach: each asset says why, in the worker's words."""
    from kubemam_local import cluster
    from kubemam_local.kubelet import import_image

    state = cluster_state
    source = "s3://kubemam-library/incoming/coastal-s01e01.mov"  # uploaded by the demo test
    started = time.monotonic()

    # 1. The worker image without ffmpeg and ffprobe, imported into the node, named by the chart.
    repository, tag = "kubemam.local/worker-without-ffmpeg", uuid.uuid4().hex[:8]
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {images['worker']}\nUSER 0\nRUN rm -f /usr/bin/ffmpeg /usr/bin/ffprobe\n"
                                        "USER 65532:65532\n")
    docker.run("build", "-q", "-t", f"{repository}:{tag}", str(context))
    import_image(docker, f"{repository}:{tag}")
    _helm_set(state, {"workerImage.repository": repository, "workerImage.tag": tag, "jobs.backoffLimit": "0"})
    _asset(state, DEMO, "no-ffmpeg", source)
    condition = _failure(state, DEMO, "no-ffmpeg", 300)
    assert "ffprobe" in condition["message"] or "ffmpeg" in condition["message"], condition
    TIMINGS["bad input: worker without ffmpeg"] = time.monotonic() - started

    # 2. S3 where only the host reaches it: loopback is the pod's own, so every connection is refused.
    started = time.monotonic()
    port = state["s3Endpoint"].rsplit(":", 1)[1]
    _helm_set(state, {"workerImage.repository": images["worker"].split(":")[0],
                      "workerImage.tag": images["worker"].split(":")[1], "s3.endpoint": f"http://127.0.0.1:{port}"})
    _asset(state, DEMO, "no-s3", source)
    condition = _failure(state, DEMO, "no-s3", 300)
    assert f"127.0.0.1:{port}" in condition["message"] or "S3" in condition["message"], condition
    TIMINGS["bad input: S3 unreachable from the pods"] = time.monotonic() - started
    assert cluster.S3_SECRET  # the Secret stayed in place: the cause is the network, not the credentials
