"""The Node deleted under a running transcode (issue 15's fault suite): the node registers again (as a kubelet
that restarts does), the pods bound to the deleted Node are cleaned up by the control plane, the Job makes a
new pod, and the step finishes — no permanent failure, one finished transcode Job.

A local cluster of its own (scheduler, process node, MinIO, the operator). kube-controller-manager's pod
garbage collector deletes pods bound to a Node that no longer exists; the process node stops their
processes when they go (a force delete included) and re-registers its Node on the next heartbeat.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubemam.media.sample import make_sample
from tests.helpers import LocalStack, local_stack, wait_for

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")

NAMESPACE = "kubemam-fault-node"
NODE = "kubemam-local"
LADDER = {
    "apiVersion": "kubemam.io/v1alpha1", "kind": "TranscodeLadder", "metadata": {"name": "one-rung"},
    "spec": {"segmentDurationSeconds": 2, "renditions": [
        {"name": "h264-360p", "codec": "h264", "width": 640, "height": 360, "profile": "main", "preset": "medium",
         "rateControl": {"mode": "crf", "crf": 23}}]},
}
ASSET = {
    "apiVersion": "kubemam.io/v1alpha1", "kind": "MediaAsset", "metadata": {"name": "orphaned"},
    "spec": {"source": {"uri": "s3://kubemam-library/incoming/orphaned.mov"}, "metadata": {"title": "Orphaned"},
             "timeline": {"frameRate": "25", "startTimecode": "10:00:00:00"}, "ladderRef": {"name": "one-rung"}},
}


def _pods(stack: LocalStack, job: str) -> list[Any]:
    return list(client.CoreV1Api(stack.api).list_namespaced_pod(
        NAMESPACE, label_selector=f"batch.kubernetes.io/job-name={job}").items)


def _ready(stack: LocalStack) -> dict[str, Any] | None:
    status = dict(stack.custom.get("mediaassets", "orphaned").get("status") or {})
    if status.get("phase") == "Failed":
        raise AssertionError(f"the asset failed: {status.get('conditions')}")
    return status if status.get("phase") == "Ready" else None


def test_a_node_deleted_under_a_running_transcode(control_plane: Any, tmp_path: Path) -> None:
    with local_stack(control_plane, tmp_path, NAMESPACE, operator_env={"KUBEMAM_RECHECK_SECONDS": "2"}) as stack:
        master = make_sample(tmp_path / "orphaned.mov", width=1280, height=720, seconds=60)
        stack.store.upload_file(str(master), "kubemam-library", "incoming/orphaned.mov")
        stack.custom.create("transcodeladders", LADDER)
        stack.custom.create("mediaassets", ASSET)
        batch, core = client.BatchV1Api(stack.api), client.CoreV1Api(stack.api)

        def running_transcode() -> Any:
            jobs = batch.list_namespaced_job(NAMESPACE, label_selector="kubemam.io/step=transcode").items
            for job in jobs:
                if any(p.status.phase == "Running" for p in _pods(stack, job.metadata.name)):
                    return job
            return None

        job = wait_for(running_transcode, timeout=240, what="a transcode pod running")
        first = {p.metadata.name for p in _pods(stack, job.metadata.name)}
        deleted_at = time.monotonic()
        core.delete_node(NODE)

        def node_back() -> bool:
            try:
                return core.read_node(NODE).metadata.creation_timestamp is not None
            except ApiException as err:
                if err.status == 404:
                    return False
                raise

        wait_for(node_back, timeout=60, what="the node registered again")
        back = time.monotonic() - deleted_at
        status = wait_for(lambda: _ready(stack), timeout=400, what="Ready after the node came back")
        ready = time.monotonic() - deleted_at
        pods = _pods(stack, job.metadata.name)
        finished = batch.read_namespaced_job(job.metadata.name, NAMESPACE)
        print(f"\nnode re-registered {back:.1f} s after the delete; Ready {ready:.1f} s after it; transcode Job "
              f"{finished.metadata.name}: succeeded {finished.status.succeeded}, failed {finished.status.failed}; "
              f"pods {sorted(p.metadata.name for p in pods)} (first {sorted(first)})")
        assert finished.status.succeeded == 1
        transcodes = batch.list_namespaced_job(NAMESPACE, label_selector="kubemam.io/step=transcode").items
        assert [j.metadata.name for j in transcodes] == [job.metadata.name]  # the same Job finished it
        assert {r["name"] for r in status["renditions"]} == {"h264-360p"}
