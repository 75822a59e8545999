"""The Job builder: deterministic names, restricted pods, owner references; a golden file pins it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from kubemam.config import OperatorConfig
from kubemam.plan.hashing import MAX_JOB_NAME, step_job_name
from kubemam.plan.jobs import Owner, StepJobRequest, build_step_job
from kubemam.steps.registry import STEPS, UnknownStep

GOLDEN = Path(__file__).parent / "golden"
CONFIG = OperatorConfig(worker_image="registry.example/kubemam/worker:0.1.0", s3_endpoint="http://minio:9000",
                        s3_credentials_secret="kubemam-s3")
OWNER = Owner("MediaAsset", "coastal-s01e01", "0b6e7c1e-0000-4000-8000-000000000001", "media")


def _request(**inputs: object) -> StepJobRequest:
    return StepJobRequest(OWNER, "ingest", {"source": {"uri": "s3://lib/a.mov"},
                                            "output": "s3://lib/assets/media/coastal-s01e01/ingest", **inputs})


def test_ingest_job_matches_golden_file() -> None:
    job = build_step_job(_request(), CONFIG)
    path = GOLDEN / "ingest-job.yaml"
    rendered = yaml.safe_dump(job, sort_keys=True)
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(rendered)
    assert rendered == path.read_text(), "run UPDATE_GOLDEN=1 pytest tests/unit/test_jobs.py and review the diff"


def test_name_follows_inputs() -> None:
    a, b = _request(), _request()
    assert a.name == b.name and a.name.startswith("coastal-s01e01-ingest-")
    assert _request(timeline={"frameRate": "25"}).name != a.name


def test_long_asset_names_stay_within_the_label_limit_and_do_not_collide() -> None:
    base = "x" * 100
    one = step_job_name(base + "-a", "transcode", "0123456789abcdef")
    two = step_job_name(base + "-b", "transcode", "0123456789abcdef")
    assert len(one) <= MAX_JOB_NAME and len(two) <= MAX_JOB_NAME
    assert one != two and one.endswith("-transcode-01234567")


def test_pods_meet_restricted_and_credentials_are_references() -> None:
    job = build_step_job(_request(), CONFIG)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    secrets = [e for e in container["env"] if e["name"].startswith("AWS_") and e["name"] != "AWS_ENDPOINT_URL"]
    assert secrets and all("value" not in e and e["valueFrom"]["secretKeyRef"]["name"] == "kubemam-s3"
                           for e in secrets)
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["uid"] == OWNER.uid and owner["controller"] and owner["blockOwnerDeletion"]


def test_permanent_failures_fail_the_job_without_retries() -> None:
    rules = build_step_job(_request(), CONFIG)["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "worker", "operator": "In",
                                                             "values": [2]}}


def test_kueue_queue_suspends_the_job() -> None:
    inputs = {"source": {"uri": "s3://lib/a.mov"}, "master": {"frameRate": "25", "durationSeconds": 10, "frames": 250},
              "segmentDurationSeconds": 4}
    request = StepJobRequest(OWNER, "transcode", inputs, queue_name="media-batch", priority_class_name="bulk")
    job = build_step_job(request, CONFIG)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "media-batch"
    assert job["spec"]["template"]["spec"]["priorityClassName"] == "bulk"


def test_every_step_gets_its_own_resources_and_deadline() -> None:
    ingest = build_step_job(_request(), CONFIG)["spec"]
    assert ingest["activeDeadlineSeconds"] == STEPS["ingest"].deadline_seconds
    resources = ingest["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"].pop("ephemeral-storage")  # from the master's size: tests/unit/test_step_scratch.py
    assert resources == STEPS["ingest"].resources.to_wire()
    overridden = build_step_job(_request(), CONFIG.model_copy(update={"job_active_deadline_seconds": 600}))
    assert overridden["spec"]["activeDeadlineSeconds"] == 600


def test_an_unregistered_step_or_an_input_its_model_refuses_is_never_a_job() -> None:
    with pytest.raises(UnknownStep, match="transcode-chunkz"):
        build_step_job(StepJobRequest(OWNER, "transcode-chunkz", {}), CONFIG)
    with pytest.raises(ValidationError, match="output"):
        build_step_job(StepJobRequest(OWNER, "ingest", {"source": {"uri": "s3://lib/a.mov"}}), CONFIG)
