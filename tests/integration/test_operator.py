"""The operator against the real API server and the real Job and garbage-collector controllers."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.helpers import Custom, example, wait_for

pytestmark = pytest.mark.integration


def _jobs(api_client: Any, namespace: str, asset: str) -> list[Any]:
    jobs = client.BatchV1Api(api_client).list_namespaced_job(namespace, label_selector=f"kubemam.io/asset={asset}")
    return list(jobs.items)


def _asset_without_refs(name: str = "clip") -> dict[str, Any]:
    body = example("mediaasset.yaml")
    body["metadata"]["name"] = name
    body["spec"].pop("ladderRef")
    body["spec"].pop("archivePolicyRef")
    return body


def _finish_pods(api_client: Any, namespace: str, job_name: str, exit_code: int, message: str = "") -> None:
    """Play the kubelet's part (there is no node yet): report the Job's pods as terminated.

    Everything else is real: the Job controller turns pod phases into Job conditions.
    """
    core = client.CoreV1Api(api_client)
    pods = wait_for(lambda: core.list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}").items, what="the Job's pod")
    for pod in pods:
        if pod.status.phase in ("Succeeded", "Failed"):
            continue
        terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                      "message": message, "startedAt": "2026-01-01T00:00:00Z",
                      "finishedAt": "2026-01-01T00:00:01Z"}
        core.patch_namespaced_pod_status(pod.metadata.name, namespace, {"status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [{"name": "worker", "image": pod.spec.containers[0].image, "imageID": "",
                                   "ready": False, "restartCount": 0, "state": {"terminated": terminated}}],
        }})


def test_asset_yields_a_restricted_ingest_job_owned_by_the_asset(operator: Path, api_client: Any,
                                                               namespace: str) -> None:
    custom = Custom(api_client, namespace)
    asset = custom.create("mediaassets", _asset_without_refs())
    job = wait_for(lambda: _jobs(api_client, namespace, "clip"), what="the ingest Job")[0]
    assert job.metadata.name.startswith("clip-ingest-") and len(job.metadata.name) == len("clip-ingest-") + 8
    owner = job.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("MediaAsset", "clip", asset["metadata"]["uid"],
                                                                      True)
    assert job.metadata.labels["kubemam.io/step"] == "ingest"
    # The namespace enforces Pod Security "restricted": a pod exists only if the template meets it.
    pods = wait_for(lambda: client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job.metadata.name}").items, what="a pod")
    assert pods[0].spec.security_context.run_as_non_root is True
    step_input = next(e.value for e in pods[0].spec.containers[0].env if e.name == "KUBEMAM_STEP_INPUT")
    assert json.loads(step_input)["source"]["uri"] == "s3://kubemam-library/incoming/coastal-s01e01.mov"
    status = wait_for(lambda: custom.get("mediaassets", "clip").get("status", {}).get("jobs"), what="status.jobs")
    assert status[0]["name"] == job.metadata.name
    assert custom.get("mediaassets", "clip")["status"]["phase"] == "Ingesting"


def test_job_success_is_mirrored_into_conditions_and_status(operator: Path, api_client: Any,
                                                            namespace: str) -> None:
    custom = Custom(api_client, namespace)
    custom.create("mediaassets", _asset_without_refs())
    job = wait_for(lambda: _jobs(api_client, namespace, "clip"), what="the ingest Job")[0]
    result = {"technical": {"container": "mov,mp4", "durationSeconds": 30.0, "video": {
        "codec": "h264", "width": 1920, "height": 1080, "frameRate": "25/1"}}, "qc": {"verdict": "Passed"}}
    _finish_pods(api_client, namespace, job.metadata.name, 0, json.dumps(result))
    ingested = wait_for(lambda: (c := custom.condition("mediaassets", "clip", "Ingested")) and
                        c["status"] == "True" and c, what="Ingested=True")
    assert ingested["reason"] == "IngestSucceeded"
    asset = custom.get("mediaassets", "clip")
    assert asset["status"]["technical"]["video"]["width"] == 1920
    assert asset["status"]["qc"]["verdict"] == "Passed"
    assert asset["status"]["phase"] == "Ready"
    ready = custom.condition("mediaassets", "clip", "Ready")
    assert ready and ready["status"] == "True" and ready["observedGeneration"] == asset["metadata"]["generation"]


def test_job_failure_is_mirrored(operator: Path, api_client: Any, namespace: str) -> None:
    custom = Custom(api_client, namespace)
    body = _asset_without_refs()
    custom.create("mediaassets", body)
    job = wait_for(lambda: _jobs(api_client, namespace, "clip"), what="the ingest Job")[0]
    # backoffLimit 3: the real Job controller retries, so every attempt must fail.
    for _ in range(4):
        _finish_pods(api_client, namespace, job.metadata.name, 3)
        if _retry_scheduled(custom):
            break
        wait_for(lambda: _pending_pod(api_client, namespace, job.metadata.name) or
                 _retry_scheduled(custom), timeout=30, what="a retry pod or the failure")
    # A Job that spent its backoffLimit failed for a transient reason (issue 15): the step runs again as a new
    # attempt after a backoff, and the asset says so in the Job's words instead of failing for good.
    ingested = wait_for(lambda: (c := custom.condition("mediaassets", "clip", "Ingested")) and
                        c["reason"] == "RetryScheduled" and c, timeout=60, what="Ingested RetryScheduled")
    assert ingested["status"] == "Unknown" and ingested["message"].startswith("attempt 2 after ")
    assert "BackoffLimitExceeded" in ingested["message"]
    assert custom.get("mediaassets", "clip")["status"]["phase"] == "Ingesting"


def test_permanent_failure_fails_the_job_at_once(operator: Path, api_client: Any, namespace: str) -> None:
    """Exit code 2 means retrying cannot help: the podFailurePolicy fails the Job on the first pod."""
    custom = Custom(api_client, namespace)
    custom.create("mediaassets", _asset_without_refs())
    job = wait_for(lambda: _jobs(api_client, namespace, "clip"), what="the ingest Job")[0]
    _finish_pods(api_client, namespace, job.metadata.name, 2, '{"error": "source sha256 does not match"}')
    ingested = wait_for(lambda: (c := custom.condition("mediaassets", "clip", "Ingested")) and
                        c["status"] == "False" and c, timeout=60, what="Ingested=False")
    assert ingested["message"].endswith("failed: source sha256 does not match")  # the worker's own words
    pods = client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job.metadata.name}").items
    assert len(pods) == 1


def _pending_pod(api_client: Any, namespace: str, job_name: str) -> bool:
    pods = client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}").items
    return any(p.status.phase == "Pending" for p in pods)


def _retry_scheduled(custom: Custom) -> bool:
    cond = custom.condition("mediaassets", "clip", "Ingested")
    return bool(cond and cond["reason"] == "RetryScheduled")


def test_missing_ladder_sets_ready_false_and_recovers_when_it_appears(operator: Path, api_client: Any,
                                                                      namespace: str) -> None:
    custom = Custom(api_client, namespace)
    body = _asset_without_refs()
    body["spec"]["ladderRef"] = {"name": "ott-standard"}
    custom.create("mediaassets", body)
    ready = wait_for(lambda: custom.condition("mediaassets", "clip", "Ready"), what="a Ready condition")
    assert ready["status"] == "False" and ready["reason"] == "LadderNotFound"
    assert "ott-standard" in ready["message"]
    custom.create("transcodeladders", example("transcodeladder.yaml"))
    wait_for(lambda: (c := custom.condition("mediaassets", "clip", "Ready")) and c["reason"] != "LadderNotFound",
             timeout=20, what="the asset to notice the ladder")
    ladder_ready = wait_for(lambda: custom.condition("transcodeladders", "ott-standard", "Ready"), what="ladder Ready")
    assert ladder_ready["status"] == "True"


def test_unsupported_source_scheme_is_a_condition_not_a_crash(operator: Path, api_client: Any,
                                                              namespace: str) -> None:
    custom = Custom(api_client, namespace)
    body = _asset_without_refs()
    body["spec"]["source"]["uri"] = "ftp://archive.example/master.mxf"
    custom.create("mediaassets", body)
    ready = wait_for(lambda: custom.condition("mediaassets", "clip", "Ready"), what="a Ready condition")
    assert ready["status"] == "False" and ready["reason"] == "UnsupportedSource"
    assert "'ftp'" in ready["message"]
    assert _jobs(api_client, namespace, "clip") == []
    # Fixing the spec recovers the asset: a new generation, an ingest Job.
    custom.api.patch_namespaced_custom_object("kubemam.io", "v1alpha1", namespace, "mediaassets", "clip",
                                              {"spec": {"source": {"uri": "s3://kubemam-library/master.mxf"}}})
    wait_for(lambda: _jobs(api_client, namespace, "clip"), what="an ingest Job after the fix")


def test_changed_source_means_a_new_job_same_source_means_none(operator: Path, api_client: Any,
                                                               namespace: str) -> None:
    custom = Custom(api_client, namespace)
    custom.create("mediaassets", _asset_without_refs())
    first = wait_for(lambda: _jobs(api_client, namespace, "clip"), what="the ingest Job")[0].metadata.name
    custom.api.patch_namespaced_custom_object("kubemam.io", "v1alpha1", namespace, "mediaassets", "clip",
                                              {"spec": {"priority": 10}})  # not an ingest input
    custom.api.patch_namespaced_custom_object("kubemam.io", "v1alpha1", namespace, "mediaassets", "clip",
                                              {"spec": {"source": {"uri": "s3://kubemam-library/v2.mov"}}})
    # The first Job never ran (no node here); its inputs changed, so it is replaced, not left beside the new one.
    names = wait_for(lambda: (j := _jobs(api_client, namespace, "clip")) and j[0].metadata.name != first and j,
                     what="the Job of the new source, alone")
    assert len(names) == 1
    status = wait_for(lambda: (s := custom.get("mediaassets", "clip")["status"])["jobs"][0]["name"] != first and s,
                      what="status to follow the new Job")
    assert status["observedGeneration"] == 3


def test_deleting_the_asset_lets_the_garbage_collector_remove_its_job(operator: Path, api_client: Any,
                                                                     namespace: str) -> None:
    custom = Custom(api_client, namespace)
    custom.create("mediaassets", _asset_without_refs())
    name = wait_for(lambda: _jobs(api_client, namespace, "clip"), what="the ingest Job")[0].metadata.name
    custom.delete("mediaassets", "clip")

    def job_gone() -> bool:
        try:
            client.BatchV1Api(api_client).read_namespaced_job(name, namespace)
        except ApiException as err:
            return err.status == 404
        return False

    # The garbage collector learns a CRD's kind at its next discovery resync (every 30 s) and
    # deletes dependents of an absent owner asynchronously: 38 s was measured on a fresh cluster.
    wait_for(job_gone, timeout=150, what="the garbage collector to delete the Job")


def test_policy_kinds_report_what_the_schema_cannot_judge(operator: Path, api_client: Any, namespace: str) -> None:
    custom = Custom(api_client, namespace)
    ladder = example("transcodeladder.yaml")
    keyless = copy.deepcopy(ladder)
    del keyless["spec"]["drm"]["keyProvider"]
    with pytest.raises(ApiException) as refused:  # DRM without a key provider never gets in
        custom.create("transcodeladders", keyless)
    assert refused.value.status == 422 and "keyProvider" in str(refused.value.body)
    ladder["spec"]["chunking"]["chunkSeconds"] = 61
    custom.create("transcodeladders", ladder)
    ready = wait_for(lambda: custom.condition("transcodeladders", "ott-standard", "Ready"), what="ladder Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ChunkNotSegmentAligned")

    policy = example("archivepolicy.yaml")
    policy["spec"]["tiers"][2]["transition"]["afterDays"] = 10  # before the warm tier's 30
    custom.create("archivepolicies", policy)
    ready = wait_for(lambda: custom.condition("archivepolicies", "library-321", "Ready"), what="policy Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidTierOrder")

    custom.create("rightswindows", example("rightswindow.yaml"))
    ready = wait_for(lambda: custom.condition("rightswindows", "coastal-nordics-svod-2027", "Ready"),
                     what="window Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoAssetsMatched")
    window = custom.get("rightswindows", "coastal-nordics-svod-2027")
    assert window["status"]["phase"] == "Scheduled"
    assert window["status"]["nextTransition"].startswith("2027-01-01T00:00:00")


def test_a_job_an_admission_policy_refuses_is_a_condition_and_is_asked_again(operator: Path, api_client: Any,
                                                                              namespace: str) -> None:
    """A cluster's own policy (here a ValidatingAdmissionPolicy on Jobs in this namespace) refuses the step
    Job: the asset says so in the policy's words, instead of a handler error retried every 15 s, and the
    Job comes once the policy lets it (the not-Ready safety net asks again)."""
    admission = client.AdmissionregistrationV1Api(api_client)
    name = f"no-jobs-{namespace}"
    admission.create_validating_admission_policy({
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["batch"], "apiVersions": ["v1"],
                                                         "operations": ["CREATE"], "resources": ["jobs"]}]},
                 "validations": [{"expression": "false", "reason": "Forbidden",
                                  "message": "media Jobs wait for the change freeze to end"}]}})
    admission.create_validating_admission_policy_binding({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}}})
    batch = client.BatchV1Api(api_client)
    probe = {"metadata": {"name": "probe"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
        {"name": "c", "image": "none"}]}}}}

    def refused() -> bool:  # the API server has loaded the policy (it does so within seconds)
        try:
            batch.create_namespaced_job(namespace, probe, dry_run="All")
        except ApiException as err:
            return err.status == 403
        return False

    custom = Custom(api_client, namespace)
    try:
        wait_for(refused, timeout=30, what="the admission policy in force")
        custom.create("mediaassets", _asset_without_refs())
        ready = wait_for(lambda: (c := custom.condition("mediaassets", "clip", "Ready")) and c["reason"] == "JobRefused"
                         and c, timeout=30, what="Ready=False JobRefused")
        assert ready["status"] == "False"
        assert "media Jobs wait for the change freeze to end" in ready["message"] and "403" in ready["message"]
        assert _jobs(api_client, namespace, "clip") == []
    finally:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)
    wait_for(lambda: _jobs(api_client, namespace, "clip"), timeout=60, what="the ingest Job once the policy is gone")
    wait_for(lambda: (c := custom.condition("mediaassets", "clip", "Ready")) and c["reason"] != "JobRefused",
             timeout=30, what="the refusal cleared from the asset")
