"""The process node runs real pods for the real Job controller: retries, indexes, deadlines."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubemam.plan.jobs import restricted_container_security, restricted_pod_security
from tests.conftest import NODE_TAINT
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def _job(name: str, script: str, **spec: Any) -> dict[str, Any]:
    container = {
        "name": "main", "image": "registry.example/tools:1", "command": ["sh", "-c", script],
        "securityContext": restricted_container_security(),
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "GREETING", "valueFrom": {"secretKeyRef": {"name": "greeting", "key": "text"}}},
                {"name": "OUT", "value": "/scratch/out.txt"}],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        "workingDir": "/scratch",
        "resources": {"requests": {"cpu": "100m"}},
    }
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {
        "backoffLimit": 0, **spec,
        "template": {"spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False,
            "securityContext": restricted_pod_security(), "tolerations": [{**NODE_TAINT, "operator": "Equal"}],
            "containers": [container], "volumes": [{"name": "scratch", "emptyDir": {}}]}}}}


def _setup(api_client: Any, namespace: str) -> client.BatchV1Api:
    client.CoreV1Api(api_client).create_namespaced_secret(namespace, {
        "metadata": {"name": "greeting"}, "data": {"text": base64.b64encode(b"hello").decode()}})
    return client.BatchV1Api(api_client)


def _condition(batch: client.BatchV1Api, namespace: str, name: str, type_: str) -> Any:
    job = batch.read_namespaced_job(name, namespace)
    return next((c for c in job.status.conditions or [] if c.type == type_ and c.status == "True"), None)


def _pods(api_client: Any, namespace: str, job: str) -> list[Any]:
    return list(client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job}").items)


def test_a_job_runs_to_completion_with_env_volumes_and_termination_message(
        process_node: Path, api_client: Any, namespace: str) -> None:
    batch = _setup(api_client, namespace)
    script = ('echo "$GREETING from $POD_NAME" > "$OUT" && pwd > where.txt && '
              'printf "{\\"ok\\": true}" > "$KUBEMAM_TERMINATION_MESSAGE_PATH"')
    batch.create_namespaced_job(namespace, _job("hello", script))
    wait_for(lambda: _condition(batch, namespace, "hello", "Complete"), timeout=60, what="Job Complete")
    pod = _pods(api_client, namespace, "hello")[0]
    assert pod.spec.node_name == "test-process-node"  # bound by the real kube-scheduler
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason, terminated.message) == (0, "Completed", '{"ok": true}')
    sandbox = next(process_node.glob(f"node/pods/{namespace}_{pod.metadata.name}_*"))
    out = (sandbox / "volumes" / "scratch" / "out.txt").read_text()
    assert out == f"hello from {pod.metadata.name}\n"
    assert (sandbox / "volumes" / "scratch" / "where.txt").read_text().strip() == str(sandbox / "volumes" / "scratch")


def test_failures_are_retried_by_the_job_controller_within_backoff_limit(
        process_node: Path, api_client: Any, namespace: str) -> None:
    batch = _setup(api_client, namespace)
    batch.create_namespaced_job(namespace, _job("flaky", "echo broken >&2; exit 3", backoffLimit=1))
    failed = wait_for(lambda: _condition(batch, namespace, "flaky", "Failed"), timeout=90, what="Job Failed")
    assert failed.reason == "BackoffLimitExceeded"
    statuses = [p.status.container_statuses[0].state.terminated for p in _pods(api_client, namespace, "flaky")]
    assert len(statuses) == 2 and {s.exit_code for s in statuses} == {3}


def test_indexed_completions_each_get_their_index(process_node: Path, api_client: Any, namespace: str) -> None:
    batch = _setup(api_client, namespace)
    script = 'printf "chunk-$JOB_COMPLETION_INDEX" > "$KUBEMAM_TERMINATION_MESSAGE_PATH"'
    batch.create_namespaced_job(namespace, _job("chunks", script, completions=3, parallelism=2,
                                                completionMode="Indexed"))
    wait_for(lambda: _condition(batch, namespace, "chunks", "Complete"), timeout=90, what="Job Complete")
    messages = sorted(p.status.container_statuses[0].state.terminated.message
                      for p in _pods(api_client, namespace, "chunks"))
    assert messages == ["chunk-0", "chunk-1", "chunk-2"]


def test_active_deadline_kills_the_process(process_node: Path, api_client: Any, namespace: str) -> None:
    batch = _setup(api_client, namespace)
    # "$$$$" because the command goes through Kubernetes $(VAR) expansion, where "$$" is a literal "$".
    batch.create_namespaced_job(namespace, _job("slow", "echo $$$$ > pid; sleep 300", activeDeadlineSeconds=3))
    failed = wait_for(lambda: _condition(batch, namespace, "slow", "Failed"), timeout=60, what="Job Failed")
    assert failed.reason == "DeadlineExceeded"
    pid_file = next(process_node.glob(f"node/pods/{namespace}_slow-*/volumes/scratch/pid"))
    pid = int(pid_file.read_text())
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=30, what="the process to be killed")


def test_the_operator_reads_progress_from_a_running_pods_log(process_node: Path, api_client: Any,
                                                             namespace: str) -> None:
    """What the progress loop (controllers/progress.py) does: pods/log of the running pod, via the node, parsed."""
    from kubemam.kubeapi import KubeApi
    from kubemam.media.progress import latest_progress, progress_line

    batch = _setup(api_client, namespace)
    lines = "; ".join(f"echo '{progress_line('transcode', p, 12.5, 9)}'" for p in (10, 40))
    batch.create_namespaced_job(namespace, _job("progress", f"echo starting; {lines}; sleep 60"))
    api = KubeApi(api_client)
    tail = wait_for(lambda: (t := api.running_pod_log_tail(namespace, "progress")) and "percent" in t and t,
                    timeout=60, what="the running pod's log")
    assert tail.splitlines()[0] == "starting"
    assert latest_progress(tail) == {"step": "transcode", "percent": 40, "fps": 12.5, "etaSeconds": 9}
    batch.delete_namespaced_job("progress", namespace, propagation_policy="Background")
